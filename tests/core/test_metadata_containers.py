"""Containers in the metadata store: the schema migration from version 1, and the per-namespace view."""

from __future__ import annotations

import datetime as _dt
import sqlite3

import pytest

from hoist.containers import Container
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.metadata import SQLiteMetadataStore
from hoist.metadata.schema import MIGRATIONS
from hoist.runtime import IO, Status


def test_a_version_1_database_gains_the_containers_table(tmp_path) -> None:
    path = tmp_path / "meta.db"
    c = sqlite3.connect(path)
    c.executescript(MIGRATIONS[0])
    c.execute("INSERT INTO namespaces VALUES ('default', '{}', '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')")
    c.execute("PRAGMA user_version = 1")
    c.commit()
    c.close()
    db = SQLiteMetadataStore(path)
    assert db.schema_version == len(MIGRATIONS) >= 2
    assert db.containers("default").list() == []
    assert db.list_namespaces() == ["default"]
    db.close()


def test_containers_per_namespace(tmp_path) -> None:
    db = SQLiteMetadataStore(tmp_path / "meta.db")
    store = db.containers("ns1")
    made = store.create(Container(id="c1", namespace="ns1", image="busybox:1", snapshotter="native", snapshot_key="c1",
                                  runtime="hoist.runtime.v1.builtin", labels={"a": "b"}, io=IO(stdout="/tmp/o"),
                                  spec={"process": {"args": ["true"]}}))
    assert made.created_at is not None and made.status is Status.CREATED
    with pytest.raises(AlreadyExistsError, match="container c1: already exists in namespace ns1"):
        store.create(Container(id="c1", namespace="ns1", runtime="r"))
    with pytest.raises(InvalidArgumentError):
        store.create(Container(id="../x", namespace="ns1", runtime="r"))
    when = _dt.datetime(2024, 5, 1, 12, 0, tzinfo=_dt.timezone.utc)
    got = store.update("c1", status=Status.STOPPED, pid=42, exit_status=137, exited_at=when)
    assert (got.status, got.pid, got.exit_status, got.exited_at, got.io.stdout, got.args) == (
        Status.STOPPED, 42, 137, when, "/tmp/o", ["true"])
    assert db.containers("ns2").list() == []
    with pytest.raises(NotFoundError):
        db.containers("ns2").get("c1")
    with pytest.raises(FailedPreconditionError, match="namespace ns1: not empty: it still has containers"):
        db.delete_namespace("ns1")
    store.delete("c1")
    with pytest.raises(NotFoundError, match="container c1: not found in namespace ns1"):
        store.delete("c1")
    db.delete_namespace("ns1")
    db.close()
