"""The Namespaces service (``hoist.grpc.v1.namespaces``): create, label, list and remove namespaces in the metadata store."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from hoist.api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.errors import InvalidArgumentError
from hoist.plugin import InitContext, Registration, hookimpl


def updated_labels(current: dict[str, str], given: dict[str, str], paths: list[str], what: str) -> dict[str, str]:
    """Labels after an update with field mask ``paths`` (containerd's rules).

    No paths replaces every label; ``labels`` does too; ``labels.<key>`` sets that key from ``given``
    or removes it when ``given`` lacks it.

    :raises InvalidArgumentError: a path other than ``labels`` or ``labels.<key>``.
    """
    if not paths:
        return dict(given)
    out = dict(current)
    for path in paths:
        if path == "labels":
            out = dict(given)
        elif path.startswith("labels.") and len(path) > len("labels."):
            key = path[len("labels."):]
            if given.get(key):
                out[key] = given[key]
            else:
                out.pop(key, None)
        else:
            raise InvalidArgumentError(f"cannot update {path!r} field on {what}")
    return out


@translate_errors
class NamespacesService(namespace_pb2_grpc.NamespacesServicer):
    """containerd.services.namespaces.v1.Namespaces over the metadata store."""

    def __init__(self, metadata: Any) -> None:
        self._db = metadata

    def register(self, server: grpc.Server) -> None:
        namespace_pb2_grpc.add_NamespacesServicer_to_server(self, server)

    def _namespace(self, name: str) -> namespace_pb2.Namespace:
        return namespace_pb2.Namespace(name=name, labels=self._db.namespace_labels(name))

    def Get(
        self, request: namespace_pb2.GetNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.GetNamespaceResponse:
        return namespace_pb2.GetNamespaceResponse(namespace=self._namespace(request.name))

    def List(
        self, request: namespace_pb2.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.ListNamespacesResponse:
        found = []
        for name in self._db.list_namespaces():
            found.append(namespace_pb2.Namespace(name=name, labels=self._db.namespace_labels(name)))
        return namespace_pb2.ListNamespacesResponse(namespaces=found)

    def Create(
        self, request: namespace_pb2.CreateNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.CreateNamespaceResponse:
        ns = request.namespace
        self._db.create_namespace(ns.name, dict(ns.labels))
        return namespace_pb2.CreateNamespaceResponse(namespace=self._namespace(ns.name))

    def Update(
        self, request: namespace_pb2.UpdateNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.UpdateNamespaceResponse:
        ns = request.namespace
        current = self._db.namespace_labels(ns.name)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        labels = updated_labels(current, dict(ns.labels), paths, f"namespace {ns.name!r}")
        self._db.set_namespace_labels(ns.name, labels)
        return namespace_pb2.UpdateNamespaceResponse(namespace=self._namespace(ns.name))

    def Delete(self, request: namespace_pb2.DeleteNamespaceRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._db.delete_namespace(request.name)
        return empty_pb2.Empty()


def _init(ic: InitContext) -> NamespacesService:
    return NamespacesService(ic.get("hoist.metadata.v1"))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="namespaces", requires=("hoist.metadata.v1",), init=_init))
