"""``fetch`` end to end against the real Docker Distribution registry (and the fault proxy in front of it).

Covers: a fetch fills the content store and names the image; present blobs are not requested again; an
interrupted fetch (``kill -9``) resumes with a ranged request; two processes fetching at once each
succeed with every blob downloaded once; hostile indexes fail fast on a cap; a lying registry leaves no
image row and the next fetch through the same (now honest) proxy succeeds; foreign layers travel only
when the resolver follows their URLs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hoist.client import Client
from hoist.config import Config
from hoist.content import Descriptor, Digest, read_blob
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.fetch import fetch
from hoist.images import Matcher, check, mediatypes as mt
from hoist.progress import ProgressTracker
from hoist.remotes import ResolverOptions
from hoist_content_local.store import LocalContentStore
from support.faultproxy import flip_byte, stall

PLUGINS = ("hoist.content.v1.local", "hoist.resolver.v1.docker", "hoist.metadata.v1.sqlite")
DIST = [str(Path(sys.executable).parent / "dist")]
PLAIN = ResolverOptions(plain_http=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def open_client(root: Path) -> Client:
    return Client.open(root=str(root), state=str(root.parent / "state"), config=Config(enabled_plugins=PLUGINS))


def content_of(root: Path) -> LocalContentStore:
    return LocalContentStore(root / "hoist.content.v1.local")


def default_content(root: Path):  # noqa: ANN201
    """What ``dist`` sees in namespace ``default`` on ``root``: its records of the local store's blobs, its ingests."""
    from hoist.metadata import SQLiteMetadataStore

    return SQLiteMetadataStore(root / "hoist.metadata.v1.sqlite" / "meta.db").content(content_of(root))


def blob_gets(entries: list, digest: str | Digest | None = None) -> list:
    return [e for e in entries if e.method == "GET" and "/blobs/" in e.path and (digest is None or e.path.endswith(str(digest)))]


def dist_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOIST_ROOT=str(root), HOIST_STATE=str(root.parent / "state"))
    env.pop("HOIST_ADDRESS", None)
    env.pop("HOIST_CONFIG", None)
    return env


def test_fetch_fills_the_store_and_names_the_image(registry, root: Path) -> None:
    pushed = registry.pushed["test/busybox:1"]
    ref = registry.ref("test/busybox:1")
    with open_client(root) as c:
        tracker = ProgressTracker(c.content)
        with tracker:
            img = fetch(c, ref, progress=tracker, resolver_options=PLAIN)
        assert img.name == ref and str(img.target.digest) == pushed.digest
        assert [i.name for i in c.metadata.images().list()] == [ref]
        for desc in pushed.layout.image.blobs():
            assert c.content.info(desc.digest).size == desc.size
        assert check(c.content, img.target).available
        s = tracker.summary()
        assert s.fetched == len(pushed.layout.image.blobs()) and s.present == 0
        assert s.bytes == sum(d.size for d in pushed.layout.image.blobs())

        mark = registry.access_mark()
        tracker = ProgressTracker(c.content)
        with tracker:
            again = fetch(c, ref, progress=tracker, resolver_options=PLAIN)
        assert again.target == img.target and again.created_at == img.created_at
        assert blob_gets(registry.access_entries(mark)) == []
        assert tracker.summary().fetched == 0 and tracker.summary().present == len(pushed.layout.image.blobs())


def test_fetch_selects_platforms(registry, root: Path) -> None:
    ref = registry.ref("test/multi:1")
    layout = registry.pushed["test/multi:1"].layout
    arm = layout.image_for("linux/arm64/v8")
    amd = layout.image_for("linux/amd64")
    with open_client(root) as c:
        img = fetch(c, ref, ["linux/arm64"], resolver_options=PLAIN)
        assert mt.is_index(img.target.media_type)
        assert all(c.content.info(d.digest) for d in arm.blobs())
        with pytest.raises(NotFoundError):
            c.content.info(amd.blobs()[-1].digest)
        assert not check(c.content, img.target, Matcher.all()).available
        fetch(c, ref, all_platforms=True, resolver_options=PLAIN)
        r = check(c.content, img.target, Matcher.all())
        assert r.available and sorted(map(str, r.platforms)) == ["linux/amd64", "linux/arm64/v8"]
        with pytest.raises(NotFoundError, match="no manifest for linux/s390x"):
            fetch(c, ref, ["linux/s390x"], resolver_options=PLAIN)


def _big_image(registry, images, repo_name: str) -> tuple[str, object]:
    layout = images.random_layers(count=2, mib=8, seed=7100)
    pushed = registry.push_layout(layout, repo_name, "1")
    return registry.ref(f"{repo_name}:1"), pushed


def test_resume_after_kill_uses_a_range_request(registry, images, fault_proxy, repo_name: str, root: Path) -> None:
    _, pushed = _big_image(registry, images, repo_name)
    layer = max(pushed.layout.image.blobs(), key=lambda d: d.size)
    proxy = fault_proxy(registry)
    proxy.inject(stall(60, after_bytes=3 << 20), path=f"/blobs/{layer.digest}", method="GET")
    ref = f"{proxy.host}/{repo_name}:1"
    proc = subprocess.Popen([*DIST, "fetch", "--plain-http", "--progress", "none", "--max-concurrent-downloads", "1", ref],
                            env=dist_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        store = None
        deadline = time.monotonic() + 30
        offset = 0
        while time.monotonic() < deadline:
            if (root / "hoist.metadata.v1.sqlite" / "meta.db").exists():
                store = store or default_content(root)
                st = [s for s in store.list_statuses() if s.ref == f"layer-{layer.digest}"]
                if st and st[0].offset >= 1 << 20:
                    offset = st[0].offset
                    break
            time.sleep(0.05)
        assert offset, "the fetch never got into the stalled layer"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proxy.clear_faults()
    mark = registry.access_mark()
    r = subprocess.run([*DIST, "fetch", "--plain-http", "--progress", "none", ref], env=dist_env(root),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    gets = [q for q in proxy.requests if q.method == "GET" and q.path.endswith(str(layer.digest))]
    assert gets[-1].range is not None and gets[-1].range.startswith("bytes=")
    start = int(gets[-1].range.split("=")[1].split("-")[0])
    assert 0 < start <= content_of(root).info(layer.digest).size
    # (The killed fetch's 200 may be logged late, once the proxy drops its upstream connection.)
    statuses = [e.status for e in blob_gets(registry.access_entries(mark, min_count=1), layer.digest)]
    assert statuses.count(206) == 1, statuses
    data = b"".join(iter(lambda f=open(content_of(root)._blob_path(layer.digest), "rb"): f.read(1 << 20), b""))
    assert hashlib.sha256(data).hexdigest() == layer.digest.hex
    assert "1 blob fetched" in r.stdout or "blobs fetched" in r.stdout


def test_two_processes_fetch_each_blob_once(registry, images, fault_proxy, repo_name: str, root: Path) -> None:
    _, pushed = _big_image(registry, images, repo_name)
    proxy = fault_proxy(registry)
    # Slow every blob a little so the two fetches overlap.
    proxy.inject(stall(0.4, after_bytes=1), path="/blobs/sha256:", method="GET")
    ref = f"{proxy.host}/{repo_name}:1"
    mark = registry.access_mark()
    procs = [subprocess.Popen([*DIST, "fetch", "--plain-http", "--progress", "plain", ref], env=dist_env(root),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    blobs = pushed.layout.image.blobs()[1:]  # config and layers; the manifest is read through /manifests/
    gets = blob_gets(registry.access_entries(mark, min_count=len(blobs)))
    for d in blobs:
        assert len([e for e in gets if e.path.endswith(str(d.digest))]) == 1, d
    assert any("waiting" in err for _, err in outs)
    with open_client(root) as c:
        assert [i.name for i in c.metadata.images().list()] == [ref]


def _put_manifest(registry, repo: str, ref: str, body: bytes, media_type: str) -> str:
    with registry.client() as http:
        r = http.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
    return str(Digest.from_bytes(body))


def _index(manifests: list[dict]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}).encode()


def test_hostile_index_fifty_deep(registry, repo_name: str, root: Path) -> None:
    base = registry.pushed["test/busybox:1"]
    # Copy the busybox manifest's blobs into the new repository by pushing the layout there.
    pushed = registry.push_layout(base.layout, repo_name, "base")
    inner = {"mediaType": pushed.media_type, "digest": pushed.digest,
             "size": len(registry.manifest_bytes(repo_name, "base"))}
    digests = []
    for _ in range(50):
        body = _index([inner])
        dg = _put_manifest(registry, repo_name, str(Digest.from_bytes(body)), body, mt.OCI_INDEX)
        digests.append(dg)
        inner = {"mediaType": mt.OCI_INDEX, "digest": dg, "size": len(body)}
    _put_manifest(registry, repo_name, "deep", _index([inner]), mt.OCI_INDEX)
    mark = registry.access_mark()
    t0 = time.monotonic()
    with open_client(root) as c:
        with pytest.raises(InvalidArgumentError, match="nested more than 8 levels deep"):
            fetch(c, registry.ref(f"{repo_name}:deep"), all_platforms=True, resolver_options=PLAIN)
        assert c.metadata.images().list() == []
    assert time.monotonic() - t0 < 20
    gets = [e for e in registry.access_entries(mark) if e.method == "GET"]
    paths = [e.path for e in gets]
    assert len(paths) == len(set(paths))


def test_hostile_index_ten_thousand_copies(registry, repo_name: str, root: Path) -> None:
    base = registry.pushed["test/busybox:1"]
    pushed = registry.push_layout(base.layout, repo_name, "base")
    entry = {"mediaType": pushed.media_type, "digest": pushed.digest, "size": len(registry.manifest_bytes(repo_name, "base")),
             "platform": {"os": "linux", "architecture": "amd64"}}
    _put_manifest(registry, repo_name, "copies", _index([entry] * 10_000), mt.OCI_INDEX)
    mark = registry.access_mark()
    t0 = time.monotonic()
    with open_client(root) as c:
        with pytest.raises(InvalidArgumentError, match="lists 10000 manifests, more than the limit of 1000"):
            fetch(c, registry.ref(f"{repo_name}:copies"), resolver_options=PLAIN)
        assert c.metadata.images().list() == []
    assert time.monotonic() - t0 < 20
    assert blob_gets(registry.access_entries(mark)) == []


def test_lying_registry_leaves_no_image_and_the_next_fetch_succeeds(registry, fault_proxy, root: Path) -> None:
    pushed = registry.pushed["test/busybox:1"]
    config = pushed.layout.image.config
    proxy = fault_proxy(registry)
    proxy.inject(flip_byte(10), path=f"/blobs/{config.digest}", method="GET")
    ref = f"{proxy.host}/test/busybox:1"
    with open_client(root) as c:
        with pytest.raises(FailedPreconditionError, match=f"{config.digest}.*digest mismatch"):
            fetch(c, ref, resolver_options=PLAIN)
        assert c.metadata.images().list() == []
        with pytest.raises(NotFoundError):
            c.content.info(config.digest)
        # The same proxy, now honest: the next fetch through it succeeds.
        proxy.clear_faults()
        img = fetch(c, ref, resolver_options=PLAIN)
        assert str(img.target.digest) == pushed.digest and c.content.info(config.digest).size == config.size
        assert [i.name for i in c.metadata.images().list()] == [ref]


class _ForeignServer:
    """A plain HTTP server on 127.0.0.1 serving ``blobs[path]``, recording each request's path and ``Authorization``."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.blobs = blobs
        self.seen: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                data = server.blobs.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_foreign_layers_are_fetched_only_when_the_resolver_follows_their_urls(registry_basic, repo_name: str,
                                                                              tmp_path: Path) -> None:
    reg = registry_basic
    foreign = os.urandom(70_000)
    digest = Digest.from_bytes(foreign)
    server = _ForeignServer({"/foreign.tar.gz": foreign})
    try:
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        normal = b"an ordinary layer"
        reg.upload_blob(repo_name, config)
        reg.upload_blob(repo_name, normal)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA2_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                       "digest": str(Digest.from_bytes(config))},
            "layers": [
                {"mediaType": mt.DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP, "size": len(foreign), "digest": str(digest),
                 "urls": [f"{server.url}/foreign.tar.gz"]},
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(normal),
                 "digest": str(Digest.from_bytes(normal))},
            ]}).encode()
        reg.put_manifest(repo_name, "1", manifest, mt.DOCKER_SCHEMA2_MANIFEST)
        hosts = tmp_path / "certs.d"
        (hosts / reg.host).mkdir(parents=True)
        (hosts / reg.host / "hosts.toml").write_text(f'server = "https://{reg.host}"\nca = "{reg.ca_cert}"\n')
        ref = reg.ref(f"{repo_name}:1")
        creds = dict(hosts_dir=hosts, username=reg.username, secret=reg.password)

        with open_client(tmp_path / "off" / "root") as c:
            img = fetch(c, ref, resolver_options=ResolverOptions(**creds))
            assert check(c.content, img.target).available
            with pytest.raises(NotFoundError):
                c.content.info(digest)
        assert server.seen == []

        with open_client(tmp_path / "on" / "root") as c:
            fetch(c, ref, resolver_options=ResolverOptions(allow_foreign_urls=True, **creds))
            desc = Descriptor(media_type=mt.DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP, digest=digest, size=len(foreign))
            assert read_blob(c.content, desc) == foreign
        # From its URL, without the registry's credentials.
        assert server.seen == [("/foreign.tar.gz", None)]

        server.blobs["/foreign.tar.gz"] = foreign[:-1] + bytes([foreign[-1] ^ 0xFF])
        with open_client(tmp_path / "lying" / "root") as c:
            with pytest.raises(FailedPreconditionError, match=f"{digest}.*digest mismatch"):
                fetch(c, ref, resolver_options=ResolverOptions(allow_foreign_urls=True, **creds))
            with pytest.raises(NotFoundError):
                c.content.info(digest)
            assert c.metadata.images().list() == []
    finally:
        server.close()
