"""``dist export`` → ``ctr images import`` and ``ctr images export`` → ``dist import`` against a private containerd."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.cli import local_env, run_dist


def dist(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_dist(local_env(root), *args)


def ctr(containerd, *args: str | Path) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run(["ctr", "--address", str(containerd.address), "--namespace", "hoist-transfer", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_archives_round_trip_through_ctr(containerd, images, tmp_path):
    layout = images.busybox()
    source = tmp_path / "source.tar"
    assert subprocess.run(["skopeo", "--insecure-policy", "copy", layout.oci_ref, f"oci-archive:{source}:1"],
                          capture_output=True).returncode == 0
    first = tmp_path / "first"
    r = dist(first, "import", "--base-name", "example.com/roundtrip", source)
    assert r.returncode == 0, r.stderr

    exported = tmp_path / "by-dist.tar"
    r = dist(first, "export", "example.com/roundtrip:1", exported)
    assert r.returncode == 0, r.stderr
    r = ctr(containerd, "images", "import", "--no-unpack", exported)
    assert r.returncode == 0, r.stderr
    listed = ctr(containerd, "images", "ls")
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("example.com/roundtrip:1 "))
    assert row[2] == layout.digest

    by_ctr = tmp_path / "by-ctr.tar"
    r = ctr(containerd, "images", "export", by_ctr, "example.com/roundtrip:1")
    assert r.returncode == 0, r.stderr
    second = tmp_path / "second"
    r = dist(second, "import", by_ctr)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example.com/roundtrip:1 {layout.digest}\n"
    blobs = {f"sha256:{p.name}" for p in (second / "root" / "hoist.content.v1.local" / "blobs" / "sha256").iterdir()}
    assert blobs == {str(d.digest) for d in layout.all_blobs()}
    ctr(containerd, "images", "rm", "example.com/roundtrip:1")
