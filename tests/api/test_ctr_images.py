"""The real ``ctr`` against a ``hoistd`` process: images, leases, snapshots, pull with unpack, GC, restart.

The daemon serves every core service (content, images, leases, namespaces, snapshots, diff, ...) on a
socket in a temp dir; the images come from the loopback test registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from pathlib import Path

import grpc
import pytest

from support.hoistd import HoistdProcess, run_ctr
from hoist.api.content_client import RemoteContentStore, connect
from hoist.api.snapshots_client import RemoteSnapshotter
from hoist.content import Digest, write_blob
from hoist.snapshots import mounted
from hoist.unpack import chain_ids


def ok(proc) -> str:  # noqa: ANN001
    assert proc.returncode == 0, (proc.stdout.decode(), proc.stderr.decode())
    return proc.stdout.decode()


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def layout_digests(layout) -> set[str]:  # noqa: ANN001
    """Manifest, config and layer digests of a single-manifest test layout."""
    manifest = layout.manifest_descriptor if hasattr(layout, "manifest_descriptor") else None
    out = {str(layer.digest) for layer in layout.image.layers}
    out.add(str(layout.image.config.digest) if hasattr(layout.image.config, "digest") else str(layout.image.config))
    if manifest is not None:
        out.add(str(manifest.digest))
    return out


@pytest.fixture(scope="module")
def sock(hoistd: HoistdProcess) -> Path:
    return hoistd.address


def pull(sock: Path, ref: str, *extra: str, namespace: str = "default") -> str:
    return ok(run_ctr(sock, "images", "pull", "--plain-http", *extra, ref, namespace=namespace))


def test_content_fetch_writes_every_blob_and_leaves_no_lease(sock: Path, registry) -> None:  # noqa: ANN001
    pushed = registry.pushed["test/busybox:1"]
    ref = registry.ref("test/busybox:1")
    ok(run_ctr(sock, "content", "fetch", "--plain-http", ref, namespace="fetch-ns"))
    stored = set(ok(run_ctr(sock, "content", "ls", "-q", namespace="fetch-ns")).split())
    layout = pushed.layout
    assert pushed.digest in stored
    for layer in layout.image.layers:
        assert str(layer.digest) in stored
    got = run_ctr(sock, "content", "get", str(layout.image.layers[0].digest), namespace="fetch-ns")
    assert got.returncode == 0 and got.stdout == layout.blob(layout.image.layers[0].digest)
    # ctr's temporary lease is gone; its image record names the manifest
    assert rows(ok(run_ctr(sock, "leases", "ls", namespace="fetch-ns")))[1:] == []
    images = {r[0]: r for r in rows(ok(run_ctr(sock, "images", "ls", namespace="fetch-ns")))[1:]}
    assert images[ref][2] == pushed.digest


def test_images_pull_unpacks_into_the_native_snapshotter(sock: Path, registry) -> None:  # noqa: ANN001
    pushed = registry.pushed["test/busybox:1"]
    layout = pushed.layout
    ref = registry.ref("test/busybox:1")
    out = pull(sock, ref, "--snapshotter", "native", namespace="pull-ns")
    assert re.search(r"unpacking linux/amd64 sha256:[0-9a-f]{64}\.\.\.\n?.*done", out, re.S), out
    table = rows(ok(run_ctr(sock, "images", "ls", namespace="pull-ns")))
    assert table[0][:3] == ["REF", "TYPE", "DIGEST"]
    assert [ref, pushed.media_type, pushed.digest] == table[1][:3]
    check = rows(ok(run_ctr(sock, "images", "check", "--snapshotter", "native", namespace="pull-ns")))
    assert check[0] == ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]
    assert check[1][:5] == [ref, pushed.media_type, pushed.digest, "complete", "(2/2)"]
    assert check[1][-1] == "true"

    chain = str(chain_ids([layer.diff_id for layer in layout.image.layers])[-1])
    snaps = rows(ok(run_ctr(sock, "snapshots", "--snapshotter", "native", "ls", namespace="pull-ns")))
    assert [chain, "Committed"] in [[r[0], r[-1]] for r in snaps[1:]], snaps
    # the unpacked tree holds the image's files, seen through Hoist's snapshot client
    with connect(str(sock)) as channel:
        sn = RemoteSnapshotter(channel, "native", "pull-ns")
        mounts = sn.view("look", chain)
        try:
            with mounted(mounts) as root:
                assert (root / "bin" / "busybox").stat().st_size > 100_000
                assert (root / "etc" / "passwd").read_bytes().startswith(b"root:")
        finally:
            sn.remove("look")


def test_images_pull_with_overlayfs_applies_whiteouts(sock: Path, registry) -> None:  # noqa: ANN001
    ref = registry.ref("test/whiteout:1")
    pull(sock, ref, namespace="overlay-ns")  # ctr's default snapshotter is overlayfs
    layout = registry.pushed["test/whiteout:1"].layout
    chain = str(chain_ids([layer.diff_id for layer in layout.image.layers])[-1])
    with connect(str(sock)) as channel:
        sn = RemoteSnapshotter(channel, "overlayfs", "overlay-ns")
        assert sn.stat(chain).kind.value == "committed"
        mounts = sn.view("look", chain)
        try:
            with mounted(mounts) as root:
                assert (root / "etc" / "kept.txt").exists()
                assert not (root / "etc" / "gone.txt").exists()
        finally:
            sn.remove("look")


def test_images_tag_label_export_rm(sock: Path, registry, tmp_path: Path) -> None:  # noqa: ANN001
    pushed = registry.pushed["test/busybox:1"]
    ref = registry.ref("test/busybox:1")
    ns = "tag-ns"
    pull(sock, ref, "--snapshotter", "native", namespace=ns)
    assert ok(run_ctr(sock, "images", "tag", ref, "example.com/copy:1", namespace=ns)) == "example.com/copy:1\n"
    again = run_ctr(sock, "images", "tag", ref, "example.com/copy:1", namespace=ns)
    assert again.returncode == 1 and b"already exists" in again.stderr
    ok(run_ctr(sock, "images", "tag", "--force", ref, "example.com/copy:1", namespace=ns))
    ok(run_ctr(sock, "images", "label", "example.com/copy:1", "team=a", "tier=gold", namespace=ns))
    ok(run_ctr(sock, "images", "label", "example.com/copy:1", "tier=", namespace=ns))
    listed = {r[0]: r for r in rows(ok(run_ctr(sock, "images", "ls", namespace=ns)))[1:]}
    assert listed["example.com/copy:1"][2] == pushed.digest
    assert listed["example.com/copy:1"][-1] == "team=a"
    assert ok(run_ctr(sock, "images", "ls", "-q", "labels.team==a", namespace=ns)) == "example.com/copy:1\n"
    assert ok(run_ctr(sock, "images", "ls", "-q", "name~=^example,labels.team==b", namespace=ns)) == ""

    out = tmp_path / "image.tar"
    ok(run_ctr(sock, "images", "export", str(out), "example.com/copy:1", namespace=ns))
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert f"blobs/sha256/{pushed.digest.split(':')[1]}" in names
    assert index["manifests"][0]["digest"] == pushed.digest

    assert ok(run_ctr(sock, "images", "rm", "example.com/copy:1", namespace=ns)) == "example.com/copy:1\n"
    gone = run_ctr(sock, "images", "rm", "example.com/copy:1", namespace=ns)  # ctr only warns on NOT_FOUND
    assert gone.returncode == 0 and b'msg="example.com/copy:1: image not found"' in gone.stderr


def test_images_rm_sync_collects_unique_blobs_and_snapshots(sock: Path, registry) -> None:  # noqa: ANN001
    ns = "gc-ns"
    layers_ref = registry.ref("test/layers:1")
    busybox_ref = registry.ref("test/busybox:1")
    pull(sock, layers_ref, "--snapshotter", "native", namespace=ns)
    pull(sock, busybox_ref, "--snapshotter", "native", namespace=ns)
    layers = registry.pushed["test/layers:1"].layout
    busybox = registry.pushed["test/busybox:1"].layout
    unique = {str(layer.digest) for layer in layers.image.layers}
    before = set(ok(run_ctr(sock, "content", "ls", "-q", namespace=ns)).split())
    assert unique <= before
    chain = str(chain_ids([layer.diff_id for layer in layers.image.layers])[-1])
    snaps = ok(run_ctr(sock, "snapshots", "--snapshotter", "native", "ls", namespace=ns))
    assert chain in snaps

    ok(run_ctr(sock, "images", "rm", "--sync", layers_ref, namespace=ns))
    after = set(ok(run_ctr(sock, "content", "ls", "-q", namespace=ns)).split())
    assert not unique & after
    assert registry.pushed["test/layers:1"].digest not in after
    # the other image keeps everything it uses
    assert {str(layer.digest) for layer in busybox.image.layers} <= after
    assert registry.pushed["test/busybox:1"].digest in after
    snaps = ok(run_ctr(sock, "snapshots", "--snapshotter", "native", "ls", namespace=ns))
    assert chain not in snaps
    busybox_chain = str(chain_ids([layer.diff_id for layer in busybox.image.layers])[-1])
    assert busybox_chain in snaps


def test_leases_create_ls_rm_and_they_protect_content(sock: Path) -> None:
    ns = "lease-ns"
    assert ok(run_ctr(sock, "leases", "create", "--id", "keep-me", "--expires", "1h", "owner=test", namespace=ns)) == "keep-me\n"
    table = rows(ok(run_ctr(sock, "leases", "ls", namespace=ns)))
    assert table[0] == ["ID", "CREATED", "AT", "LABELS"]
    assert table[1][0] == "keep-me"
    assert "owner=test" in table[1][-1] and "containerd.io/gc.expire=" in table[1][-1]
    dup = run_ctr(sock, "leases", "create", "--id", "keep-me", namespace=ns)
    assert dup.returncode == 1 and b"already exists" in dup.stderr

    data = b"held by a lease " * 1000
    dgst = Digest.from_bytes(data)
    with connect(str(sock)) as channel:
        store = RemoteContentStore(channel, namespace=ns, lease="keep-me")
        write_blob(store, "leased-blob", io.BytesIO(data), len(data), dgst)
        from hoist.api.leases_client import RemoteLeaseStore

        resources = RemoteLeaseStore(channel, ns).list_resources("keep-me")
        assert ("content", str(dgst)) in [(r.type, r.id) for r in resources]
        missing = RemoteContentStore(channel, namespace=ns, lease="no-such-lease")
        with pytest.raises(Exception, match="lease no-such-lease: not found"):
            write_blob(missing, "orphan", io.BytesIO(b"x"), 1, Digest.from_bytes(b"x"))

    # a collection (triggered by a sync delete elsewhere) keeps the leased blob
    ok(run_ctr(sock, "leases", "create", "--id", "other", namespace=ns))
    ok(run_ctr(sock, "leases", "rm", "--sync", "other", namespace=ns))
    assert str(dgst) in ok(run_ctr(sock, "content", "ls", "-q", namespace=ns)).split()
    # once the lease is gone, so is the blob
    assert ok(run_ctr(sock, "leases", "rm", "--sync", "keep-me", namespace=ns)) == "keep-me\n"
    assert str(dgst) not in ok(run_ctr(sock, "content", "ls", "-q", namespace=ns)).split()
    assert rows(ok(run_ctr(sock, "leases", "ls", namespace=ns)))[1:] == []
    missing_rm = run_ctr(sock, "leases", "rm", "keep-me", namespace=ns)
    assert missing_rm.returncode == 1 and b"not found" in missing_rm.stderr


def test_snapshots_prepare_commit_tree_usage_info_rm(sock: Path) -> None:
    ns = "snap-ns"
    sn = ("snapshots", "--snapshotter", "native")
    ok(run_ctr(sock, *sn, "prepare", "base-work", namespace=ns))
    mounts = ok(run_ctr(sock, *sn, "mounts", "/mnt", "base-work", namespace=ns))
    source = re.search(r"mount -t bind (\S+) /mnt", mounts)
    assert source, mounts
    Path(source.group(1), "hello.txt").write_bytes(b"x" * 10000)
    ok(run_ctr(sock, *sn, "commit", "base", "base-work", namespace=ns))
    ok(run_ctr(sock, *sn, "prepare", "child", "base", namespace=ns))
    table = rows(ok(run_ctr(sock, *sn, "ls", namespace=ns)))
    assert table[0] == ["KEY", "PARENT", "KIND"]
    assert ["base", "Committed"] in table[1:] and ["child", "base", "Active"] in table[1:]
    tree = ok(run_ctr(sock, *sn, "tree", namespace=ns))
    assert tree.splitlines()[0].strip() == "base" and "child" in tree.splitlines()[1]
    usage = rows(ok(run_ctr(sock, *sn, "usage", "base", namespace=ns)))
    assert usage[0] == ["KEY", "SIZE", "INODES"]
    assert usage[1][0] == "base" and usage[1][2] == "KiB" and float(usage[1][1]) >= 9.7, usage  # hello.txt's 10000 bytes
    info = json.loads(ok(run_ctr(sock, *sn, "info", "child", namespace=ns)))
    assert info["Name"] == "child" and info["Parent"] == "base" and info["Kind"] == "Active"
    ok(run_ctr(sock, *sn, "label", "child", "role=test", namespace=ns))
    labels = json.loads(ok(run_ctr(sock, *sn, "info", "child", namespace=ns)))["Labels"]
    assert labels["role"] == "test" and "containerd.io/gc.root" in labels  # ctr roots what it prepares
    busy = run_ctr(sock, *sn, "rm", "base", namespace=ns)
    assert busy.returncode == 1
    ok(run_ctr(sock, *sn, "rm", "child", "base", namespace=ns))
    assert rows(ok(run_ctr(sock, *sn, "ls", namespace=ns)))[1:] == []
    # another namespace never sees them
    assert rows(ok(run_ctr(sock, *sn, "ls", namespace="default")))[1:] == [] or all(
        r[0] not in ("base", "child") for r in rows(ok(run_ctr(sock, *sn, "ls", namespace="default")))[1:]
    )
    unknown = run_ctr(sock, "snapshots", "--snapshotter", "zfs", "ls", namespace=ns)
    assert unknown.returncode == 1 and b"snapshotter not loaded: zfs" in unknown.stderr


def test_bad_requests_fail_alone(sock: Path) -> None:
    from hoist.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
    from hoist.api.containerd.types import descriptor_pb2

    md = (("containerd-namespace", "bad-ns"),)
    with connect(str(sock)) as channel:
        stub = images_pb2_grpc.ImagesStub(channel)
        target = descriptor_pb2.Descriptor(media_type="x", digest="sha256:../../etc", size=1)
        for image, text in [
            (images_pb2.Image(name="", target=target), "image name must not be empty"),
            (images_pb2.Image(name="a\x00b", target=target), "must not contain NUL"),
            (images_pb2.Image(name="ok"), "target digest must not be empty"),
            (images_pb2.Image(name="ok", target=target), "invalid digest"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Create(images_pb2.CreateImageRequest(image=image), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.List(images_pb2.ListImagesRequest(filters=["name=="]), metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            stub.List(images_pb2.ListImagesRequest())
        assert err.value.details() == "namespace is required"
    assert ok(run_ctr(sock, "version")).count("Version:") == 2


def test_restart_keeps_images_content_and_snapshots(hoistd: HoistdProcess, registry) -> None:  # noqa: ANN001
    ns = "restart-ns"
    ref = registry.ref("test/busybox:1")
    pull(hoistd.address, ref, "--snapshotter", "native", namespace=ns)
    before_images = ok(run_ctr(hoistd.address, "images", "ls", namespace=ns))
    before_snaps = ok(run_ctr(hoistd.address, "snapshots", "--snapshotter", "native", "ls", namespace=ns))
    assert hoistd.stop() == 0
    assert not hoistd.address.exists()
    hoistd.start()
    assert ok(run_ctr(hoistd.address, "images", "ls", namespace=ns)) == before_images
    assert ok(run_ctr(hoistd.address, "snapshots", "--snapshotter", "native", "ls", namespace=ns)) == before_snaps
    check = ok(run_ctr(hoistd.address, "images", "check", namespace=ns))
    assert "complete" in check and "incomplete" not in check
    layer = registry.pushed["test/busybox:1"].layout.image.layers[0]
    got = run_ctr(hoistd.address, "content", "get", str(layer.digest), namespace=ns)
    assert hashlib.sha256(got.stdout).hexdigest() == str(layer.digest).split(":")[1]


def test_expired_leases_lapse_at_the_next_collection(sock: Path) -> None:
    ns = "expire-ns"
    ok(run_ctr(sock, "leases", "create", "--id", "short", "--expires", "1s", namespace=ns))
    ok(run_ctr(sock, "leases", "create", "--id", "long", "--expires", "1h", namespace=ns))
    time.sleep(2.1)
    ok(run_ctr(sock, "leases", "create", "--id", "poke", namespace=ns))
    ok(run_ctr(sock, "leases", "rm", "--sync", "poke", namespace=ns))
    assert [r[0] for r in rows(ok(run_ctr(sock, "leases", "ls", namespace=ns)))[1:]] == ["long"]
