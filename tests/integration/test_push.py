"""``push`` end to end: images Hoist fetched go back to the real registry and are read back by skopeo and Hoist.

Covers: push to another repository and tag (mounted from the repository it was fetched from), read back
byte for byte with ``skopeo inspect --raw``, ``skopeo copy`` and a Hoist fetch into a fresh root; a
second push uploads nothing (HEAD hits only); an index with every platform to another registry
(uploads), then to a new repository there (mounts through the content labels the first push wrote);
``platforms`` pushing one manifest; a fetch's distribution-source labels making a push under an unrelated
local name mount; missing or corrupt local content failing before any upload with nothing local changed;
the progress rows and summary.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest

from hoist.client import Client
from hoist.config import Config
from hoist.content import Digest
from hoist.errors import FailedPreconditionError, NotFoundError, UnsupportedError
from hoist.fetch import fetch
from hoist.images import Image, mediatypes as mt
from hoist.push import DISTRIBUTION_SOURCE_PREFIX, PushProgressTracker, push
from hoist.remotes import ResolverOptions
from hoist_resolver_docker.pusher import DockerPusher
from support.registry import _skopeo_env

PLUGINS = ("hoist.content.v1.local", "hoist.resolver.v1.docker", "hoist.metadata.v1.sqlite")
PLAIN = ResolverOptions(plain_http=True)


def open_client(root: Path) -> Client:
    return Client.open(root=str(root), state=str(root.parent / f"{root.name}-state"),
                       config=Config(enabled_plugins=PLUGINS))


class _Parts:
    """A client whose resolvers can push, also before ``DockerResolver.pusher`` returns a ``DockerPusher``."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._c, name)

    def resolver(self, ref: str, options=None):  # type: ignore[no-untyped-def]
        r = self._c.resolver(ref, options)
        try:
            r.pusher(ref)
        except UnsupportedError:
            r.pusher = functools.partial(DockerPusher, r)
        return r


def skopeo(reg, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=True,
                          env=_skopeo_env(reg.workdir))


def layers(img) -> tuple:  # type: ignore[no-untyped-def]
    return tuple(layer.descriptor for layer in img.layers)


def write_methods(entries: list) -> list[str]:
    return [e.method for e in entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_push_a_fetched_image_to_another_repository_and_read_it_back(registry, root: Path, tmp_path: Path,
                                                                     repo_name: str) -> None:
    src = registry.ref("test/busybox:1")
    layout = registry.pushed["test/busybox:1"].layout
    dest = registry.ref(f"{repo_name}:pushed")
    with open_client(root) as c:
        img = fetch(c, src, resolver_options=PLAIN)
        tracker = PushProgressTracker()
        mark = registry.access_mark()
        with tracker:
            result = push(_Parts(c), dest, src, progress=tracker, resolver_options=PLAIN)
        entries = registry.access_entries(mark, min_count=6)
        assert result.name == dest and result.target == img.target
        # Same registry, another repository: config and layer are mounted from test/busybox, never uploaded.
        mounts = [e for e in entries if e.method == "POST"]
        assert sorted(e.params["mount"][0] for e in mounts) == sorted(str(d.digest) for d in
                                                                      (layout.image.config, *layers(layout.image)))
        assert all(e.params["from"] == ["test/busybox"] and e.status == 201 for e in mounts)
        assert not [e for e in entries if e.method == "PATCH"]
        puts = [e for e in entries if e.method == "PUT"]
        assert [(p.path, p.status) for p in puts] == [(f"/v2/{repo_name}/manifests/pushed", 201)]
        s = tracker.summary()
        assert (s.uploaded, s.mounted, s.present, s.errors) == (1, 2, 0, 0)
        assert {r.state for r in tracker.snapshot()} == {"mounted", "committed"}

        local_manifest = c.content.reader_at(img.target).read_at(0, img.target.size)

    raw = skopeo(registry, "inspect", "--raw", *registry.skopeo_inspect_args(), f"docker://{dest}").stdout
    assert raw.encode() == local_manifest
    info = json.loads(skopeo(registry, "inspect", *registry.skopeo_inspect_args(), f"docker://{dest}").stdout)
    assert info["Digest"] == str(img.target.digest)
    out = tmp_path / "copy"
    skopeo(registry, "copy", *registry.skopeo_src_args(), f"docker://{dest}", f"oci:{out}:x")
    for d in layout.image.blobs():
        assert (out / "blobs" / "sha256" / d.digest.hex).read_bytes() == layout.blob(d.digest)

    with open_client(tmp_path / "root2") as c2:
        again = fetch(c2, dest, resolver_options=PLAIN)
        assert again.target == img.target
        for d in layout.image.blobs():
            assert c2.content.reader_at(d).read_at(0, d.size) == layout.blob(d.digest)


def test_a_fetch_labels_its_source_so_a_push_under_another_name_mounts(registry, root: Path,
                                                                        repo_name: str) -> None:
    src = registry.ref("test/busybox:1")
    layout = registry.pushed["test/busybox:1"].layout
    blobs = (layout.image.config, *layers(layout.image))
    with open_client(root) as c:
        img = fetch(c, src, resolver_options=PLAIN)
        for d in (img.target, *blobs):
            assert c.content.info(d.digest).labels[DISTRIBUTION_SOURCE_PREFIX + registry.host] == "test/busybox"
        # A local name that says nothing about the registry: only the labels can tell where the blobs live.
        c.metadata.images().create(Image(name="local/copy:1", target=img.target))
        mark = registry.access_mark()
        result = push(_Parts(c), registry.ref(f"{repo_name}:1"), "local/copy:1", resolver_options=PLAIN)
        entries = registry.access_entries(mark, min_count=len(blobs) + 2)
    mounts = [e for e in entries if e.method == "POST"]
    assert sorted(e.params["mount"][0] for e in mounts) == sorted(str(d.digest) for d in blobs)
    assert all(e.params["from"] == ["test/busybox"] and e.status == 201 for e in mounts)
    assert not [e for e in entries if e.method == "PATCH" or (e.method == "PUT" and "/blobs/" in e.path)]
    assert (result.count("mounted"), result.count("committed")) == (len(blobs), 1)


def test_a_second_push_uploads_nothing(registry, root: Path, repo_name: str) -> None:
    src = registry.ref("test/layers:1")
    dest = registry.ref(f"{repo_name}:1")
    with open_client(root) as c:
        fetch(c, src, resolver_options=PLAIN)
        push(_Parts(c), dest, src, resolver_options=PLAIN)
        tracker = PushProgressTracker()
        mark = registry.access_mark()
        with tracker:
            push(_Parts(c), dest, src, progress=tracker, resolver_options=PLAIN)
        n = len(registry.pushed["test/layers:1"].layout.image.blobs())
        entries = registry.access_entries(mark, min_count=n)
    assert write_methods(entries) == []
    assert sorted(e.method for e in entries) == ["HEAD"] * n and all(e.status == 200 for e in entries)
    s = tracker.summary()
    assert (s.uploaded, s.mounted, s.present, s.bytes) == (0, 0, n, 0)


def test_index_to_another_registry_then_a_new_repository_mounts(registry, registry_factory, root: Path,
                                                                tmp_path: Path) -> None:
    src = registry.ref("test/multi:1")
    layout = registry.pushed["test/multi:1"].layout
    other = registry_factory()
    with open_client(root) as c:
        img = fetch(c, src, all_platforms=True, resolver_options=PLAIN)
        tracker = PushProgressTracker()
        mark = other.access_mark()
        with tracker:
            result = push(_Parts(c), other.ref("team/multi:1"), src, all_platforms=True, progress=tracker,
                          resolver_options=PLAIN)
        entries = other.access_entries(mark, min_count=10)
        blobs = [d for i in layout.images for d in (i.config, *layers(i))]
        unique = {d.digest for d in blobs}
        assert result.target == img.target and result.count("committed") == len(unique) + 3
        assert tracker.summary().uploaded == len(unique) + 3
        assert tracker.summary().bytes == sum(d.size for d in {d.digest: d for d in blobs}.values()) + \
            sum(i.manifest.size for i in layout.images) + img.target.size
        # Children before parents: every blob PUT before any manifest PUT, the index (by tag) last.
        puts = [e.path for e in entries if e.method == "PUT"]
        kinds = ["blob" if "/blobs/" in p else "tag" if p.endswith("/manifests/1") else "manifest" for p in puts]
        assert kinds == ["blob"] * len(unique) + ["manifest", "manifest", "tag"]
        raw = skopeo(other, "inspect", "--raw", *other.skopeo_inspect_args(), f"docker://{other.ref('team/multi:1')}")
        assert raw.stdout.encode() == c.content.reader_at(img.target).read_at(0, img.target.size)
        # The push labelled every blob with its new home on that registry ...
        labels = c.content.info(next(iter(unique))).labels
        assert labels[DISTRIBUTION_SOURCE_PREFIX + other.host] == "team/multi"

        # ... so a push to a new repository there mounts instead of uploading.
        mark = other.access_mark()
        result = push(_Parts(c), other.ref("team/copy:2"), src, resolver_options=PLAIN)
        entries = other.access_entries(mark, min_count=10)
        mounts = [e for e in entries if e.method == "POST"]
        assert {e.params["mount"][0] for e in mounts} == {str(d) for d in unique}
        assert all(e.params["from"] == ["team/multi"] and e.status == 201 for e in mounts)
        assert not [e for e in entries if e.method == "PATCH" or (e.method == "PUT" and "/blobs/" in e.path)]
        assert result.count("mounted") == len(unique)
        assert c.content.info(next(iter(unique))).labels[DISTRIBUTION_SOURCE_PREFIX + other.host] == \
            "team/multi,team/copy"

    with open_client(tmp_path / "root2") as c2:
        back = fetch(c2, other.ref("team/copy:2"), all_platforms=True, resolver_options=PLAIN)
        assert back.target == img.target
        for d in blobs:
            assert c2.content.reader_at(d).read_at(0, d.size) == layout.blob(d.digest)


def test_one_platform_of_an_index(registry, registry_factory, root: Path) -> None:
    src = registry.ref("test/multi:1")
    arm = registry.pushed["test/multi:1"].layout.image_for("linux/arm64/v8")
    other = registry_factory()
    with open_client(root) as c:
        fetch(c, src, ["linux/arm64"], resolver_options=PLAIN)
        result = push(_Parts(c), other.ref("one/arm:1"), src, ["linux/arm64"], resolver_options=PLAIN)
    assert result.target.digest == arm.manifest.digest
    data, ctype = other.manifest("one/arm", "1")
    assert Digest.from_bytes(data) == arm.manifest.digest and ctype == mt.OCI_MANIFEST
    assert all(other.has_blob("one/arm", d.digest) for d in arm.blobs() if d != arm.manifest)


def test_missing_local_content_fails_before_any_request(registry, registry_factory, root: Path) -> None:
    src = registry.ref("test/multi:1")
    layout = registry.pushed["test/multi:1"].layout
    amd = layout.image_for("linux/amd64")
    arm = layout.image_for("linux/arm64/v8")
    other = registry_factory()
    with open_client(root) as c:
        fetch(c, src, ["linux/amd64"], resolver_options=PLAIN)
        mark = other.access_mark()
        with pytest.raises(NotFoundError) as e:
            push(_Parts(c), other.ref("x/multi:1"), src, resolver_options=PLAIN)
        assert str(e.value) == (f"{src}: content missing in the local content store: manifest {arm.manifest.digest}; "
                                "fetch it first (with --all-platforms for every platform)")
        layer = layers(amd)[0]
        c.content.delete(layer.digest)
        with pytest.raises(NotFoundError, match=f"content missing in the local content store: layer {layer.digest}$"):
            push(_Parts(c), other.ref("x/multi:1"), src, ["linux/amd64"], resolver_options=PLAIN)
        with pytest.raises(NotFoundError, match="image 'nope:1': not found in namespace 'default'"):
            push(_Parts(c), other.ref("x/multi:1"), "nope:1", resolver_options=PLAIN)
    assert other.access_entries(mark) == []


def test_corrupt_local_content_fails_before_any_upload(registry, registry_factory, root: Path) -> None:
    src = registry.ref("test/busybox:1")
    layer = layers(registry.pushed["test/busybox:1"].layout.image)[0]
    other = registry_factory()
    with open_client(root) as c:
        fetch(c, src, resolver_options=PLAIN)
        path = root / "hoist.content.v1.local" / "blobs" / "sha256" / layer.digest.hex
        data = bytearray(path.read_bytes())
        data[1000] ^= 0xFF
        path.chmod(0o644)
        path.write_bytes(bytes(data))
        before = {d.digest: c.content.info(d.digest).labels for d in (layer,)}
        mark = other.access_mark()
        with pytest.raises(FailedPreconditionError) as e:
            push(_Parts(c), other.ref("x/busybox:1"), src, resolver_options=PLAIN)
        assert str(e.value).startswith(f"content {layer.digest}: corrupt in the local content store")
        entries = other.access_entries(mark, min_count=3)
        assert entries and {x.method for x in entries} == {"HEAD"}
        assert {d: c.content.info(d).labels for d in before} == before
        assert [i.name for i in c.metadata.images().list()] == [src]
