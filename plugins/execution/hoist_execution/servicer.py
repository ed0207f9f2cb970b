"""The gRPC face of the execution service: ``hoist.services.execution.v1.Execution`` on hoistd's socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from hoist.api import execution_convert as conv
from hoist.api.errors import translate_errors
from hoist.api.hoist.services.execution.v1 import execution_pb2 as pb
from hoist.api.hoist.services.execution.v1 import execution_pb2_grpc as pb_grpc
from hoist.api.server import namespace_of


@translate_errors
class ExecutionServicer(pb_grpc.ExecutionServicer):
    """Answers each call with the in-process :class:`~hoist_execution.service.ExecutionService`."""

    def __init__(self, service: Any) -> None:
        self._svc = service

    def Create(self, request: pb.CreateRequest, context: grpc.ServicerContext) -> pb.ContainerResponse:
        ns = namespace_of(context)
        c = self._svc.create(request.id, conv.create_from_pb(request), namespace=ns)
        return pb.ContainerResponse(container=conv.container_to_pb(c))

    def Start(self, request: pb.StartRequest, context: grpc.ServicerContext) -> pb.ContainerResponse:
        c = self._svc.start(request.id, namespace=namespace_of(context))
        return pb.ContainerResponse(container=conv.container_to_pb(c))

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.ContainerResponse:
        c = self._svc.get(request.id, namespace=namespace_of(context))
        return pb.ContainerResponse(container=conv.container_to_pb(c))

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        found = self._svc.list(*request.filters, namespace=namespace_of(context))
        return pb.ListResponse(containers=[conv.container_to_pb(c) for c in found])

    def Kill(self, request: pb.KillRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._svc.kill(request.id, request.signal, all=request.all, namespace=namespace_of(context))
        return empty_pb2.Empty()

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.ContainerResponse:
        c = self._svc.delete(request.id, force=request.force, namespace=namespace_of(context))
        return pb.ContainerResponse(container=conv.container_to_pb(c))

    def Wait(self, request: pb.WaitRequest, context: grpc.ServicerContext) -> pb.WaitResponse:
        ex = self._svc.wait(request.id, request.timeout or None, namespace=namespace_of(context))
        return conv.exit_to_pb(ex)

    def Logs(self, request: pb.LogsRequest, context: grpc.ServicerContext) -> Iterator[pb.LogChunk]:
        for data in self._svc.logs(request.id, follow=request.follow, namespace=namespace_of(context),
                                   active=context.is_active):
            yield pb.LogChunk(data=data)

    def Events(self, request: pb.EventsRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        sub = self._svc.events(namespace=namespace_of(context))
        context.add_callback(sub.close)
        # Headers go out once the subscription exists, so a client that waits for them misses nothing.
        context.send_initial_metadata((("hoist-events", "subscribed"),))
        try:
            for event in sub:
                yield conv.event_to_pb(event)
        finally:
            sub.close()


def register(service: Any, server: grpc.Server) -> None:
    """Serve ``service`` as ``hoist.services.execution.v1.Execution`` on ``server``."""
    pb_grpc.add_ExecutionServicer_to_server(ExecutionServicer(service), server)


__all__ = ["ExecutionServicer", "register"]
