"""The Leases service (``hoist.grpc.v1.leases``): containerd.services.leases.v1.Leases over the metadata store.

A lease holds resources — blobs (``content``), snapshots (``snapshots/<snapshotter>``) and ingests
(``ingests``) — out of garbage collection while it exists.  Clients create one, send its id as
``containerd-lease`` on Content.Write and Snapshots calls (which then record what they made), and delete
it when done; a ``containerd.io/gc.expire`` label (RFC 3339) lets it lapse on its own.  Delete with
``sync`` runs a garbage collection before it returns.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from hoist.api import convert
from hoist.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.server import namespace_of, validate_lease_id
from hoist.content import Digest
from hoist.errors import InvalidArgumentError
from hoist.metadata import Lease, LeaseResource
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.services.support import Plugins, compile_filters


def lease_to_pb(lease: Lease) -> leases_pb2.Lease:
    return leases_pb2.Lease(id=lease.id, created_at=convert.timestamp(lease.created_at), labels=dict(lease.labels))


def check_resource(res: leases_pb2.Resource) -> LeaseResource:
    """The resource of a request, validated as containerd does.

    :raises InvalidArgumentError: an unknown type, an empty id, or a content id that is not a digest.
    """
    if not res.id:
        raise InvalidArgumentError("resource id must not be empty")
    if res.type == "content":
        Digest.parse(res.id)
    elif res.type.startswith("snapshots/") and len(res.type) > len("snapshots/"):
        pass
    elif res.type != "ingests":
        raise InvalidArgumentError(f"resource type {res.type!r}: unsupported (content, snapshots/<snapshotter>, ingests)")
    if "\x00" in res.id:
        raise InvalidArgumentError(f"resource id {res.id!r}: invalid")
    return LeaseResource(type=res.type, id=res.id)


@translate_errors
class LeasesService(leases_pb2_grpc.LeasesServicer):
    """containerd.services.leases.v1.Leases backed by the metadata store's per-namespace leases."""

    def __init__(self, metadata: Any, plugins: Plugins | None = None) -> None:
        self._db = metadata
        self._plugins = plugins

    def register(self, server: grpc.Server) -> None:
        leases_pb2_grpc.add_LeasesServicer_to_server(self, server)

    def _store(self, context: grpc.ServicerContext) -> Any:
        return self._db.leases(namespace_of(context))

    def Create(self, request: leases_pb2.CreateRequest, context: grpc.ServicerContext) -> leases_pb2.CreateResponse:
        store = self._store(context)
        lease = store.create(validate_lease_id(request.id), dict(request.labels))
        return leases_pb2.CreateResponse(lease=lease_to_pb(lease))

    def Delete(self, request: leases_pb2.DeleteRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        store = self._store(context)
        store.delete(request.id)
        if request.sync and self._plugins is not None:
            self._plugins.collect()
        return empty_pb2.Empty()

    def List(self, request: leases_pb2.ListRequest, context: grpc.ServicerContext) -> leases_pb2.ListResponse:
        store = self._store(context)
        match = compile_filters(lambda lease: {"id": lease.id}, *request.filters)
        return leases_pb2.ListResponse(leases=[lease_to_pb(lease) for lease in store.list() if match(lease)])

    def AddResource(self, request: leases_pb2.AddResourceRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        store = self._store(context)
        store.add_resource(request.id, check_resource(request.resource))
        return empty_pb2.Empty()

    def DeleteResource(
        self, request: leases_pb2.DeleteResourceRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        store = self._store(context)
        res = check_resource(request.resource)
        store.list_resources(request.id)  # NotFound for a missing lease
        store.delete_resource(request.id, res)
        return empty_pb2.Empty()

    def ListResources(
        self, request: leases_pb2.ListResourcesRequest, context: grpc.ServicerContext
    ) -> leases_pb2.ListResourcesResponse:
        store = self._store(context)
        found = store.list_resources(request.id)
        return leases_pb2.ListResourcesResponse(resources=[leases_pb2.Resource(id=r.id, type=r.type) for r in found])


def _init(ic: InitContext) -> LeasesService:
    return LeasesService(ic.get("hoist.metadata.v1"), Plugins(ic))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="leases", requires=("hoist.metadata.v1",), init=_init))
