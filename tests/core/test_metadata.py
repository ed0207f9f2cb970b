"""The SQLite metadata store: schema, namespaces, images, content labels, leases, locking and corruption."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hoist.content import Descriptor, Digest
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from hoist.images import Image, mediatypes as mt
from hoist.metadata import LeaseResource, SQLiteMetadataStore
from hoist.metadata.schema import SCHEMA_VERSION


def target(data: bytes = b"m") -> Descriptor:
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(data), size=len(data))


@pytest.fixture
def db(tmp_path: Path) -> SQLiteMetadataStore:
    s = SQLiteMetadataStore(tmp_path / "meta.db")
    yield s
    s.close()


def test_new_database_is_wal_with_current_schema(db: SQLiteMetadataStore) -> None:
    assert db.schema_version == SCHEMA_VERSION
    c = sqlite3.connect(db.path)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    c.close()


def test_durable_writes_sync_after_a_run_of_non_durable_ones(db: SQLiteMetadataStore) -> None:
    """A connection left in NORMAL by non-durable writes is back in FULL for the next durable commit."""
    def level(durable: bool) -> int:
        with db._write(durable=durable) as c:
            return c.execute("PRAGMA synchronous").fetchone()[0]

    full, normal = 2, 1
    assert [level(False), level(False), level(True), level(False), level(True)] == [normal, normal, full, normal, full]


def test_images_crud_persists_across_opens(db: SQLiteMetadataStore) -> None:
    images = db.images()
    created = images.create(Image(name="reg/busybox:1", target=target(), labels={"a": "1"}))
    with pytest.raises(AlreadyExistsError, match="image 'reg/busybox:1': already exists"):
        images.create(Image(name="reg/busybox:1", target=target()))
    updated = images.update(Image(name="reg/busybox:1", target=target(b"n"), labels={"b": "2"}), "target")
    assert updated.target == target(b"n") and updated.labels == {"a": "1"}
    assert updated.created_at == created.created_at and updated.updated_at >= created.updated_at
    images.update(Image(name="reg/busybox:1", target=target(), labels={"b": "2"}), "labels.b")
    db.close()
    again = SQLiteMetadataStore(db.path)
    got = again.images().get("reg/busybox:1")
    assert got.target == target(b"n") and got.labels == {"a": "1", "b": "2"}
    assert [i.name for i in again.images().list()] == ["reg/busybox:1"]
    again.images().delete("reg/busybox:1")
    with pytest.raises(NotFoundError, match="image 'reg/busybox:1': not found"):
        again.images().get("reg/busybox:1")
    with pytest.raises(NotFoundError):
        again.images().delete("reg/busybox:1")
    again.close()


def test_namespaces_isolate_images(db: SQLiteMetadataStore) -> None:
    db.images("default").create(Image(name="a", target=target()))
    db.images("other").create(Image(name="b", target=target()))
    assert [i.name for i in db.images("default").list()] == ["a"]
    assert [i.name for i in db.images("other").list()] == ["b"]
    assert db.list_namespaces() == ["default", "other"]
    with pytest.raises(FailedPreconditionError, match="namespace other: not empty"):
        db.delete_namespace("other")
    db.images("other").delete("b")
    db.delete_namespace("other")
    assert db.list_namespaces() == ["default"]
    with pytest.raises(InvalidArgumentError, match="namespace 'bad/ns'"):
        db.images("bad/ns")


def test_image_filters(db: SQLiteMetadataStore) -> None:
    s = db.images()
    s.create(Image(name="docker.io/library/busybox:1", target=target(), labels={"tier": "base"}))
    s.create(Image(name="example.com/app:2", target=target(b"x")))
    assert [i.name for i in s.list("name~=busybox")] == ["docker.io/library/busybox:1"]
    assert [i.name for i in s.list(f"target.digest=={target(b'x').digest}")] == ["example.com/app:2"]
    assert [i.name for i in s.list("labels.tier==base")] == ["docker.io/library/busybox:1"]
    assert len(s.list("name==nope", "labels.tier==base")) == 1
    with pytest.raises(InvalidArgumentError, match="image filter 'size>3'"):
        s.list("size>3")


def test_content_labels_and_leases(db: SQLiteMetadataStore, tmp_path: Path) -> None:
    import io

    from hoist.content import write_blob
    from hoist_content_local.store import LocalContentStore

    cl = db.content_labels()
    dg = Digest.from_bytes(b"blob")
    assert cl.get(dg) == {}
    with pytest.raises(NotFoundError, match=f"content {dg}: not found"):
        cl.set(dg, {"k": "v"})  # a namespace labels only the blobs it records
    write_blob(db.content(LocalContentStore(tmp_path / "content", fsync=False)), "blob", io.BytesIO(b"blob"), 4, dg)
    cl.set(dg, {"containerd.io/gc.ref.content.0": "sha256:x", "k": "v"})
    assert cl.set(dg, {"k": "w"}, "labels.k") == {"containerd.io/gc.ref.content.0": "sha256:x", "k": "w"}
    assert cl.set(dg, {}, "labels.k") == {"containerd.io/gc.ref.content.0": "sha256:x"}
    leases = db.leases()
    leases.create("fetch-1", {"expire": "soon"})
    with pytest.raises(AlreadyExistsError):
        leases.create("fetch-1")
    leases.add_resource("fetch-1", LeaseResource(type="content", id=str(dg)))
    assert leases.list_resources("fetch-1") == [LeaseResource(type="content", id=str(dg))]
    leases.delete("fetch-1")
    with pytest.raises(NotFoundError, match="lease fetch-1: not found"):
        leases.list_resources("fetch-1")


def test_concurrent_writers_in_threads(db: SQLiteMetadataStore) -> None:
    def work(i: int) -> None:
        for j in range(20):
            db.images().put(Image(name=f"img-{i}-{j}", target=target(bytes([i, j]))))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(db.images().list()) == 80


def test_locked_database_waits_for_the_other_process(db: SQLiteMetadataStore, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, time, pathlib
        c = sqlite3.connect({str(db.path)!r}, isolation_level=None)
        c.execute("BEGIN EXCLUSIVE")
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(1.0)
        c.execute("COMMIT")
    """)])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        db.images().create(Image(name="after-lock", target=target()))
        assert time.monotonic() - t0 > 0.3
        assert db.images().get("after-lock").name == "after-lock"
    finally:
        holder.wait(10)


def test_locked_past_the_timeout_is_unavailable(tmp_path: Path) -> None:
    s = SQLiteMetadataStore(tmp_path / "meta.db", busy_timeout=0.2)
    c = sqlite3.connect(s.path, isolation_level=None)
    c.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UnavailableError, match=f"metadata database {s.path}: locked by another process"):
            s.images().create(Image(name="x", target=target()))
    finally:
        c.execute("ROLLBACK")
        c.close()
        s.close()


def test_corrupt_database_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    junk = b"this is not a database" * 200
    path.write_bytes(junk)
    with pytest.raises(FailedPreconditionError, match=f"metadata database {path}: corrupt or not a Hoist database"):
        SQLiteMetadataStore(path)
    assert path.read_bytes() == junk


def test_foreign_sqlite_file_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE mine (x)")
    c.commit()
    c.close()
    with pytest.raises(FailedPreconditionError, match="not a Hoist metadata database"):
        SQLiteMetadataStore(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = SQLiteMetadataStore(tmp_path / "meta.db")
    s.close()
    c = sqlite3.connect(tmp_path / "meta.db")
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    with pytest.raises(FailedPreconditionError, match="is newer than this Hoist supports"):
        SQLiteMetadataStore(tmp_path / "meta.db")


def test_plugin_registration(tmp_path: Path) -> None:
    from hoist.metadata import plugin
    from hoist.plugin import InitContext

    regs = []
    plugin.hoist_register_plugins(regs.append)
    (reg,) = regs
    assert reg.uri == "hoist.metadata.v1.sqlite"
    ic = InitContext(registration=reg, config=plugin.SQLiteMetadataConfig(busy_timeout=5), root=tmp_path, state=tmp_path,
                     lookup=lambda _t: [])
    store = reg.init(ic)
    assert (tmp_path / "meta.db").exists() and store.busy_timeout == 5
    store.close()


def test_close_waits_for_a_write_in_another_thread(db: SQLiteMetadataStore) -> None:
    """Closing while another thread writes (a container's exit being recorded at shutdown) waits for that write."""
    db.create_namespace("ns1")
    images = db.images("ns1")
    started, release, closed = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with db._write() as c:  # an operation in flight, held open until the main thread has called close()
            started.set()
            release.wait(10)
            c.execute("UPDATE namespaces SET labels = '{\"k\": \"v\"}' WHERE name = 'ns1'")

    t = threading.Thread(target=writer)
    t.start()
    assert started.wait(10)
    closer = threading.Thread(target=lambda: (db.close(), closed.set()))
    closer.start()
    time.sleep(0.2)
    assert not closed.is_set(), "close() returned while a write was in flight"
    release.set()
    t.join(10)
    closer.join(10)
    assert closed.is_set()
    # the write committed, and the store still works after close (new connections)
    assert db.namespace_labels("ns1") == {"k": "v"}
    images.create(Image(name="a", target=target()))
    assert [i.name for i in images.list()] == ["a"]
