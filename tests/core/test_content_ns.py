"""Namespaced content (hoist.metadata.content) over a real local store and a real SQLite database.

The view passes the content-store conformance suite, and namespaces see only the blobs they record:
labels, deletes and ingests are per namespace, a blob another namespace stored is shared (or written
again under the ``isolated`` policy), and a root written before content was namespaced keeps its blobs.
"""

from __future__ import annotations

import functools
import io
import sqlite3
from pathlib import Path

import pytest

from hoist.content import Descriptor, Digest, Info, read_blob, write_blob
from hoist.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError, UnavailableError
from hoist.metadata import LeaseResource, NamespacedContentStore, SQLiteMetadataStore
from hoist.testing.content import ContentStoreSuite, make_content
from hoist_content_local.store import LocalContentStore


def open_view(root: Path, namespace: str, policy: str = "shared") -> NamespacedContentStore:
    """The content of ``namespace`` on ``root`` (the local store in ``root/content``, the database ``root/meta.db``)."""
    db = SQLiteMetadataStore(root / "meta.db", content_sharing_policy=policy)
    return db.content(LocalContentStore(root / "content", fsync=False), namespace)


class TestNamespacedContent(ContentStoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> NamespacedContentStore:
        return open_view(tmp_path, "suite")

    @pytest.fixture
    def store_opener(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        return functools.partial(open_view, tmp_path, "suite")


def _desc(d: Digest, size: int = 0) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=d, size=size)


def _walk(store: NamespacedContentStore, *filters: str) -> set[Digest]:
    seen: list[Info] = []
    store.walk(seen.append, *filters)
    return {i.digest for i in seen}


def _on_disk(root: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (root / "content" / "blobs" / "sha256").iterdir()}


def test_a_blob_is_seen_only_where_it_is_recorded(tmp_path: Path) -> None:
    a, b = open_view(tmp_path, "a"), open_view(tmp_path, "b")
    data, d = make_content(1000)
    write_blob(a, "upload", io.BytesIO(data), len(data), d, labels={"team": "a"})
    assert _walk(a) == {d} and _walk(b) == set()
    for call in (lambda: b.info(d), lambda: b.reader_at(_desc(d)), lambda: b.delete(d),
                 lambda: b.update(Info(digest=d, size=1000, labels={"x": "y"}))):
        with pytest.raises(NotFoundError, match=f"content {d}: not found"):
            call()
    assert read_blob(a, _desc(d)) == data


def test_shared_blob_needs_no_bytes_and_labels_stay_per_namespace(tmp_path: Path) -> None:
    a, b = open_view(tmp_path, "a"), open_view(tmp_path, "b")
    data, d = make_content(5000)
    write_blob(a, "upload", io.BytesIO(data), len(data), d, labels={"team": "a"})
    w = b.writer("copy", total=len(data), expected=d)
    st = w.status()
    assert (st.ref, st.offset, st.total, st.expected) == ("copy", 5000, 5000, d), "complete without a byte sent"
    assert w.digest() == d
    w.commit(len(data), d, {"team": "b"})
    assert b.info(d).labels == {"team": "b"} and a.info(d).labels == {"team": "a"}
    b.update(Info(digest=d, size=5000, labels={"team": "b2"}), ("labels.team",))
    assert a.info(d).labels == {"team": "a"}
    assert b.list_statuses() == [] and a.list_statuses() == []
    with pytest.raises(AlreadyExistsError):
        b.writer("again", expected=d)
    source = _CountingReader(data)
    c = open_view(tmp_path, "c")
    write_blob(c, "layer", source, len(data), d)
    assert source.bytes_read == 0 and read_blob(c, _desc(d)) == data


class _CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        b = super().read(n)
        self.bytes_read += len(b)
        return b

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = super().readinto(buf)
        self.bytes_read += n
        return n


def test_isolated_policy_makes_each_namespace_send_the_bytes(tmp_path: Path) -> None:
    a = open_view(tmp_path, "a", "isolated")
    b = open_view(tmp_path, "b", "isolated")
    data, d = make_content(3000)
    write_blob(a, "upload", io.BytesIO(data), len(data), d)
    w = b.writer("copy", total=len(data), expected=d)
    assert w.status().offset == 0
    w.write(data[:-1] + b"!")
    with pytest.raises(FailedPreconditionError, match=f"ingest 'copy': digest mismatch: expected {d}"):
        w.commit(len(data), d)
    with pytest.raises(NotFoundError):
        b.info(d)
    write_blob(b, "copy", io.BytesIO(data), len(data), d)
    assert read_blob(b, _desc(d)) == data


def test_delete_keeps_the_bytes_while_another_namespace_records_them(tmp_path: Path) -> None:
    a, b = open_view(tmp_path, "a"), open_view(tmp_path, "b")
    data, d = make_content(2000)
    write_blob(a, "x", io.BytesIO(data), len(data), d)
    write_blob(b, "x", io.BytesIO(data), len(data), d)
    a.delete(d)
    with pytest.raises(NotFoundError):
        a.info(d)
    assert read_blob(b, _desc(d)) == data and str(d) in _on_disk(tmp_path)
    b.delete(d)
    assert str(d) not in _on_disk(tmp_path), "the last record takes the bytes with it"


def test_a_live_lease_keeps_the_bytes_of_a_deleted_record(tmp_path: Path) -> None:
    db = SQLiteMetadataStore(tmp_path / "meta.db")
    db.leases("a").create("pull")
    raw = LocalContentStore(tmp_path / "content", fsync=False)
    leased = db.content(raw, "a", lease="pull")
    data, d = make_content(700)
    write_blob(leased, "x", io.BytesIO(data), len(data), d)
    assert db.leases("a").list_resources("pull") == [LeaseResource(type="content", id=str(d))]
    db.content(raw, "a").delete(d)
    assert str(d) in _on_disk(tmp_path), "the lease still holds the bytes"
    write_blob(leased, "x", io.BytesIO(data), len(data), d)
    leased.delete(d)  # a view's own delete lets go of its lease's hold
    assert db.leases("a").list_resources("pull") == []
    assert str(d) not in _on_disk(tmp_path)


def test_a_commit_under_a_lease_deleted_meanwhile_fails_and_records_nothing(tmp_path: Path) -> None:
    db = SQLiteMetadataStore(tmp_path / "meta.db")
    db.leases("a").create("pull")
    raw = LocalContentStore(tmp_path / "content", fsync=False)
    data, d = make_content(700)
    w = db.content(raw, "a", lease="pull").writer("x", total=len(data), expected=d)
    w.write(data)
    db.leases("a").delete("pull")
    db.delete_namespace("a")  # nothing else keeps it
    with pytest.raises(NotFoundError, match="^lease pull: not found"):
        w.commit(len(data), d)
    assert "a" not in db.list_namespaces()
    with pytest.raises(NotFoundError):
        db.content(raw, "a").info(d)


def test_ingests_are_per_namespace_and_errors_name_the_callers_ref(tmp_path: Path) -> None:
    a, b = open_view(tmp_path, "a"), open_view(tmp_path, "b")
    held = a.writer("layer-1", total=10)
    held.write(b"12345")
    with pytest.raises(UnavailableError, match=r"^ref 'layer-1' locked"):
        a.writer("layer-1")
    other = b.writer("layer-1", total=10)  # the same ref in another namespace is another ingest
    other.write(b"1")
    other.close()
    held.close()
    assert [(s.ref, s.offset) for s in a.list_statuses()] == [("layer-1", 5)]
    assert [(s.ref, s.offset) for s in b.list_statuses("ref==layer-1")] == [("layer-1", 1)]
    b.abort("layer-1")
    with pytest.raises(NotFoundError, match=r"^ingest 'layer-1': not found"):
        b.status("layer-1")
    assert a.status("layer-1").offset == 5


def test_a_root_from_before_namespaces_keeps_its_blobs_in_every_namespace(tmp_path: Path) -> None:
    raw = LocalContentStore(tmp_path / "content", fsync=False)
    data, d = make_content(400)
    write_blob(raw, "old", io.BytesIO(data), len(data), d, labels={"kept": "yes"})
    # a database of schema 2 (before content records), with images in two namespaces
    db = SQLiteMetadataStore(tmp_path / "meta.db")
    db.images("team").list()
    db.create_namespace("team")
    db.close()
    conn = sqlite3.connect(tmp_path / "meta.db")
    conn.executescript("DROP TABLE settings; DROP INDEX content_by_digest; DROP INDEX lease_resources_by_id;"
                       "ALTER TABLE content DROP COLUMN size; PRAGMA user_version = 2;")
    conn.close()

    db = SQLiteMetadataStore(tmp_path / "meta.db")
    assert db.schema_version == 3
    for ns in ("default", "team"):
        view = db.content(raw, ns)
        info = view.info(d)
        assert (info.size, dict(info.labels)) == (400, {"kept": "yes"})
        assert read_blob(view, _desc(d)) == data
    assert _walk(db.content(raw, "elsewhere")) == set(), "a namespace made later starts empty"
    # adoption runs once: a blob the store gets outside any namespace later is not adopted
    again = SQLiteMetadataStore(tmp_path / "meta.db")
    extra, e = make_content(10)
    write_blob(raw, "raw-only", io.BytesIO(extra), len(extra), e)
    assert _walk(again.content(raw, "default")) == {d}
