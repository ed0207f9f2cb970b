"""A :class:`hoist.runtime.Runtime` that hands each bundle to runc (``runc create/start/kill/delete/state``).

Layout under the plugin's state directory: ``runc/<namespace>/`` is runc's own ``--root``; each task
has ``tasks/<namespace>/<id>/`` holding the bundle (``config.json``, ``rootfs/`` for mounted
snapshots), ``task.json``, the supervisor's ``shim.json``, ``init.json``, ``exit.json`` and
``runc.log``.  All state is in files and in runc's root, so any runtime instance on the same
directory sees the same tasks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PluginSkipped,
    UnavailableError,
    UnsupportedError,
)
from hoist.runtime import DEFAULT_NAMESPACE, IO, UNKNOWN_EXIT_STATUS, Bundle, Exit, Status, TaskState, check_identifier
from hoist.snapshots import mount_all, unmount_all
from hoist_runtime_runc.shim import EXIT_FILE, INIT_FILE, SHIM_FILE, TASK_FILE, proc_starttime, runc_error

URI = "hoist.runtime.v1.runc"
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from hoist_runtime_runc.shim import main; main(sys.argv[1:])"
_CREATE_TIMEOUT = 60.0
_POLL = 0.05
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(record: Mapping[str, Any] | None) -> bool:
    if not record or not record.get("pid"):
        return False
    return proc_starttime(int(record["pid"])) == record.get("starttime")


def _pidfd(record: Mapping[str, Any] | None) -> int | None:
    if not record or not record.get("pid"):
        return None
    try:
        fd = os.pidfd_open(int(record["pid"]))
    except ProcessLookupError:
        return None
    if proc_starttime(int(record["pid"])) != record.get("starttime"):
        os.close(fd)
        return None
    return fd


def _check_io(io: IO) -> None:
    if io.terminal:
        raise UnsupportedError(f"{URI}: terminals are not supported; give files or FIFOs for stdin, stdout and stderr")
    for name in ("stdin", "stdout", "stderr"):
        path = getattr(io, name)
        if path and (not path.startswith("/") or "\x00" in path):
            raise InvalidArgumentError(f"{name} {path!r}: must be an absolute path")


def _check_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        out = json.loads(json.dumps(spec))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"spec: not JSON: {e}") from None
    proc = out.get("process")
    if not isinstance(proc, dict):
        raise InvalidArgumentError("spec: process is missing")
    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) and "\x00" not in a for a in args):
        raise InvalidArgumentError("spec: process.args must be a non-empty list of strings")
    proc["terminal"] = False
    linux = out.setdefault("linux", {})
    resources = linux.setdefault("resources", {})
    if "devices" not in resources:
        # runc enforces the devices cgroup: deny everything but the spec's own devices and the usual ones.
        allowed = [{"allow": True, "type": d.get("type", "c"), "major": d["major"], "minor": d["minor"], "access": "rwm"}
                   for d in linux.get("devices") or () if "major" in d and "minor" in d]
        resources["devices"] = [{"allow": False, "access": "rwm"}, *_DEFAULT_DEVICES, *allowed]
    if not isinstance(out.setdefault("root", {}), dict):
        raise InvalidArgumentError("spec: root must be an object")
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


class RuncTask:
    """One runc container and its supervisor, found through its task directory."""

    def __init__(self, runtime: RuncRuntime, directory: Path, *, id: str, namespace: str) -> None:
        self._rt, self._dir, self._id, self._namespace = runtime, directory, id, namespace

    def __repr__(self) -> str:
        return f"RuncTask({self._namespace}/{self._id})"

    @property
    def id(self) -> str:
        return self._id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def bundle(self) -> Path:
        return self._dir

    @property
    def _name(self) -> str:
        return f"task {self._namespace}/{self._id}"

    def _runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._rt.runc(self._namespace, *args)

    def _exit(self) -> Exit | None:
        rec = _read_json(self._dir / EXIT_FILE)
        if rec is None:
            return None
        return Exit(status=int(rec["status"]), exited_at=_dt.datetime.fromisoformat(rec["exited_at"]),
                    pid=int(rec.get("pid", 0)))

    def _settled_exit(self) -> Exit | None:
        ex = self._exit()
        if ex is not None:
            return ex
        if _alive(_read_json(self._dir / INIT_FILE)):
            return None
        deadline = time.monotonic() + 2.0
        while _alive(_read_json(self._dir / SHIM_FILE)) and time.monotonic() < deadline:
            time.sleep(0.005)
            if (ex := self._exit()) is not None:
                return ex
        return self._exit() or Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_dt.datetime.now(_dt.timezone.utc),
                                    pid=int((_read_json(self._dir / INIT_FILE) or {}).get("pid", 0)))

    def state(self) -> TaskState:
        info = _read_json(self._dir / TASK_FILE) or {}
        init = _read_json(self._dir / INIT_FILE) or {}
        common = dict(id=self._id, namespace=self._namespace, pid=int(init.get("pid", 0)), bundle=self._dir,
                      io=IO.from_json(info.get("io") or {}))
        ex = self._settled_exit()
        if ex is not None:
            return TaskState(status=Status.STOPPED, exit_status=ex.status, exited_at=ex.exited_at, **common)
        r = self._runc("state", self._id)
        status = json.loads(r.stdout).get("status") if r.returncode == 0 else ""
        if status == "created":
            return TaskState(status=Status.CREATED, **common)
        if status in ("running", "paused"):
            return TaskState(status=Status.RUNNING, **common)
        ex = self._settled_exit()
        if ex is not None:
            return TaskState(status=Status.STOPPED, exit_status=ex.status, exited_at=ex.exited_at, **common)
        return TaskState(status=Status.RUNNING, **common)

    def start(self) -> int:
        st = self.state()
        if st.status is not Status.CREATED:
            what = "has exited" if st.status is Status.STOPPED else "was already started"
            raise FailedPreconditionError(f"{self._name}: cannot start: it {what}")
        r = self._runc("start", self._id)
        if r.returncode != 0:
            raise FailedPreconditionError(f"{self._name}: cannot start: {runc_error(str(self._dir)) or r.stderr.strip()}")
        return st.pid

    def kill(self, signal: int, *, all: bool = False) -> None:
        if self._exit() is not None or not _alive(_read_json(self._dir / INIT_FILE)):
            raise NotFoundError(f"{self._name}: process already finished")
        r = self._runc("kill", *(["--all"] if all else []), self._id, str(int(signal)))
        if r.returncode != 0:
            if self._settled_exit() is not None:
                raise NotFoundError(f"{self._name}: process already finished")
            raise FailedPreconditionError(f"{self._name}: kill: {runc_error(str(self._dir)) or r.stderr.strip()}")

    def pids(self) -> list[int]:
        init = _read_json(self._dir / INIT_FILE)
        if self._exit() is not None or not _alive(init):
            return []
        r = self._runc("ps", "--format", "json", self._id)
        if r.returncode != 0:
            return []
        pid = int(init["pid"])  # type: ignore[index]
        found = json.loads(r.stdout or "[]") or []
        return [pid] + sorted(p for p in found if p != pid)

    def wait(self, timeout: float | None = None) -> Exit:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if (ex := self._exit()) is not None:
                return ex
            shim = _pidfd(_read_json(self._dir / SHIM_FILE))
            if shim is None:
                if (ex := self._settled_exit()) is not None:
                    return ex
                time.sleep(_POLL)
            else:
                try:
                    left = _POLL * 20 if deadline is None else max(0.0, min(deadline - time.monotonic(), _POLL * 20))
                    select.select([shim], [], [], left)
                finally:
                    os.close(shim)
            if deadline is not None and time.monotonic() >= deadline:
                if (ex := self._exit()) is not None:
                    return ex
                raise UnavailableError(f"{self._name}: still running after {timeout:g}s")

    def delete(self) -> Exit:
        st = self.state()
        if st.status is Status.CREATED:
            self._kill_quietly(signal.SIGKILL, all=True)
        elif st.status is Status.RUNNING:
            self._kill_quietly(signal.SIGTERM, all=False)
            try:
                self.wait(self._rt.config.kill_timeout)
            except UnavailableError:
                self._kill_quietly(signal.SIGKILL, all=True)
        try:
            ex = self.wait(_CREATE_TIMEOUT)
        except UnavailableError:
            raise FailedPreconditionError(f"{self._name}: cannot delete: its process did not exit after SIGKILL") from None
        self._runc("delete", "--force", self._id)
        shim = _pidfd(_read_json(self._dir / SHIM_FILE))
        if shim is not None:
            try:
                select.select([shim], [], [], 5.0)
            finally:
                os.close(shim)
        self._rt._release(self._dir)
        return ex

    def _kill_quietly(self, sig: int, *, all: bool) -> None:
        try:
            self.kill(sig, all=all)
        except NotFoundError:
            pass


class RuncRuntime:
    """``hoist.runtime.v1.runc``: every task is a runc container watched by its own supervisor."""

    name = "runc"

    def __init__(self, *, root: Path, state: Path, config: RuncRuntimeConfig | None = None) -> None:
        self.root = Path(root)
        self.state = Path(state)
        self.config = config or RuncRuntimeConfig()
        self._runc = shutil.which(self.config.runc) or self.config.runc
        self._tasks = self.state / "tasks"

    def runc(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run runc on ``namespace``'s root with ``args``."""
        return subprocess.run([self._runc, "--root", str(self.state / "runc" / namespace), *args],
                              capture_output=True, text=True, timeout=_CREATE_TIMEOUT, stdin=subprocess.DEVNULL)

    def _task_dir(self, id: str, namespace: str) -> Path:
        check_identifier("container id", id)
        check_identifier("namespace", namespace)
        return self._tasks / namespace / id

    def create(self, id: str, bundle: Bundle, io: IO = IO(), *, namespace: str = DEFAULT_NAMESPACE) -> RuncTask:
        directory = self._task_dir(id, namespace)
        _check_io(io)
        spec = _check_spec(bundle.spec)
        name = f"task {namespace}/{id}"
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o711)
        except FileExistsError:
            raise AlreadyExistsError(f"{name}: already exists") from None
        mounted = False
        try:
            if bundle.mounts:
                rootfs = directory / "rootfs"
                rootfs.mkdir()
                mount_all(bundle.mounts, rootfs)
                mounted = True
            elif bundle.rootfs is not None:
                rootfs = Path(os.path.abspath(bundle.rootfs))
            else:
                given = spec["root"].get("path") or ""
                if not isinstance(given, str) or not given.startswith("/"):
                    raise InvalidArgumentError(f"{name}: no root filesystem: give bundle mounts, a rootfs directory or an absolute root.path")
                rootfs = Path(given)
            if not rootfs.is_dir():
                raise InvalidArgumentError(f"{name}: root filesystem {rootfs}: not a directory")
            cwd = spec["process"].get("cwd") or "/"
            found = _in_root(rootfs, cwd)
            if found is None or not found.is_dir():
                # runc would create it; a task must run where its image says, so refuse instead.
                raise InvalidArgumentError(f"{name}: working directory {cwd}: No such file or directory")
            spec["root"]["path"] = str(rootfs)
            (directory / "config.json").write_text(json.dumps(spec, indent=1))
            (self.state / "runc" / namespace).mkdir(parents=True, exist_ok=True)
            task = {"id": id, "namespace": namespace, "io": io.to_json(), "mounted": mounted, "runc": self._runc,
                    "runc_root": str(self.state / "runc" / namespace)}
            (directory / TASK_FILE).write_text(json.dumps(task))
            self._launch(directory, name)
        except BaseException:
            self.runc(namespace, "delete", "--force", id)
            self._release(directory, mounted=mounted)
            raise
        return RuncTask(self, directory, id=id, namespace=namespace)

    def _launch(self, directory: Path, name: str) -> None:
        with open(directory / "shim.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, _PACKAGE_PARENT, str(directory)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd="/",
                                    start_new_session=True, close_fds=True)
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], _CREATE_TIMEOUT)
            line = proc.stdout.readline() if ready else b""
        finally:
            proc.stdout.close()
            proc.wait()
        try:
            msg = json.loads(line) if line.strip() else None
        except ValueError:
            msg = None
        if msg is None:
            log_lines = (directory / "shim.log").read_text(errors="replace").strip().splitlines()
            raise FailedPreconditionError(f"{name}: the supervisor failed: {log_lines[-1] if log_lines else 'no report'}")
        if "error" in msg:
            text = str(msg["error"])
            invalid = msg.get("kind") == "invalid" or any(k in text.lower() for k in _INVALID)
            raise (InvalidArgumentError if invalid else FailedPreconditionError)(f"{name}: {text}")

    def _release(self, directory: Path, *, mounted: bool | None = None) -> None:
        if mounted is None:
            mounted = bool((_read_json(directory / TASK_FILE) or {}).get("mounted"))
        if mounted:
            unmount_all(directory / "rootfs")
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)  # never recursive: a rootfs still mounted must stay untouched
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise FailedPreconditionError(f"task directory {directory}: cannot remove {entry.name}: {e.strerror}") from None
        os.rmdir(directory)

    def get(self, id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RuncTask:
        directory = self._task_dir(id, namespace)
        if not (directory / INIT_FILE).exists():
            raise NotFoundError(f"task {namespace}/{id}: not found")
        return RuncTask(self, directory, id=id, namespace=namespace)

    def tasks(self, *, namespace: str | None = None) -> list[RuncTask]:
        if namespace is not None:
            check_identifier("namespace", namespace)
            spaces = [namespace]
        else:
            try:
                spaces = sorted(os.listdir(self._tasks))
            except FileNotFoundError:
                return []
        out = []
        for ns in spaces:
            try:
                ids = sorted(os.listdir(self._tasks / ns))
            except (FileNotFoundError, NotADirectoryError):
                continue
            out += [RuncTask(self, self._tasks / ns / i, id=i, namespace=ns) for i in ids
                    if (self._tasks / ns / i / INIT_FILE).exists()]
        return out

    def close(self) -> None:
        return None
