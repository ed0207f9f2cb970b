"""A :class:`hoist.runtime.Runtime` that hands each bundle to runc (``runc create/start/kill/delete/state``).

Layout under the plugin's state directory: ``runc/<namespace>/`` is runc's own ``--root``; each task
has ``tasks/<namespace>/<id>/`` holding the bundle and the records of :mod:`hoist.taskstate`
(``config.json``, ``rootfs/`` for mounted snapshots, ``task.json``, ``shim.json``, ``init.json``,
``exit.json``) and ``runc.log``.  Task directories, supervisors and their records are
:mod:`hoist.supervised`'s; runc does the container.  All state is in files and in runc's root, so any
runtime instance on the same directory sees the same tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PluginSkipped
from hoist.runtime import Status
from hoist.supervised import CREATE_TIMEOUT, SupervisedRuntime, SupervisedTask, check_spec
from hoist_runtime_runc.shim import runc_error

URI = "hoist.runtime.v1.runc"
# runc's create errors that mean the bundle itself is wrong (the caller's fault), not the host.
_INVALID = ("executable file not found", "no such file or directory", "not a directory", "symlink", "symbolic link",
            "permission denied", "must be mounted on ordinary directory")


_DEFAULT_DEVICES = [
    {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None))
]
for _rule in _DEFAULT_DEVICES:
    if _rule["minor"] is None:
        del _rule["minor"]


@attrs.frozen(kw_only=True)
class RuncRuntimeConfig:
    """``[plugins."hoist.runtime.v1.runc"]``."""

    #: The runc binary (a name looked up in ``PATH``, or a path).
    runc: str = "runc"
    #: Seconds a running task gets between SIGTERM and SIGKILL when it is deleted.
    kill_timeout: float = 10.0


def check_host(config: RuncRuntimeConfig) -> None:
    """Skip when runc is missing or the process is not root."""
    if shutil.which(config.runc) is None:
        raise PluginSkipped(f"runc binary {config.runc!r} not found")
    if os.geteuid() != 0:
        raise PluginSkipped("runc needs root")


def check_host(config: RuncRuntimeConfig) -> None:
    """Skip when runc is missing or the process is not root."""
    if shutil.which(config.runc) is None:
        raise PluginSkipped(f"runc binary {config.runc!r} not found")
    if os.geteuid() != 0:
        raise PluginSkipped("runc needs root")


def _check_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = check_spec(spec)
    out["process"]["terminal"] = False
    linux = out.setdefault("linux", {})
    resources = linux.setdefault("resources", {})
    if "devices" not in resources:
        # runc enforces the devices cgroup: deny everything but the spec's own devices and the usual ones.
        allowed = [{"allow": True, "type": d.get("type", "c"), "major": d["major"], "minor": d["minor"], "access": "rwm"}
                   for d in linux.get("devices") or () if "major" in d and "minor" in d]
        resources["devices"] = [{"allow": False, "access": "rwm"}, *_DEFAULT_DEVICES, *allowed]
    return out


def _in_root(root: Path, path: str, limit: int = 40) -> Path | None:
    """``path`` resolved inside ``root`` as the container will see it (symlinks stay inside), or ``None``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if here.is_symlink():
            limit -= 1
            if limit < 0:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if not here.exists():
            return None
        done.append(part)
    return root.joinpath(*done)


class RuncTask(SupervisedTask):
    """One runc container and its supervisor, found through its task directory."""

    _runtime: RuncRuntime

    def _runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._runtime.runc(self._namespace, *args)

    def _live_status(self) -> Status | None:
        r = self._runc("state", self._id)
        status = json.loads(r.stdout).get("status") if r.returncode == 0 else ""
        if status == "created":
            return Status.CREATED
        if status in ("running", "paused"):
            return Status.RUNNING
        return None

    def start(self) -> int:
        st = self._startable()
        r = self._runc("start", self._id)
        if r.returncode != 0:
            raise FailedPreconditionError(f"{self._name}: cannot start: {runc_error(str(self._dir)) or r.stderr.strip()}")
        return st.pid

    def kill(self, signal: int, *, all: bool = False) -> None:
        if self._running_init() is None:
            raise NotFoundError(f"{self._name}: process already finished")
        r = self._runc("kill", *(["--all"] if all else []), self._id, str(int(signal)))
        if r.returncode != 0:
            if self._settled_exit() is not None:
                raise NotFoundError(f"{self._name}: process already finished")
            raise FailedPreconditionError(f"{self._name}: kill: {runc_error(str(self._dir)) or r.stderr.strip()}")

    def pids(self) -> list[int]:
        init = self._running_init()
        if init is None:
            return []
        r = self._runc("ps", "--format", "json", self._id)
        if r.returncode != 0:
            return []
        pid = int(init["pid"])
        found = json.loads(r.stdout or "[]") or []
        return [pid] + sorted(p for p in found if p != pid)

    def _after_exit(self) -> None:
        self._runc("delete", "--force", self._id)


class RuncRuntime(SupervisedRuntime):
    """``hoist.runtime.v1.runc``: every task is a runc container watched by its own supervisor."""

    name = "runc"
    uri = URI
    task_class = RuncTask
    supervisor = ("hoist_runtime_runc.shim", "main")
    package_parent = str(Path(__file__).resolve().parents[1])

    def __init__(self, *, root: Path, state: Path, config: RuncRuntimeConfig | None = None) -> None:
        super().__init__(root=root, state=state, config=config or RuncRuntimeConfig())
        self._runc = shutil.which(self.config.runc) or self.config.runc

    def runc(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run runc on ``namespace``'s root with ``args``."""
        return subprocess.run([self._runc, "--root", str(self.state / "runc" / namespace), *args],
                              capture_output=True, text=True, timeout=CREATE_TIMEOUT, stdin=subprocess.DEVNULL)

    def _check_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return _check_spec(spec)

    def _prepare(self, directory: Path, spec: dict[str, Any], rootfs: Path, name: str) -> None:
        cwd = spec["process"].get("cwd") or "/"
        found = _in_root(rootfs, cwd)
        if found is None or not found.is_dir():
            # runc would create it; a task must run where its image says, so refuse instead.
            raise InvalidArgumentError(f"{name}: working directory {cwd}: No such file or directory")
        (self.state / "runc" / directory.parent.name).mkdir(parents=True, exist_ok=True)

    def _task_record(self, id: str, namespace: str) -> dict[str, Any]:
        return {"runc": self._runc, "runc_root": str(self.state / "runc" / namespace)}

    def _create_failed(self, id: str, namespace: str) -> None:
        self.runc(namespace, "delete", "--force", id)

    def _invalid(self, msg: Mapping[str, Any]) -> bool:
        return msg.get("kind") == "invalid" or any(k in str(msg["error"]).lower() for k in _INVALID)
