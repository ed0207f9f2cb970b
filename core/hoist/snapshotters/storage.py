"""A snapshotter's own metastore (SQLite under its plugin root) and the directory-snapshotter base class.

As in containerd, each snapshotter keeps its own metadata: one row per snapshot with a numeric ID
that names its directory (``snapshots/<id>``) and never changes, so a commit only renames the key.
Namespaces are a caller's concern: keys arrive already prefixed (``default/<key>``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from hoist.snapshots import Info, Kind, Mount, Usage, WalkFunc, compile_filters

log = logging.getLogger("hoist.snapshotters")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id),
    kind TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    inodes INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""


@attrs.frozen(kw_only=True)
class Snapshot:
    """A snapshot's storage facts: its ID, kind and the IDs of its parents (nearest first)."""

    id: int
    kind: Kind
    parent_ids: tuple[int, ...] = ()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


class MetaStore:
    """Snapshot metadata in SQLite (WAL), safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction (``BEGIN IMMEDIATE`` when writing); rolled back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(db: sqlite3.Connection, key: str) -> tuple:
        row = db.execute(
            "SELECT s.id, s.key, s.kind, s.labels, s.created, s.updated, s.inodes, s.size, p.key, s.parent_id "
            "FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id WHERE s.key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"snapshot {key}: not found")
        return row

    @staticmethod
    def _info(row: tuple) -> Info:
        return Info(
            kind=Kind(row[2]),
            name=row[1],
            parent=row[8] or "",
            labels=json.loads(row[3]),
            created=_dt.datetime.fromisoformat(row[4]),
            updated=_dt.datetime.fromisoformat(row[5]),
        )

    @staticmethod
    def _parents(db: sqlite3.Connection, parent_id: int | None) -> tuple[int, ...]:
        out = []
        while parent_id is not None:
            out.append(parent_id)
            (parent_id,) = db.execute("SELECT parent_id FROM snapshots WHERE id = ?", (parent_id,)).fetchone()
        return tuple(out)

    def stat(self, key: str) -> Info:
        with self._lock:
            return self._info(self._row(self._db, key))

    def snapshot(self, key: str) -> Snapshot:
        """Storage facts of ``key`` (ID, kind, parent IDs)."""
        with self.transaction(write=False) as db:
            row = self._row(db, key)
            return Snapshot(id=row[0], kind=Kind(row[2]), parent_ids=self._parents(db, row[9]))

    def usage(self, key: str) -> tuple[Snapshot, Usage]:
        with self.transaction(write=False) as db:
            row = self._row(db, key)
            return Snapshot(id=row[0], kind=Kind(row[2])), Usage(inodes=row[6], size=row[7])

    def parent_snapshot(self, db: sqlite3.Connection, key: str, parent: str) -> tuple[int | None, tuple[int, ...]]:
        """The parent's ID and its chain, checking it is committed."""
        if not parent:
            return None, ()
        try:
            row = self._row(db, parent)
        except NotFoundError:
            raise NotFoundError(f"snapshot {key}: parent {parent}: not found") from None
        if row[2] != Kind.COMMITTED.value:
            raise InvalidArgumentError(f"snapshot {key}: parent {parent} is not a committed snapshot")
        return row[0], (row[0], *self._parents(db, row[9]))

    def create(self, db: sqlite3.Connection, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None) -> Snapshot:
        """Insert ``key`` (inside a write transaction)."""
        if not key:
            raise InvalidArgumentError("snapshot key must not be empty")
        if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise AlreadyExistsError(f"snapshot {key}: already exists")
        parent_id, chain = self.parent_snapshot(db, key, parent)
        now = _now()
        cur = db.execute(
            "INSERT INTO snapshots (key, parent_id, kind, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (key, parent_id, kind.value, json.dumps(dict(labels or {}), sort_keys=True), now, now),
        )
        return Snapshot(id=int(cur.lastrowid or 0), kind=kind, parent_ids=chain)

    def commit(self, db: sqlite3.Connection, name: str, key: str, usage: Usage, labels: Mapping[str, str] | None) -> int:
        """Turn active ``key`` into committed ``name``; returns its ID."""
        if not name:
            raise InvalidArgumentError("snapshot name must not be empty")
        row = self._row(db, key)
        if row[2] != Kind.ACTIVE.value:
            raise FailedPreconditionError(f"snapshot {key}: is {row[2]}, only active snapshots can be committed")
        if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
            raise AlreadyExistsError(f"snapshot {name}: already exists")
        merged = {**json.loads(row[3]), **dict(labels or {})}
        db.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, inodes = ?, size = ? WHERE id = ?",
            (name, Kind.COMMITTED.value, json.dumps(merged, sort_keys=True), _now(), usage.inodes, usage.size, row[0]),
        )
        return int(row[0])

    def remove(self, db: sqlite3.Connection, key: str) -> Snapshot:
        row = self._row(db, key)
        child = db.execute("SELECT key FROM snapshots WHERE parent_id = ? LIMIT 1", (row[0],)).fetchone()
        if child:
            raise FailedPreconditionError(f"snapshot {key}: cannot remove, it has children (e.g. {child[0]})")
        db.execute("DELETE FROM snapshots WHERE id = ?", (row[0],))
        return Snapshot(id=row[0], kind=Kind(row[2]))

    def update(self, info: Info, *fieldpaths: str) -> Info:
        with self.transaction() as db:
            row = self._row(db, info.name)
            labels = json.loads(row[3])
            if not fieldpaths:
                labels = dict(info.labels)
            for fp in fieldpaths:
                if fp == "labels":
                    labels = dict(info.labels)
                elif fp.startswith("labels."):
                    k = fp[len("labels."):]
                    if k in info.labels:
                        labels[k] = info.labels[k]
                    else:
                        labels.pop(k, None)
                else:
                    raise InvalidArgumentError(f"snapshot {info.name}: cannot update field {fp!r} (labels, labels.<key>)")
            db.execute(
                "UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
                (json.dumps(labels, sort_keys=True), _now(), row[0]),
            )
            return self._info(self._row(db, info.name))

    def infos(self) -> list[Info]:
        with self.transaction(write=False) as db:
            rows = db.execute(
                "SELECT s.id, s.key, s.kind, s.labels, s.created, s.updated, s.inodes, s.size, p.key, s.parent_id "
                "FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.key"
            ).fetchall()
        return [self._info(r) for r in rows]

    def ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}


def disk_usage(path: Path) -> Usage:
    """Inodes and bytes (allocated blocks) under ``path``, each hardlinked inode counted once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    continue
                seen.add(ident)
                size += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return Usage(inodes=len(seen), size=size)


class DirectorySnapshotter:
    """Shared machinery of the snapshotters that keep each snapshot as a directory ``snapshots/<id>``.

    Subclasses say how a new snapshot's directory is laid out (:meth:`_populate`), where its
    filesystem is (:meth:`_fs`) and how it is mounted (:meth:`_mounts`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.snapshots_dir = self.root / "snapshots"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        self.ms = MetaStore(self.root / "metadata.db")
        for leftover in self.snapshots_dir.glob("rm-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # -- layout, provided by subclasses --

    def _dir(self, sid: int) -> Path:
        return self.snapshots_dir / str(sid)

    def _fs(self, sid: int) -> Path:
        raise NotImplementedError

    def _populate(self, tmp: Path, kind: Kind, parent_ids: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        raise NotImplementedError

    # -- the interface --

    def stat(self, key: str) -> Info:
        return self.ms.stat(key)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        return self.ms.update(info, *fieldpaths)

    def usage(self, key: str) -> Usage:
        snap, usage = self.ms.usage(key)
        if snap.kind is Kind.ACTIVE:
            return disk_usage(self._fs(snap.id))
        return usage

    def mounts(self, key: str) -> list[Mount]:
        snap = self.ms.snapshot(key)
        if snap.kind is Kind.COMMITTED:
            raise FailedPreconditionError(f"snapshot {key}: committed snapshots have no mounts; make a view of it")
        return self._mounts(snap)

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None) -> list[Mount]:
        with self.ms.transaction(write=False) as db:  # fail fast, before any copying
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                raise AlreadyExistsError(f"snapshot {key}: already exists")
            _, chain = self.ms.parent_snapshot(db, key, parent)
        tmp = Path(tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir))
        try:
            self._populate(tmp, kind, chain)
            with self.ms.transaction() as db:
                snap = self.ms.create(db, kind, key, parent, labels)
                if snap.parent_ids != chain:
                    raise FailedPreconditionError(f"snapshot {key}: parent {parent} changed while preparing")
                os.rename(tmp, self._dir(snap.id))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._mounts(snap)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        snap = self.ms.snapshot(key)
        if snap.kind is not Kind.ACTIVE:
            raise FailedPreconditionError(f"snapshot {key}: is {snap.kind.value}, only active snapshots can be committed")
        usage = disk_usage(self._fs(snap.id))
        with self.ms.transaction() as db:
            self.ms.commit(db, name, key, usage, labels)

    def remove(self, key: str) -> None:
        with self.ms.transaction() as db:
            snap = self.ms.remove(db, key)
            doomed = self.snapshots_dir / f"rm-{snap.id}"
            if self._dir(snap.id).exists():
                os.rename(self._dir(snap.id), doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        match = compile_filters(*filters)
        for info in self.ms.infos():
            if match(info):
                fn(info)

    def close(self) -> None:
        self.ms.close()


__all__ = ["MetaStore", "Snapshot", "DirectorySnapshotter", "disk_usage"]
