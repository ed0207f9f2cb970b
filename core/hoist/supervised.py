"""The runtime side of supervised tasks: a base for runtimes that run one supervisor process per task.

A :class:`SupervisedRuntime` keeps each task in a directory ``tasks/<namespace>/<id>`` under its state
(the files :mod:`hoist.taskstate` describes), starts the task's supervisor as a detached child
(``python -I -S``, with the runtime's package and Hoist's core on ``sys.path`` and nothing else) and reads
its one-line report; a :class:`SupervisedTask` answers state, wait and delete from the records alone, so
any runtime instance on the same directory sees the same tasks, across daemon restarts.

Runtimes say how a container starts, is signalled and listed, and what a spec must hold, by overriding
the hooks (``_live_status``, ``start``, ``kill``, ``pids``, ``_check_spec``, ``_prepare``, …).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from hoist import taskstate
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from hoist.runtime import DEFAULT_NAMESPACE, IO, UNKNOWN_EXIT_STATUS, Bundle, Exit, Status, TaskState, check_identifier
from hoist.snapshots import mount_all, unmount_all
from hoist.taskstate import EXIT_FILE, INIT_FILE, SHIM_FILE, SHIM_LOG, SPEC_FILE, TASK_FILE, alive, pidfd, read_json

#: Seconds a supervisor gets to report, and a killed task to exit.
CREATE_TIMEOUT = 60.0
_POLL = 0.05
_CORE_PARENT = str(Path(__file__).resolve().parents[1])


def _parse_time(text: str | None) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(text or "")
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc)


def check_io(io: IO, uri: str) -> None:
    """Refuse terminals and relative or NUL-holding stream paths."""
    if io.terminal:
        raise UnsupportedError(f"{uri}: terminals are not supported; give files or FIFOs for stdin, stdout and stderr")
    for name in ("stdin", "stdout", "stderr"):
        path = getattr(io, name)
        if path and (not path.startswith("/") or "\x00" in path):
            raise InvalidArgumentError(f"{name} {path!r}: must be an absolute path")


def check_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON copy of ``spec`` with a process that has args, and ``root`` an object."""
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
    if not isinstance(out.setdefault("root", {}), dict):
        raise InvalidArgumentError("spec: root must be an object")
    return out


def send_signal(fd: int, sig: int) -> None:
    """Signal the process behind the pidfd ``fd``; one already gone is not an error."""
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    except OSError as e:
        if e.errno == 22:  # EINVAL
            raise InvalidArgumentError(f"signal {sig}: invalid") from None
        raise


def _wait_pidfd(fd: int | None, timeout: float | None) -> None:
    if fd is None:
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class SupervisedTask:
    """One task, backed by its directory; subclasses say how it starts, is signalled and listed."""

    def __init__(self, runtime: SupervisedRuntime, directory: Path, *, id: str, namespace: str) -> None:
        self._runtime = runtime
        self._dir = directory
        self._id = id
        self._namespace = namespace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._namespace}/{self._id})"

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

    def _record(self, name: str) -> dict[str, Any] | None:
        return read_json(self._dir / name)

    def _exit(self) -> Exit | None:
        rec = self._record(EXIT_FILE)
        if rec is None:
            return None
        return Exit(status=int(rec["status"]), exited_at=_parse_time(rec.get("exited_at")),
                    pid=int(rec.get("pid", 0)), error=str(rec.get("error", "")))

    def _settled_exit(self) -> Exit | None:
        """The exit record, waiting briefly for a supervisor that is writing it; ``None`` while the task runs."""
        ex = self._exit()
        if ex is not None:
            return ex
        init = self._record(INIT_FILE)
        if alive(init):
            return None
        deadline = time.monotonic() + 2.0
        while alive(self._record(SHIM_FILE)) and time.monotonic() < deadline:
            time.sleep(0.005)
            ex = self._exit()
            if ex is not None:
                return ex
        ex = self._exit()
        if ex is not None:
            return ex
        # The supervisor died without recording the exit: nobody can know the status any more.
        return Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_dt.datetime.now(_dt.timezone.utc),
                    pid=int((init or {}).get("pid", 0)))

    def _live_status(self) -> Status | None:
        """``CREATED`` or ``RUNNING`` for a task with no exit record; ``None`` when it may just have exited."""
        raise NotImplementedError

    def state(self) -> TaskState:
        info = self._record(TASK_FILE) or {}
        init = self._record(INIT_FILE) or {}
        common = dict(id=self._id, namespace=self._namespace, pid=int(init.get("pid", 0)), bundle=self._dir,
                      io=IO.from_json(info.get("io") or {}))  # fmt: skip
        ex = self._settled_exit()
        if ex is None:
            status = self._live_status()
            if status is not None:
                return TaskState(status=status, **common)
            ex = self._settled_exit()
            if ex is None:
                return TaskState(status=Status.RUNNING, **common)
        return TaskState(status=Status.STOPPED, exit_status=ex.status, exited_at=ex.exited_at, **common)

    def _startable(self) -> TaskState:
        """The state of a task that may start now; otherwise why it cannot."""
        st = self.state()
        if st.status is not Status.CREATED:
            what = "has exited" if st.status is Status.STOPPED else "was already started"
            raise FailedPreconditionError(f"{self._name}: cannot start: it {what}")
        return st

    def start(self) -> int:
        raise NotImplementedError

    def kill(self, signal: int, *, all: bool = False) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def _running_init(self) -> dict[str, Any] | None:
        """The init record while the init runs, else ``None``."""
        init = self._record(INIT_FILE)
        return init if self._exit() is None and alive(init) else None

    def wait(self, timeout: float | None = None) -> Exit:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ex = self._exit()
            if ex is not None:
                return ex
            shim = pidfd(self._record(SHIM_FILE))
            if shim is None:
                ex = self._settled_exit()
                if ex is not None:
                    return ex
                time.sleep(_POLL)  # a supervisor that has not written shim.json yet
            else:
                left = 1.0 if deadline is None else max(0.0, min(deadline - time.monotonic(), 1.0))
                _wait_pidfd(shim, left)
            if deadline is not None and time.monotonic() >= deadline:
                ex = self._exit()
                if ex is not None:
                    return ex
                raise UnavailableError(f"{self._name}: still running after {timeout:g}s")

    def _after_exit(self) -> None:
        """Delete's hook between the init's exit and the supervisor's (e.g. tell an external runtime)."""

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
            ex = self.wait(CREATE_TIMEOUT)
        except UnavailableError:
            raise FailedPreconditionError(f"{self._name}: cannot delete: its process did not exit after SIGKILL") from None
        self._after_exit()
        _wait_pidfd(pidfd(self._record(SHIM_FILE)), 5.0)
        self._runtime._release(self._dir)
        return ex

    def _kill_quietly(self, sig: int, *, all: bool) -> None:
        try:
            self.kill(sig, all=all)
        except NotFoundError:
            pass


class SupervisedRuntime:
    """Task directories under ``state/tasks``, each with its own supervisor; ``root`` is kept for bundles.

    Subclasses set ``uri``, ``task_class`` and ``supervisor`` (``(module, function)`` the supervisor runs
    with ``[core_path, task_dir]``), and ``config`` must have ``kill_timeout``.
    """

    uri: ClassVar[str]
    task_class: ClassVar[type[SupervisedTask]]
    supervisor: ClassVar[tuple[str, str]]
    #: Where the runtime's own package is (a parent of the ``supervisor`` module's package).
    package_parent: ClassVar[str]

    def __init__(self, *, root: Path, state: Path, config: Any) -> None:
        self.root = Path(root)
        self.state = Path(state)
        self.config = config
        self._tasks = self.state / "tasks"

    def _task_dir(self, id: str, namespace: str) -> Path:
        check_identifier("container id", id)
        check_identifier("namespace", namespace)
        return self._tasks / namespace / id

    def _task(self, directory: Path, id: str, namespace: str) -> Any:
        return self.task_class(self, directory, id=id, namespace=namespace)

    # ---- hooks

    def _check_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return check_spec(spec)

    def _prepare(self, directory: Path, spec: dict[str, Any], rootfs: Path, name: str) -> None:
        """Check ``spec`` against ``rootfs`` and lay out what the supervisor needs besides the records."""

    def _task_record(self, id: str, namespace: str) -> dict[str, Any]:
        """Fields of ``task.json`` beyond id, namespace, IO and what was mounted."""
        return {}

    def _create_failed(self, id: str, namespace: str) -> None:
        """Undo what the runtime's own tools did for a task whose creation failed."""

    def _invalid(self, msg: Mapping[str, Any]) -> bool:
        """Whether the supervisor's error report is the caller's fault (the bundle), not the host's."""
        return msg.get("kind") == "invalid"

    # ---- tasks

    def create(self, id: str, bundle: Bundle, io: IO = IO(), *, namespace: str = DEFAULT_NAMESPACE) -> Any:
        directory = self._task_dir(id, namespace)
        check_io(io, self.uri)
        spec = self._check_spec(bundle.spec)
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
                    raise InvalidArgumentError(
                        f"{name}: no root filesystem: give bundle mounts, a rootfs directory or an absolute root.path"
                    )
                rootfs = Path(given)
            if not rootfs.is_dir():
                raise InvalidArgumentError(f"{name}: root filesystem {rootfs}: not a directory")
            spec["root"]["path"] = str(rootfs)
            self._prepare(directory, spec, rootfs, name)
            (directory / SPEC_FILE).write_text(json.dumps(spec, indent=1))
            task = {"id": id, "namespace": namespace, "io": io.to_json(), "mounted": mounted,
                    "created_at": taskstate.now(), **self._task_record(id, namespace)}  # fmt: skip
            (directory / TASK_FILE).write_text(json.dumps(task))
            self._launch(directory, name)
        except BaseException:
            self._create_failed(id, namespace)
            self._release(directory, mounted=mounted)
            raise
        return self._task(directory, id, namespace)

    def _launch(self, directory: Path, name: str) -> None:
        module, function = self.supervisor
        boot = f"import sys; sys.path[:0] = sys.argv[1:3]; from {module} import {function}; {function}(sys.argv[2:])"
        with open(directory / SHIM_LOG, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", boot, self.package_parent, _CORE_PARENT, str(directory)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd="/", start_new_session=True,
                close_fds=True,
            )
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], CREATE_TIMEOUT)
            line = proc.stdout.readline() if ready else b""
        finally:
            proc.stdout.close()
            proc.wait()
        if not ready:
            self._kill_supervisor(directory)
            raise UnavailableError(f"{name}: the container was not ready after {CREATE_TIMEOUT:g}s")
        try:
            msg = json.loads(line) if line.strip() else None
        except ValueError:
            msg = None
        if msg is None:
            log_lines = (directory / SHIM_LOG).read_text(errors="replace").strip().splitlines()
            raise FailedPreconditionError(f"{name}: the supervisor failed: {log_lines[-1] if log_lines else 'no report'}")
        if "error" in msg:
            raise (InvalidArgumentError if self._invalid(msg) else FailedPreconditionError)(f"{name}: {msg['error']}")

    def _kill_supervisor(self, directory: Path) -> None:
        for record in (INIT_FILE, SHIM_FILE):
            fd = pidfd(read_json(directory / record))
            if fd is not None:
                try:
                    send_signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)

    def _release(self, directory: Path, *, mounted: bool | None = None) -> None:
        if mounted is None:
            mounted = bool((read_json(directory / TASK_FILE) or {}).get("mounted"))
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

    def get(self, id: str, *, namespace: str = DEFAULT_NAMESPACE) -> Any:
        directory = self._task_dir(id, namespace)
        if not (directory / INIT_FILE).exists():
            raise NotFoundError(f"task {namespace}/{id}: not found")
        return self._task(directory, id, namespace)

    def tasks(self, *, namespace: str | None = None) -> list[Any]:
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
            out += [self._task(self._tasks / ns / i, i, ns) for i in ids if (self._tasks / ns / i / INIT_FILE).exists()]
        return out

    def close(self) -> None:
        return None
