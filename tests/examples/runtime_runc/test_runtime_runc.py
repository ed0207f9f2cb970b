"""The runc runtime plugin: installed as its own distribution, it passes the runtime suite and replaces the builtin by config."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.testing.runtime import RuntimeSuite

BUILTINS = {
    "hoist.metadata.v1.sqlite": "hoist.metadata.plugin",
    "hoist.snapshotter.v1.native": "hoist.snapshotters.native",
    "hoist.snapshotter.v1.overlayfs": "hoist.snapshotters.overlay",
}
# `hoist` with these builtins and the container commands even before hoist.builtins and hoist.cli.hoist list them.
HOIST = [sys.executable, "-c", (
    "import sys, hoist.builtins as b\n"
    f"for k, v in {BUILTINS!r}.items(): b.BUILTINS.setdefault(k, v)\n"
    "sys.argv[0] = 'hoist'\n"
    "from hoist.cli import hoist_containers as h\n"
    "from hoist.cli.hoist import hoist, main\n"
    "for c in (h.run, h.containers): hoist.commands.setdefault(c.name, c)\n"
    "main()"
)]


@pytest.fixture(scope="session")
def site(install_example) -> Path:  # noqa: ANN001
    return install_example("runtime_runc")


class TestRuncRuntime(RuntimeSuite):
    @pytest.fixture
    def runtime(self, site: Path, tmp_path: Path) -> Iterator[object]:
        from hoist_runtime_runc.runtime import RuncRuntime, RuncRuntimeConfig

        rt = RuncRuntime(root=tmp_path / "root", state=tmp_path / "state", config=RuncRuntimeConfig(kill_timeout=0.5))
        yield rt
        for task in rt.tasks():
            task.delete()


def test_switching_the_config_to_runc_runs_the_same_image(site, registry, tmp_path, example_env):
    plugins = ["hoist.content.v1.local", "hoist.resolver.v1.docker", "hoist.runtime.v1.runc",
               "hoist.service.v1.execution", *BUILTINS]
    config = tmp_path / "config.toml"
    config.write_text(
        f'root = "{tmp_path / "root"}"\nstate = "{tmp_path / "state"}"\n'
        f"enabled_plugins = {json.dumps(plugins)}\n"
        'required_plugins = ["hoist.service.v1.execution", "hoist.runtime.v1.runc"]\n'
        '[plugins."hoist.runtime.v1.runc"]\nkill_timeout = 1.0\n')
    env = dict(example_env(site), HOIST_CONFIG=str(config))
    for k in ("HOIST_ROOT", "HOIST_STATE"):
        env.pop(k)

    r = subprocess.run([*HOIST, "plugins", "ls"], env=env, capture_output=True, text=True, timeout=60)
    rows = [line.split() for line in r.stdout.splitlines()]
    assert ["hoist.runtime.v1", "runc", "ok"] in rows
    assert not any(row[:2] == ["hoist.runtime.v1", "builtin"] for row in rows)

    ref = registry.ref("test/busybox:1")
    r = subprocess.run([*HOIST, "run", "--rm", "--plain-http", "--progress", "none", ref, "hello"], env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from busybox\n"
    runc_root = tmp_path / "state" / "hoist.runtime.v1.runc" / "runc"
    assert runc_root.is_dir()
    r = subprocess.run([*HOIST, "run", "--rm", "--plain-http", "--progress", "none", ref, "fails", "sh", "-c", "exit 7"],
                       env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 7, r.stderr
