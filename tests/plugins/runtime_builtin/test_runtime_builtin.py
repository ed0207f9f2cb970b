"""The builtin runtime runs ``hoist.testing.runtime.RuntimeSuite``, plus its own exact error messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.errors import InvalidArgumentError
from hoist.runtime import Bundle
from hoist.testing.runtime import RuntimeSuite, mountinfo
from hoist_runtime_builtin.runtime import BuiltinRuntime, BuiltinRuntimeConfig


class TestBuiltinRuntime(RuntimeSuite):
    @pytest.fixture
    def runtime(self, tmp_path: Path) -> Iterator[BuiltinRuntime]:
        rt = BuiltinRuntime(root=tmp_path / "root", state=tmp_path / "state", config=BuiltinRuntimeConfig(kill_timeout=0.5))
        yield rt
        for task in rt.tasks():
            task.delete()

    def test_missing_executable_message(self, runtime, rootfs, make_spec):
        with pytest.raises(InvalidArgumentError, match="exec no-such-tool: executable file not found in \\$PATH"):
            runtime.create("nox", Bundle(spec=make_spec(["no-such-tool"]), rootfs=rootfs))

    def test_proc_symlink_message(self, runtime, make_rootfs, make_spec, tmp_path):
        evil = make_rootfs(tmp_path / "evil")
        (evil / "proc").rmdir()
        os.symlink("/tmp", evil / "proc")
        with pytest.raises(InvalidArgumentError, match="mount destination /proc: /proc is a symbolic link in the image, refused"):
            runtime.create("evil", Bundle(spec=make_spec(["true"]), rootfs=evil))
        assert str(tmp_path) not in mountinfo()

    def test_missing_working_directory_message(self, runtime, rootfs, make_spec):
        with pytest.raises(InvalidArgumentError, match="working directory /nowhere: No such file or directory"):
            runtime.create("nocwd", Bundle(spec=make_spec(["true"], cwd="/nowhere"), rootfs=rootfs))

    def test_exec_failure_after_start_is_reported(self, runtime, make_rootfs, make_spec, tmp_path):
        root = make_rootfs(tmp_path / "broken")
        (root / "bin" / "broken").write_bytes(b"\x00not a program\n")
        os.chmod(root / "bin" / "broken", 0o755)
        task = runtime.create("broken", Bundle(spec=make_spec(["broken"]), rootfs=root))
        task.start()
        ex = task.wait(30)
        assert ex.status == 126
        assert ex.error == "exec broken: Exec format error"