"""The runc runtime plugin: installed as its own distribution, it passes the runtime suite and replaces the builtin by config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.testing.runtime import RuntimeSuite
from support.cli import LOCAL_BUILTINS, run_hoist, write_config


@pytest.fixture(scope="package")
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
               "hoist.service.v1.execution", *LOCAL_BUILTINS]
    config = write_config(tmp_path / "config.toml", tmp_path, plugins,
                          required=["hoist.service.v1.execution", "hoist.runtime.v1.runc"],
                          plugin_config={"hoist.runtime.v1.runc": "kill_timeout = 1.0"})
    env = dict(example_env(site), HOIST_CONFIG=str(config))
    for k in ("HOIST_ROOT", "HOIST_STATE"):
        env.pop(k)

    r = run_hoist(env, "plugins", "ls", timeout=60)
    rows = [line.split() for line in r.stdout.splitlines()]
    assert ["hoist.runtime.v1", "runc", "ok"] in rows
    assert not any(row[:2] == ["hoist.runtime.v1", "builtin"] for row in rows)

    ref = registry.ref("test/busybox:1")
    r = run_hoist(env, "run", "--rm", "--plain-http", "--progress", "none", ref, "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from busybox\n"
    runc_root = tmp_path / "state" / "hoist.runtime.v1.runc" / "runc"
    assert runc_root.is_dir()
    r = run_hoist(env, "run", "--rm", "--plain-http", "--progress", "none", ref, "fails", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
