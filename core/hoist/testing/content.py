"""The content-store conformance suite, modelled on containerd's ``content/testsuite``.

A plugin author runs it against their store by subclassing::

    import functools, pytest
    from hoist.testing.content import ContentStoreSuite
    from my_plugin.store import MyStore

    class TestMyStore(ContentStoreSuite):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)            # a fresh, empty store per test

        @pytest.fixture
        def store_opener(self, tmp_path):
            return functools.partial(MyStore, tmp_path)   # picklable; opens the same store in another process

``store`` must be a fresh, empty :class:`hoist.content.Store`.  ``store_opener`` is a picklable
zero-argument callable that, run in another process (``multiprocessing`` "spawn"), returns a handle
to the *same* store: it is how the suite checks that a ref locked in one process is unavailable in
another.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import multiprocessing
import random
import threading
from collections.abc import Callable

import pytest

from hoist.content import Descriptor, Digest, Info, Status, Store, read_blob, write_blob
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnavailableError,
)

EMPTY = Digest.parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
_SLACK = dt.timedelta(milliseconds=5)  # file timestamps round to the filesystem's clock
_seed = itertools.count(1)

BAD_DIGESTS = (
    "sha256:../../x",
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "",
    "sha256:" + "a" * 64 + "\n",
    "sha256",
    "sha512:" + "a" * 64,
)


def make_content(size: int) -> tuple[bytes, Digest]:
    """Deterministic pseudo-random bytes (a different sequence per call) and their sha256."""
    data = random.Random(next(_seed)).randbytes(size)
    return data, Digest.from_bytes(data)


def _desc(d: Digest, size: int = 0) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=d, size=size)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _between(t: dt.datetime, lo: dt.datetime, hi: dt.datetime, what: str) -> None:
    assert lo - _SLACK <= t <= hi + _SLACK, f"{what} {t} not between {lo} and {hi}"


def _read_all(store: Store, d: Digest) -> bytes:
    ra = store.reader_at(_desc(d))
    try:
        out, off = [], 0
        while off < ra.size:
            b = ra.read_at(off, 1 << 20)
            assert b, f"short read at {off} of {ra.size}"
            out.append(b)
            off += len(b)
        return b"".join(out)
    finally:
        ra.close()


class _Stream(io.RawIOBase):
    """A readable, non-seekable stream (a pipe, a socket)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        return self._b.readinto(buf)


def _hold_ref(opener: Callable[[], Store], ref: str, data: bytes, ready, release, commit: bool) -> None:  # type: ignore[no-untyped-def]
    """Child process: open ``ref``, write ``data``, signal, wait, then close or commit."""
    store = opener()
    w = store.writer(ref)
    w.write(data)
    ready.set()
    release.wait(60)
    if commit:
        w.commit(len(data), Digest.from_bytes(data))
    else:
        w.close()


def _try_ref(opener: Callable[[], Store], ref: str, conn) -> None:  # type: ignore[no-untyped-def]
    """Child process: try to open ``ref`` and report the outcome."""
    store = opener()
    try:
        w = store.writer(ref)
    except UnavailableError as e:
        conn.send(("unavailable", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        conn.send((type(e).__name__, str(e)))
        return
    conn.send(("ok", w.status().offset))
    w.close()


class ContentStoreSuite:
    """Behaviour every ``hoist.content.v1`` store must have. Subclass and provide ``store`` and ``store_opener``."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a ContentStoreSuite subclass must provide a `store` fixture")

    @pytest.fixture
    def store_opener(self) -> Callable[[], Store]:
        raise NotImplementedError("a ContentStoreSuite subclass must provide a `store_opener` fixture")

    # -- writers ---------------------------------------------------------------------------------

    @pytest.mark.parametrize("declare", ["ref-only", "size", "digest", "size+digest"])
    def test_writer(self, store: Store, declare: str) -> None:
        data, d = make_content(256)
        total = len(data) if "size" in declare else None
        expected = d if "digest" in declare else None
        labels = {"hoist.test/gc.root": _now().isoformat()}
        w = store.writer(f"c-{declare}", total=total, expected=expected)
        for i in range(0, len(data), 32):
            assert w.write(data[i : i + 32]) == 32
        assert w.digest() == d
        pre = _now()
        w.commit(0, None, labels)
        post = _now()
        w.close()
        info = store.info(d)
        assert (info.digest, info.size, dict(info.labels)) == (d, 256, labels)
        _between(info.created_at, pre, post, "created_at")
        _between(info.updated_at, pre, post, "updated_at")
        assert _read_all(store, d) == data
        with pytest.raises(NotFoundError):
            store.status(f"c-{declare}")

    def test_writer_32mib(self, store: Store) -> None:
        data, d = make_content(32 << 20)
        w = store.writer("big", total=len(data), expected=d)
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            w.write(view[i : i + (1 << 20)])
        assert w.status().offset == len(data)
        w.commit(len(data), d)
        assert store.info(d).size == len(data)
        assert Digest.from_bytes(_read_all(store, d)) == d

    def test_empty_blob(self, store: Store) -> None:
        w = store.writer("empty")
        assert w.digest() == EMPTY
        w.commit(0, EMPTY)
        assert store.info(EMPTY).size == 0
        assert read_blob(store, _desc(EMPTY)) == b""

    def test_update_status(self, store: Store) -> None:
        data, d = make_content(256)
        pre_start = _now()
        w = store.writer("c1", total=256, expected=d)
        post_start = _now()
        try:
            st = w.status()
            assert (st.ref, st.offset, st.total, st.expected) == ("c1", 0, 256, d)
            assert w.digest() == EMPTY
            _between(st.started_at, pre_start, post_start, "started_at")
            for lo, hi in ((0, 64), (64, 192), (192, 256)):
                pre = _now()
                w.write(data[lo:hi])
                post = _now()
                st = w.status()
                assert st.offset == hi and st.total == 256
                assert w.digest() == Digest.from_bytes(data[:hi])
                _between(st.updated_at, pre, post, "updated_at")
                _between(st.started_at, pre_start, post_start, "started_at")
                listed = store.status("c1")
                assert (listed.ref, listed.offset, listed.total) == ("c1", hi, 256)
            w.commit(0, None)
        finally:
            w.close()
        assert store.info(d).size == 256

    def test_resume_keeps_status(self, store: Store) -> None:
        data, d = make_content(256)
        pre_start = _now()
        w = store.writer("cb", total=256, expected=d)
        post_start = _now()
        w.write(data[:128])
        first = w.status()
        w.close()
        w = store.writer("cb", total=256, expected=d)
        st = w.status()
        assert (st.ref, st.offset, st.total) == ("cb", 128, 256)
        assert w.digest() == Digest.from_bytes(data[:128])
        _between(st.started_at, pre_start, post_start, "started_at")
        assert abs(st.updated_at - first.updated_at) <= _SLACK
        w.write(data[128:])
        assert w.digest() == d
        pre = _now()
        w.commit(0, None)
        post = _now()
        w.close()
        _between(store.info(d).created_at, pre, post, "created_at")

    # -- resume ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
    @pytest.mark.parametrize("how", ["continue", "truncate", "write_blob-seekable", "write_blob-stream", "write_blob-opener"])
    def test_resume(self, store: Store, how: str, fraction: float) -> None:
        for i, size in enumerate((500, 5000, 50000, (1 << 20) + 7)):
            data, d = make_content(size)
            limit = int(size * fraction)
            ref = f"ref-{i}"
            w = store.writer(ref, total=size, expected=d)
            w.write(data[:limit])
            w.close()
            assert store.status(ref).offset == limit
            seen: list[int] = []
            if how in ("continue", "truncate"):
                w = store.writer(ref, total=size, expected=d)
                st = w.status()
                assert st.offset == limit and st.total == size
                assert w.digest() == Digest.from_bytes(data[:limit])
                if how == "truncate":
                    w.truncate(0)
                    assert w.status().offset == 0 and w.digest() == EMPTY
                    w.write(data)
                else:
                    w.write(data[limit:])
                w.commit(size, d)
                w.close()
            elif how == "write_blob-seekable":
                src = io.BytesIO(data)
                write_blob(store, ref, src, size, d, progress=seen.append)
                assert seen[0] == limit, "write_blob should resume a seekable source at the ingest's offset"
            elif how == "write_blob-stream":
                write_blob(store, ref, _Stream(data), size, d, progress=seen.append)
                assert seen[0] == 0, "a non-seekable source restarts from zero"
            else:
                opened: list[int] = []

                def open_at(offset: int, data: bytes = data, opened: list[int] = opened) -> io.BytesIO:
                    opened.append(offset)
                    return io.BytesIO(data[offset:])

                write_blob(store, ref, open_at, size, d)
                assert opened == [limit]
            info = store.info(d)
            assert (info.digest, info.size) == (d, size)
            assert _read_all(store, d) == data
            with pytest.raises(NotFoundError):
                store.status(ref)

    # -- already exists ----------------------------------------------------------------------------

    def test_commit_exists(self, store: Store) -> None:
        data, d = make_content(256)
        write_blob(store, "c1", io.BytesIO(data), len(data), d)
        for i, expected in enumerate((d, None)):
            w = store.writer(f"c1-commitexists-{i}")
            w.write(data)
            with pytest.raises(AlreadyExistsError, match=str(d)):
                w.commit(len(data), expected)
            w.close()
        with pytest.raises(AlreadyExistsError):
            store.writer("another", expected=d)
        consumed = io.BytesIO(data)
        write_blob(store, "c1-again", consumed, len(data), d)  # already there: success, source untouched
        assert consumed.tell() == 0
        assert store.list_statuses() == []

    # -- locking ---------------------------------------------------------------------------------

    def test_locked_ref_same_thread(self, store: Store) -> None:
        w = store.writer("locked")
        with pytest.raises(UnavailableError, match="locked"):
            store.writer("locked")
        w.close()
        store.writer("locked").close()

    def test_locked_ref_threads(self, store: Store) -> None:
        barrier = threading.Barrier(8)
        outcomes: list[str] = []
        writers = []
        mu = threading.Lock()

        def race() -> None:
            barrier.wait()
            try:
                w = store.writer("contended")
            except UnavailableError as e:
                with mu:
                    outcomes.append("locked" if "locked" in str(e) else f"bad message: {e}")
                return
            with mu:
                outcomes.append("ok")
                writers.append(w)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["locked"] * 7 + ["ok"]
        writers[0].write(b"x")
        writers[0].close()

        held = store.writer("held")
        got: list[BaseException | None] = []

        def other() -> None:
            try:
                store.writer("held").close()
                got.append(None)
            except BaseException as e:  # noqa: BLE001
                got.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert isinstance(got[0], UnavailableError) and "locked" in str(got[0])
        held.close()
        t = threading.Thread(target=other)
        got.clear()
        t.start()
        t.join()
        assert got == [None]

    def test_locked_ref_other_process(self, store: Store, store_opener: Callable[[], Store]) -> None:
        ctx = multiprocessing.get_context("spawn")
        data, d = make_content(4096)
        ready, release = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_ref, args=(store_opener, "xproc", data, ready, release, False))
        child.start()
        try:
            assert ready.wait(60), "child process never took the ref"
            with pytest.raises(UnavailableError, match="locked"):
                store.writer("xproc")
            with pytest.raises(UnavailableError, match="locked"):
                store.abort("xproc")
            assert store.status("xproc").offset == len(data)
        finally:
            release.set()
            child.join(60)
        assert child.exitcode == 0
        w = store.writer("xproc", total=len(data) * 2)
        assert w.status().offset == len(data)
        assert w.digest() == d
        w.close()

        # and the other way round: held here, tried there
        w = store.writer("xproc")
        parent_conn, child_conn = ctx.Pipe()
        child = ctx.Process(target=_try_ref, args=(store_opener, "xproc", child_conn))
        child.start()
        outcome = parent_conn.recv() if parent_conn.poll(60) else ("timeout", "")
        child.join(60)
        assert outcome[0] == "unavailable" and "locked" in outcome[1], outcome
        w.close()
        child = ctx.Process(target=_try_ref, args=(store_opener, "xproc", child_conn))
        child.start()
        outcome = parent_conn.recv() if parent_conn.poll(60) else ("timeout", "")
        child.join(60)
        assert outcome == ("ok", len(data))

    def test_write_blob_waits_for_lock_and_dedups(self, store: Store, store_opener: Callable[[], Store]) -> None:
        ctx = multiprocessing.get_context("spawn")
        data, d = make_content(10000)
        ready, release = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_ref, args=(store_opener, "layer", data, ready, release, True))
        child.start()
        try:
            assert ready.wait(60)
            threading.Timer(0.2, release.set).start()
            src = io.BytesIO(data)
            write_blob(store, "layer", src, len(data), d, lock_timeout=60)
        finally:
            release.set()
            child.join(60)
        assert child.exitcode == 0
        assert _read_all(store, d) == data
        with pytest.raises(UnavailableError):
            held = store.writer("layer2")
            try:
                write_blob(store, "layer2", io.BytesIO(b"x"), 1, None, lock_timeout=0.05)
            finally:
                held.close()

    # -- commit errors -----------------------------------------------------------------------------

    def test_commit_error_state(self, store: Store) -> None:
        c1, d1 = make_content(256)
        _, d2 = make_content(256)
        write_blob(store, "c1", io.BytesIO(c1), len(c1), d1)
        ref = "c1-commiterror-state"

        def reopen():  # type: ignore[no-untyped-def]
            w = store.writer(ref)
            with pytest.raises(UnavailableError):
                store.writer(ref)
            return w

        w = reopen()
        w.write(c1)
        with pytest.raises(AlreadyExistsError):
            w.commit(len(c1), d1)
        w = reopen()
        w.write(c1)
        with pytest.raises(AlreadyExistsError):
            w.commit(len(c1), None)
        w.close()

        w = reopen()
        w.write(c1 + b"more")
        with pytest.raises(FailedPreconditionError, match=f"expected {d2}, got {Digest.from_bytes(c1 + b'more')}"):
            w.commit(len(c1) + 4, d2)
        w.close()  # already released by the failed commit; closing again is harmless

        w = reopen()
        assert w.status().offset == len(c1) + 4
        with pytest.raises(FailedPreconditionError, match=f"expected {len(c1)}, got {len(c1) + 4}"):
            w.commit(len(c1), None)

        w = reopen()
        w.commit(len(c1) + 4, None)
        assert _read_all(store, Digest.from_bytes(c1 + b"more")) == c1 + b"more"

        w = store.writer(ref)
        assert w.status().offset == 0
        w.write(c1)
        with pytest.raises(UnavailableError):
            store.writer(ref)
        with pytest.raises(AlreadyExistsError):
            w.commit(len(c1), d1)
        w = reopen()
        w.close()
        store.writer(ref).close()

    def test_retry_after_failed_commit(self, store: Store) -> None:
        data, d = make_content(3000)
        w = store.writer("retry", total=len(data))
        w.write(data[:1000] + b"\0" * 2000)
        with pytest.raises(FailedPreconditionError, match="digest mismatch"):
            w.commit(len(data), d)
        w = store.writer("retry", total=len(data))
        w.truncate(0)
        w.write(data)
        w.commit(len(data), d)
        assert _read_all(store, d) == data

    def test_write_past_total(self, store: Store) -> None:
        data, d = make_content(100)
        w = store.writer("over", total=100, expected=d)
        try:
            w.write(data[:60])
            with pytest.raises(OutOfRangeError, match="exceeds total 100"):
                w.write(data[60:] + b"extra")
            assert w.status().offset == 60
            assert w.digest() == Digest.from_bytes(data[:60])
            w.write(data[60:])
            w.commit(100, d)
        finally:
            w.close()
        assert _read_all(store, d) == data

    def test_commit_short_of_total(self, store: Store) -> None:
        data, d = make_content(100)
        w = store.writer("short", total=200)
        w.write(data)
        with pytest.raises(FailedPreconditionError, match="200"):
            w.commit(0, None)
        with pytest.raises(NotFoundError):
            store.info(d)
        assert store.status("short").offset == 100

    def test_commit_declared_digest_checked(self, store: Store) -> None:
        data, d = make_content(100)
        _, other = make_content(100)
        w = store.writer("declared", expected=other)
        w.write(data)
        with pytest.raises(FailedPreconditionError, match=f"expected {other}, got {d}"):
            w.commit(100, None)
        with pytest.raises(NotFoundError):
            store.info(d)

    def test_write_blob_verifies(self, store: Store) -> None:
        data, d = make_content(1000)
        _, other = make_content(1000)
        with pytest.raises(FailedPreconditionError, match=f"expected {other}, got {d}"):
            write_blob(store, "wb-digest", io.BytesIO(data), len(data), other)
        with pytest.raises(FailedPreconditionError, match="expected 2000 bytes, got 1000"):
            write_blob(store, "wb-short", io.BytesIO(data), 2000, None)
        assert store.status("wb-short").offset == 1000, "a short source leaves the ingest to resume"
        with pytest.raises(OutOfRangeError):
            write_blob(store, "wb-long", io.BytesIO(data), 500, None)
        for dig in (d, other):
            with pytest.raises(NotFoundError):
                store.info(dig)

    def test_write_blob_rewrites_bad_resume(self, store: Store) -> None:
        data, d = make_content(5000)
        w = store.writer("bad-resume", total=5000, expected=d)
        w.write(b"\0" * 2500)  # not the blob's prefix
        w.close()
        write_blob(store, "bad-resume", io.BytesIO(data), 5000, d)
        assert _read_all(store, d) == data

    # -- labels ----------------------------------------------------------------------------------

    def test_labels(self, store: Store) -> None:
        data, d = make_content(256)
        root = _now().isoformat()
        labels = {"k1": "v1", "k2": "v2", "hoist.test/gc.root": root}
        w = store.writer("labels", total=256, expected=d)
        w.write(data)
        pre = _now()
        w.commit(0, None, labels)
        post = _now()
        info = store.info(d)
        assert dict(info.labels) == labels
        _between(info.created_at, pre, post, "created_at")

        labels = {"k1": "newvalue", "k3": "v3", "hoist.test/gc.root": root}
        pre_u = _now()
        out = store.update(Info(digest=d, size=256, labels=labels))
        post_u = _now()
        assert dict(out.labels) == labels
        info = store.info(d)
        assert dict(info.labels) == labels
        _between(info.created_at, pre, post, "created_at")
        _between(info.updated_at, pre_u, post_u, "updated_at")

        out = store.update(
            Info(digest=d, size=256, labels={"k1": "v1", "hoist.test/gc.root": "ignored"}),
            ("labels.k3", "labels.k1"),
        )
        assert dict(out.labels) == {"k1": "v1", "hoist.test/gc.root": root}
        assert dict(store.info(d).labels) == {"k1": "v1", "hoist.test/gc.root": root}

        store.update(Info(digest=d, size=256, labels={}), ("labels",))
        assert dict(store.info(d).labels) == {}

        with pytest.raises(InvalidArgumentError, match="size"):
            store.update(Info(digest=d, size=256), ("size",))
        _, missing = make_content(10)
        with pytest.raises(NotFoundError):
            store.update(Info(digest=missing, size=10, labels={"a": "b"}))

    # -- reading ---------------------------------------------------------------------------------

    def test_small_blob_read_past_end(self, store: Store) -> None:
        blob = b"foobar"
        d = Digest.from_bytes(blob)
        w = store.writer("small", total=len(blob), expected=d)
        w.write(blob)
        w.commit(len(blob), d)
        ra = store.reader_at(_desc(d))
        try:
            assert ra.size == 6
            assert ra.read_at(0, 7) == blob
            assert ra.read_at(3, 100) == b"bar"
            assert ra.read_at(6, 10) == b""
            with pytest.raises(OutOfRangeError):
                ra.read_at(7, 1)
        finally:
            ra.close()
        assert read_blob(store, _desc(d, 6)) == blob
        with pytest.raises(OutOfRangeError, match="exceeds the limit of 5 bytes"):
            read_blob(store, _desc(d), max_size=5)

    def test_reader_is_file_like(self, store: Store) -> None:
        from hoist.content import as_file

        data, d = make_content(3 << 20)
        write_blob(store, "file-like", io.BytesIO(data), len(data), d)
        f = as_file(store.reader_at(_desc(d)))
        try:
            assert f.read(10) == data[:10]
            f.seek(-5, io.SEEK_END)
            assert f.read() == data[-5:]
            assert f.read(1) == b""
            f.seek(1 << 20)
            buf = bytearray(100)
            assert f.readinto(buf) == 100 and bytes(buf) == data[1 << 20 : (1 << 20) + 100]
            f.seek(0)
            assert io.BufferedReader(f, 1 << 20).read() == data  # type: ignore[arg-type]
        finally:
            f.close()

    def test_missing_blob(self, store: Store) -> None:
        _, d = make_content(10)
        with pytest.raises(NotFoundError, match=str(d)):
            store.info(d)
        with pytest.raises(NotFoundError, match=str(d)):
            store.reader_at(_desc(d))
        with pytest.raises(NotFoundError, match=str(d)):
            store.delete(d)

    # -- walk / delete / statuses / abort ----------------------------------------------------------

    def _three(self, store: Store) -> list[Digest]:
        out = []
        for i, labels in enumerate(({"team": "a", "gc.root": "x"}, {"team": "b"}, {})):
            data, d = make_content(100 + i)
            write_blob(store, f"w{i}", io.BytesIO(data), len(data), d, labels=labels)
            out.append(d)
        return out

    def _walk(self, store: Store, *filters: str) -> set[Digest]:
        seen: list[Info] = []
        store.walk(seen.append, *filters)
        return {i.digest for i in seen}

    def test_walk_filters(self, store: Store) -> None:
        a, b, c = self._three(store)
        assert self._walk(store) == {a, b, c}
        assert self._walk(store, "") == {a, b, c}
        assert self._walk(store, "labels.team==a") == {a}
        assert self._walk(store, 'labels."team"==b') == {b}
        assert self._walk(store, "labels.team") == {a, b}
        assert self._walk(store, "labels.team!=a") == {b, c}
        assert self._walk(store, "labels.team==a,labels.gc.root") == {a}
        assert self._walk(store, 'labels."gc.root"==x') == {a}
        assert self._walk(store, "labels.team==b,labels.gc.root") == set()
        assert self._walk(store, "labels.team==a", "labels.team==b") == {a, b}
        assert self._walk(store, f"digest=={c}") == {c}
        assert self._walk(store, "labels.team~=^[ab]$") == {a, b}
        assert self._walk(store, f"digest~=/{b.hex[:10]}/") == {b}
        assert self._walk(store, "labels.nope==1") == set()
        for bad in ("labels.team=a", "==x", "labels.team==a,", "labels.team~=[", "labels.team==/x/"):
            with pytest.raises(InvalidArgumentError, match="filter"):
                store.walk(lambda i: None, bad)
        infos: list[Info] = []
        store.walk(infos.append, f"digest=={a}")
        assert infos[0].size == 100 and dict(infos[0].labels) == {"team": "a", "gc.root": "x"}

    def test_delete(self, store: Store) -> None:
        a, b, c = self._three(store)
        store.delete(b)
        assert self._walk(store) == {a, c}
        with pytest.raises(NotFoundError):
            store.info(b)
        with pytest.raises(NotFoundError):
            store.reader_at(_desc(b))
        with pytest.raises(NotFoundError):
            store.delete(b)
        data, d = make_content(50)
        write_blob(store, "again", io.BytesIO(data), 50, d, labels={"x": "1"})
        store.delete(d)
        write_blob(store, "again", io.BytesIO(data), 50, d)
        assert dict(store.info(d).labels) == {}, "labels go with the blob"

    def test_list_statuses(self, store: Store) -> None:
        refs = ["layer-sha256:aa", "layer-sha256:bb", "manifest-sha256:cc"]
        for i, ref in enumerate(refs):
            w = store.writer(ref, total=100)
            w.write(b"x" * (10 * (i + 1)))
            w.close()
        got = {s.ref: s for s in store.list_statuses()}
        assert set(got) == set(refs)
        assert [got[r].offset for r in refs] == [10, 20, 30]
        assert all(isinstance(s, Status) and s.total == 100 for s in got.values())
        assert {s.ref for s in store.list_statuses("ref~=^layer-")} == set(refs[:2])
        assert {s.ref for s in store.list_statuses("ref==manifest-sha256:cc")} == {refs[2]}
        assert {s.ref for s in store.list_statuses("ref==layer-sha256:aa", "ref==manifest-sha256:cc")} == {refs[0], refs[2]}
        assert store.list_statuses("ref==nope") == []
        with pytest.raises(InvalidArgumentError):
            store.list_statuses("ref=")

    def test_abort(self, store: Store) -> None:
        w = store.writer("to-abort", total=100)
        w.write(b"y" * 40)
        with pytest.raises(UnavailableError):
            store.abort("to-abort")
        w.close()
        store.abort("to-abort")
        with pytest.raises(NotFoundError):
            store.status("to-abort")
        assert store.list_statuses() == []
        with pytest.raises(NotFoundError):
            store.abort("to-abort")
        w = store.writer("to-abort")
        assert w.status().offset == 0 and w.status().total == 0
        w.close()

    # -- bad input -------------------------------------------------------------------------------

    @pytest.mark.parametrize("bad", BAD_DIGESTS)
    def test_bad_digests(self, store: Store, bad: str) -> None:
        for call in (
            lambda: store.info(bad),
            lambda: store.delete(bad),
            lambda: store.writer("bad-digest", expected=bad),
            lambda: store.update(Info(digest=bad, size=1)),
            lambda: write_blob(store, "bad-digest", io.BytesIO(b"x"), 1, bad),
        ):
            with pytest.raises(InvalidArgumentError):
                call()
        assert store.list_statuses() == []
        assert self._walk(store) == set()

    @pytest.mark.parametrize(
        "ref", ["a/b/c", "../../../../etc/passwd", "/abs", "nul\0byte", "x" * 4096, "ünï cödé", ".", "..", " "]
    )
    def test_odd_refs(self, store: Store, ref: str) -> None:
        data, d = make_content(300)
        w = store.writer(ref, total=300)
        w.write(data[:100])
        w.close()
        st = store.status(ref)
        assert (st.ref, st.offset) == (ref, 100)
        assert [s.ref for s in store.list_statuses()] == [ref]
        write_blob(store, ref, io.BytesIO(data), 300, d)
        assert _read_all(store, d) == data
        assert store.list_statuses() == []

    def test_bad_writer_arguments(self, store: Store) -> None:
        with pytest.raises(InvalidArgumentError):
            store.writer("")
        with pytest.raises(InvalidArgumentError):
            store.writer("neg", total=-1)
        assert store.list_statuses() == []


__all__ = ["ContentStoreSuite", "make_content", "BAD_DIGESTS", "EMPTY"]
