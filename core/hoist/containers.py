"""Containers: the records, options and events of Hoist's execution service (plugin ``hoist.service.v1.execution``).

Pure types only.  A :class:`Container` is what the metadata store keeps about one container: where its
root filesystem is (a snapshot), which runtime runs it, its spec and standard streams, and where its
process is in its life.  :class:`Execution` is the interface both the in-process service and the
gRPC client (:mod:`hoist.api.execution_client`) offer, so commands work the same either way.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from hoist.errors import InvalidArgumentError
from hoist.runtime import IO, Exit, Status

PLUGIN_TYPE = "hoist.service.v1"
PLUGIN_ID = "execution"

#: Event types, in the order a container's life produces them.
EVENT_TYPES = ("create", "start", "exit", "delete")


def _strs(value: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


def _optional_strs(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _utc(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value


def _network(_inst: object, _attr: attrs.Attribute, value: str) -> None:
    if value not in ("", "host", "none"):
        raise InvalidArgumentError(f"network {value!r}: expected host or none")


@attrs.frozen(kw_only=True)
class CreateOptions:
    """What ``create`` makes a container from: an image (or a committed snapshot) and the caller's overrides.

    :ivar image: an image name in the metadata store; its layers are unpacked when they are not yet.
    :ivar snapshot: instead of ``image``, a committed snapshot (e.g. an image's chain ID) to start from;
        the image config is then empty, so ``args`` must give the command.
    :ivar snapshotter: the snapshotter plugin id (``""``: the service's configured default).
    :ivar args: replaces the image's Cmd; ``entrypoint`` replaces Entrypoint and Cmd.
    :ivar env: ``KEY=VALUE`` entries added to (or replacing those of) the image's Env.
    :ivar network: ``host`` (``""``) shares the host's network; ``none`` gives only loopback.
    :ivar stdin, stdout, stderr: paths (files, FIFOs) on the service's host; with neither stdout nor
        stderr, both go to the container's log file.
    """

    image: str = ""
    snapshot: str = ""
    snapshotter: str = ""
    args: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strs)
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    cwd: str = ""
    user: str = ""
    hostname: str = ""
    network: str = attrs.field(default="", validator=_network)
    readonly: bool = False
    no_new_privileges: bool = False
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=dict, hash=False)

    def __attrs_post_init__(self) -> None:
        if bool(self.image) == bool(self.snapshot):
            raise InvalidArgumentError("container: give exactly one of an image or a snapshot")


@attrs.frozen(kw_only=True)
class Container:
    """One container as the metadata store keeps it.

    :ivar runtime: URI of the runtime plugin that runs it (``hoist.runtime.v1.builtin``).
    :ivar snapshot_key: its active snapshot (its root filesystem) in ``snapshotter``.
    :ivar spec: the OCI runtime spec it was created with.
    :ivar log_path: where stdout and stderr go when the caller gave no paths (``""`` otherwise).
    :ivar exit_status: set once ``status`` is ``stopped``: the exit code, or ``128 + N`` for signal N.
    :ivar error: why the process never ran, or why its status is unknown.
    """

    id: str
    namespace: str
    image: str = ""
    snapshotter: str = ""
    snapshot_key: str = ""
    runtime: str = ""
    status: Status = attrs.field(default=Status.CREATED, converter=Status)
    pid: int = 0
    exit_status: int | None = None
    exited_at: _dt.datetime | None = attrs.field(default=None, converter=_utc)
    error: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=dict, hash=False)
    spec: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    io: IO = attrs.field(factory=IO)
    log_path: str = ""
    created_at: _dt.datetime | None = attrs.field(default=None, converter=_utc)
    updated_at: _dt.datetime | None = attrs.field(default=None, converter=_utc)

    @property
    def args(self) -> list[str]:
        """The command the container runs (``process.args`` of its spec)."""
        return list((self.spec.get("process") or {}).get("args") or [])

    def to_json(self) -> dict[str, Any]:
        """A JSON object for people and scripts (``hoist containers get``)."""

        def when(t: _dt.datetime | None) -> str | None:
            return t.isoformat().replace("+00:00", "Z") if t is not None else None

        process = dict(self.spec.get("process") or {})
        return {
            "id": self.id,
            "namespace": self.namespace,
            "image": self.image,
            "snapshotter": self.snapshotter,
            "snapshot_key": self.snapshot_key,
            "runtime": self.runtime,
            "status": self.status.value,
            "pid": self.pid,
            "exit_status": self.exit_status,
            "exited_at": when(self.exited_at),
            "error": self.error,
            "labels": dict(self.labels),
            "process": {k: process[k] for k in ("args", "env", "cwd", "user", "terminal") if k in process},
            "hostname": self.spec.get("hostname", ""),
            "io": self.io.to_json(),
            "log_path": self.log_path,
            "created_at": when(self.created_at),
            "updated_at": when(self.updated_at),
        }


@attrs.frozen(kw_only=True)
class ContainerEvent:
    """Something that happened to a container: ``create``, ``start``, ``exit`` or ``delete``.

    :ivar pid: the init process (``start``, ``exit``).
    :ivar exit_status: set for ``exit``.
    """

    type: str
    namespace: str
    id: str
    timestamp: _dt.datetime = attrs.field(converter=_utc)
    pid: int = 0
    exit_status: int | None = None

    def line(self) -> str:
        """``TIME TYPE NAMESPACE/ID [pid=N] [exit_status=N]``, as ``hoist containers events`` prints it."""
        parts = [self.timestamp.isoformat().replace("+00:00", "Z"), self.type, f"{self.namespace}/{self.id}"]
        if self.pid:
            parts.append(f"pid={self.pid}")
        if self.exit_status is not None:
            parts.append(f"exit_status={self.exit_status}")
        return " ".join(parts)


@runtime_checkable
class EventStream(Protocol):
    """A subscription to events: iterate it; ``close()`` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[ContainerEvent]: ...

    def close(self) -> None: ...


@runtime_checkable
class Execution(Protocol):
    """Containers: what the execution service offers, in-process or over gRPC.

    Every method takes the ``namespace`` it works in.  Errors are :mod:`hoist.errors` classes:
    ``NotFoundError`` for an unknown container or image, ``AlreadyExistsError`` for a taken id,
    ``InvalidArgumentError`` for a bad id or override, ``FailedPreconditionError`` for an operation
    the container's state forbids.
    """

    def create(self, id: str, options: CreateOptions, *, namespace: str = "default") -> Container:
        """Make the container and its task, waiting for :meth:`start`."""
        ...

    def start(self, id: str, *, namespace: str = "default") -> Container:
        """Run the container's process."""
        ...

    def get(self, id: str, *, namespace: str = "default") -> Container: ...

    def list(self, *filters: str, namespace: str = "default") -> list[Container]: ...

    def kill(self, id: str, signal: int = 15, *, all: bool = False, namespace: str = "default") -> None: ...

    def delete(self, id: str, *, force: bool = False, namespace: str = "default") -> Container:
        """Remove the container (a running one only with ``force``); returns its last state."""
        ...

    def wait(self, id: str, timeout: float | None = None, *, namespace: str = "default") -> Exit:
        """Block until the process exits. :raises UnavailableError: still running after ``timeout``."""
        ...

    def logs(self, id: str, *, follow: bool = False, namespace: str = "default") -> Iterator[bytes]:
        """The container's log file in chunks; with ``follow``, until the container has exited.

        :raises NotFoundError: it has no log file.
        """
        ...

    def events(self, *, namespace: str = "default") -> EventStream:
        """Events of ``namespace`` from now on (the subscription is active when this returns)."""
        ...


__all__ = [
    "EVENT_TYPES",
    "PLUGIN_ID",
    "PLUGIN_TYPE",
    "Container",
    "ContainerEvent",
    "CreateOptions",
    "EventStream",
    "Execution",
]
