"""SQLite metadata store: namespaces, images, content records, leases and containers, in WAL mode.

One file (``meta.db``) under the plugin's root.  Writers take SQLite's write lock with a busy timeout, so a
database locked by another process makes Hoist wait rather than fail; a file that is not a readable
database is reported with its path and never replaced.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from hoist.content import Descriptor, Digest
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hoist.images.image import Image
from hoist.metadata.schema import MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from hoist.metadata.containers import ContainerStore
    from hoist.metadata.content import ContentBinding, NamespacedContentStore

DEFAULT_NAMESPACE = "default"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
_MAX_NAME = 4096


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _time(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value)


def validate_namespace(name: str) -> str:
    """Check a namespace name (containerd's rule: alphanumerics separated by ``.``, ``_`` or ``-``).

    :raises InvalidArgumentError: empty, too long or with other characters.
    """
    if not isinstance(name, str) or not name or len(name) > 76 or not _NAMESPACE_RE.match(name):
        raise InvalidArgumentError(f"namespace {name!r}: must be alphanumerics separated by '.', '_' or '-' (at most 76)")
    return name


def _validate_image_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME or "\x00" in name:
        raise InvalidArgumentError(f"image name {name!r}: must be a non-empty string")
    return name


def _labels_json(labels: Mapping[str, str] | None) -> str:
    labels = dict(labels or {})
    for k, v in labels.items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise InvalidArgumentError(f"label {k!r}: keys and values must be strings, keys non-empty")
    return json.dumps(labels, sort_keys=True)


@attrs.frozen(kw_only=True)
class Lease:
    """A lease: holds resources (content, snapshots, ingests) from garbage collection while it exists."""

    id: str
    labels: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    created_at: _dt.datetime


@attrs.frozen(kw_only=True)
class LeaseResource:
    """One resource a lease holds: ``type`` is ``content``, ``snapshots/<snapshotter>``, ``ingests``."""

    type: str
    id: str


class SQLiteMetadataStore:
    """The metadata store over one SQLite database file.

    Thread-safe: each thread gets its own connection.  Use :meth:`images`, :meth:`content`, :meth:`leases`
    and :meth:`containers` for views scoped to a namespace.

    :param path: the database file (created with the schema when missing).
    :param busy_timeout: seconds to wait for another process's write lock before ``UnavailableError``.
    :param content_sharing_policy: ``shared`` (a namespace may record a blob another namespace already
        stored without sending its bytes) or ``isolated`` (it must send them), as containerd's setting.
    :raises FailedPreconditionError: the file is not a usable database, or its schema is newer.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 60.0, content_sharing_policy: str = "shared") -> None:
        from hoist.metadata.content import SHARING_POLICIES

        if content_sharing_policy not in SHARING_POLICIES:
            raise InvalidArgumentError(
                f"content sharing policy {content_sharing_policy!r}: expected one of {', '.join(SHARING_POLICIES)}"
            )
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.content_sharing_policy = content_sharing_policy
        self._bindings: dict[int, ContentBinding] = {}
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Write transactions of this process's threads queue here: SQLite would make all but one of them
        # sleep-poll in its busy handler (1, 2, 5, 10 ms...) and waste the time the writer takes to finish.
        self._write_mu = threading.RLock()
        # Operations in flight; close() waits for them, since closing a connection another thread is using
        # crashes the sqlite3 module rather than raising.
        self._busy = threading.Condition()
        self._active = 0
        self._closing = False
        self._open_schema()

    # -- connections and transactions ---------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            with self._translate():
                c = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
                c.execute("PRAGMA foreign_keys = ON")
                c.execute("PRAGMA synchronous = FULL")
            self._local.conn = c
            self._local.durable = True
            with self._lock:
                self._conns.append(c)
        return c

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "locked" in msg or "busy" in msg:
                raise UnavailableError(
                    f"metadata database {self.path}: locked by another process for more than {self.busy_timeout:g}s"
                ) from e
            if "unable to open" in msg or "readonly" in msg or "disk I/O" in msg:
                raise FailedPreconditionError(f"metadata database {self.path}: {msg}") from e
            raise FailedPreconditionError(f"metadata database {self.path}: {msg}") from e
        except sqlite3.DatabaseError as e:
            raise FailedPreconditionError(
                f"metadata database {self.path}: corrupt or not a Hoist database ({e}); "
                "it was left untouched: restore it from a backup or move it away"
            ) from e

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        with self._busy:
            self._busy.wait_for(lambda: not self._closing)
            self._active += 1
        try:
            yield self._conn()
        finally:
            with self._busy:
                self._active -= 1
                self._busy.notify_all()

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """This thread's turn to write; waits as long as SQLite's busy timeout would, and fails the same way."""
        if not self._write_mu.acquire(timeout=max(0.0, min(float(self.busy_timeout), threading.TIMEOUT_MAX))):
            raise UnavailableError(
                f"metadata database {self.path}: locked by another process for more than {self.busy_timeout:g}s"
            )
        try:
            yield
        finally:
            self._write_mu.release()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction.

        ``durable=False`` skips the fsync of the write-ahead log at commit (SQLite's ``synchronous =
        NORMAL``): for records a later durable commit confirms anyway — the log is appended in order, so
        that commit's fsync makes every earlier one durable too.  After a crash before it, the database
        is consistent and simply lacks those records.
        """
        with self._using() as c, self._write_turn(), self._translate():
            # The setting belongs to this thread's connection and stays until a write needs the other one:
            # a run of non-durable writes (a fetch recording blob after blob) switches once, not twice each.
            if self._local.durable != durable:
                c.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._local.durable = durable
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._using() as c, self._translate():
            yield c

    def _open_schema(self) -> None:
        # Processes opening a new database at once can meet SQLITE_BUSY that SQLite reports without waiting
        # (switching to WAL, or recovering one another's WAL): try again until the busy timeout.
        import time

        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                self._migrate()
                return
            except UnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
                self.close()
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _migrate(self) -> None:
        with self._using() as c, self._translate():
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise FailedPreconditionError(f"metadata database {self.path}: cannot enable WAL mode (got {mode})")
        with self._write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FailedPreconditionError(
                    f"metadata database {self.path}: schema version {version} is newer than this Hoist supports "
                    f"({SCHEMA_VERSION}); upgrade Hoist"
                )
            if version > 0:
                self._check_tables(c)
            elif c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise FailedPreconditionError(
                    f"metadata database {self.path}: not a Hoist metadata database (unknown tables, no schema version); "
                    "it was left untouched"
                )
            for i in range(version, SCHEMA_VERSION):
                for stmt in _statements(MIGRATIONS[i]):
                    c.execute(stmt)
            if version != SCHEMA_VERSION:
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_tables(self, c: sqlite3.Connection) -> None:
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "images" not in names or "namespaces" not in names:
            raise FailedPreconditionError(
                f"metadata database {self.path}: not a Hoist metadata database (tables missing); it was left untouched"
            )

    @property
    def schema_version(self) -> int:
        with self._read() as c:
            return int(c.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close every connection this store opened, once the operations in flight end (waits up to 30 s).

        An operation that starts while this runs waits for it, then opens a new connection.
        """
        with self._busy:
            self._closing = True
            try:
                self._busy.wait_for(lambda: self._active == 0, timeout=30)
                with self._lock:
                    conns, self._conns = self._conns, []
                for c in conns:
                    try:
                        c.close()
                    except sqlite3.Error:
                        pass
                self._local = threading.local()
            finally:
                self._closing = False
                self._busy.notify_all()

    # -- namespaces ---------------------------------------------------------------------------------

    def _ensure_namespace(self, c: sqlite3.Connection, ns: str) -> None:
        validate_namespace(ns)
        now = _now()
        c.execute(
            "INSERT OR IGNORE INTO namespaces (name, labels, created_at, updated_at) VALUES (?, '{}', ?, ?)",
            (ns, now, now),
        )

    def list_namespaces(self) -> list[str]:
        with self._read() as c:
            return [r[0] for r in c.execute("SELECT name FROM namespaces ORDER BY name")]

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """:raises AlreadyExistsError: the namespace exists."""
        validate_namespace(name)
        with self._write() as c:
            if c.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"namespace {name}: already exists")
            now = _now()
            c.execute("INSERT INTO namespaces VALUES (?, ?, ?, ?)", (name, _labels_json(labels), now, now))

    def namespace_labels(self, name: str) -> dict[str, str]:
        with self._read() as c:
            row = c.execute("SELECT labels FROM namespaces WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"namespace {name}: not found")
        return json.loads(row[0])

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        with self._write() as c:
            cur = c.execute("UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?", (_labels_json(labels), _now(), name))
            if cur.rowcount == 0:
                raise NotFoundError(f"namespace {name}: not found")

    def delete_namespace(self, name: str) -> None:
        """:raises FailedPreconditionError: the namespace still has images, content labels or leases."""
        with self._write() as c:
            if not c.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone():
                raise NotFoundError(f"namespace {name}: not found")
            for table in ("images", "content", "leases", "containers"):
                if c.execute(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)).fetchone():
                    raise FailedPreconditionError(f"namespace {name}: not empty: it still has {table}")
            c.execute("DELETE FROM namespaces WHERE name = ?", (name,))

    # -- views --------------------------------------------------------------------------------------

    def images(self, namespace: str = DEFAULT_NAMESPACE) -> ImageStore:
        """The images of ``namespace``."""
        return ImageStore(self, validate_namespace(namespace))

    def content_labels(self, namespace: str = DEFAULT_NAMESPACE) -> ContentLabelStore:
        """The labels of the blobs ``namespace`` records."""
        return ContentLabelStore(self, validate_namespace(namespace))

    def content_binding(self, raw: Any) -> ContentBinding:
        """The content store plugin ``raw`` bound to this database (one per store; see :mod:`hoist.metadata.content`)."""
        from hoist.metadata.content import ContentBinding

        with self._lock:
            found = self._bindings.get(id(raw))
            if found is None or found.raw is not raw:
                found = ContentBinding(self, raw, shared=self.content_sharing_policy == "shared")
                self._bindings[id(raw)] = found
        return found

    def content(self, raw: Any, namespace: str = DEFAULT_NAMESPACE, *, lease: str | None = None,
                hold_on_read: bool = False) -> NamespacedContentStore:
        """The content of ``namespace``: a :class:`hoist.content.Store` over its records of the blobs in ``raw``.

        :param raw: the ``hoist.content.v1`` store holding the bytes.
        :param lease: a lease of ``namespace`` holding what this view commits (see
            :meth:`hoist.metadata.content.ContentBinding.namespace`).
        """
        return self.content_binding(raw).namespace(namespace, lease=lease, hold_on_read=hold_on_read)

    def leases(self, namespace: str = DEFAULT_NAMESPACE) -> LeaseStore:
        """The leases of ``namespace``."""
        return LeaseStore(self, validate_namespace(namespace))

    def containers(self, namespace: str = DEFAULT_NAMESPACE) -> ContainerStore:
        """The containers of ``namespace``."""
        from hoist.metadata.containers import ContainerStore

        return ContainerStore(self, validate_namespace(namespace))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _image(row: sqlite3.Row | tuple) -> Image:
    name, target, labels, created, updated = row
    return Image(
        name=name,
        target=Descriptor.from_json(json.loads(target)),
        labels=json.loads(labels),
        created_at=_time(created),
        updated_at=_time(updated),
    )


_FILTER = re.compile(r'^(name|target\.digest|target\.mediatype|labels\.(?:"[^"]+"|[^=~!]+))(==|!=|~=)(.*)$')


def _filter(expr: str) -> Any:
    m = _FILTER.match(expr.strip())
    if not m:
        raise InvalidArgumentError(
            f"image filter {expr!r}: expected name|target.digest|target.mediatype|labels.<key> then ==, != or ~= and a value"
        )
    field, op, value = m.groups()
    value = value.strip('"')
    if op == "~=":
        try:
            rx = re.compile(value)
        except re.error as e:
            raise InvalidArgumentError(f"image filter {expr!r}: bad regular expression: {e}") from e

    def get(img: Image) -> str | None:
        if field == "name":
            return img.name
        if field == "target.digest":
            return str(img.target.digest)
        if field == "target.mediatype":
            return img.target.media_type
        return img.labels.get(field[len("labels."):].strip('"'))

    def pred(img: Image) -> bool:
        v = get(img)
        if op == "==":
            return v == value
        if op == "!=":
            return v != value
        return v is not None and rx.search(v) is not None

    return pred


class ImageStore:
    """Images of one namespace: name → target descriptor, labels, created/updated times."""

    def __init__(self, db: SQLiteMetadataStore, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def get(self, name: str) -> Image:
        """:raises NotFoundError: no image of that name."""
        with self.db._read() as c:
            row = c.execute(
                "SELECT name, target, labels, created_at, updated_at FROM images WHERE namespace = ? AND name = ?",
                (self.namespace, name),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"image {name!r}: not found")
        return _image(row)

    def list(self, *filters: str) -> list[Image]:
        """Images sorted by name; with ``filters`` (containerd syntax, e.g. ``name~=^busy``), those matching any."""
        preds = [_filter(f) for f in filters]
        with self.db._read() as c:
            rows = c.execute(
                "SELECT name, target, labels, created_at, updated_at FROM images WHERE namespace = ? ORDER BY name",
                (self.namespace,),
            ).fetchall()
        imgs = [_image(r) for r in rows]
        return [i for i in imgs if not preds or any(p(i) for p in preds)]

    def create(self, image: Image) -> Image:
        """Add ``image``.

        :raises AlreadyExistsError: the name is taken.
        """
        _validate_image_name(image.name)
        labels = _labels_json(image.labels)
        with self.db._write() as c:
            self.db._ensure_namespace(c, self.namespace)
            now = _now()
            try:
                c.execute(
                    "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.namespace, image.name, image.target.media_type, str(image.target.digest), image.target.size,
                     json.dumps(image.target.to_json(), sort_keys=True), labels, now, now),
                )
            except sqlite3.IntegrityError as e:
                raise AlreadyExistsError(f"image {image.name!r}: already exists") from e
        return attrs.evolve(image, created_at=_time(now), updated_at=_time(now))

    def update(self, image: Image, *fieldpaths: str) -> Image:
        """Replace the target and labels of ``image.name`` (or only ``target``, ``labels``, ``labels.<key>``).

        :raises NotFoundError: no image of that name.
        :raises InvalidArgumentError: an unknown field path.
        """
        with self.db._write() as c:
            row = c.execute(
                "SELECT name, target, labels, created_at, updated_at FROM images WHERE namespace = ? AND name = ?",
                (self.namespace, image.name),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"image {image.name!r}: not found")
            old = _image(row)
            target, labels = old.target, dict(old.labels)
            if not fieldpaths:
                target, labels = image.target, dict(image.labels)
            for fp in fieldpaths:
                if fp == "target":
                    target = image.target
                elif fp == "labels":
                    labels = dict(image.labels)
                elif fp.startswith("labels."):
                    key = fp[len("labels."):]
                    if key in image.labels:
                        labels[key] = image.labels[key]
                    else:
                        labels.pop(key, None)
                else:
                    raise InvalidArgumentError(f"image {image.name!r}: cannot update field {fp!r}")
            now = _now()
            c.execute(
                "UPDATE images SET media_type = ?, digest = ?, size = ?, target = ?, labels = ?, updated_at = ? "
                "WHERE namespace = ? AND name = ?",
                (target.media_type, str(target.digest), target.size, json.dumps(target.to_json(), sort_keys=True),
                 _labels_json(labels), now, self.namespace, image.name),
            )
        return Image(name=image.name, target=target, labels=labels, created_at=old.created_at, updated_at=_time(now))

    def put(self, image: Image) -> Image:
        """Create ``image`` or, when the name exists, point it at the new target and labels (keeps ``created_at``)."""
        _validate_image_name(image.name)
        try:
            return self.create(image)
        except AlreadyExistsError:
            return self.update(image)

    def delete(self, name: str) -> None:
        """:raises NotFoundError: no image of that name."""
        with self.db._write() as c:
            cur = c.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (self.namespace, name))
            if cur.rowcount == 0:
                raise NotFoundError(f"image {name!r}: not found")

    def by_digest(self, digest: Digest | str) -> list[Image]:
        """Images whose target is ``digest``."""
        with self.db._read() as c:
            rows = c.execute(
                "SELECT name, target, labels, created_at, updated_at FROM images WHERE namespace = ? AND digest = ? ORDER BY name",
                (self.namespace, str(Digest.parse(digest))),
            ).fetchall()
        return [_image(r) for r in rows]


class ContentLabelStore:
    """The labels of the blobs one namespace records (its content records: see :mod:`hoist.metadata.content`).

    Labels exist only on a record: a namespace labels the blobs it has.  Adding and removing records is
    the job of the namespace's content view (:meth:`SQLiteMetadataStore.content`).
    """

    def __init__(self, db: SQLiteMetadataStore, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def get(self, digest: Digest | str) -> dict[str, str]:
        """The labels of ``digest`` (empty when none were set, or the namespace has no record of it)."""
        with self.db._read() as c:
            row = c.execute(
                "SELECT labels FROM content WHERE namespace = ? AND digest = ?", (self.namespace, str(Digest.parse(digest)))
            ).fetchone()
        return json.loads(row[0]) if row else {}

    def set(self, digest: Digest | str, labels: Mapping[str, str], *fieldpaths: str) -> dict[str, str]:
        """Replace the labels (all, or only the ``labels.<key>`` paths given); returns the result.

        :raises NotFoundError: the namespace has no record of ``digest``.
        """
        dg = str(Digest.parse(digest))
        with self.db._write() as c:
            row = c.execute("SELECT labels FROM content WHERE namespace = ? AND digest = ?", (self.namespace, dg)).fetchone()
            if row is None:
                raise NotFoundError(f"content {dg}: not found")
            current = json.loads(row[0])
            if not fieldpaths or "labels" in fieldpaths:
                new = dict(labels)
            else:
                new = dict(current)
                for fp in fieldpaths:
                    if not fp.startswith("labels."):
                        raise InvalidArgumentError(f"content {dg}: cannot update field {fp!r}")
                    key = fp[len("labels."):]
                    if key in labels:
                        new[key] = labels[key]
                    else:
                        new.pop(key, None)
            c.execute(
                "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (_labels_json(new), _now(), self.namespace, dg),
            )
        return new

    def delete(self, digest: Digest | str) -> None:
        """Remove every label of ``digest`` (the record stays)."""
        with self.db._write() as c:
            c.execute("UPDATE content SET labels = '{}', updated_at = ? WHERE namespace = ? AND digest = ?",
                      (_now(), self.namespace, str(Digest.parse(digest))))

    def list(self) -> dict[str, dict[str, str]]:
        """``{digest: labels}`` of every blob the namespace records."""
        with self.db._read() as c:
            rows = c.execute("SELECT digest, labels FROM content WHERE namespace = ? ORDER BY digest", (self.namespace,))
            return {d: json.loads(lb) for d, lb in rows}


class LeaseStore:
    """Leases of one namespace and the resources each holds."""

    def __init__(self, db: SQLiteMetadataStore, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def create(self, id: str, labels: Mapping[str, str] | None = None) -> Lease:
        """:raises AlreadyExistsError: a lease with ``id`` exists."""
        if not id or not isinstance(id, str):
            raise InvalidArgumentError(f"lease id {id!r}: must be a non-empty string")
        with self.db._write() as c:
            self.db._ensure_namespace(c, self.namespace)
            now = _now()
            try:
                c.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (self.namespace, id, _labels_json(labels), now))
            except sqlite3.IntegrityError as e:
                raise AlreadyExistsError(f"lease {id}: already exists") from e
        return Lease(id=id, labels=dict(labels or {}), created_at=_time(now))

    def list(self) -> list[Lease]:
        with self.db._read() as c:
            rows = c.execute("SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY id", (self.namespace,)).fetchall()
        return [Lease(id=i, labels=json.loads(lb), created_at=_time(t)) for i, lb, t in rows]

    def delete(self, id: str) -> None:
        """Delete the lease and release its resources. :raises NotFoundError: no such lease."""
        with self.db._write() as c:
            cur = c.execute("DELETE FROM leases WHERE namespace = ? AND id = ?", (self.namespace, id))
            if cur.rowcount == 0:
                raise NotFoundError(f"lease {id}: not found")

    def add_resource(self, id: str, resource: LeaseResource) -> None:
        """:raises NotFoundError: no such lease."""
        with self.db._write() as c:
            if not c.execute("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (self.namespace, id)).fetchone():
                raise NotFoundError(f"lease {id}: not found")
            c.execute("INSERT OR IGNORE INTO lease_resources VALUES (?, ?, ?, ?)", (self.namespace, id, resource.type, resource.id))

    def delete_resource(self, id: str, resource: LeaseResource) -> None:
        with self.db._write() as c:
            c.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                (self.namespace, id, resource.type, resource.id),
            )

    def list_resources(self, id: str) -> list[LeaseResource]:
        with self.db._read() as c:
            if not c.execute("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (self.namespace, id)).fetchone():
                raise NotFoundError(f"lease {id}: not found")
            rows = c.execute(
                "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id", (self.namespace, id)
            ).fetchall()
        return [LeaseResource(type=t, id=i) for t, i in rows]
