"""Containers, options, exits and events to and from the messages of ``hoist.services.execution.v1``."""

from __future__ import annotations

import json

from hoist.api.convert import datetime, timestamp
from hoist.api.hoist.services.execution.v1 import execution_pb2 as pb
from hoist.containers import Container, ContainerEvent, CreateOptions
from hoist.errors import InvalidArgumentError
from hoist.runtime import IO, Exit, Status


def create_to_pb(id: str, o: CreateOptions) -> pb.CreateRequest:
    return pb.CreateRequest(
        id=id, image=o.image, snapshot=o.snapshot, snapshotter=o.snapshotter,
        args=list(o.args or ()), has_args=o.args is not None,
        entrypoint=list(o.entrypoint or ()), has_entrypoint=o.entrypoint is not None,
        env=list(o.env), cwd=o.cwd, user=o.user, hostname=o.hostname, network=o.network, readonly=o.readonly,
        no_new_privileges=o.no_new_privileges, stdin=o.stdin, stdout=o.stdout, stderr=o.stderr, labels=dict(o.labels),
    )  # fmt: skip


def create_from_pb(m: pb.CreateRequest) -> CreateOptions:
    """:raises InvalidArgumentError: both or neither of image and snapshot, a bad network mode."""
    return CreateOptions(
        image=m.image, snapshot=m.snapshot, snapshotter=m.snapshotter,
        args=list(m.args) if m.has_args or m.args else None,
        entrypoint=list(m.entrypoint) if m.has_entrypoint or m.entrypoint else None,
        env=list(m.env), cwd=m.cwd, user=m.user, hostname=m.hostname, network=m.network, readonly=m.readonly,
        no_new_privileges=m.no_new_privileges, stdin=m.stdin, stdout=m.stdout, stderr=m.stderr, labels=dict(m.labels),
    )  # fmt: skip


def container_to_pb(c: Container) -> pb.Container:
    msg = pb.Container(
        id=c.id, namespace=c.namespace, image=c.image, snapshotter=c.snapshotter, snapshot_key=c.snapshot_key,
        runtime=c.runtime, status=c.status.value, pid=c.pid, has_exit_status=c.exit_status is not None,
        exit_status=c.exit_status or 0, error=c.error, labels=dict(c.labels),
        spec=json.dumps(dict(c.spec), sort_keys=True).encode(), stdin=c.io.stdin, stdout=c.io.stdout,
        stderr=c.io.stderr, log_path=c.log_path,
    )  # fmt: skip
    if c.exited_at is not None:
        msg.exited_at.CopyFrom(timestamp(c.exited_at))
    if c.created_at is not None:
        msg.created_at.CopyFrom(timestamp(c.created_at))
    if c.updated_at is not None:
        msg.updated_at.CopyFrom(timestamp(c.updated_at))
    return msg


def container_from_pb(m: pb.Container) -> Container:
    try:
        spec = json.loads(m.spec) if m.spec else {}
    except ValueError as e:
        raise InvalidArgumentError(f"container {m.id}: spec is not JSON") from e
    return Container(
        id=m.id, namespace=m.namespace, image=m.image, snapshotter=m.snapshotter, snapshot_key=m.snapshot_key,
        runtime=m.runtime, status=Status(m.status or "created"), pid=m.pid,
        exit_status=m.exit_status if m.has_exit_status else None,
        exited_at=datetime(m.exited_at) if m.HasField("exited_at") else None, error=m.error, labels=dict(m.labels),
        spec=spec, io=IO(stdin=m.stdin, stdout=m.stdout, stderr=m.stderr), log_path=m.log_path,
        created_at=datetime(m.created_at) if m.HasField("created_at") else None,
        updated_at=datetime(m.updated_at) if m.HasField("updated_at") else None,
    )  # fmt: skip


def exit_to_pb(ex: Exit) -> pb.WaitResponse:
    return pb.WaitResponse(exit_status=ex.status, exited_at=timestamp(ex.exited_at), pid=ex.pid, error=ex.error)


def exit_from_pb(m: pb.WaitResponse) -> Exit:
    return Exit(status=m.exit_status, exited_at=datetime(m.exited_at), pid=m.pid, error=m.error)


def event_to_pb(e: ContainerEvent) -> pb.Event:
    return pb.Event(type=e.type, namespace=e.namespace, id=e.id, timestamp=timestamp(e.timestamp), pid=e.pid,
                    has_exit_status=e.exit_status is not None, exit_status=e.exit_status or 0)  # fmt: skip


def event_from_pb(m: pb.Event) -> ContainerEvent:
    return ContainerEvent(type=m.type, namespace=m.namespace, id=m.id, timestamp=datetime(m.timestamp), pid=m.pid,
                          exit_status=m.exit_status if m.has_exit_status else None)


__all__ = [
    "container_from_pb",
    "container_to_pb",
    "create_from_pb",
    "create_to_pb",
    "event_from_pb",
    "event_to_pb",
    "exit_from_pb",
    "exit_to_pb",
]
