"""Runtimes: the interface between Hoist and whatever runs containers (plugin type ``hoist.runtime.v1``).

Pure types and helpers only; runtimes are plugins, e.g. the builtin ``hoist.runtime.v1.builtin``.

A runtime turns a :class:`Bundle` (an OCI runtime spec plus a root filesystem) into a :class:`Task`:
``create`` prepares the container and leaves it waiting, ``start`` runs its process, ``kill`` signals
it, ``wait`` blocks until it exits, ``delete`` releases everything it held.  Tasks outlive the
process that created them: a new runtime instance on the same state directory finds them again
through ``get`` and ``tasks``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from hoist.errors import InvalidArgumentError
from hoist.snapshots import Mount
from hoist.taskstate import UNKNOWN_EXIT_STATUS, exit_status_from_wait

PLUGIN_TYPE = "hoist.runtime.v1"

#: The namespace tasks live in when the caller names none.
DEFAULT_NAMESPACE = "default"

_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_MAX_IDENTIFIER = 76


def check_identifier(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid container or namespace identifier, as containerd defines them.

    Letters, digits and single ``.``, ``_`` or ``-`` between them, at most 76 characters: such a
    name is safe as one path component.

    :raises InvalidArgumentError: anything else (``../x``, ``a/b``, NUL, too long, empty).
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"invalid {kind} {value!r}: not a string")
    shown = value if len(value) <= 40 else value[:37] + "..."
    if not value:
        raise InvalidArgumentError(f"invalid {kind} {shown!r}: must not be empty")
    if len(value) > _MAX_IDENTIFIER:
        raise InvalidArgumentError(f"invalid {kind} {shown!r}: longer than {_MAX_IDENTIFIER} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidArgumentError(
            f"invalid {kind} {shown!r}: use letters, digits and single '.', '_' or '-' between them"
        )
    return value


class Status(str, enum.Enum):
    """Where a task is in its life: ``created`` (waiting for start), ``running``, ``stopped`` (exited)."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


@attrs.frozen(kw_only=True)
class IO:
    """Where a task's standard streams go: paths of regular files, FIFOs or character devices.

    ``""`` means ``/dev/null``.  Output files are created (mode 0644) and appended to.  A FIFO is
    opened when the task starts, so the other end may be opened before or after ``start``; the
    process waits for it.  ``stdout`` and ``stderr`` may name the same file.

    :ivar terminal: give the process a pseudo-terminal instead (runtimes may not support it).
    """

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"stdin": self.stdin, "stdout": self.stdout, "stderr": self.stderr, "terminal": self.terminal}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> IO:
        return cls(
            stdin=obj.get("stdin", "") or "",
            stdout=obj.get("stdout", "") or "",
            stderr=obj.get("stderr", "") or "",
            terminal=bool(obj.get("terminal", False)),
        )


def _mounts(value: Sequence[Mount] | None) -> tuple[Mount, ...]:
    return tuple(value or ())


@attrs.frozen(kw_only=True)
class Bundle:
    """What a task runs: an OCI runtime spec and its root filesystem.

    Give the root filesystem one of three ways:

    - ``mounts``: the snapshotter's mounts for the container's snapshot (``bind`` or ``overlay``);
      the runtime mounts them on the bundle's ``rootfs`` directory and unmounts them on delete;
    - ``rootfs``: a directory that already holds the root filesystem (the caller mounted it and
      keeps it mounted until the task is deleted);
    - neither: ``spec["root"]["path"]`` as an absolute path.

    :ivar spec: the runtime spec, as ``config.json`` holds it (see :mod:`hoist.oci_spec`).
    """

    spec: Mapping[str, Any] = attrs.field(hash=False)
    rootfs: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)

    def __attrs_post_init__(self) -> None:
        if self.rootfs is not None and self.mounts:
            raise InvalidArgumentError("bundle: give either rootfs or mounts, not both")


@attrs.frozen(kw_only=True)
class Exit:
    """How a task's process ended.

    :ivar status: its exit code, or ``128 + N`` when signal N killed it.
    :ivar pid: its process ID (as the host sees it).
    :ivar error: why the process never ran when it was started (``exec sh: Permission denied``),
        else ``""``.
    """

    status: int
    exited_at: _dt.datetime
    pid: int = 0
    error: str = ""


@attrs.frozen(kw_only=True)
class TaskState:
    """A snapshot of one task.

    :ivar pid: the container's init process as the host sees it (0 if it never ran).
    :ivar exit_status: set once ``status`` is ``stopped``.
    """

    id: str
    namespace: str
    status: Status = attrs.field(converter=Status)
    pid: int
    bundle: Path
    io: IO = attrs.field(factory=IO)
    exit_status: int | None = None
    exited_at: _dt.datetime | None = None


@runtime_checkable
class Task(Protocol):
    """One container's process, as a runtime manages it.

    Every method works from any process on the host, and after the process that created the task
    has exited: a task is found by ``Runtime.get``.
    """

    @property
    def id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def bundle(self) -> Path:
        """The bundle directory (``config.json`` and, for mounted snapshots, ``rootfs``)."""
        ...

    def start(self) -> int:
        """Run the process of a ``created`` task; return its pid.

        :raises FailedPreconditionError: the task was already started or has exited.
        """
        ...

    def kill(self, signal: int, *, all: bool = False) -> None:
        """Send ``signal`` to the container's init process, or to every process in it with ``all``.

        In a PID namespace the init process only gets the signals it handles, and SIGKILL.

        :raises NotFoundError: the process has already exited.
        """
        ...

    def state(self) -> TaskState:
        """Where the task is: status, pid, exit status and time once stopped."""
        ...

    def wait(self, timeout: float | None = None) -> Exit:
        """Block until the process exits and return how; ``None`` waits for ever.

        :raises UnavailableError: still running after ``timeout`` seconds.
        """
        ...

    def pids(self) -> list[int]:
        """The host pids of every process in the container, init first; ``[]`` once stopped."""
        ...

    def delete(self) -> Exit:
        """Stop the task if it still runs, release its mounts and state, and return how it exited."""
        ...


@runtime_checkable
class Runtime(Protocol):
    """A plugin of type ``hoist.runtime.v1``: creates tasks and finds them again."""

    def create(self, id: str, bundle: Bundle, io: IO = IO(), *, namespace: str = DEFAULT_NAMESPACE) -> Task:
        """Prepare a container (namespaces, mounts, root filesystem) whose process waits for ``start``.

        :param id: unique within ``namespace``; see :func:`check_identifier`.
        :raises InvalidArgumentError: a malformed id, spec or IO path.
        :raises AlreadyExistsError: a task ``id`` exists in ``namespace``.
        :raises FailedPreconditionError: the container could not be set up (the message says why:
            a missing executable, a mount the kernel refused, ...).
        """
        ...

    def get(self, id: str, *, namespace: str = DEFAULT_NAMESPACE) -> Task:
        """The task ``id``, whoever created it.

        :raises NotFoundError: no such task.
        """
        ...

    def tasks(self, *, namespace: str | None = None) -> list[Task]:
        """Every task in ``namespace`` (all namespaces with ``None``), sorted by namespace and id."""
        ...

    def close(self) -> None:
        """Release the runtime's own resources; tasks keep running."""
        ...


__all__ = [
    "PLUGIN_TYPE",
    "DEFAULT_NAMESPACE",
    "UNKNOWN_EXIT_STATUS",
    "check_identifier",
    "Status",
    "IO",
    "Bundle",
    "Exit",
    "TaskState",
    "Task",
    "Runtime",
    "exit_status_from_wait",
]
