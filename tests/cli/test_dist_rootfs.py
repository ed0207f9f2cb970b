"""``dist pull``, ``dist rootfs …``, ``dist apply`` and ``dist snapshots …`` as a user runs them, against the real
registry, and the docs/snapshots.md example."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from hoist.snapshots import Mount, mounted
from hoist.unpack import chain_ids

from support.cli import example_steps, local_env, run_dist, run_example_steps

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)


def dist(env: dict[str, str], *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return run_dist(env, *args, input=input)


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_pull_then_prepare_a_rootfs(registry, env, snapshotter: str) -> None:
    image = "test/whiteout:1"
    ref = registry.ref(image)
    pushed = registry.pushed[image]
    r = dist(env, "pull", "--plain-http", "--progress", "plain", "--snapshotter", snapshotter, ref)
    assert r.returncode == 0, r.stderr
    chains = [str(c) for c in chain_ids(pushed.layout.image.diff_ids)]
    blobs = len(pushed.layout.image.blobs())
    assert re.fullmatch(rf"{re.escape(ref)} {pushed.digest}: {blobs} blobs fetched, 0 already present, .*; "
                        rf"unpacked into {snapshotter} as {chains[-1]}\n", r.stdout), r.stdout
    assert len(re.findall(r"^unpack sha256:\w{12}: applied ", r.stderr, re.M)) == len(chains)

    r = dist(env, "snapshots", "ls", "--snapshotter", snapshotter)
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["KEY", "PARENT", "KIND"]
    assert sorted(rows[1:]) == sorted([[chains[0], "committed"]] + [[c, p, "committed"] for p, c in zip(chains, chains[1:])])

    r = dist(env, "rootfs", "prepare", "--snapshotter", snapshotter, chains[-1], "my-rootfs")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"mount -t (\S+) (\S+) <target> -o (\S+)\n", r.stdout)
    assert m and m[1] == ("bind" if snapshotter == "native" else "overlay"), r.stdout
    with mounted([Mount(type=m[1], source=m[2], options=tuple(m[3].split(",")))]) as root:
        assert not (root / "etc" / "gone.txt").exists()
        assert (root / "etc" / "kept.txt").read_text() == "keep me\n"
        assert os.readlink(root / "bin" / "sh") == "busybox"
    if snapshotter == "native":
        r = dist(env, "pull", "--plain-http", "--progress", "plain", "--snapshotter", snapshotter, ref)
        assert r.returncode == 0, r.stderr
        assert f"0 blobs fetched, {blobs} already present" in r.stdout
        assert len(re.findall(r"^unpack sha256:\w{12}: reused", r.stderr, re.M)) == len(chains)


def test_rootfs_unpack_usage_rm(registry, env) -> None:
    ref = registry.ref("test/layers:1")
    pushed = registry.pushed["test/layers:1"]
    assert dist(env, "fetch", "--plain-http", "--progress", "none", ref).returncode == 0
    chains = [str(c) for c in chain_ids(pushed.layout.image.diff_ids)]
    r = dist(env, "rootfs", "unpack", "--snapshotter", "native", ref)
    assert (r.returncode, r.stdout) == (0, chains[-1] + "\n"), r.stderr
    r = dist(env, "rootfs", "unpack", "--snapshotter", "native", pushed.digest)
    assert r.stdout == chains[-1] + "\n"
    assert r.stderr.count(": reused ->") == 3

    r = dist(env, "snapshots", "usage", "--snapshotter", "native", chains[0])
    header, row = r.stdout.splitlines()
    assert header.split() == ["KEY", "SIZE", "INODES"]
    assert row.split()[0] == chains[0] and row.split()[1:3] == ["1.0", "MiB"]

    r = dist(env, "snapshots", "rm", "--snapshotter", "native", chains[0])
    assert r.returncode == 1
    assert r.stderr == f"dist: snapshot {chains[0]}: cannot remove, it has children (e.g. {chains[1]})\n"
    assert dist(env, "snapshots", "rm", "--snapshotter", "native", chains[2], chains[1], chains[0]).returncode == 0
    assert dist(env, "snapshots", "ls", "--snapshotter", "native").stdout.splitlines() == ["KEY  PARENT  KIND"]

    r = dist(env, "rootfs", "prepare", "--snapshotter", "native", "sha256:" + "0" * 64, "k")
    assert (r.returncode, r.stderr) == (1, f"dist: snapshot k: parent sha256:{'0' * 64}: not found\n")


def test_apply_reports_diff_id_and_refuses_hostile_layers(env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("hi\n")
    layer = subprocess.run(["tar", "-C", src, "-c", "etc"], check=True, capture_output=True).stdout
    target = tmp_path / "target"
    target.mkdir()
    r = dist(env, "apply", str(target), input=layer)
    assert (r.returncode, r.stdout) == (0, f"sha256:{hashlib.sha256(layer).hexdigest()} {len(layer)}\n"), r.stderr
    assert (target / "etc" / "motd").read_text() == "hi\n"
    r = dist(env, "apply", "--expected-diff-id", "sha256:" + "1" * 64, str(target), input=layer)
    assert r.returncode == 1 and r.stderr.startswith("dist: layer stdin: diff ID mismatch: expected sha256:1111")
    evil = subprocess.run(["tar", "-C", src, "-cP", "--transform=s,^etc,../../escape,", "etc/motd"],
                          check=True, capture_output=True).stdout
    r = dist(env, "apply", str(target), input=evil)
    assert (r.returncode, r.stderr) == (1, "dist: layer stdin: entry '../../escape/motd': path climbs above the root\n")
    assert not (tmp_path.parent / "escape").exists()


def test_docs_example(registry, tmp_path: Path, env: dict[str, str]) -> None:
    steps = example_steps(REPO / "docs" / "snapshots.md")
    assert len(steps) > 6
    env = {**env, "REGISTRY": registry.host}
    for cmd, expect, out in run_example_steps(steps, tmp_path, env):
        lines = out.splitlines()
        assert len(lines) == len(expect) or not expect, (cmd, out)
        for got, want in zip(lines, expect):
            if want.endswith("…"):  # a prefix: the rest varies
                assert " ".join(got.split()).startswith(" ".join(want[:-1].split())), (cmd, got, want)
            else:
                assert got.split() == want.split(), (cmd, got, want)
