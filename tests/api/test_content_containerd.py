"""Hoist's gRPC content store against a real containerd: the same client works with both daemons."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from hoist import errors
from hoist.api.content_client import RemoteContentStore, open_store
from hoist.content import Descriptor, Digest, Info, read_blob, write_blob

GC_ROOT = {"containerd.io/gc.root": "hoist-test"}  # keeps containerd's garbage collector off the test blobs


@pytest.fixture
def store(containerd, request) -> Iterator[RemoteContentStore]:  # type: ignore[no-untyped-def]
    ns = "hoist-" + request.node.name.replace("_", "-")[:60]
    remote = open_store(str(containerd.address), namespace=ns)
    try:
        yield remote
    finally:
        remote.close()


def test_write_read_walk_label_delete(store: RemoteContentStore) -> None:
    data = os.urandom((3 << 20) + 11)
    d = Digest.from_bytes(data)
    write_blob(store, "hoist-upload", io.BytesIO(data), len(data), d, labels=GC_ROOT)
    info = store.info(d)
    assert (info.digest, info.size, dict(info.labels)) == (d, len(data), GC_ROOT)
    assert read_blob(store, Descriptor(media_type="application/octet-stream", digest=d, size=len(data))) == data
    ra = store.reader_at(Descriptor(media_type="", digest=d, size=0))
    assert ra.size == len(data) and ra.read_at(len(data) - 11, 100) == data[-11:]

    seen: list[Info] = []
    store.walk(seen.append)
    assert [i.digest for i in seen] == [d]
    seen.clear()
    store.walk(seen.append, 'labels."containerd.io/gc.root"==nope')
    assert seen == []

    out = store.update(Info(digest=d, size=0, labels={"team": "a"}), ("labels.team",))
    assert dict(out.labels) == {**GC_ROOT, "team": "a"}

    write_blob(store, "hoist-again", io.BytesIO(data), len(data), d)  # already there: success
    with pytest.raises(errors.AlreadyExistsError, match=str(d)):
        store.writer("hoist-another", expected=d)

    store.delete(d)
    with pytest.raises(errors.NotFoundError, match=f"{d}: not found"):
        store.info(d)


def test_ingests_resume_lock_and_abort(store: RemoteContentStore) -> None:
    data = os.urandom(200_000)
    d = Digest.from_bytes(data)
    w = store.writer("hoist-partial", total=len(data), expected=d)
    w.write(data[:70_000])
    with pytest.raises(errors.UnavailableError, match="locked"):
        store.writer("hoist-partial")
    w.close()
    assert [(s.ref, s.offset, s.total) for s in store.list_statuses()] == [("hoist-partial", 70_000, len(data))]
    w = store.writer("hoist-partial", total=len(data), expected=d)
    assert w.status().offset == 70_000
    assert w.digest() == Digest.from_bytes(data[:70_000])
    w.write(data[70_000:])
    w.commit(len(data), d, GC_ROOT)
    assert store.info(d).size == len(data)
    assert store.list_statuses() == []

    w = store.writer("hoist-aborted", total=10)
    w.write(b"12345")
    w.close()
    store.abort("hoist-aborted")
    with pytest.raises(errors.NotFoundError):
        store.status("hoist-aborted")


def test_commit_with_wrong_digest_is_failed_precondition(store: RemoteContentStore) -> None:
    data = b"not what was promised"
    wrong = Digest.from_bytes(b"something else")
    w = store.writer("hoist-wrong")
    w.write(data)
    with pytest.raises(errors.FailedPreconditionError, match=str(wrong)):
        w.commit(len(data), wrong)
    with pytest.raises(errors.InvalidArgumentError):
        store.info("sha256:../../etc/passwd")


def test_introspection_and_version_of_containerd(containerd) -> None:  # type: ignore[no-untyped-def]
    from hoist.api.content_client import connect
    from hoist.api.introspection_client import plugin_results
    from hoist.api.version_client import server_version

    with connect(str(containerd.address)) as channel:
        results = {r.uri: r for r in plugin_results(channel)}
        version, revision = server_version(channel)
    assert results["io.containerd.grpc.v1.content"].status == "ok"
    assert results["io.containerd.content.v1.content"].status == "ok"
    assert version.startswith("1.6.")
