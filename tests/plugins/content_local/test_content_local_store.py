"""LocalContentStore: the conformance suite, plus what only a store on local files must guarantee."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from hoist.content import Descriptor, Digest, Info, write_blob
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnavailableError,
)
from hoist.testing.content import BAD_DIGESTS, ContentStoreSuite, make_content
from hoist_content_local.store import LocalContentStore


class TestLocalContentStoreConformance(ContentStoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalContentStore:
        return LocalContentStore(tmp_path / "content")

    @pytest.fixture
    def store_opener(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        return functools.partial(LocalContentStore, tmp_path / "content")


class TestDirectWritesConformance(ContentStoreSuite):
    """Every ingest with a declared total written around the page cache, however small."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalContentStore:
        return LocalContentStore(tmp_path / "content", direct_bytes=1)

    @pytest.fixture
    def store_opener(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        return functools.partial(LocalContentStore, tmp_path / "content", direct_bytes=1)


_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _direct_fds(path: Path) -> int:
    """How many of this process's descriptors on ``path`` write around the page cache."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                continue
            flags = next(line for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                         if line.startswith("flags:"))
        except OSError:
            continue
        n += bool(int(flags.split()[1], 8) & _O_DIRECT)
    return n


def _key(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "content"


@pytest.fixture
def store(root: Path) -> LocalContentStore:
    return LocalContentStore(root)


def test_layout_and_read_only_blobs(store: LocalContentStore, root: Path) -> None:
    data, d = make_content(1000)
    w = store.writer("layer-1", total=1000, expected=d)
    w.write(data[:10])
    ingest = root / "ingest" / _key("layer-1")
    assert sorted(os.listdir(ingest)) == ["data", "status"]
    status = json.loads((ingest / "status").read_text())
    assert (status["ref"], status["total"], status["expected"]) == ("layer-1", 1000, str(d))
    assert status["started_at"] == status["updated_at"]
    fd = os.open(ingest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):  # the writer holds flock(2) on its ingest directory
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    w.write(data[10:])
    w.commit(1000, d, {"a": "b"})
    blob = root / "blobs" / "sha256" / d.hex
    assert blob.read_bytes() == data
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert not ingest.exists()
    assert os.listdir(root / "ingest") == [], "nothing piles up"
    assert json.loads((root / "labels" / "sha256" / f"{d.hex}.json").read_text())["labels"] == {"a": "b"}


def test_labels_persist_across_instances(root: Path) -> None:
    data, d = make_content(100)
    write_blob(LocalContentStore(root), "x", io.BytesIO(data), 100, d, labels={"k": "v"})
    LocalContentStore(root).update(Info(digest=d, size=100, labels={"k2": "v2"}), ("labels.k2",))
    assert dict(LocalContentStore(root).info(d).labels) == {"k": "v", "k2": "v2"}


def test_sha512_blob(store: LocalContentStore, root: Path) -> None:
    data = b"sha512 content"
    d = Digest("sha512", hashlib.sha512(data).hexdigest())
    write_blob(store, "s512", io.BytesIO(data), len(data), d)
    assert (root / "blobs" / "sha512" / d.hex).read_bytes() == data
    seen: list[Info] = []
    store.walk(seen.append)
    assert [i.digest for i in seen] == [d]
    # committing sha256-hashed data under a sha512 expectation re-hashes with the right algorithm
    other = b"other"
    d2 = Digest("sha512", hashlib.sha512(other).hexdigest())
    w = store.writer("s512-late")
    w.write(other)
    w.commit(len(other), d2)
    assert store.info(d2).size == len(other)


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_bad_digest_touches_nothing(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "c"
    store = LocalContentStore(root)
    before = _files(root)
    for call in (
        lambda: store.info(bad),
        lambda: store.delete(bad),
        lambda: store.writer("r", expected=bad),
        lambda: store.reader_at(Descriptor(media_type="x", digest=bad, size=1)),
        lambda: write_blob(store, "r", io.BytesIO(b"x"), 1, bad),
    ):
        with pytest.raises(InvalidArgumentError, match="invalid digest"):
            call()
    assert _files(root) == before
    assert not any(tmp_path.parent.glob("x")), "nothing escaped the root"


def test_refs_are_hashed_never_paths(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "c"
    store = LocalContentStore(root)
    refs = ["../../../escape", "a/b", "nul\0x", "y" * 4096, "..", "/"]
    for ref in refs:
        w = store.writer(ref)
        w.write(b"data")
        w.close()
    assert sorted(os.listdir(root / "ingest")) == sorted(_key(r) for r in refs)
    assert sorted(os.listdir(tmp_path)) == ["deep"]
    assert sorted(os.listdir(tmp_path / "deep")) == ["c"]
    assert {s.ref for s in store.list_statuses()} == set(refs)


def _ingest(root: Path, ref: str) -> Path:
    return root / "ingest" / _key(ref)


def _half_write(store: LocalContentStore, ref: str, data: bytes, n: int, total: int | None = None) -> None:
    w = store.writer(ref, total=total)
    w.write(data[:n])
    w.close()


@pytest.mark.parametrize(
    "damage",
    ["missing-data", "ref-mismatch", "longer-than-total", "garbage-total", "missing-status", "missing-started-at",
     "empty-dir", "garbage-expected", "garbage-status"],
)
def test_damaged_ingest_is_discarded(store: LocalContentStore, root: Path, damage: str) -> None:
    data, d = make_content(5000)
    _half_write(store, "dmg", data, 2000, total=5000)
    p = _ingest(root, "dmg")
    status = json.loads((p / "status").read_text())

    def edit(**changes: object) -> None:
        (p / "status").write_text(json.dumps({k: v for k, v in {**status, **changes}.items() if v is not None}))

    if damage == "missing-data":
        (p / "data").unlink()
    elif damage == "ref-mismatch":
        edit(ref="some other ref")
    elif damage == "longer-than-total":
        (p / "data").write_bytes(b"z" * 6000)
    elif damage == "garbage-total":
        edit(total="12ab")
    elif damage == "missing-status":
        (p / "status").unlink()
    elif damage == "missing-started-at":
        edit(started_at=None)
    elif damage == "empty-dir":
        for f in p.iterdir():
            f.unlink()
    elif damage == "garbage-expected":
        edit(expected="sha256:nope")
    elif damage == "garbage-status":
        (p / "status").write_text('{"ref": "dmg", ')
    w = store.writer("dmg", total=5000, expected=d)
    assert w.status().offset == 0, "a damaged ingest starts afresh"
    w.write(data)
    w.commit(5000, d)
    assert (root / "blobs" / "sha256" / d.hex).read_bytes() == data


def test_changed_declaration_restarts_ingest(store: LocalContentStore) -> None:
    data, d = make_content(5000)
    _half_write(store, "decl", data, 1000, total=5000)
    w = store.writer("decl", total=4000)
    assert w.status().offset == 0 and w.status().total == 4000
    w.close()
    _, other = make_content(10)
    w = store.writer("decl", expected=other)
    w.write(b"abc")
    w.close()
    w = store.writer("decl", expected=d)
    assert w.status().offset == 0 and w.status().expected == d
    w.close()


def test_reopen_without_declarations_keeps_data_drops_them(store: LocalContentStore) -> None:
    data, d = make_content(5000)
    _half_write(store, "undeclared", data, 1000)
    w = store.writer("undeclared", total=5000, expected=d)
    assert (w.status().offset, w.status().total, w.status().expected) == (1000, 5000, d)
    w.close()
    w = store.writer("undeclared")
    assert (w.status().offset, w.status().total, w.status().expected) == (1000, 0, None)
    w.write(b"anything")  # no longer bound to the earlier declarations
    w.commit(0, None)


def test_interrupted_commit_leaves_blob_intact(store: LocalContentStore, root: Path) -> None:
    """A crash between linking the blob and removing the ingest leaves both; the blob must survive."""
    data, d = make_content(3000)
    write_blob(store, "done", io.BytesIO(data), 3000, d)
    p = _ingest(root, "done")
    p.mkdir()
    (p / "status").write_text(json.dumps({"ref": "done", "started_at": "2024-01-01T00:00:00+00:00"}))
    os.link(root / "blobs" / "sha256" / d.hex, p / "data")
    w = store.writer("done")
    assert w.status().offset == 0
    w.write(b"new content")
    w.commit(0, None)
    assert (root / "blobs" / "sha256" / d.hex).read_bytes() == data


def test_stray_files_in_blobs_are_not_listed(store: LocalContentStore, root: Path) -> None:
    data, d = make_content(10)
    write_blob(store, "x", io.BytesIO(data), 10, d)
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"junk")
    (root / "blobs" / "md5").mkdir()
    (root / "blobs" / "md5" / ("a" * 32)).write_bytes(b"junk")
    seen: list[Info] = []
    store.walk(seen.append)
    assert [i.digest for i in seen] == [d]


def test_lock_is_per_root(tmp_path: Path) -> None:
    a = LocalContentStore(tmp_path / "a")
    b = LocalContentStore(tmp_path / "b")
    wa = a.writer("same")
    wb = b.writer("same")
    wa.close()
    wb.close()


def test_two_instances_same_root_share_the_lock(root: Path) -> None:
    w = LocalContentStore(root).writer("shared")
    with pytest.raises(UnavailableError, match="locked"):
        LocalContentStore(root).writer("shared")
    w.close()


def test_already_exists_removes_ingest(store: LocalContentStore, root: Path) -> None:
    data, d = make_content(100)
    write_blob(store, "one", io.BytesIO(data), 100, d)
    w = store.writer("two")
    w.write(data)
    with pytest.raises(AlreadyExistsError):
        w.commit(100, None)
    assert not _ingest(root, "two").exists()


def test_abort_missing_and_status_missing(store: LocalContentStore) -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        store.abort("nope")
    with pytest.raises(NotFoundError, match="'nope'"):
        store.status("nope")


def test_writeback_disabled_and_no_fsync(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "c", fsync=False, writeback_bytes=0)
    data, d = make_content(3 << 20)
    write_blob(store, "fast", io.BytesIO(data), len(data), d)
    assert (tmp_path / "c" / "blobs" / "sha256" / d.hex).read_bytes() == data


def test_plugin_registration(tmp_path: Path) -> None:
    from hoist.plugin import InitContext
    from hoist_content_local import plugin

    regs = []
    plugin.hoist_register_plugins(regs.append)
    (reg,) = regs
    assert reg.uri == "hoist.content.v1.local"
    assert reg.requires == ()
    cfg = reg.config(fsync=False, writeback_mib=0, direct_write_mib=0)
    ic = InitContext(registration=reg, config=cfg, root=tmp_path / "r", state=tmp_path / "s", lookup=lambda t: [])
    store = reg.init(ic)
    assert isinstance(store, LocalContentStore) and store.root == tmp_path / "r"
    assert (store.fsync, store.writeback_bytes, store.direct_bytes) == (False, 0, 0)
    default = reg.init(InitContext(registration=reg, config=None, root=tmp_path / "r2", state=tmp_path / "s", lookup=lambda t: []))
    assert (default.fsync, default.writeback_bytes, default.direct_bytes) == (True, 8 << 20, 8 << 20)
    with pytest.raises(ValueError, match="writeback_mib"):
        reg.config(writeback_mib=-1)
    with pytest.raises(ValueError, match="direct_write_mib"):
        reg.config(direct_write_mib=-8)


def test_a_finished_ingest_left_behind_is_removed_by_the_next_writer_of_its_blob(tmp_path):
    # As a writer killed between publishing its blob and removing its ingest leaves things.
    store = LocalContentStore(tmp_path / "content")
    data = b"finished" * 1000
    dgst = Digest.from_bytes(data)
    w = store.writer("layer-x", total=len(data), expected=dgst)
    w.write(data)
    w.close()
    write_blob(store, "another-ref", io.BytesIO(data), len(data), dgst)
    assert [st.ref for st in store.list_statuses()] == ["layer-x"]
    with pytest.raises(AlreadyExistsError, match=f"content {dgst}: already exists"):
        store.writer("layer-x", total=len(data), expected=dgst)
    assert store.list_statuses() == []
    assert store.info(dgst).size == len(data)


MiB = 1 << 20


def test_large_blob_is_written_around_the_page_cache(root: Path) -> None:
    store = LocalContentStore(root)  # fsync on, direct writes above 8 MiB
    data, d = make_content(9 * MiB + 12345)
    w = store.writer("big", total=len(data), expected=d)
    ingest = root / "ingest" / _key("big") / "data"
    assert _direct_fds(ingest) == 1
    step = 1_000_003  # odd-sized writes: buffers fill across calls
    for i in range(0, len(data), step):
        w.write(data[i:i + step])
    assert w.status().offset == len(data)
    w.commit(len(data), d)
    assert _direct_fds(ingest) == 0
    with store.reader_at(Descriptor(media_type="x", digest=d, size=len(data))) as ra:
        assert ra.read_at(0, len(data)) == data


def test_small_blob_or_no_fsync_is_written_normally(root: Path, tmp_path: Path) -> None:
    small = LocalContentStore(root)
    data, d = make_content(MiB)
    w = small.writer("small", total=len(data), expected=d)
    assert _direct_fds(root / "ingest" / _key("small") / "data") == 0
    w.write(data)
    w.commit(len(data), d)
    loose = LocalContentStore(tmp_path / "nofsync", fsync=False)
    big, bd = make_content(9 * MiB)
    w = loose.writer("big", total=len(big), expected=bd)
    assert _direct_fds(tmp_path / "nofsync" / "ingest" / _key("big") / "data") == 0
    w.write(big)
    w.commit(len(big), bd)
    off = LocalContentStore(tmp_path / "off", direct_bytes=0)
    w = off.writer("big", total=len(big), expected=bd)
    assert _direct_fds(tmp_path / "off" / "ingest" / _key("big") / "data") == 0
    w.close()


def test_direct_ingest_closed_midway_resumes_at_every_byte_written(root: Path) -> None:
    store = LocalContentStore(root, direct_bytes=1)
    data, d = make_content(5 * MiB + 777)
    w = store.writer("resume", total=len(data), expected=d)
    w.write(data[:4 * MiB + 100])  # one full buffer on its way to disk, 100 bytes gathered
    w.close()
    assert (root / "ingest" / _key("resume") / "data").stat().st_size == 4 * MiB + 100
    w = store.writer("resume", total=len(data), expected=d)
    assert w.status().offset == 4 * MiB + 100
    assert _direct_fds(root / "ingest" / _key("resume") / "data") == 0  # not at a page boundary: normal writes
    w.write(data[4 * MiB + 100:])
    w.commit(len(data), d)
    assert store.info(d).size == len(data)


def test_direct_ingest_truncated_starts_over(root: Path) -> None:
    store = LocalContentStore(root, direct_bytes=1)
    data, d = make_content(6 * MiB)
    w = store.writer("again", total=len(data), expected=d)
    w.write(os.urandom(5 * MiB))
    w.truncate(0)
    w.write(data)
    w.commit(len(data), d)
    with store.reader_at(Descriptor(media_type="x", digest=d, size=len(data))) as ra:
        assert hashlib.sha256(ra.read_at(0, len(data))).hexdigest() == d.hex


def test_a_file_system_without_direct_writes_is_written_normally(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refusing_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if flags & _O_DIRECT:  # as tmpfs before Linux 6.6, or FUSE file systems, answer
            raise OSError(22, "Invalid argument", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    store = LocalContentStore(root, direct_bytes=1)
    data, d = make_content(5 * MiB + 1)
    w = store.writer("plain", total=len(data), expected=d)
    assert _direct_fds(root / "ingest" / _key("plain") / "data") == 0
    w.write(data)
    assert store.status("plain").offset == len(data)
    w.commit(len(data), d)
    assert store.info(d).size == len(data)


def test_a_failed_direct_write_keeps_only_whole_buffers_and_resumes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalContentStore(root, direct_bytes=1)
    data, d = make_content(6 * MiB + 5)
    real_pwrite = os.pwrite

    def full_disk_at_2mib(fd, buf, offset):  # type: ignore[no-untyped-def]
        if offset == 2 * MiB:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", full_disk_at_2mib)
    w = store.writer("full", total=len(data), expected=d)
    with pytest.raises((OSError, FailedPreconditionError)):
        for i in range(0, len(data), 512 << 10):
            w.write(data[i:i + (512 << 10)])
    with pytest.raises(FailedPreconditionError, match=r"an earlier write failed \(No space left on device\); "
                                                      r"reopen the ref to resume"):
        w.write(b"more")
    w.close()
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert (root / "ingest" / _key("full") / "data").stat().st_size == 2 * MiB  # two whole buffers, no hole
    w = store.writer("full", total=len(data), expected=d)
    assert w.status().offset == 2 * MiB
    w.write(data[2 * MiB:])
    w.commit(len(data), d)
    assert store.info(d).size == len(data)


class _Trickle(io.RawIOBase):
    """A source handing out at most ``step`` bytes per read, as a socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
def test_write_from_fills_the_writer_in_odd_reads_and_resumes_after_close(root: Path, direct: bool) -> None:
    store = LocalContentStore(root, direct_bytes=1 if direct else 0)
    data, d = make_content(5 * MiB + 4321)
    src = _Trickle(data, 333_333)
    w = store.writer("from", total=len(data), expected=d)
    got = 0
    while got < 3 * MiB + 77:
        got += w.write_from(src.readinto, min(MiB, 3 * MiB + 77 - got))
    assert w.status().offset == got == 3 * MiB + 77
    w.close()
    assert (root / "ingest" / _key("from") / "data").stat().st_size == got
    write_blob(store, "from", _Trickle(data, 100_001), len(data), d)  # resumes at 3 MiB + 77
    with store.reader_at(Descriptor(media_type="x", digest=d, size=len(data))) as ra:
        assert ra.read_at(0, len(data)) == data


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
def test_write_from_past_the_total_keeps_nothing_of_that_read(root: Path, direct: bool) -> None:
    store = LocalContentStore(root, direct_bytes=1 if direct else 0)
    data, d = make_content(2 * MiB + 10)
    src = _Trickle(data + b"0123456789", MiB)
    w = store.writer("long", total=len(data), expected=d)
    assert w.write_from(src.readinto, MiB) == MiB
    assert w.write_from(src.readinto, MiB) == MiB
    with pytest.raises(OutOfRangeError, match=f"ingest 'long': write of 20 bytes at offset {2 * MiB} exceeds total {len(data)}"):
        w.write_from(src.readinto, MiB)
    assert w.status().offset == 2 * MiB
    w.write(data[2 * MiB:])
    w.commit(len(data), d)
    assert store.info(d).size == len(data)
    with pytest.raises(OutOfRangeError):  # through write_blob: a source longer than the size is refused
        write_blob(store, "long-again", io.BytesIO(data + b"x"), len(data), None)
