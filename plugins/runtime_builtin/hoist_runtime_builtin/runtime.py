"""The builtin runtime: runs OCI bundles in Linux namespaces with pivot_root, one supervisor per task.

Layout under the plugin's state directory, one directory per task (``tasks/<namespace>/<id>``): the
files :mod:`hoist.taskstate` describes (``config.json``, ``rootfs/`` where snapshot mounts go,
``task.json``, ``shim.json``, ``init.json``, ``exit.json``, ``shim.log``) and ``exec.fifo`` (present
until the task starts).  All state lives in these files: any runtime instance on the same directory
sees the same tasks.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PluginSkipped
from hoist.runtime import Status
from hoist.supervised import SupervisedRuntime, SupervisedTask, check_spec, send_signal
from hoist.taskstate import INIT_FILE, SPEC_FILE, alive, pidfd
from hoist_runtime_builtin.shim import EXEC_FIFO

URI = "hoist.runtime.v1.builtin"


def check_host() -> None:
    """Skip on hosts where namespaces cannot be created (not Linux, not root)."""
    if not sys.platform.startswith("linux"):
        raise PluginSkipped(f"the builtin runtime needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise PluginSkipped("the builtin runtime needs root to create namespaces")


@attrs.frozen(kw_only=True)
class BuiltinRuntimeConfig:
    """``[plugins."hoist.runtime.v1.builtin"]``.

    :ivar kill_timeout: seconds a running task gets between SIGTERM and SIGKILL when it is deleted.
    """

    kill_timeout: float = 10.0


def _check_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = check_spec(spec)
    proc = out["process"]
    cwd = proc.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgumentError(f"spec: process.cwd {cwd!r}: must be an absolute path")
    user = proc.get("user") or {}
    for key in ("uid", "gid"):
        v = user.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 2**31 - 1:
            raise InvalidArgumentError(f"spec: process.user.{key} {v!r}: out of range")
    for g in user.get("additionalGids") or ():
        if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g <= 2**31 - 1:
            raise InvalidArgumentError(f"spec: process.user.additionalGids {g!r}: out of range")
    return out


class BuiltinTask(SupervisedTask):
    """One task of the builtin runtime, backed by its directory (see the module docstring)."""

    def _live_status(self) -> Status:
        return Status.CREATED if os.path.lexists(self._dir / EXEC_FIFO) else Status.RUNNING

    def start(self) -> int:
        st = self._startable()
        fifo = self._dir / EXEC_FIFO
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FailedPreconditionError(f"{self._name}: cannot start: it was already started") from None
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(100):
                    try:
                        if os.read(fd, 1):
                            break
                    except BlockingIOError:
                        pass
                if not os.path.lexists(fifo):
                    raise FailedPreconditionError(f"{self._name}: cannot start: it was already started")
                if self._settled_exit() is not None:
                    raise FailedPreconditionError(f"{self._name}: cannot start: it exited before it started")
        finally:
            os.close(fd)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        return st.pid

    def _init_pidfd(self) -> int:
        """A pidfd for the container's init; the pid cannot be reused while it is open and unreaped."""
        init = self._record(INIT_FILE)
        fd = pidfd(init)
        if fd is not None and self._exit() is None and alive(init):
            return fd
        if fd is not None:
            os.close(fd)
        raise NotFoundError(f"{self._name}: process already finished")

    def kill(self, signal: int, *, all: bool = False) -> None:
        fd = self._init_pidfd()
        try:
            if all:
                for pid in self.pids()[1:]:
                    try:
                        os.kill(pid, signal)
                    except ProcessLookupError:
                        pass
            send_signal(fd, signal)
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        init = self._running_init()
        if init is None:
            return []
        pid = int(init["pid"])
        spec = self._record(SPEC_FILE) or {}
        namespaces = {ns.get("type") for ns in (spec.get("linux") or {}).get("namespaces") or ()}
        if "pid" not in namespaces:
            return [pid]
        try:
            ns = os.stat(f"/proc/{pid}/ns/pid")
        except OSError:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == pid:
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/pid")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev):
                out.append(int(entry))
        return [pid] + sorted(out)


class BuiltinRuntime(SupervisedRuntime):
    """``hoist.runtime.v1.builtin``: task directories under ``state``; ``root`` is kept for bundles' future use."""

    name = "builtin"
    uri = URI
    task_class = BuiltinTask
    supervisor = ("hoist_runtime_builtin.shim", "run")
    # The supervisor starts without site (editable installs and .pth files cost ~100 ms) and finds this
    # package by its location; it imports nothing but the stdlib, hoist.taskstate and this package.
    package_parent = str(Path(__file__).resolve().parents[1])

    def __init__(self, *, root: Path, state: Path, config: BuiltinRuntimeConfig | None = None) -> None:
        super().__init__(root=root, state=state, config=config or BuiltinRuntimeConfig())

    def _check_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return _check_spec(spec)

    def _prepare(self, directory: Path, spec: dict[str, Any], rootfs: Path, name: str) -> None:
        os.mkfifo(directory / EXEC_FIFO, 0o600)
