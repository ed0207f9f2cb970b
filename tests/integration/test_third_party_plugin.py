"""A third-party plugin, built and installed as its own distribution, loads by entry point with no change to core."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def test_example_plugin_installs_and_loads_in_hoist_and_hoistd(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", site,
         REPO / "examples" / "plugin_minimal"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert list(site.glob("hoist_example_minimal-1.0.0.dist-info"))
    env = dict(os.environ, PYTHONPATH=str(site))
    cfg = tmp_path / "hoistd.toml"
    cfg.write_text(
        f'root = "{tmp_path / "root"}"\nstate = "{tmp_path / "state"}"\n'
        'enabled_plugins = ["hoist.content.v1.local", "hoist.example.v1.minimal"]\n'
        f'[grpc]\naddress = "{tmp_path / "hoistd.sock"}"\n'
        '[plugins."hoist.example.v1.minimal"]\ngreeting = "hello from a third party"\n')

    r = subprocess.run([BIN / "hoist", "--config", cfg, "plugins", "ls"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert ["hoist.example.v1", "minimal", "ok"] in [line.split() for line in r.stdout.splitlines()]
    greeting = tmp_path / "root" / "hoist.example.v1.minimal" / "greeting.txt"
    assert greeting.read_text() == "hello from a third party\n"

    greeting.unlink()
    log = tmp_path / "hoistd.log"
    proc = subprocess.Popen([BIN / "hoistd", "--config", cfg], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "hoistd serving" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "hoist.example.v1.minimal: ok" in log.read_text()
        assert greeting.read_text() == "hello from a third party\n"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0

    # Without the distribution on the path, the same config names the missing plugin.
    r = subprocess.run([BIN / "hoist", "--config", cfg, "plugins", "ls", "--detail"], capture_output=True, text=True,
                       timeout=60)
    assert "Error:         not installed (no builtin and no entry point named hoist.example.v1.minimal" in r.stdout
