"""``dist --address``: fetch, images and content through ``hoistd`` and through a real containerd; ``ctr`` sees the result."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_dist
from support.hoistd import run_ctr


@pytest.fixture(params=["hoistd", "containerd"])
def daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    proc = request.getfixturevalue(request.param)
    yield request.param, Path(proc.address)


def dist(sock: Path, *args: str, namespace: str) -> subprocess.CompletedProcess:
    return run_dist(_env(), "--address", sock, "-n", namespace, *args)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOIST_")}


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()


def test_dist_fetch_images_content_through_a_daemon(daemon: tuple[str, Path], registry) -> None:  # noqa: ANN001
    kind, sock = daemon
    ns = f"dist-{kind}"
    pushed = registry.pushed["test/busybox:1"]
    ref = registry.ref("test/busybox:1")
    out = ok(dist(sock, "fetch", "--plain-http", "--progress", "none", ref, namespace=ns))
    assert out.startswith(f"{ref} {pushed.digest}: ")

    listed = ok(dist(sock, "images", "ls", "-q", namespace=ns))
    assert listed == f"{ref}\n"
    ctr_images = ok(run_ctr(sock, "images", "ls", "-q", namespace=ns)).split()
    assert ctr_images == [ref]
    check = ok(dist(sock, "images", "check", namespace=ns))
    assert "complete (3/3)" in check

    blobs = ok(dist(sock, "content", "ls", "-q", namespace=ns)).split()
    layer = pushed.layout.image.layers[0]
    assert {pushed.digest, str(pushed.layout.image.config.digest), str(layer.digest)} <= set(blobs)
    got = run_dist(_env(), "--address", sock, "-n", ns, "content", "get", str(layer.digest), text=False)
    assert got.returncode == 0 and got.stdout == pushed.layout.blob(layer.digest)

    ok(dist(sock, "images", "tag", ref, "example.com/tagged:1", namespace=ns))
    assert sorted(ok(run_ctr(sock, "images", "ls", "-q", namespace=ns)).split()) == sorted(["example.com/tagged:1", ref])
    assert ok(dist(sock, "images", "rm", "example.com/tagged:1", ref, namespace=ns)) == f"example.com/tagged:1\n{ref}\n"
    assert ok(run_ctr(sock, "images", "ls", "-q", namespace=ns)) == ""
