"""A lease store over gRPC (containerd.services.leases.v1.Leases), and a lease for the length of a block.

:class:`RemoteLeaseStore` has the interface of the metadata store's per-namespace lease view
(:class:`hoist.metadata.LeaseStore`).  :func:`temporary_lease` (from :mod:`hoist.leases`) is what containerd's
client does around a pull: a lease with a ``containerd.io/gc.expire`` label, sent as ``containerd-lease``
on the writes of the block, deleted at its end — so nothing written is collected before the image names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from hoist.api import convert
from hoist.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from hoist.api.errors import call
from hoist.api.server import NAMESPACE_HEADER
from hoist.leases import DEFAULT_EXPIRY, new_lease_id, temporary_lease
from hoist.metadata import Lease, LeaseResource



def _lease(msg: leases_pb2.Lease) -> Lease:
    return Lease(id=msg.id, labels=dict(msg.labels), created_at=convert.datetime(msg.created_at))


class RemoteLeaseStore:
    """The leases of one namespace, through the daemon's Leases service."""

    def __init__(self, channel: grpc.Channel, namespace: str = "default") -> None:
        self._stub = leases_pb2_grpc.LeasesStub(channel)
        self.namespace = namespace
        self._metadata = ((NAMESPACE_HEADER, namespace),)

    def create(self, id: str, labels: Mapping[str, str] | None = None) -> Lease:
        """:raises AlreadyExistsError: a lease with ``id`` exists."""
        req = leases_pb2.CreateRequest(id=id, labels=dict(labels or {}))
        return _lease(call(self._stub.Create, req, metadata=self._metadata).lease)

    def list(self, *filters: str) -> list[Lease]:
        resp = call(self._stub.List, leases_pb2.ListRequest(filters=list(filters)), metadata=self._metadata)
        return sorted((_lease(m) for m in resp.leases), key=lambda lease: lease.id)

    def delete(self, id: str, *, sync: bool = False) -> None:
        """Delete the lease; with ``sync`` the daemon collects what it alone held before answering.

        :raises NotFoundError: no such lease.
        """
        call(self._stub.Delete, leases_pb2.DeleteRequest(id=id, sync=sync), metadata=self._metadata)

    def add_resource(self, id: str, resource: LeaseResource) -> None:
        req = leases_pb2.AddResourceRequest(id=id, resource=leases_pb2.Resource(id=resource.id, type=resource.type))
        call(self._stub.AddResource, req, metadata=self._metadata)

    def delete_resource(self, id: str, resource: LeaseResource) -> None:
        req = leases_pb2.DeleteResourceRequest(id=id, resource=leases_pb2.Resource(id=resource.id, type=resource.type))
        call(self._stub.DeleteResource, req, metadata=self._metadata)

    def list_resources(self, id: str) -> list[LeaseResource]:
        resp = call(self._stub.ListResources, leases_pb2.ListResourcesRequest(id=id), metadata=self._metadata)
        return [LeaseResource(type=r.type, id=r.id) for r in resp.resources]


__all__ = ["DEFAULT_EXPIRY", "RemoteLeaseStore", "new_lease_id", "temporary_lease"]
