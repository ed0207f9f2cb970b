"""Namespaced content: each namespace's records of the blobs in the one ``hoist.content.v1`` store.

A blob's bytes live once in the content store plugin; a namespace sees a blob only when the metadata
store holds that namespace's *record* of it (a row of ``content``: digest, size, labels, times), as
containerd's metadata content store does.  :class:`NamespacedContentStore` is that view: a complete
:class:`hoist.content.Store` whose ``info``, ``walk``, ``update``, ``delete`` and ``reader_at`` answer
from the namespace's records (``NotFoundError`` in a namespace without one, whoever else has the
blob), whose labels are per namespace, and whose writers record what they commit in their namespace.
Ingests are per namespace too: ref ``R`` of namespace ``N`` is the plugin's ingest ``N/R``.

Sharing (``content_sharing_policy``, containerd's setting): with ``shared`` (the default) a writer that
declares a digest whose bytes are already on disk, because another namespace has them, needs no bytes —
its status says it is complete (offset = size) and committing it records the blob; with ``isolated``
the bytes must be written again (and are verified) before the namespace gets its record.

Deleting removes the namespace's record; the bytes go with the last record, unless a live lease still
names them.  Commits, those deletions and garbage collection exclude each other across processes
through ``flock`` on ``content.lock`` beside the database: a blob never loses its bytes between being
linked on disk and being recorded.

A root written before records existed has blobs and no records: the first open adopts every such blob
into every namespace then known (and ``default``), with the labels the plugin kept — each namespace
keeps seeing what it saw, and garbage collection then trims each namespace to what its images, leases
and labels reach.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from hoist.content import (
    Descriptor,
    Digest,
    Info,
    ReaderAt,
    Status,
    WalkFunc,
    copy_reader_at,
    info_fields,
    status_fields,
    updated_labels,
    write_from_buffer,
)
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnsupportedError,
    hiding,
)
from hoist.filters import parse as parse_filters

if TYPE_CHECKING:
    from hoist.metadata.store import SQLiteMetadataStore

log = logging.getLogger("hoist.metadata.v1.sqlite")

SEEN_TTL = 0.25
"""Seconds a read reuses the finding that a namespace records a blob (see :meth:`ContentBinding.recorded`)."""
_SEEN_MAX = 4096
_VIEWS_MAX = 1024

LOCK_NAME = "content.lock"
"""The lock file beside the database that commits (shared) and collections (exclusive) take."""

SHARING_POLICIES = ("shared", "isolated")

_ADOPT_KEY = "content.adopt"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _time(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value)


def _info(digest: str | Digest, size: int, labels: str, created: str, updated: str) -> Info:
    return Info(digest=digest, size=size, labels=json.loads(labels), created_at=_time(created), updated_at=_time(updated))


@contextlib.contextmanager
def _flock(path: os.PathLike[str] | str, exclusive: bool) -> Iterator[None]:
    # One open file description per holder: flock then excludes threads of this process as well as others.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class ContentBinding:
    """The content store plugin bound to the metadata store: what every namespace's view shares.

    Get it with :meth:`SQLiteMetadataStore.content_binding`, which keeps one per content store.

    :param db: the metadata store.
    :param raw: the ``hoist.content.v1`` store holding the bytes.
    :param shared: containerd's ``shared`` sharing policy (else ``isolated``).
    """

    def __init__(self, db: SQLiteMetadataStore, raw: Any, *, shared: bool = True) -> None:
        self.db = db
        self.raw = raw
        self.shared = shared
        self.lock_path = db.path.with_name(LOCK_NAME)
        self._adopted = False
        self._adopt_mu = threading.Lock()
        # (namespace, digest) -> when a read last found the record: ctr reads a blob in thousands of small
        # calls, and one SQLite lookup per call is a large share of each call's cost.
        self._seen: dict[tuple[str, str], float] = {}
        self._seen_mu = threading.Lock()
        self._views: dict[tuple[str, str | None, bool], NamespacedContentStore] = {}

    def recorded(self, namespace: str, digest: Digest) -> bool:
        """Whether ``namespace`` records ``digest``, for a read.

        A positive answer is reused for :data:`SEEN_TTL` seconds.  Deletions through this binding (a view's
        ``delete``, garbage collection in this process) forget it at once; a record another process deletes
        may still be read for up to that long — its bytes, if gone, fail the read anyway.
        """
        key = (namespace, str(digest))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen < SEEN_TTL:
            return True
        with self.db._read() as c:
            found = c.execute("SELECT 1 FROM content WHERE namespace = ? AND digest = ?", key).fetchone() is not None
        with self._seen_mu:
            if found:
                if len(self._seen) >= _SEEN_MAX:
                    self._seen.clear()
                self._seen[key] = now
            else:
                self._seen.pop(key, None)
        return found

    def forget(self, digests: Iterable[Digest | str] | None = None) -> None:
        """Drop remembered records (of ``digests``, in every namespace; all of them with ``None``)."""
        with self._seen_mu:
            if digests is None:
                self._seen.clear()
                return
            gone = {str(d) for d in digests}
            for key in [k for k in self._seen if k[1] in gone]:
                del self._seen[key]

    def namespace(self, namespace: str, *, lease: str | None = None, hold_on_read: bool = False) -> NamespacedContentStore:
        """The content of ``namespace``.

        :param lease: a lease of ``namespace`` that holds every blob this view commits (and every blob it
            is told already exists), so garbage collection leaves them until the lease goes.
        :param hold_on_read: also hold, under ``lease``, each blob looked at through ``info`` or
            ``reader_at`` — for a client that will name what it saw (a fetch skipping blobs it has).
        """
        key = (namespace, lease or None, hold_on_read)
        view = self._views.get(key)
        if view is None:  # a view keeps no per-call state: one per namespace and lease serves every caller
            self.ensure_adopted()
            view = NamespacedContentStore(self, namespace, lease=lease, hold_on_read=hold_on_read)
            with self._seen_mu:
                if len(self._views) >= _VIEWS_MAX:  # lease ids are many and short-lived (ctr makes one per call)
                    self._views.clear()
                self._views[key] = view
        return view

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold ``content.lock``: shared while committing, exclusive while collecting or freeing bytes."""
        with _flock(self.lock_path, exclusive):
            yield

    # -- blobs from a root without records ----------------------------------------------------------

    def ensure_adopted(self) -> None:
        """Adopt the blobs of a root written before records existed, once (see the module docstring)."""
        if self._adopted:
            return
        with self._adopt_mu:
            if self._adopted:
                return
            if self._adopt_pending():
                n = self._adopt()
                if n:
                    log.info("content: adopted %d blobs written before content was namespaced", n)
            self._adopted = True

    def _adopt_pending(self) -> bool:
        with self.db._read() as c:
            row = c.execute("SELECT value FROM settings WHERE key = ?", (_ADOPT_KEY,)).fetchone()
        return row is not None and row[0] == "pending"

    def _adopt(self) -> int:
        from hoist.metadata.store import DEFAULT_NAMESPACE

        with self.locked(exclusive=True):
            infos: list[Info] = []
            self.raw.walk(infos.append)
            with self.db._write() as c:
                row = c.execute("SELECT value FROM settings WHERE key = ?", (_ADOPT_KEY,)).fetchone()
                if row is None or row[0] != "pending":
                    return 0  # another process did it meanwhile
                names = {r[0] for r in c.execute("SELECT name FROM namespaces")} | {DEFAULT_NAMESPACE}
                for ns in sorted(names):
                    self.db._ensure_namespace(c, ns)
                    c.executemany(
                        "INSERT INTO content (namespace, digest, labels, created_at, updated_at, size) "
                        "VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (namespace, digest) DO UPDATE SET size = excluded.size WHERE content.size < 0",
                        [(ns, str(i.digest), json.dumps(dict(i.labels), sort_keys=True), i.created_at.isoformat(),
                          i.updated_at.isoformat(), i.size) for i in infos],
                    )
                c.execute("DELETE FROM content WHERE size < 0")  # labels once set on blobs that are gone
                c.execute("UPDATE settings SET value = 'done' WHERE key = ?", (_ADOPT_KEY,))
        return len(infos)

    # -- what garbage collection needs --------------------------------------------------------------

    def records(self) -> dict[str, dict[Digest, Info]]:
        """Every namespace's records: ``{namespace: {digest: info}}``."""
        out: dict[str, dict[Digest, Info]] = {}
        with self.db._read() as c:
            rows = c.execute("SELECT namespace, digest, size, labels, created_at, updated_at FROM content").fetchall()
        for ns, dg, size, labels, created, updated in rows:
            try:
                info = _info(dg, size, labels, created, updated)
            except (HoistError, ValueError):
                continue
            out.setdefault(ns, {})[info.digest] = info
        return out

    def delete_records(self, records: Iterable[tuple[str, Digest]]) -> None:
        """Remove these ``(namespace, digest)`` records (missing ones are ignored)."""
        rows = [(ns, str(d)) for ns, d in records]
        if not rows:
            return
        self.forget(d for _ns, d in rows)
        with self.db._write() as c:
            c.executemany("DELETE FROM content WHERE namespace = ? AND digest = ?", rows)
        self.forget(d for _ns, d in rows)  # again: a read between the first forget and the commit saw them

    def release(self, digest: Digest) -> bool:
        """Remove the bytes of ``digest`` if no namespace records it and no live lease holds it.

        Returns whether the bytes were removed.
        """
        from hoist.gc import lease_expired

        with self.locked(exclusive=True):
            with self.db._read() as c:
                if c.execute("SELECT 1 FROM content WHERE digest = ? LIMIT 1", (str(digest),)).fetchone():
                    return False
                held = c.execute(
                    "SELECT l.labels FROM lease_resources r JOIN leases l ON l.namespace = r.namespace AND l.id = r.lease "
                    "WHERE r.type = 'content' AND r.id = ?",
                    (str(digest),),
                ).fetchall()
            if any(not lease_expired(json.loads(lb)) for (lb,) in held):
                return False
            try:
                self.raw.delete(digest)
            except NotFoundError:
                return False
            return True

    def raw_size(self, digest: Digest) -> int | None:
        """The size of the bytes of ``digest`` on disk, or ``None`` when there are none."""
        try:
            return int(self.raw.info(digest).size)
        except NotFoundError:
            return None


class NamespacedContentStore:
    """One namespace's content: a :class:`hoist.content.Store` over its records (see the module docstring).

    Get one from :meth:`SQLiteMetadataStore.content` (or :meth:`ContentBinding.namespace`).
    """

    def __init__(self, binding: ContentBinding, namespace: str, *, lease: str | None = None,
                 hold_on_read: bool = False) -> None:
        from hoist.metadata.store import validate_namespace

        self.binding = binding
        self.namespace = validate_namespace(namespace)
        self.lease = lease or None
        self.hold_on_read = hold_on_read
        self._prefix = namespace + "/"
        self._hide = re.compile(rf"(?<=['\"]){re.escape(self._prefix)}")
        self._held: set[Digest] = set()
        self._held_mu = threading.Lock()

    def __repr__(self) -> str:
        return f"NamespacedContentStore({self.binding.raw!r}, namespace={self.namespace!r})"

    @property
    def raw(self) -> Any:
        """The plugin's store, shared by every namespace."""
        return self.binding.raw

    @property
    def _db(self) -> SQLiteMetadataStore:
        return self.binding.db

    def _bref(self, ref: str) -> str:
        if not isinstance(ref, str) or ref == "":
            raise InvalidArgumentError(f"invalid ingest ref {ref!r}: must be a non-empty string")
        return self._prefix + ref

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Show the caller's refs in error messages, without the namespace prefix of the plugin's ingest."""
        return hiding(self._hide)

    # -- records ------------------------------------------------------------------------------------

    def _row(self, digest: Digest) -> tuple | None:
        with self._db._read() as c:
            return c.execute(
                "SELECT size, labels, created_at, updated_at FROM content WHERE namespace = ? AND digest = ?",
                (self.namespace, str(digest)),
            ).fetchone()

    def _exists(self, digest: Digest) -> bool:
        with self._db._read() as c:
            return c.execute(
                "SELECT 1 FROM content WHERE namespace = ? AND digest = ?", (self.namespace, str(digest))
            ).fetchone() is not None

    def _hold(self, c: sqlite3.Connection, digest: Digest) -> None:
        """Add ``digest`` to this view's lease, in the caller's transaction."""
        try:
            # the foreign key to ``leases`` is checked at once: a missing lease fails the insert
            c.execute("INSERT OR IGNORE INTO lease_resources VALUES (?, ?, 'content', ?)",
                      (self.namespace, self.lease, str(digest)))
        except sqlite3.IntegrityError:
            raise NotFoundError(f"lease {self.lease}: not found") from None

    def _hold_once(self, digest: Digest) -> None:
        with self._held_mu:
            if digest in self._held:
                return
        # what a lease holds is confirmed durably when the lease is deleted (see _record)
        with self._db._write(durable=False) as c:
            self._hold(c, digest)
        with self._held_mu:
            self._held.add(digest)

    def _record(self, digest: Digest, size: int, labels: Mapping[str, str] | None) -> None:
        """Record a committed blob in this namespace (and its lease).

        :raises AlreadyExistsError: the namespace already has it (the lease holds it all the same).
        """
        from hoist.metadata.store import _labels_json

        text = _labels_json(labels)
        now = _now().isoformat()
        # Under a lease the record need not be fsynced now: whatever the lease is for ends in a durable commit
        # (naming the image, deleting the lease) that makes it durable too; lost in a crash before that, the
        # blob is merely unrecorded (GC removes its bytes, or the next fetch records it again).  Without a
        # lease, the commit is the last word and is made durable at once.
        with self._db._write(durable=not self.lease) as c:
            if self.lease:
                # First, so a lease gone meanwhile fails as such; while it exists, so does its namespace.
                self._hold(c, digest)
            else:
                self._db._ensure_namespace(c, self.namespace)
            cur = c.execute(
                "INSERT INTO content (namespace, digest, labels, created_at, updated_at, size) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, digest) DO NOTHING",
                (self.namespace, str(digest), text, now, now, size),
            )
            existed = cur.rowcount == 0
        if self.lease:
            with self._held_mu:
                self._held.add(digest)
        if existed:
            raise AlreadyExistsError(f"content {digest}: already exists")

    # -- Provider / Manager ---------------------------------------------------------------------------

    def info(self, digest: Digest | str) -> Info:
        """The namespace's record of ``digest``.

        :raises NotFoundError: this namespace has no record of it.
        """
        d = Digest.parse(digest)
        row = self._row(d)
        if row is None:
            raise NotFoundError(f"content {d}: not found")
        if self.hold_on_read and self.lease:
            self._hold_once(d)
        return _info(d, *row)

    def reader_at(self, desc: Descriptor) -> ReaderAt:
        """Open the blob ``desc.digest`` (one indexed lookup of the namespace's record, then the plugin's reader).

        :raises NotFoundError: this namespace has no record of it, or its bytes are gone.
        """
        d = Digest.parse(desc.digest)
        if not self.binding.recorded(self.namespace, d):
            raise NotFoundError(f"content {d}: not found")
        if self.hold_on_read and self.lease:
            self._hold_once(d)
        return self.raw.reader_at(desc)

    def update(self, info: Info, fieldpaths: tuple[str, ...] = ()) -> Info:
        """Replace the namespace's labels of ``info.digest``: all of them, or only the ``labels.<key>`` paths given.

        A listed key missing from ``info.labels`` (or with an empty value) is removed.

        :raises NotFoundError: this namespace has no record of the blob.
        :raises InvalidArgumentError: a field path other than ``labels`` or ``labels.<key>``.
        """
        from hoist.metadata.store import _labels_json

        d = Digest.parse(info.digest)
        paths = tuple(fieldpaths)
        updated_labels(d, {}, {}, paths)  # a bad field path fails before the transaction
        with self._db._write() as c:
            row = c.execute(
                "SELECT size, labels, created_at FROM content WHERE namespace = ? AND digest = ?", (self.namespace, str(d))
            ).fetchone()
            if row is None:
                raise NotFoundError(f"content {d}: not found")
            size, current, created = row
            labels = updated_labels(d, json.loads(current), info.labels, paths)
            now = _now()
            c.execute(
                "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (_labels_json(labels), now.isoformat(), self.namespace, str(d)),
            )
        return Info(digest=d, size=size, created_at=_time(created), updated_at=now, labels=labels)

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        """Call ``fn(info)`` for each blob this namespace records that matches any of ``filters``, by digest.

        :raises InvalidArgumentError: a malformed filter.
        """
        flt = parse_filters(*filters)
        with self._db._read() as c:
            rows = c.execute(
                "SELECT digest, size, labels, created_at, updated_at FROM content WHERE namespace = ? ORDER BY digest",
                (self.namespace,),
            ).fetchall()
        for row in rows:
            try:
                info = _info(*row)
            except (HoistError, ValueError):
                continue
            if flt.match(info_fields(info)):
                fn(info)

    def delete(self, digest: Digest | str) -> None:
        """Remove this namespace's record of ``digest`` (and its place in this view's lease).

        The bytes go too when no namespace records them and no other live lease holds them.

        :raises NotFoundError: this namespace has no record of it.
        """
        d = Digest.parse(digest)
        self.binding.forget((d,))
        with self._db._write() as c:
            cur = c.execute("DELETE FROM content WHERE namespace = ? AND digest = ?", (self.namespace, str(d)))
            if cur.rowcount == 0:
                raise NotFoundError(f"content {d}: not found")
            if self.lease:  # this view's lease stops holding it too (other leases still do)
                c.execute("DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = 'content' AND id = ?",
                          (self.namespace, self.lease, str(d)))
        self.binding.forget((d,))  # again: a read between the first forget and the commit saw it
        if self.lease:
            with self._held_mu:
                self._held.discard(d)
        self.binding.release(d)

    # -- Ingester / IngestManager ---------------------------------------------------------------------

    def writer(self, ref: str, total: int | None = None, expected: Digest | str | None = None) -> NamespacedWriter:
        """Open ingest ``ref`` of this namespace, resuming it at its offset.

        With ``expected`` already recorded here: ``AlreadyExistsError`` (and the lease holds it).  With
        ``expected`` on disk for another namespace and the ``shared`` policy: a writer that is already
        complete (offset = size), whose commit records the blob here.

        :raises UnavailableError: another writer holds ``ref`` in this namespace.
        :raises AlreadyExistsError: this namespace already has ``expected``.
        """
        bref = self._bref(ref)
        want = Digest.parse(expected) if expected is not None else None
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
            raise InvalidArgumentError(f"ingest {ref!r}: invalid total {total!r}")
        if want is not None and self._exists(want):
            if self.lease:
                self._hold_once(want)
            raise AlreadyExistsError(f"content {want}: already exists")
        with self._errors():
            try:
                return NamespacedWriter(self, ref, self.raw.writer(bref, total, want), declared=want, total=total or 0)
            except AlreadyExistsError:
                if want is None:
                    raise
            # the bytes are on disk, for another namespace
            if self.binding.shared:
                size = self.binding.raw_size(want)
                if size is not None and (not total or total == size):
                    if self.lease:  # the lease keeps the bytes until the commit records them here
                        self._hold_once(want)
                    return NamespacedWriter(self, ref, None, declared=want, total=size)
            return NamespacedWriter(self, ref, self.raw.writer(bref, total, None), declared=want, total=total or 0)

    def status(self, ref: str) -> Status:
        """The state of this namespace's ingest ``ref``.

        :raises NotFoundError: no such ingest here.
        """
        bref = self._bref(ref)
        with self._errors():
            st = self.raw.status(bref)
        return attrs.evolve(st, ref=ref)

    def list_statuses(self, *filters: str) -> list[Status]:
        """This namespace's ingests matching any of ``filters`` (fields ``ref``, ``expected``, ``total``), by ref.

        :raises InvalidArgumentError: a malformed filter.
        """
        flt = parse_filters(*filters)
        out = []
        for st in self.raw.list_statuses():
            if not st.ref.startswith(self._prefix):
                continue
            mine = attrs.evolve(st, ref=st.ref[len(self._prefix):])
            if flt.match(status_fields(mine)):
                out.append(mine)
        return sorted(out, key=lambda s: s.ref)

    def abort(self, ref: str) -> None:
        """Discard this namespace's ingest ``ref``.

        :raises NotFoundError: no such ingest here.
        :raises UnavailableError: a writer holds it.
        """
        bref = self._bref(ref)
        with self._errors():
            self.raw.abort(bref)

    # -- commit -------------------------------------------------------------------------------------

    def _commit(self, w: NamespacedWriter, size: int, expected: Digest | str | None,
                labels: Mapping[str, str] | None) -> None:
        want = Digest.parse(expected) if expected is not None else None
        if labels:
            from hoist.metadata.store import _labels_json

            _labels_json(labels)  # bad labels fail before anything is published
        with self.binding.locked(exclusive=False):
            if w._raw is None:
                declared = w._declared
                assert declared is not None
                if size and size > 0 and size != w._total:
                    raise FailedPreconditionError(f"ingest {w.ref!r}: size mismatch: expected {size}, got {w._total}")
                if want is not None and want != declared:
                    raise FailedPreconditionError(f"ingest {w.ref!r}: digest mismatch: expected {want}, got {declared}")
                if self.binding.raw_size(declared) is None:
                    raise FailedPreconditionError(
                        f"content {declared}: removed from the store while ingest {w.ref!r} was open; write it again"
                    )
                digest, n = declared, w._total
            else:
                raw = w._raw
                n = raw.status().offset
                check = want or w._declared
                computed = raw.digest()
                try:
                    with self._errors():
                        raw.commit(size, check, None)
                except AlreadyExistsError:
                    pass  # verified, and the bytes were already there
                digest = check or computed
            w._committed = True
            self._record(digest, n, labels)


class NamespacedWriter:
    """An open ingest of one namespace: the plugin's writer, or none while the blob is shared (see ``writer``)."""

    def __init__(self, store: NamespacedContentStore, ref: str, raw: Any, *, declared: Digest | None, total: int) -> None:
        self._store = store
        self.ref = ref
        self._raw = raw
        self._declared = declared
        self._total = total
        self._started = _now()
        self._committed = False
        self._scratch = bytearray()  # write_from's buffer when the plugin writer has none

    def __enter__(self) -> NamespacedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._committed:
            raise FailedPreconditionError(f"ingest {self.ref!r}: writer is closed")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check()
        if self._raw is None:
            if not len(data):
                return 0
            self._unshare(copy=True)
        with self._store._errors():
            return self._raw.write(data)

    def write_from(self, readinto: Callable[[memoryview], int | None], limit: int) -> int:
        """Append up to ``limit`` bytes read by ``readinto``; into the plugin writer's own buffer where it offers one."""
        self._check()
        fill = getattr(self._raw, "write_from", None)
        if fill is None:  # a plugin writer without buffers of its own (or a shared blob, see write)
            if len(self._scratch) < limit:
                self._scratch = bytearray(limit)
            return write_from_buffer(self.write, readinto, self._scratch, limit)
        with self._store._errors():
            return fill(readinto, limit)

    def digest(self) -> Digest:
        if self._raw is None:
            assert self._declared is not None
            return self._declared
        return self._raw.digest()

    def status(self) -> Status:
        if self._raw is None:
            return Status(ref=self.ref, offset=self._total, total=self._total, expected=self._declared,
                          started_at=self._started, updated_at=self._started)
        st = self._raw.status()
        return attrs.evolve(st, ref=self.ref, expected=st.expected or self._declared)

    def truncate(self, size: int) -> None:
        """Discard written data; only ``0`` is supported (a shared writer then takes the bytes as any other)."""
        self._check()
        if self._raw is None:
            if size != 0:
                raise UnsupportedError(f"ingest {self.ref!r}: truncate to {size}: only 0 is supported")
            self._unshare(copy=False)
            return
        with self._store._errors():
            self._raw.truncate(size)

    def _unshare(self, *, copy: bool) -> None:
        """Become an ordinary ingest: from the shared blob's bytes (``copy``) or from nothing."""
        store = self._store
        with store._errors():
            w = store.raw.writer(store._bref(self.ref), self._total or None, None)
        try:
            if w.status().offset:
                w.truncate(0)
            if copy and self._total:
                assert self._declared is not None
                copy_reader_at(store.raw, Descriptor(media_type="", digest=self._declared, size=self._total), w.write)
        except BaseException:
            w.close()
            raise
        self._raw = w

    def commit(self, size: int, expected: Digest | str | None, labels: Mapping[str, str] | None = None) -> None:
        """Verify and publish the blob, and record it in the namespace; the ref is released whatever happens.

        :raises FailedPreconditionError: size or digest disagree with what was written.
        :raises AlreadyExistsError: the namespace already records the blob.
        """
        self._check()
        self._store._commit(self, size, expected, labels)

    def close(self) -> None:
        """Release the ref, keeping the ingest for a later writer to resume."""
        if self._raw is not None:
            self._raw.close()


__all__ = ["LOCK_NAME", "SHARING_POLICIES", "ContentBinding", "NamespacedContentStore", "NamespacedWriter"]
