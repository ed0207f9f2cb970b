"""Containers over gRPC: the :class:`hoist.containers.Execution` interface against hoistd's execution service."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from hoist.api import execution_convert as conv
from hoist.api.errors import call, from_rpc_error
from hoist.api.hoist.services.execution.v1 import execution_pb2 as pb
from hoist.api.hoist.services.execution.v1 import execution_pb2_grpc as pb_grpc
from hoist.api.server import NAMESPACE_HEADER
from hoist.containers import Container, ContainerEvent, CreateOptions
from hoist.runtime import Exit


def _md(namespace: str) -> tuple[tuple[str, str], ...]:
    return ((NAMESPACE_HEADER, namespace),)


class RemoteEventStream:
    """A server stream of events; iterate it, ``close()`` from any thread to end it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[ContainerEvent]:
        try:
            for msg in self._stream:
                yield conv.event_from_pb(msg)
        except grpc.RpcError as err:
            if self._closed.is_set() or err.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(err) from err

    def close(self) -> None:
        self._closed.set()
        self._stream.cancel()

    def __enter__(self) -> RemoteEventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteExecution:
    """hoistd's execution service (``hoist.services.execution.v1.Execution``) through ``channel``.

    Every method sends its ``namespace`` as ``containerd-namespace``; errors come back as the
    :mod:`hoist.errors` class of their status code, with the daemon's message.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.ExecutionStub(channel)

    def create(self, id: str, options: CreateOptions, *, namespace: str = "default") -> Container:
        resp = call(self._stub.Create, conv.create_to_pb(id, options), metadata=_md(namespace))
        return conv.container_from_pb(resp.container)

    def start(self, id: str, *, namespace: str = "default") -> Container:
        resp = call(self._stub.Start, pb.StartRequest(id=id), metadata=_md(namespace))
        return conv.container_from_pb(resp.container)

    def get(self, id: str, *, namespace: str = "default") -> Container:
        resp = call(self._stub.Get, pb.GetRequest(id=id), metadata=_md(namespace))
        return conv.container_from_pb(resp.container)

    def list(self, *filters: str, namespace: str = "default") -> list[Container]:
        resp = call(self._stub.List, pb.ListRequest(filters=list(filters)), metadata=_md(namespace))
        return [conv.container_from_pb(c) for c in resp.containers]

    def kill(self, id: str, signal: int = 15, *, all: bool = False, namespace: str = "default") -> None:
        call(self._stub.Kill, pb.KillRequest(id=id, signal=signal, all=all), metadata=_md(namespace))

    def delete(self, id: str, *, force: bool = False, namespace: str = "default") -> Container:
        resp = call(self._stub.Delete, pb.DeleteRequest(id=id, force=force), metadata=_md(namespace))
        return conv.container_from_pb(resp.container)

    def wait(self, id: str, timeout: float | None = None, *, namespace: str = "default") -> Exit:
        resp = call(self._stub.Wait, pb.WaitRequest(id=id, timeout=timeout or 0.0), metadata=_md(namespace))
        return conv.exit_from_pb(resp)

    def logs(self, id: str, *, follow: bool = False, namespace: str = "default") -> Iterator[bytes]:
        stream = self._stub.Logs(pb.LogsRequest(id=id, follow=follow), metadata=_md(namespace))
        try:
            for chunk in stream:
                yield chunk.data
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            stream.cancel()  # a reader that stops early (Ctrl-C on a followed log) ends the call

    def events(self, *, namespace: str = "default") -> RemoteEventStream:
        """Events from now on: returns once the daemon has subscribed (it sends its headers then)."""
        stream = self._stub.Events(pb.EventsRequest(), metadata=_md(namespace))
        try:
            stream.initial_metadata()
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return RemoteEventStream(stream)


__all__ = ["RemoteEventStream", "RemoteExecution"]
