"""The metadata store of a daemon over gRPC: namespaces, and per-namespace image and lease views.

:class:`RemoteMetadataStore` answers the calls Hoist's commands make on the metadata store
(``images(namespace)``, ``leases(namespace)``, namespaces), so ``hoist.Client`` in remote mode hands it
out as ``client.metadata``.  Content labels are not here: a daemon keeps them on its content store
(Content.Update).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import field_mask_pb2

from hoist.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from hoist.api.errors import call
from hoist.api.images_client import RemoteImageStore
from hoist.api.leases_client import RemoteLeaseStore


class RemoteMetadataStore:
    """Images, leases and namespaces of the daemon at the other end of ``channel``."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._ns = namespace_pb2_grpc.NamespacesStub(channel)

    def images(self, namespace: str = "default") -> RemoteImageStore:
        from hoist.api.content_client import RemoteContentStore

        return RemoteImageStore(self._channel, namespace, content=RemoteContentStore(self._channel, namespace))

    def leases(self, namespace: str = "default") -> RemoteLeaseStore:
        return RemoteLeaseStore(self._channel, namespace)

    def list_namespaces(self) -> list[str]:
        resp = call(self._ns.List, namespace_pb2.ListNamespacesRequest())
        return sorted(n.name for n in resp.namespaces)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """:raises AlreadyExistsError: the namespace exists."""
        ns = namespace_pb2.Namespace(name=name, labels=dict(labels or {}))
        call(self._ns.Create, namespace_pb2.CreateNamespaceRequest(namespace=ns))

    def namespace_labels(self, name: str) -> dict[str, str]:
        return dict(call(self._ns.Get, namespace_pb2.GetNamespaceRequest(name=name)).namespace.labels)

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        req = namespace_pb2.UpdateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels=dict(labels)),
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
        call(self._ns.Update, req)

    def delete_namespace(self, name: str) -> None:
        call(self._ns.Delete, namespace_pb2.DeleteNamespaceRequest(name=name))

    def close(self) -> None:
        """Nothing to do: the channel belongs to the client."""


__all__ = ["RemoteMetadataStore"]
