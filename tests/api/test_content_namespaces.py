"""Content is namespaced, as containerd's: what ``ctr`` and ``dist`` see per namespace, and GC across namespaces.

The content conformance suite passes through the gRPC proxy against a namespaced Content service.  The
``ctr`` steps run against ``hoistd`` and against a private real containerd, so each assertion is also a
statement of containerd's behaviour.  Then: ``images rm --sync`` in one namespace keeps what another
namespace uses, and an embedded ``dist fetch`` on the daemon's root keeps its blobs through a collection
the daemon runs in the middle of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.api.content_client import RemoteContentStore, open_store
from hoist.api.server import serve
from hoist.metadata import SQLiteMetadataStore
from hoist.services.content import ContentService
from hoist.testing.content import ContentStoreSuite
from hoist_content_local.store import LocalContentStore
from support.cli import DIST, LOCAL_BUILTINS, config_env, config_text, run_dist
from support.hoistd import HoistdProcess, run_ctr


@pytest.fixture
def namespaced_address(tmp_path: Path) -> Iterator[str]:
    """A Content service over a local store and a metadata store, on a unix socket in a temp dir."""
    db = SQLiteMetadataStore(tmp_path / "meta.db")
    sock = tmp_path / "run" / "hoistd.sock"
    server = serve(f"unix://{sock}", [ContentService(LocalContentStore(tmp_path / "root", fsync=False), metadata=db)])
    try:
        yield str(sock)
    finally:
        server.stop(None).wait(5)
        db.close()


class TestNamespacedContentOverGrpc(ContentStoreSuite):
    """The conformance suite through the gRPC proxy, against a service answering from one namespace's records."""

    @pytest.fixture
    def store(self, namespaced_address: str) -> Iterator[RemoteContentStore]:
        remote = open_store(namespaced_address, namespace="suite")
        try:
            yield remote
        finally:
            remote.close()

    @pytest.fixture
    def store_opener(self, namespaced_address: str):  # type: ignore[no-untyped-def]
        return functools.partial(open_store, namespaced_address, "suite")


def ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    assert proc.returncode == 0, (out, err)
    return out


def listed(sock: Path, ns: str) -> dict[str, str]:
    """``ctr -n NS content ls``: digest -> labels column."""
    lines = ok(run_ctr(sock, "content", "ls", namespace=ns)).strip().splitlines()[1:]
    return {line.split()[0]: line.split()[-1] for line in lines}


@pytest.fixture(params=["hoistd", "containerd"])
def daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    proc = request.getfixturevalue(request.param)
    yield request.param, Path(proc.address)


def remote_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOIST_")}


def embedded_env(hoistd: HoistdProcess) -> dict[str, str]:
    """``dist`` running its plugins in-process on the daemon's root (no --address)."""
    cfg = hoistd.base / "dist-embedded.toml"
    if not cfg.exists():
        cfg.write_text(config_text(hoistd.base, ("hoist.content.v1.local", "hoist.resolver.v1.docker", *LOCAL_BUILTINS),
                                   required=("hoist.content.v1.local",),
                                   plugin_config={"hoist.content.v1.local": "fsync = false"}))
    return config_env(cfg)


def blob_file(hoistd: HoistdProcess, digest: str) -> Path:
    alg, hx = digest.split(":")
    return hoistd.base / "root" / "hoist.content.v1.local" / "blobs" / alg / hx


def test_a_blob_lives_in_the_namespaces_that_recorded_it(daemon: tuple[str, Path], registry) -> None:  # noqa: ANN001
    kind, sock = daemon
    a, b = f"cns-a-{kind}", f"cns-b-{kind}"
    ref = registry.ref("test/busybox:1")
    layout = registry.pushed["test/busybox:1"].layout
    layer = str(layout.image.layers[0].digest)
    data = layout.blob(layout.image.layers[0].digest)
    ok(run_ctr(sock, "content", "fetch", "--plain-http", ref, namespace=a))
    assert layer in listed(sock, a)
    assert layer not in listed(sock, b)
    for args in (("get", layer), ("label", layer, "team=b")):
        proc = run_ctr(sock, "content", *args, namespace=b)
        assert proc.returncode == 1 and layer.encode() in proc.stderr and b"not found" in proc.stderr, proc.stderr

    # b records it too (from the registry or, the bytes being on disk already, without them); labels are per namespace
    ok(run_ctr(sock, "content", "fetch", "--plain-http", ref, namespace=b))
    ok(run_ctr(sock, "content", "label", layer, "team=a", namespace=a))
    ok(run_ctr(sock, "content", "label", layer, "team=b", namespace=b))
    assert "team=a" in listed(sock, a)[layer] and "team=b" not in listed(sock, a)[layer]
    assert "team=b" in listed(sock, b)[layer] and "team=a" not in listed(sock, b)[layer]
    assert [r.split()[0] for r in ok(run_ctr(sock, "content", "ls", "labels.team==a", namespace=b)).splitlines()[1:]] == []

    # dist through the daemon sees what ctr sees
    env = remote_env()
    assert ok(run_dist(env, "--address", sock, "-n", b, "content", "ls", "-q")).split() == \
        ok(run_ctr(sock, "content", "ls", "-q", namespace=b)).split()
    info = json.loads(ok(run_dist(env, "--address", sock, "-n", a, "content", "info", layer)))
    assert info["Labels"]["team"] == "a"

    # deleting in a leaves b's copy
    assert ok(run_ctr(sock, "content", "rm", layer, namespace=a)) == f"{layer}\n"
    assert run_ctr(sock, "content", "get", layer, namespace=a).returncode == 1
    got = run_ctr(sock, "content", "get", layer, namespace=b)
    assert got.returncode == 0 and got.stdout == data


def test_embedded_dist_and_ctr_agree_on_a_namespace(hoistd: HoistdProcess) -> None:
    sock, ns = hoistd.address, "cns-agree"
    data = b"written by an embedded dist\n" * 50
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    env = embedded_env(hoistd)
    ok(run_dist(env, "-n", ns, "content", "ingest", "from-dist", "--expected-digest", dgst, "--label", "by=dist",
                input=data))
    assert listed(hoistd.address, ns) == {dgst: "by=dist"}
    assert dgst not in listed(sock, "cns-elsewhere")
    assert ok(run_dist(env, "-n", "cns-elsewhere", "content", "ls", "-q")).split() == []
    r = run_dist(env, "-n", "cns-elsewhere", "content", "get", dgst)
    assert (r.returncode, r.stderr) == (1, f"dist: content {dgst}: not found\n")
    assert ok(run_dist(env, "-n", ns, "content", "ls", "-q")).split() == ok(run_ctr(sock, "content", "ls", "-q", namespace=ns)).split()
    ok(run_ctr(sock, "content", "rm", dgst, namespace=ns))
    assert not blob_file(hoistd, dgst).exists(), "the last record takes the bytes with it"


def test_images_rm_sync_keeps_what_another_namespace_uses(hoistd: HoistdProcess, registry) -> None:  # noqa: ANN001
    sock = hoistd.address
    ref = registry.ref("test/opaque:1")  # no other test of this module uses it
    pushed = registry.pushed["test/opaque:1"]
    digests = {str(d.digest) for d in pushed.layout.image.blobs()}
    for ns in ("cns-gc-a", "cns-gc-b"):
        ok(run_ctr(sock, "content", "fetch", "--plain-http", ref, namespace=ns))
    ok(run_ctr(sock, "images", "rm", "--sync", ref, namespace="cns-gc-a"))
    assert not digests & set(listed(sock, "cns-gc-a"))
    assert digests <= set(listed(sock, "cns-gc-b"))
    assert all(blob_file(hoistd, d).exists() for d in digests)
    check = ok(run_ctr(sock, "images", "check", namespace="cns-gc-b"))
    assert "complete" in check and "incomplete" not in check

    # dist's --sync (embedded, on the same root) removes the unique blobs only when nothing else uses them
    env = embedded_env(hoistd)
    ok(run_dist(env, "-n", "cns-gc-c", "fetch", "--plain-http", "--progress", "none", ref))
    assert ok(run_dist(env, "-n", "cns-gc-c", "images", "rm", "--sync", ref)) == f"{ref}\n"
    assert ok(run_dist(env, "-n", "cns-gc-c", "content", "ls", "-q")).split() == []
    assert all(blob_file(hoistd, d).exists() for d in digests), "cns-gc-b still uses them"
    ok(run_dist(remote_env(), "--address", sock, "-n", "cns-gc-b", "images", "rm", "--sync", ref))
    busybox = {str(d.digest) for d in registry.pushed["test/busybox:1"].layout.image.blobs()}
    assert not any(blob_file(hoistd, d).exists() for d in digests - busybox), "only what other tests' images share stays"


def test_an_embedded_fetch_keeps_its_blobs_through_a_daemon_collection(hoistd: HoistdProcess, registry) -> None:  # noqa: ANN001
    sock, ns = hoistd.address, "cns-race"
    ref = registry.ref("test/layers:1")
    pushed = registry.pushed["test/layers:1"]
    held = pushed.layout.image.layers[-1]
    others = {str(d.digest) for d in pushed.layout.image.blobs()} - {str(held.digest)}
    root = hoistd.base / "root"
    view = SQLiteMetadataStore(root / "hoist.metadata.v1.sqlite" / "meta.db").content(
        LocalContentStore(root / "hoist.content.v1.local", fsync=False), ns)
    # This process holds the ingest ref of one layer: the fetch writes everything else, then waits for it.
    writer = view.writer(f"layer-{held.digest}")
    proc = subprocess.Popen([DIST, "-n", ns, "fetch", "--plain-http", "--json", ref], env=embedded_env(hoistd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        finished: set[str] = set()
        waiting = False
        for line in proc.stdout:
            ev = json.loads(line)
            if ev.get("state") in ("done", "exists") and "digest" in ev:
                finished.add(ev["digest"])
            waiting |= ev.get("state") == "waiting" and ev.get("digest") == str(held.digest)
            if waiting and others <= finished:
                break
        assert waiting and others <= finished, (waiting, finished)
        # committed, not yet named by an image: only the fetch's lease holds them while the daemon collects
        leases = ok(run_ctr(sock, "leases", "ls", namespace=ns)).splitlines()[1:]
        assert len(leases) == 1 and "containerd.io/gc.expire=" in leases[0]
        ok(run_ctr(sock, "leases", "create", "--id", "poke", namespace="cns-elsewhere"))
        ok(run_ctr(sock, "leases", "rm", "--sync", "poke", namespace="cns-elsewhere"))
        assert others <= set(listed(sock, ns))
        assert all(blob_file(hoistd, d).exists() for d in others)
    finally:
        writer.close()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["target"]["digest"] == pushed.digest
    check = ok(run_ctr(sock, "images", "check", namespace=ns))
    assert "complete" in check and "incomplete" not in check
    assert ok(run_ctr(sock, "leases", "ls", namespace=ns)).splitlines()[1:] == [], "the fetch's lease is gone"
