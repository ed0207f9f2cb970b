"""The builtin runtime: runs OCI bundles in Linux namespaces with pivot_root, one supervisor per task.

Layout under the plugin's state directory, one directory per task (``tasks/<namespace>/<id>``):
``config.json`` (the spec), ``rootfs/`` (where snapshot mounts go), ``task.json`` (id, IO, what
was mounted), ``shim.json`` and ``init.json`` (pid and start time of the supervisor and of the
container's init), ``exec.fifo`` (present until the task starts), ``exit.json`` (once it exited)
and ``shim.log``.  All state lives in these files: any runtime instance on the same directory
sees the same tasks.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import select
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
from hoist.runtime import (
    DEFAULT_NAMESPACE,
    IO,
    UNKNOWN_EXIT_STATUS,
    Bundle,
    Exit,
    Status,
    TaskState,
    check_identifier,
)
from hoist.snapshots import mount_all, unmount_all
from hoist_runtime_builtin import linux
from hoist_runtime_builtin.shim import EXEC_FIFO, EXIT_FILE, INIT_FILE, SHIM_FILE, SPEC_FILE, TASK_FILE

URI = "hoist.runtime.v1.builtin"
_CREATE_TIMEOUT = 60.0
# The supervisor starts without site (editable installs and .pth files cost ~100 ms) and finds this
# package by its location; it imports nothing but the stdlib and this package.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from hoist_runtime_builtin.shim import run; run(sys.argv[1:])"
_POLL = 0.05


def check_host() -> None:
    """Skip on hosts where namespaces cannot be created (not Linux, not root)."""
    if not sys.platform.startswith("linux"):
        raise PluginSkipped(f"the builtin runtime needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise PluginSkipped("the builtin runtime needs root to create namespaces")


@attrs.frozen(kw_only=True)
class BuiltinRuntimeConfig:
    """``[plugins."hoist.runtime.v1.builtin"]``."""

    #: Seconds a running task gets between SIGTERM and SIGKILL when it is deleted.
    kill_timeout: float = 10.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def _alive(record: Mapping[str, Any] | None) -> bool:
    """Whether the process ``record`` describes still runs (same pid *and* start time, not a zombie)."""
    if not record or not record.get("pid"):
        return False
    pid = int(record["pid"])
    if linux.proc_starttime(pid) != record.get("starttime"):
        return False
    return linux.proc_state(pid) not in (None, "Z", "X")


def _pidfd(record: Mapping[str, Any] | None) -> int | None:
    """A pidfd for the process ``record`` describes, or ``None`` if that process is gone."""
    if not record or not record.get("pid"):
        return None
    try:
        fd = os.pidfd_open(int(record["pid"]))
    except ProcessLookupError:
        return None
    if linux.proc_starttime(int(record["pid"])) != record.get("starttime"):
        os.close(fd)
        return None
    return fd


def _parse_time(text: str | None) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(text or "")
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc)


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
    out.setdefault("root", {})
    if not isinstance(out["root"], dict):
        raise InvalidArgumentError("spec: root must be an object")
    return out


class BuiltinTask:
    """One task of the builtin runtime, backed by its directory (see the module docstring)."""

    def __init__(self, runtime: BuiltinRuntime, directory: Path, *, id: str, namespace: str) -> None:
        self._runtime = runtime
        self._dir = directory
        self._id = id
        self._namespace = namespace

    def __repr__(self) -> str:
        return f"BuiltinTask({self._namespace}/{self._id})"

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

    def _exit(self) -> Exit | None:
        rec = _read_json(self._dir / EXIT_FILE)
        if rec is None:
            return None
        return Exit(
            status=int(rec["status"]),
            exited_at=_parse_time(rec.get("exited_at")),
            pid=int(rec.get("pid", 0)),
            error=str(rec.get("error", "")),
        )

    def _settled_exit(self) -> Exit | None:
        """The exit record, waiting briefly for a supervisor that is writing it; ``None`` while the task runs."""
        ex = self._exit()
        if ex is not None:
            return ex
        init = _read_json(self._dir / INIT_FILE)
        if _alive(init):
            return None
        deadline = time.monotonic() + 2.0
        while _alive(_read_json(self._dir / SHIM_FILE)) and time.monotonic() < deadline:
            time.sleep(0.005)
            ex = self._exit()
            if ex is not None:
                return ex
        ex = self._exit()
        if ex is not None:
            return ex
        # The supervisor died without recording the exit: nobody can know the status any more.
        return Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_dt.datetime.now(_dt.timezone.utc), pid=int((init or {}).get("pid", 0)))

    def state(self) -> TaskState:
        info = _read_json(self._dir / TASK_FILE) or {}
        init = _read_json(self._dir / INIT_FILE) or {}
        ex = self._settled_exit()
        common = dict(id=self._id, namespace=self._namespace, pid=int(init.get("pid", 0)), bundle=self._dir,
                      io=IO.from_json(info.get("io") or {}))  # fmt: skip
        if ex is not None:
            return TaskState(status=Status.STOPPED, exit_status=ex.status, exited_at=ex.exited_at, **common)
        status = Status.CREATED if os.path.lexists(self._dir / EXEC_FIFO) else Status.RUNNING
        return TaskState(status=status, **common)

    def start(self) -> int:
        st = self.state()
        if st.status is not Status.CREATED:
            what = "has exited" if st.status is Status.STOPPED else "was already started"
            raise FailedPreconditionError(f"{self._name}: cannot start: it {what}")
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
        init = _read_json(self._dir / INIT_FILE)
        fd = _pidfd(init)
        if fd is not None and self._exit() is None and _alive(init):
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
            _send_signal(fd, signal)
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        init = _read_json(self._dir / INIT_FILE)
        if not _alive(init) or self._exit() is not None:
            return []
        pid = int(init["pid"])
        spec = _read_json(self._dir / SPEC_FILE) or {}
        namespaces = {ns.get("type") for ns in (spec.get("linux") or {}).get("namespaces") or ()}
        if "pid" not in namespaces:
            return [pid]
        try:
            ns = os.stat(f"/proc/{pid}/ns/pid")
        except OSError:
            return []
        out = [pid]
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == pid:
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/pid")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev):
                out.append(int(entry))
        return [pid] + sorted(out[1:])

    def wait(self, timeout: float | None = None) -> Exit:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ex = self._exit()
            if ex is not None:
                return ex
            shim = _pidfd(_read_json(self._dir / SHIM_FILE))
            if shim is None:
                ex = self._settled_exit()
                if ex is not None:
                    return ex
                time.sleep(_POLL)  # a supervisor that has not written shim.json yet
            else:
                try:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    select.select([shim], [], [], left)
                finally:
                    os.close(shim)
            if deadline is not None and time.monotonic() >= deadline:
                ex = self._exit()
                if ex is not None:
                    return ex
                raise UnavailableError(f"{self._name}: still running after {timeout:g}s")

    def delete(self) -> Exit:
        st = self.state()
        if st.status is Status.CREATED:
            self._kill_quietly(signal.SIGKILL, all=True)
        elif st.status is Status.RUNNING:
            self._kill_quietly(signal.SIGTERM, all=False)
            try:
                self.wait(self._runtime.config.kill_timeout)
            except UnavailableError:
                self._kill_quietly(signal.SIGKILL, all=True)
        try:
            ex = self.wait(_CREATE_TIMEOUT)
        except UnavailableError:
            raise FailedPreconditionError(f"{self._name}: cannot delete: its process did not exit after SIGKILL") from None
        shim = _pidfd(_read_json(self._dir / SHIM_FILE))
        if shim is not None:
            try:
                select.select([shim], [], [], 5.0)
            finally:
                os.close(shim)
        self._runtime._release(self._dir)
        return ex

    def _kill_quietly(self, sig: int, *, all: bool) -> None:
        try:
            self.kill(sig, all=all)
        except NotFoundError:
            pass


def _send_signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise InvalidArgumentError(f"signal {sig}: invalid") from None
        raise


class BuiltinRuntime:
    """``hoist.runtime.v1.builtin``: task directories under ``state``; ``root`` is kept for bundles' future use."""

    name = "builtin"

    def __init__(self, *, root: Path, state: Path, config: BuiltinRuntimeConfig | None = None) -> None:
        self.root = Path(root)
        self.state = Path(state)
        self.config = config or BuiltinRuntimeConfig()
        self._tasks = self.state / "tasks"

    def _task_dir(self, id: str, namespace: str) -> Path:
        check_identifier("container id", id)
        check_identifier("namespace", namespace)
        return self._tasks / namespace / id

    def create(self, id: str, bundle: Bundle, io: IO = IO(), *, namespace: str = DEFAULT_NAMESPACE) -> BuiltinTask:
        directory = self._task_dir(id, namespace)
        _check_io(io)
        spec = _check_spec(bundle.spec)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o711)
        except FileExistsError:
            raise AlreadyExistsError(f"task {namespace}/{id}: already exists") from None
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
                    raise InvalidArgumentError(
                        f"task {namespace}/{id}: no root filesystem: give bundle mounts, a rootfs directory or an absolute root.path"
                    )
                rootfs = Path(given)
            if not rootfs.is_dir():
                raise InvalidArgumentError(f"task {namespace}/{id}: root filesystem {rootfs}: not a directory")
            spec["root"]["path"] = str(rootfs)
            (directory / SPEC_FILE).write_text(json.dumps(spec, indent=1))
            task = {"id": id, "namespace": namespace, "io": io.to_json(), "mounted": mounted,
                    "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}  # fmt: skip
            (directory / TASK_FILE).write_text(json.dumps(task))
            os.mkfifo(directory / EXEC_FIFO, 0o600)
            self._launch(directory, f"task {namespace}/{id}")
        except BaseException:
            self._release(directory, mounted=mounted)
            raise
        return BuiltinTask(self, directory, id=id, namespace=namespace)

    def _launch(self, directory: Path, name: str) -> None:
        with open(directory / "shim.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, _PACKAGE_PARENT, str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], _CREATE_TIMEOUT)
            line = proc.stdout.readline() if ready else b""
        finally:
            proc.stdout.close()
            proc.wait()
        if not ready:
            self._kill_supervisor(directory)
            raise UnavailableError(f"{name}: the container was not ready after {_CREATE_TIMEOUT:g}s")
        try:
            msg = json.loads(line) if line.strip() else None
        except ValueError:
            msg = None
        if msg is None:
            log_text = (directory / "shim.log").read_text(errors="replace").strip().splitlines()
            why = log_text[-1] if log_text else "no report"
            raise FailedPreconditionError(f"{name}: the supervisor failed: {why}")
        if "error" in msg:
            cls = InvalidArgumentError if msg.get("kind") == "invalid" else FailedPreconditionError
            raise cls(f"{name}: {msg['error']}")

    def _kill_supervisor(self, directory: Path) -> None:
        for name in (INIT_FILE, SHIM_FILE):
            fd = _pidfd(_read_json(directory / name))
            if fd is not None:
                try:
                    _send_signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)

    def _release(self, directory: Path, *, mounted: bool | None = None) -> None:
        if mounted is None:
            mounted = bool((_read_json(directory / TASK_FILE) or {}).get("mounted"))
        if mounted:
            unmount_all(directory / "rootfs")
        # Never recursive: a rootfs that is still mounted must stay untouched, not be emptied.
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise FailedPreconditionError(f"task directory {directory}: cannot remove {entry.name}: {e.strerror}") from None
        os.rmdir(directory)

    def get(self, id: str, *, namespace: str = DEFAULT_NAMESPACE) -> BuiltinTask:
        directory = self._task_dir(id, namespace)
        if not (directory / INIT_FILE).exists():
            raise NotFoundError(f"task {namespace}/{id}: not found")
        return BuiltinTask(self, directory, id=id, namespace=namespace)

    def tasks(self, *, namespace: str | None = None) -> list[BuiltinTask]:
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
            for id in ids:
                if (self._tasks / ns / id / INIT_FILE).exists():
                    out.append(BuiltinTask(self, self._tasks / ns / id, id=id, namespace=ns))
        return out

    def close(self) -> None:
        return None
