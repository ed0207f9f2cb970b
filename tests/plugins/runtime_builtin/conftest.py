"""Fixtures for the builtin runtime: a busybox root filesystem, a runtime on temp dirs, a run helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.runtime import IO, Bundle, Exit
from hoist.testing.runtime import make_rootfs
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


@attrs.frozen
class Ran:
    exit: Exit
    output: str


@pytest.fixture
def run(runtime: BuiltinRuntime, rootfs: Path, tmp_path: Path):
    """``run(args, image=ImageConfig(), **spec_options) -> Ran(exit, output)``: create, start, wait, delete."""
    counter = iter(range(1000))

    def _run(args: list[str] | None, image: ImageConfig = ImageConfig(), *, stdin: str = "", **options) -> Ran:
        n = next(counter)
        out = tmp_path / f"out-{n}.txt"
        spec = generate_spec(image, SpecOptions(args=args, **options), rootfs=rootfs)
        task = runtime.create(f"run-{n}", Bundle(spec=spec, rootfs=rootfs), IO(stdin=stdin, stdout=str(out), stderr=str(out)))
        task.start()
        ex = task.wait(30)
        task.delete()
        return Ran(ex, out.read_text() if out.exists() else "")

    return _run


@pytest.fixture
def make_spec(rootfs: Path):
    """``make_spec(args, **spec_options) -> dict``: a spec for the busybox root filesystem."""

    def _make(args: list[str], image: ImageConfig = ImageConfig(), **options) -> dict:
        return generate_spec(image, SpecOptions(args=args, **options), rootfs=rootfs)

    return _make
