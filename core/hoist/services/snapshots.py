"""The Snapshots service (``hoist.grpc.v1.snapshots``): containerd.services.snapshots.v1.Snapshots over every snapshotter.

Each request names its snapshotter (``native``, ``overlayfs``: the ids of the ``hoist.snapshotter.v1``
plugins loaded).  Keys are per namespace (``containerd-namespace``), as containerd's metadata keeps
them; a call made under a lease (``containerd-lease``) records the snapshot it creates in that lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import grpc
from google.protobuf import empty_pb2

from hoist.api import convert
from hoist.api.containerd.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.transport import prompt
from hoist.api.server import lease_of, namespace_of
from hoist.errors import InvalidArgumentError, UnsupportedError
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.services.support import Plugins, add_lease_resource
from hoist.snapshots import NamespacedSnapshotter, list_snapshots

LIST_BATCH = 100
"""Infos per ListSnapshotsResponse."""


def _key(value: str, what: str = "key") -> str:
    if not value:
        raise InvalidArgumentError(f"snapshot {what} must not be empty")
    if "\x00" in value:
        raise InvalidArgumentError(f"snapshot {what} {value!r}: must not contain NUL")
    return value


@translate_errors
class SnapshotsService(snapshots_pb2_grpc.SnapshotsServicer):
    """containerd.services.snapshots.v1.Snapshots: every loaded snapshotter, by its plugin id."""

    def __init__(self, plugins: Plugins) -> None:
        self._plugins = plugins

    def register(self, server: grpc.Server) -> None:
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(self, server)

    def _sn(self, name: str, context: grpc.ServicerContext) -> NamespacedSnapshotter:
        ns = namespace_of(context)
        backends = self._plugins.snapshotters()
        if not name or name not in backends:
            raise InvalidArgumentError(f"snapshotter not loaded: {name}")
        return NamespacedSnapshotter(backends[name], ns)

    def _leased(self, context: grpc.ServicerContext) -> tuple[Any, str, str | None]:
        """The metadata store, namespace and lease of a call; a lease that does not exist is NotFound before anything is made."""
        ns = namespace_of(context)
        lease = lease_of(context)
        metadata = self._plugins.optional("hoist.metadata.v1")
        if lease and metadata is not None:
            metadata.leases(ns).list_resources(lease)
        return metadata, ns, lease

    def Prepare(
        self, request: snapshots_pb2.PrepareSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.PrepareSnapshotResponse:
        sn = self._sn(request.snapshotter, context)
        metadata, ns, lease = self._leased(context)
        mounts = sn.prepare(_key(request.key), request.parent, dict(request.labels))
        add_lease_resource(metadata, ns, lease, f"snapshots/{request.snapshotter}", request.key)
        return snapshots_pb2.PrepareSnapshotResponse(mounts=[convert.mount_to_pb(m) for m in mounts])

    def View(
        self, request: snapshots_pb2.ViewSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.ViewSnapshotResponse:
        sn = self._sn(request.snapshotter, context)
        metadata, ns, lease = self._leased(context)
        mounts = sn.view(_key(request.key), request.parent, dict(request.labels))
        add_lease_resource(metadata, ns, lease, f"snapshots/{request.snapshotter}", request.key)
        return snapshots_pb2.ViewSnapshotResponse(mounts=[convert.mount_to_pb(m) for m in mounts])

    def Mounts(self, request: snapshots_pb2.MountsRequest, context: grpc.ServicerContext) -> snapshots_pb2.MountsResponse:
        sn = self._sn(request.snapshotter, context)
        return snapshots_pb2.MountsResponse(mounts=[convert.mount_to_pb(m) for m in sn.mounts(_key(request.key))])

    def Commit(self, request: snapshots_pb2.CommitSnapshotRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        sn = self._sn(request.snapshotter, context)
        metadata, ns, lease = self._leased(context)
        sn.commit(_key(request.name, "name"), _key(request.key), dict(request.labels))
        add_lease_resource(metadata, ns, lease, f"snapshots/{request.snapshotter}", request.name)
        return empty_pb2.Empty()

    def Remove(self, request: snapshots_pb2.RemoveSnapshotRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        sn = self._sn(request.snapshotter, context)
        sn.remove(_key(request.key))
        return empty_pb2.Empty()

    def Stat(
        self, request: snapshots_pb2.StatSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.StatSnapshotResponse:
        sn = self._sn(request.snapshotter, context)
        return snapshots_pb2.StatSnapshotResponse(info=convert.snapshot_info_to_pb(sn.stat(_key(request.key))))

    def Update(
        self, request: snapshots_pb2.UpdateSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.UpdateSnapshotResponse:
        sn = self._sn(request.snapshotter, context)
        name = _key(request.info.name, "name")
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        for p in paths:
            if p != "labels" and not (p.startswith("labels.") and len(p) > len("labels.")):
                raise InvalidArgumentError(f"snapshot {name!r}: cannot update field {p!r}")
        current = sn.stat(name)
        info = attrs.evolve(current, labels=dict(request.info.labels))
        return snapshots_pb2.UpdateSnapshotResponse(info=convert.snapshot_info_to_pb(sn.update(info, *paths)))

    @prompt
    def List(
        self, request: snapshots_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> Iterator[snapshots_pb2.ListSnapshotsResponse]:
        sn = self._sn(request.snapshotter, context)
        found = [convert.snapshot_info_to_pb(i) for i in list_snapshots(sn, *request.filters)]
        for start in range(0, len(found), LIST_BATCH):
            yield snapshots_pb2.ListSnapshotsResponse(info=found[start : start + LIST_BATCH])

    def Usage(self, request: snapshots_pb2.UsageRequest, context: grpc.ServicerContext) -> snapshots_pb2.UsageResponse:
        sn = self._sn(request.snapshotter, context)
        usage = sn.usage(_key(request.key))
        return snapshots_pb2.UsageResponse(size=usage.size, inodes=usage.inodes)

    def Cleanup(self, request: snapshots_pb2.CleanupRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        sn = self._sn(request.snapshotter, context)
        cleanup = getattr(sn.backend, "cleanup", None)
        if cleanup is None:
            raise UnsupportedError(f"snapshotter {request.snapshotter}: cleanup is not supported")
        cleanup()
        return empty_pb2.Empty()


def _init(ic: InitContext) -> SnapshotsService:
    return SnapshotsService(Plugins(ic))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="snapshots", requires=("hoist.snapshotter.v1",), init=_init))
