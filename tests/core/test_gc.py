"""Garbage collection over a real local content store, SQLite metadata store and native snapshotter."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import attrs
import pytest

from hoist.content import Descriptor, Digest, read_blob, write_blob
from hoist.gc import GarbageCollector, children_labels, label_children, lease_expired, parse_expire
from hoist.images import Image
from hoist.metadata import LeaseResource, SQLiteMetadataStore
from hoist.snapshots import namespaced
from hoist.snapshotters.native import NativeSnapshotter
from hoist_content_local.store import LocalContentStore

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class World:
    def __init__(self, root: Path) -> None:
        self.content = LocalContentStore(root / "content", fsync=False)
        self.metadata = SQLiteMetadataStore(root / "meta.db")
        self.native = NativeSnapshotter(root / "native")
        self.gc = GarbageCollector(self.metadata, self.content, lambda: {"native": self.native})

    def view(self, ns: str = "ns", lease: str | None = None):  # noqa: ANN201
        return self.metadata.content(self.content, ns, lease=lease)

    def blob(self, data: bytes, media_type: str = OCI_LAYER, ns: str = "ns") -> Descriptor:
        d = Digest.from_bytes(data)
        write_blob(self.view(ns), f"t-{d.hex}", io.BytesIO(data), len(data), d)
        return Descriptor(media_type=media_type, digest=d, size=len(data))

    def image(self, tag: bytes, ns: str = "ns") -> tuple[Descriptor, Descriptor, Descriptor, Descriptor]:
        """An index → manifest → (config, layer) graph without any GC labels, recorded in ``ns``."""
        layer = self.blob(b"layer " + tag, ns=ns)
        config = self.blob(json.dumps({"rootfs": {"type": "layers", "diff_ids": [str(layer.digest)]}, "tag": tag.decode()}).encode(), OCI_CONFIG, ns)
        manifest = self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(),
                                         "layers": [layer.to_json()]}).encode(), OCI_MANIFEST, ns)
        index = self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**manifest.to_json(), "platform": {"os": "linux", "architecture": "amd64"}}]}).encode(), OCI_INDEX, ns)
        return index, manifest, config, layer

    def recorded(self, ns: str) -> set[str]:
        out: set[str] = set()
        self.view(ns).walk(lambda i: out.add(str(i.digest)))
        return out

    def stored(self) -> set[str]:
        out: set[str] = set()
        self.content.walk(lambda i: out.add(str(i.digest)))
        return out

    def snapshots(self) -> set[str]:
        out: set[str] = set()
        self.native.walk(lambda i: out.add(i.name))
        return out


@pytest.fixture
def world(tmp_path: Path):  # noqa: ANN201
    w = World(tmp_path)
    yield w
    w.metadata.close()
    w.native.close()


def test_images_keep_their_whole_graph_and_the_rest_goes(world: World) -> None:
    kept = world.image(b"kept", "ns1")
    gone = world.image(b"gone", "ns2")
    orphan = world.blob(b"nobody wants me", ns="ns2")
    world.metadata.images("ns1").create(Image(name="example.com/kept:1", target=kept[0]))
    world.metadata.images("ns2").create(Image(name="example.com/gone:1", target=gone[0]))
    world.metadata.images("ns2").delete("example.com/gone:1")

    result = world.gc.collect()
    assert world.stored() == {str(d.digest) for d in kept}
    assert {str(d) for d in result.content} == {str(d.digest) for d in (*gone, orphan)}


def test_leases_labels_and_roots_keep_content_until_they_lapse(world: World) -> None:
    held = world.blob(b"held by a lease")
    expired = world.blob(b"held by an expired lease")
    rooted = world.blob(b"a root")
    referenced = world.blob(b"referenced by the root's label")
    info = world.view().info(rooted.digest)
    world.view().update(attrs.evolve(info, labels={
        "containerd.io/gc.root": "now", "containerd.io/gc.ref.content.x": str(referenced.digest)}), ())
    leases = world.metadata.leases("ns")
    leases.create("live", {"containerd.io/gc.expire": "2999-01-01T00:00:00.123456789Z"})
    leases.add_resource("live", LeaseResource(type="content", id=str(held.digest)))
    leases.create("old", {"containerd.io/gc.expire": "2001-01-01T00:00:00Z"})
    leases.add_resource("old", LeaseResource(type="content", id=str(expired.digest)))

    result = world.gc.collect()
    assert world.stored() == {str(held.digest), str(rooted.digest), str(referenced.digest)}
    assert result.leases == (("ns", "old"),)
    assert [lease.id for lease in leases.list()] == ["live"]
    leases.delete("live")
    world.gc.collect()
    assert world.stored() == {str(rooted.digest), str(referenced.digest)}


def test_snapshots_follow_config_labels_parents_and_activity(world: World) -> None:
    index, manifest, config, layer = world.image(b"unpacked")
    world.metadata.images("ns").create(Image(name="example.com/u:1", target=index))
    sn = namespaced(world.native, "ns")
    sn.prepare("w1", "")
    sn.commit("base", "w1")
    sn.prepare("w2", "base")
    sn.commit("top", "w2")
    sn.prepare("w3", "")
    sn.commit("stray", "w3")
    sn.prepare("working", "")
    sn.prepare("w4", "")
    sn.commit("stray-base", "w4")
    sn.prepare("w5", "stray-base")
    sn.commit("stray-top", "w5")
    info = world.view().info(config.digest)
    world.view().update(attrs.evolve(info, labels={"containerd.io/gc.ref.snapshot.native": "top"}), ())

    result = world.gc.collect()
    assert world.snapshots() == {"ns/base", "ns/top", "ns/working"}
    assert set(result.snapshots) == {("native", "ns/stray"), ("native", "ns/stray-base"), ("native", "ns/stray-top")}
    # the image goes: its config goes, and with it the snapshot chain it referenced
    world.metadata.images("ns").delete("example.com/u:1")
    world.gc.collect()
    assert world.snapshots() == {"ns/working"}
    assert world.stored() == set()


def test_children_labels_are_containerds(world: World) -> None:
    index, manifest, config, layer = world.image(b"labels")
    store = world.view()
    assert children_labels(index, store) == {"containerd.io/gc.ref.content.m.0": str(manifest.digest)}
    assert children_labels(manifest, store) == {
        "containerd.io/gc.ref.content.config": str(config.digest),
        "containerd.io/gc.ref.content.l.0": str(layer.digest),
    }
    assert children_labels(layer, store) == {}
    assert label_children(store, index) == 2
    assert label_children(store, index) == 0
    assert store.info(manifest.digest).labels["containerd.io/gc.ref.content.l.0"] == str(layer.digest)


def test_expiry_parsing() -> None:
    assert parse_expire("2026-11-28T14:35:28Z") == dt.datetime(2026, 11, 28, 14, 35, 28, tzinfo=dt.timezone.utc)
    assert parse_expire("2026-11-28T14:35:28.123456789+01:00").microsecond == 123456
    assert parse_expire("tomorrow") is None
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert lease_expired({"containerd.io/gc.expire": "2025-12-31T23:59:59Z"}, now)
    assert not lease_expired({"containerd.io/gc.expire": "2026-01-01T00:00:01Z"}, now)
    assert not lease_expired({"containerd.io/gc.expire": "garbage"}, now)
    assert not lease_expired({}, now)


# -- namespaces ------------------------------------------------------------------------------------


def test_each_namespace_keeps_what_its_own_roots_reach(world: World) -> None:
    shared = world.image(b"shared", "a")
    world.image(b"shared", "b")  # the same blobs, recorded in b without their bytes being written again
    world.metadata.images("a").create(Image(name="example.com/s:1", target=shared[0]))
    world.metadata.images("b").create(Image(name="example.com/s:1", target=shared[0]))
    stray = world.blob(b"only b has it and nothing in b names it", ns="b")
    world.blob(b"only b has it and nothing in b names it", ns="a")
    world.metadata.images("a").create(Image(name="example.com/stray:1", target=attrs.evolve(stray, media_type=OCI_LAYER)))
    everything = {str(d.digest) for d in shared} | {str(stray.digest)}

    result = world.gc.collect()
    assert world.stored() == everything, "a's image keeps the stray blob's bytes; b only loses its record"
    assert world.recorded("b") == {str(d.digest) for d in shared}
    assert result.records == (("b", stray.digest),) and result.content == ()

    world.metadata.images("a").delete("example.com/s:1")
    result = world.gc.collect()
    assert world.recorded("a") == {str(stray.digest)}
    assert world.recorded("b") == {str(d.digest) for d in shared}
    assert world.stored() == everything and result.content == ()
    world.metadata.images("b").delete("example.com/s:1")
    result = world.gc.collect()
    assert world.stored() == {str(stray.digest)}
    assert {str(d) for d in result.content} == {str(d.digest) for d in shared}


def test_references_stay_inside_their_namespace(world: World) -> None:
    index, manifest, config, layer = world.image(b"split", "a")
    world.blob(b"layer split", ns="b")  # b has the layer, but its image is in a
    world.metadata.images("a").create(Image(name="example.com/split:1", target=index))
    world.gc.collect()
    assert world.recorded("b") == set()
    assert str(layer.digest) in world.stored()


def test_a_lease_keeps_a_blob_shared_into_its_namespace_before_the_commit(world: World) -> None:
    layer = world.blob(b"being shared", ns="a")
    world.metadata.leases("b").create("pull")
    w = world.view("b", lease="pull").writer("layer", total=layer.size, expected=layer.digest)
    world.view("a").delete(layer.digest)  # a lets go; b's lease still names the bytes
    assert str(layer.digest) in world.stored()
    world.gc.collect()
    assert str(layer.digest) in world.stored()
    w.commit(layer.size, layer.digest)
    assert world.recorded("b") == {str(layer.digest)}


def test_a_commit_waits_for_a_collection_in_progress(world: World) -> None:
    import threading

    data = b"committed while the collector marks"
    d = Digest.from_bytes(data)
    paused, committing, committed = threading.Event(), threading.Event(), threading.Event()

    class PausingSnapshotter:
        """Walked between the marking and the sweeping: holds the collection there while a commit tries to land."""

        def walk(self, fn) -> None:  # noqa: ANN001
            paused.set()
            assert committing.wait(30)
            committed.wait(1)  # a commit that does not wait for the collection has landed by now

    gc = GarbageCollector(world.metadata, world.content, lambda: {"pause": PausingSnapshotter()})
    world.metadata.leases("ns").create("pull")
    outcome: list[BaseException | None] = []

    def commit() -> None:
        try:
            paused.wait(30)
            w = world.view("ns", lease="pull").writer("late", total=len(data), expected=d)
            w.write(data)
            committing.set()
            w.commit(len(data), d)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome.append(e)
        finally:
            committing.set()
            committed.set()

    t = threading.Thread(target=commit)
    t.start()
    gc.collect()
    t.join(60)
    assert outcome == [None]
    assert world.recorded("ns") == {str(d)}
    assert read_blob(world.view("ns"), Descriptor(media_type=OCI_LAYER, digest=d, size=len(data))) == data


def test_client_leases_carry_the_expiry_the_collector_reads() -> None:
    """``Client.with_lease`` labels its leases through ``hoist.leases`` (a fetch does not import the collector)."""
    from hoist.gc import LABEL_EXPIRE
    from hoist.leases import DEFAULT_EXPIRY, LABEL_EXPIRE as _LABEL_EXPIRE, expire_label

    assert _LABEL_EXPIRE == LABEL_EXPIRE
    assert not lease_expired({_LABEL_EXPIRE: expire_label(DEFAULT_EXPIRY)})
    assert lease_expired({_LABEL_EXPIRE: expire_label(dt.timedelta(seconds=-1))})
