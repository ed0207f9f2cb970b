"""A snapshotter over gRPC (containerd.services.snapshots.v1.Snapshots), as :class:`hoist.snapshots.Snapshotter`.

One :class:`RemoteSnapshotter` speaks for one snapshotter of the daemon (``native``, ``overlayfs``,
containerd's ``overlayfs``…) in one namespace.  The mounts it returns are paths on the daemon's host:
use them on the same machine, as containerd's clients do.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import field_mask_pb2

from hoist.api import convert
from hoist.api.containerd.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from hoist.api.errors import call, iterate
from hoist.api.server import LEASE_HEADER, NAMESPACE_HEADER
from hoist.snapshots import Info, Mount, Usage, WalkFunc


class RemoteSnapshotter:
    """The daemon's snapshotter ``name`` as seen from ``namespace`` (and under ``lease``, when set)."""

    def __init__(self, channel: grpc.Channel, name: str, namespace: str = "default", lease: str | None = None) -> None:
        self._stub = snapshots_pb2_grpc.SnapshotsStub(channel)
        self.name = name
        self.namespace = namespace
        md = [(NAMESPACE_HEADER, namespace)]
        if lease:
            md.append((LEASE_HEADER, lease))
        self._metadata = tuple(md)

    def stat(self, key: str) -> Info:
        req = snapshots_pb2.StatSnapshotRequest(snapshotter=self.name, key=key)
        return convert.snapshot_info_from_pb(call(self._stub.Stat, req, metadata=self._metadata).info)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        req = snapshots_pb2.UpdateSnapshotRequest(snapshotter=self.name, info=convert.snapshot_info_to_pb(info))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        return convert.snapshot_info_from_pb(call(self._stub.Update, req, metadata=self._metadata).info)

    def usage(self, key: str) -> Usage:
        resp = call(self._stub.Usage, snapshots_pb2.UsageRequest(snapshotter=self.name, key=key), metadata=self._metadata)
        return Usage(size=resp.size, inodes=resp.inodes)

    def mounts(self, key: str) -> list[Mount]:
        resp = call(self._stub.Mounts, snapshots_pb2.MountsRequest(snapshotter=self.name, key=key), metadata=self._metadata)
        return [convert.mount_from_pb(m) for m in resp.mounts]

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        req = snapshots_pb2.PrepareSnapshotRequest(snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {}))
        return [convert.mount_from_pb(m) for m in call(self._stub.Prepare, req, metadata=self._metadata).mounts]

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        req = snapshots_pb2.ViewSnapshotRequest(snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {}))
        return [convert.mount_from_pb(m) for m in call(self._stub.View, req, metadata=self._metadata).mounts]

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        req = snapshots_pb2.CommitSnapshotRequest(snapshotter=self.name, name=name, key=key, labels=dict(labels or {}))
        call(self._stub.Commit, req, metadata=self._metadata)

    def remove(self, key: str) -> None:
        call(self._stub.Remove, snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.name, key=key), metadata=self._metadata)

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        req = snapshots_pb2.ListSnapshotsRequest(snapshotter=self.name, filters=list(filters))
        for resp in iterate(self._stub.List(req, metadata=self._metadata)):
            for info in resp.info:
                fn(convert.snapshot_info_from_pb(info))

    def cleanup(self) -> None:
        """Ask the snapshotter to free space it no longer needs. :raises UnsupportedError: it cannot."""
        call(self._stub.Cleanup, snapshots_pb2.CleanupRequest(snapshotter=self.name), metadata=self._metadata)

    def close(self) -> None:
        """Nothing to do: the channel belongs to the caller."""


__all__ = ["RemoteSnapshotter"]
