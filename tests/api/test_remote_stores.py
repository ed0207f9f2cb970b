"""Hoist's gRPC clients (images, leases, snapshots, diff, metadata) against ``hoistd`` and a real containerd alike.

``hoist.fetch`` runs through them into either daemon; the real ``ctr`` then sees the result.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.api.content_client import RemoteContentStore, connect
from hoist.api.diff_client import RemoteApplier
from hoist.api.leases_client import RemoteLeaseStore, temporary_lease
from hoist.api.metadata_client import RemoteMetadataStore
from hoist.api.snapshots_client import RemoteSnapshotter
from hoist.content import Descriptor, Digest, write_blob
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.fetch import FetchParts, fetch
from hoist.gc import label_children
from hoist.images import Image
from hoist.metadata import LeaseResource
from hoist.remotes import ResolverOptions
from hoist.snapshots import Kind, list_snapshots, mounted
from hoist.unpack import chain_ids
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.plugin import DockerResolverPlugin
from support.hoistd import run_ctr


@pytest.fixture(params=["hoistd", "containerd"])
def daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """``(kind, socket)`` of each daemon in turn."""
    proc = request.getfixturevalue(request.param)
    yield request.param, Path(proc.address)


def ok(proc) -> str:  # noqa: ANN001
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_fetch_through_the_api_lands_in_the_daemon(daemon: tuple[str, Path], registry) -> None:  # noqa: ANN001
    kind, sock = daemon
    ns = f"fetch-{kind}"
    pushed = registry.pushed["test/busybox:1"]
    ref = registry.ref("test/busybox:1")
    resolver = DockerResolverPlugin(DockerResolverConfig()).new_resolver(ResolverOptions(plain_http=True))
    with connect(str(sock)) as channel:
        metadata = RemoteMetadataStore(channel)
        with temporary_lease(metadata.leases(ns)) as lease:
            content = RemoteContentStore(channel, namespace=ns, lease=lease)
            image = fetch(FetchParts(content=content, metadata=metadata, resolver=resolver, namespace=ns), ref,
                          labels={"fetched-by": "hoist"})
            # the image store labelled the manifest's children for containerd's collector
            assert label_children(content, image.target) == 0
        assert metadata.leases(ns).list() == []
        assert image.name == ref and str(image.target.digest) == pushed.digest
    table = [line.split() for line in ok(run_ctr(sock, "images", "ls", namespace=ns)).splitlines()]
    assert table[1][:3] == [ref, pushed.media_type, pushed.digest]
    assert table[1][-1] == "fetched-by=hoist"
    check = ok(run_ctr(sock, "images", "check", namespace=ns))
    assert "complete (2/2)" in check
    manifest = ok(run_ctr(sock, "content", "ls", f"digest=={pushed.digest}", namespace=ns))
    assert f"containerd.io/gc.ref.content.config={pushed.layout.image.config.digest}" in manifest, manifest
    if kind == "containerd":  # a collection now must keep every blob the image needs
        ok(run_ctr(sock, "leases", "create", "--id", "poke", namespace=ns))
        ok(run_ctr(sock, "leases", "rm", "--sync", "poke", namespace=ns))
    layer = pushed.layout.image.layers[0]
    assert run_ctr(sock, "content", "get", str(layer.digest), namespace=ns).stdout == pushed.layout.blob(layer.digest)


def test_image_store(daemon: tuple[str, Path]) -> None:
    kind, sock = daemon
    ns = f"images-{kind}"
    data = b'{"schemaVersion": 2}'
    target = Descriptor(media_type="application/vnd.oci.image.manifest.v1+json", digest=Digest.from_bytes(data), size=len(data))
    with connect(str(sock)) as channel:
        store = RemoteMetadataStore(channel).images(ns)
        made = store.create(Image(name="example.com/a:1", target=target, labels={"x": "1"}))
        assert made.name == "example.com/a:1" and made.target == target and made.labels == {"x": "1"}
        with pytest.raises(AlreadyExistsError):
            store.create(Image(name="example.com/a:1", target=target))
        store.put(Image(name="example.com/b:1", target=target))
        store.put(Image(name="example.com/b:1", target=target, labels={"y": "2"}))
        assert [i.name for i in store.list()] == ["example.com/a:1", "example.com/b:1"]
        assert [i.name for i in store.list("labels.y==2")] == ["example.com/b:1"]
        assert [i.name for i in store.list("name~=a:1$", "labels.y")] == ["example.com/a:1", "example.com/b:1"]
        assert [i.name for i in store.by_digest(target.digest)] == ["example.com/a:1", "example.com/b:1"]
        updated = store.update(Image(name="example.com/a:1", target=target, labels={"z": "3"}), "labels.z")
        assert updated.labels == {"x": "1", "z": "3"}
        assert store.get("example.com/a:1").labels == {"x": "1", "z": "3"}
        store.delete("example.com/a:1")
        store.delete("example.com/b:1", sync=True)
        with pytest.raises(NotFoundError):
            store.get("example.com/a:1")
        with pytest.raises(NotFoundError):
            store.delete("example.com/a:1")
        with pytest.raises(InvalidArgumentError):
            store.list("name==")


def test_lease_store(daemon: tuple[str, Path]) -> None:
    kind, sock = daemon
    ns = f"leases-{kind}"
    with connect(str(sock)) as channel:
        leases = RemoteLeaseStore(channel, ns)
        lease = leases.create("l1", {"owner": "test"})
        assert lease.id == "l1" and lease.labels == {"owner": "test"}
        with pytest.raises(AlreadyExistsError):
            leases.create("l1")
        blob = "sha256:" + "a" * 64
        leases.add_resource("l1", LeaseResource(type="content", id=blob))
        leases.add_resource("l1", LeaseResource(type="snapshots/native", id="some-key"))
        got = sorted((r.type, r.id) for r in leases.list_resources("l1"))
        assert got == [("content", blob), ("snapshots/native", "some-key")]
        leases.delete_resource("l1", LeaseResource(type="content", id=blob))
        assert [(r.type, r.id) for r in leases.list_resources("l1")] == [("snapshots/native", "some-key")]
        assert [lease.id for lease in leases.list()] == ["l1"]
        with pytest.raises(InvalidArgumentError):
            leases.add_resource("l1", LeaseResource(type="content", id="not-a-digest"))
        leases.delete("l1", sync=True)
        assert leases.list() == []
        with pytest.raises(NotFoundError):
            leases.delete("l1")


def test_snapshotter_and_applier(daemon: tuple[str, Path], images) -> None:  # noqa: ANN001
    """Unpack the busybox layer by hand: Content.Write, Snapshots.Prepare, Diff.Apply, Commit."""
    kind, sock = daemon
    ns = f"snaps-{kind}"
    layout = images.busybox()
    layer = layout.image.layers[0]
    chain = str(chain_ids([layer.diff_id])[0])
    with connect(str(sock)) as channel:
        leases = RemoteLeaseStore(channel, ns)
        with temporary_lease(leases) as lease:
            content = RemoteContentStore(channel, namespace=ns, lease=lease)
            blob = layout.blob(layer.digest)
            write_blob(content, f"layer-{layer.digest}", io.BytesIO(blob), len(blob), layer.digest)
            sn = RemoteSnapshotter(channel, "native", ns, lease=lease)
            mounts = sn.prepare("extract-1", "", {"containerd.io/snapshot.ref": chain})
            assert mounts[0].type == "bind"
            applied = RemoteApplier(channel, ns).apply(layer.descriptor, mounts)
            assert str(applied.digest) == layer.diff_id and applied.size == layer.uncompressed_size
            # another namespace has no record of the blob: Diff.Apply there cannot read it
            other = RemoteSnapshotter(channel, "native", f"other-{kind}")
            elsewhere = other.prepare("extract-x", "")
            with pytest.raises(NotFoundError):
                RemoteApplier(channel, f"other-{kind}").apply(layer.descriptor, elsewhere)
            other.remove("extract-x")
            sn.commit(chain, "extract-1")
            info = sn.stat(chain)
            assert info.kind is Kind.COMMITTED and info.name == chain
            assert sn.usage(chain).size > 100_000
            with pytest.raises(FailedPreconditionError):
                sn.mounts(chain)
            view = sn.view("look", chain)
            with mounted(view) as root:
                assert (root / "etc" / "passwd").read_bytes().startswith(b"root:")
            names = [i.name for i in list_snapshots(sn)]
            assert names == sorted([chain, "look"])
            assert [i.name for i in list_snapshots(sn, "kind==view")] == ["look"]
            labelled = sn.update(info.__class__(kind=info.kind, name=chain, labels={"hoist.test": "yes"}), "labels.hoist.test")
            assert labelled.labels["hoist.test"] == "yes"
            with pytest.raises(AlreadyExistsError):
                sn.prepare("look", chain)
            with pytest.raises(NotFoundError):
                sn.stat("nothing")
            sn.remove("look")
            sn.remove(chain)
            assert list_snapshots(sn) == []
