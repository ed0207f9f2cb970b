"""The snapshotter conformance suite against the builtin native and overlayfs snapshotters, plus their plugin glue."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from hoist.errors import PluginSkipped
from hoist.snapshots import Mount, mounted
from hoist.snapshotters import native, overlay
from hoist.snapshotters.native import NativeSnapshotter
from hoist.snapshotters.overlay import OverlaySnapshotter, check_overlay
from hoist.testing.snapshots import SnapshotterSuite


class TestNative(SnapshotterSuite):
    @pytest.fixture
    def snapshotter_factory(self, tmp_path: Path):
        return functools.partial(NativeSnapshotter, tmp_path / "native")


class TestOverlay(SnapshotterSuite):
    @pytest.fixture
    def snapshotter_factory(self, tmp_path: Path):
        check_overlay(tmp_path)
        return functools.partial(OverlaySnapshotter, tmp_path / "overlay")


def test_overlay_mounts_are_lowerdir_chains(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path)
    sn.prepare("a")
    sn.commit("l1", "a")
    sn.prepare("b", "l1")
    sn.commit("l2", "b")
    (m,) = sn.prepare("c", "l2")
    assert m.type == "overlay"
    lowers = m.option("lowerdir").split(":")
    assert lowers == [str(tmp_path / "snapshots" / "2" / "fs"), str(tmp_path / "snapshots" / "1" / "fs")]
    assert m.option("upperdir") == str(tmp_path / "snapshots" / "3" / "fs")
    (v,) = sn.view("v", "l2")
    assert v.type == "overlay" and v.read_only and v.option("upperdir") is None
    sn.close()


def test_overlay_skips_with_reason_where_it_cannot_mount(tmp_path: Path) -> None:
    # overlayfs cannot use another overlay's merged directory as its upper layer
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    m = Mount(type="overlay", source="overlay", options=(f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"))
    with mounted([m]) as root:
        with pytest.raises(PluginSkipped, match="overlay"):
            check_overlay(root)


def test_long_lowerdir_lists_still_mount(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    sn = OverlaySnapshotter(deep)
    parent = ""
    for i in range(40):
        with mounted(sn.prepare(f"k{i}", parent)) as root:
            (root / f"f{i}").write_text(str(i))
        sn.commit(f"c{i}", f"k{i}")
        parent = f"c{i}"
    (m,) = sn.view("v", parent)
    assert len(m.option("lowerdir")) > os.sysconf("SC_PAGE_SIZE")
    with mounted([m]) as root:
        assert sorted(os.listdir(root)) == sorted(f"f{i}" for i in range(40))
    sn.close()


def test_plugins_register_under_their_uris() -> None:
    seen = []
    native.hoist_register_plugins(seen.append)
    overlay.hoist_register_plugins(seen.append)
    assert [r.uri for r in seen] == ["hoist.snapshotter.v1.native", "hoist.snapshotter.v1.overlayfs"]


def test_overlay_check_mount_never_shows_on_the_host_even_when_killed(tmp_path):
    # kill -9 of a process during the overlayfs plugin's start-up check must not leave a mount behind.
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "root"
    root.mkdir()
    code = (
        "import os, sys, time\n"
        "real = os.listdir\n"
        "def slow(p):\n"
        "    if str(p).endswith('merged'):\n"
        "        print('mounted', flush=True); time.sleep(3)\n"
        "    return real(p)\n"
        "os.listdir = slow\n"
        "from hoist.snapshotters.overlay import check_overlay\n"
        "check_overlay(__import__('pathlib').Path(sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "mounted\n"  # the child has the overlay mounted now
    host_mounts = open("/proc/self/mountinfo").read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert str(root) not in host_mounts
    time.sleep(0.2)
    assert str(root) not in open("/proc/self/mountinfo").read()
