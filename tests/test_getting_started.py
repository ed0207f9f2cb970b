"""docs/getting-started.md, section 2, run as written against a TLS registry with Basic auth."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_credentials_example_runs_as_written(registry_basic, tmp_path):
    text = (REPO / "docs" / "getting-started.md").read_text()
    section = text.split("## 2.", 1)[1].split("## 3.", 1)[0]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    home = tmp_path / "home"
    home.mkdir()
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode()).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOIST_", "DOCKER_"))}
    env.update(HOME=str(home), REGISTRY=registry_basic.host, CA=str(registry_basic.ca_cert), AUTH=auth,
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    r = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = f"{registry_basic.host}/test/busybox:1"
    assert f"{ref} {registry_basic.pushed['test/busybox:1'].digest}" in r.stdout
    assert f"\n{ref}\n" in r.stdout  # dist images ls -q
    assert r.stdout.rstrip().endswith("hello from busybox")
    assert (home / "hoist-root").is_dir()
