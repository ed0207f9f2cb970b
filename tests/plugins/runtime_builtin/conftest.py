"""Fixtures for the builtin runtime: a busybox root filesystem, a runtime on temp dirs, a run helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.testing.runtime import make_rootfs, task_runner
from hoist_runtime_builtin.runtime import BuiltinRuntime, BuiltinRuntimeConfig


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root filesystem, shared by the session (tests must not write to it)."""
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(name="make_rootfs")
def make_rootfs_fixture():
    """``make_rootfs(dir) -> dir``: a private busybox root filesystem a test may change."""
    return make_rootfs


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[BuiltinRuntime]:
    """A builtin runtime on fresh dirs; every task left over is deleted afterwards."""
    rt = BuiltinRuntime(root=tmp_path / "root", state=tmp_path / "state", config=BuiltinRuntimeConfig(kill_timeout=0.5))
    yield rt
    for task in rt.tasks():
        task.delete()


@pytest.fixture
def run(runtime: BuiltinRuntime, rootfs: Path, tmp_path: Path):
    """``run(args, image=ImageConfig(), **spec_options) -> Ran(exit, output)``: create, start, wait, delete."""
    return task_runner(runtime, rootfs, tmp_path)


@pytest.fixture
def make_spec(rootfs: Path):
    """``make_spec(args, **spec_options) -> dict``: a spec for the busybox root filesystem."""

    def _make(args: list[str], image: ImageConfig = ImageConfig(), **options) -> dict:
        return generate_spec(image, SpecOptions(args=args, **options), rootfs=rootfs)

    return _make
