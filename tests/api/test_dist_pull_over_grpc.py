"""``dist --address … pull``: fetch through the daemon's Content service, unpack with its Snapshots and Diff services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.hoistd import run_ctr

BIN = Path(sys.executable).parent


def dist(sock: Path, *args: str, namespace: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOIST_")}
    return subprocess.run([BIN / "dist", "--address", str(sock), "-n", namespace, *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False)


@pytest.mark.parametrize("kind", ["hoistd", "containerd"])
def test_dist_pull_unpacks_in_the_daemon(kind, request, registry):
    sock = Path(request.getfixturevalue(kind).address)
    ns = f"pull-{kind}"
    ref = registry.ref("test/whiteout:1")
    pushed = registry.pushed["test/whiteout:1"]
    r = dist(sock, "pull", "--progress", "none", "--snapshotter", "native", ref, namespace=ns)
    assert r.returncode == 0, r.stderr
    chain = r.stdout.strip().rsplit(" as ", 1)[1]
    assert r.stdout.startswith(f"{ref} {pushed.digest}: ")
    assert r.stdout.rstrip().endswith(f"unpacked into native as {chain}")

    snaps = run_ctr(sock, "snapshots", "--snapshotter", "native", "ls", namespace=ns)
    assert snaps.returncode == 0, snaps.stderr
    rows = [line.split() for line in snaps.stdout.decode().splitlines()[1:]]
    assert [chain, "Committed"] in [[row[0], row[-1]] for row in rows]
    # The chain's files, seen through a view the daemon mounts for ctr: the whiteout was applied.
    view = run_ctr(sock, "snapshots", "--snapshotter", "native", "view", f"check-{kind}", chain, namespace=ns)
    assert view.returncode == 0, view.stderr
    shown = run_ctr(sock, "snapshots", "--snapshotter", "native", "mounts", "/mnt", f"check-{kind}", namespace=ns)
    mounts = shown.stdout.decode().split()  # mount -t bind <source> /mnt -o rbind,ro
    assert mounts[:3] == ["mount", "-t", "bind"], shown.stdout
    src = mounts[3]
    assert (Path(src) / "etc" / "kept.txt").exists()
    assert not (Path(src) / "etc" / "gone.txt").exists()
    run_ctr(sock, "snapshots", "--snapshotter", "native", "rm", f"check-{kind}", namespace=ns)

    again = dist(sock, "pull", "--progress", "none", "--snapshotter", "native", ref, namespace=ns)
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip().endswith(f"unpacked into native as {chain}")


def test_dist_pull_names_a_snapshotter_the_daemon_lacks(hoistd, registry):
    r = dist(Path(hoistd.address), "pull", "--progress", "none", "--snapshotter", "zfs",
             registry.ref("test/busybox:1"), namespace="pull-missing")
    assert r.returncode == 1
    assert r.stderr == f"dist: snapshotter zfs: not loaded in the daemon at {hoistd.address}\n"
