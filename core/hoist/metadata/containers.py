"""Containers in the metadata store: one row per container per namespace (schema migration 2)."""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs

from hoist.containers import Container
from hoist.errors import AlreadyExistsError, NotFoundError
from hoist.runtime import IO, Status, check_identifier

if TYPE_CHECKING:
    from hoist.metadata.store import SQLiteMetadataStore

_COLUMNS = (
    "id, image, snapshotter, snapshot_key, runtime, status, pid, exit_status, exited_at, error, labels, spec, io, "
    "log_path, created_at, updated_at"
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _time(value: str | None) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(value) if value else None


def _container(namespace: str, row: tuple) -> Container:
    (id, image, snapshotter, key, runtime, status, pid, exit_status, exited_at, error, labels, spec, io, log_path,
     created, updated) = row  # fmt: skip
    return Container(
        id=id, namespace=namespace, image=image, snapshotter=snapshotter, snapshot_key=key, runtime=runtime,
        status=Status(status), pid=pid, exit_status=exit_status, exited_at=_time(exited_at), error=error,
        labels=json.loads(labels), spec=json.loads(spec), io=IO.from_json(json.loads(io)), log_path=log_path,
        created_at=_time(created), updated_at=_time(updated),
    )  # fmt: skip


class ContainerStore:
    """The containers of one namespace."""

    def __init__(self, db: SQLiteMetadataStore, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def get(self, id: str) -> Container:
        """:raises NotFoundError: no container ``id`` in this namespace."""
        with self.db._read() as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (self.namespace, id)).fetchone()
        if row is None:
            raise NotFoundError(f"container {id}: not found in namespace {self.namespace}")
        return _container(self.namespace, row)

    def list(self) -> list[Container]:
        """Every container of the namespace, sorted by id."""
        with self.db._read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id", (self.namespace,)).fetchall()
        return [_container(self.namespace, r) for r in rows]

    def create(self, container: Container) -> Container:
        """Add ``container`` (its ``namespace`` is this store's).

        :raises InvalidArgumentError: a malformed id.
        :raises AlreadyExistsError: the id is taken.
        """
        from hoist.metadata.store import _labels_json

        check_identifier("container id", container.id)
        labels = _labels_json(container.labels)
        now = _now()
        with self.db._write() as c:
            self.db._ensure_namespace(c, self.namespace)
            try:
                c.execute(
                    f"INSERT INTO containers (namespace, {_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                    (self.namespace, container.id, container.image, container.snapshotter, container.snapshot_key,
                     container.runtime, container.status.value, container.pid, container.exit_status,
                     container.exited_at.isoformat() if container.exited_at else None, container.error, labels,
                     json.dumps(dict(container.spec), sort_keys=True), json.dumps(container.io.to_json(), sort_keys=True),
                     container.log_path, now, now),
                )  # fmt: skip
            except sqlite3.IntegrityError as e:
                raise AlreadyExistsError(f"container {container.id}: already exists in namespace {self.namespace}") from e
        return attrs.evolve(container, namespace=self.namespace, created_at=_time(now), updated_at=_time(now))

    def update(self, id: str, **fields: Any) -> Container:
        """Change fields of container ``id``: ``status``, ``pid``, ``exit_status``, ``exited_at``, ``error``, ``spec``.

        :raises NotFoundError: no such container.
        """
        allowed = {"status", "pid", "exit_status", "exited_at", "error", "spec"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"container fields {sorted(unknown)} cannot be updated")
        values = dict(fields)
        if "status" in values:
            values["status"] = Status(values["status"]).value
        if "spec" in values:
            values["spec"] = json.dumps(dict(values["spec"]), sort_keys=True)
        if values.get("exited_at") is not None:
            values["exited_at"] = values["exited_at"].isoformat()
        values["updated_at"] = _now()
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self.db._write() as c:
            cur = c.execute(
                f"UPDATE containers SET {assignments} WHERE namespace = ? AND id = ?",
                (*values.values(), self.namespace, id),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"container {id}: not found in namespace {self.namespace}")
            row = c.execute(f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (self.namespace, id)).fetchone()
        return _container(self.namespace, row)

    def delete(self, id: str) -> None:
        """:raises NotFoundError: no such container."""
        with self.db._write() as c:
            cur = c.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (self.namespace, id))
            if cur.rowcount == 0:
                raise NotFoundError(f"container {id}: not found in namespace {self.namespace}")


__all__ = ["ContainerStore"]
