"""`make demo`'s job, run as a user runs it: registry, hoistd, fetch over the API, a container, clean stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def registries() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "docker-registry serve /tmp/hoist-demo-"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_demo_runs_end_to_end():
    before = registries()
    r = subprocess.run([sys.executable, REPO / "examples" / "demo.py"], capture_output=True, text=True, timeout=600)
    assert registries() - before == set(), "the demo left its registry running"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "hello from busybox" in out
    assert "pid 1 on demo2 as root" in out
    assert "unpacked into" in out
    listed = out.split("containers ls\n", 1)[1]
    assert "demo3" in listed.split("\n", 2)[1]
    assert "hoistd exited with 0; socket removed: True" in out
    assert out.rstrip().endswith("demo: done")
