"""The layer applier of a daemon over gRPC (containerd.services.diff.v1.Diff.Apply)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from hoist.api import convert
from hoist.api.containerd.services.diff.v1 import diff_pb2, diff_pb2_grpc
from hoist.api.errors import call
from hoist.api.server import NAMESPACE_HEADER
from hoist.content import Descriptor
from hoist.snapshots import Mount


class RemoteApplier:
    """Applies layer blobs already in the daemon's content store onto mounts the daemon gave out."""

    def __init__(self, channel: grpc.Channel, namespace: str = "default") -> None:
        self._stub = diff_pb2_grpc.DiffStub(channel)
        self._metadata = ((NAMESPACE_HEADER, namespace),)

    def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply layer ``desc`` onto ``mounts``; returns the uncompressed layer's descriptor (digest = diff ID).

        :raises NotFoundError: the blob is not in the daemon's content store.
        :raises InvalidArgumentError: a malformed or hostile layer.
        """
        req = diff_pb2.ApplyRequest(diff=convert.descriptor_to_pb(desc), mounts=[convert.mount_to_pb(m) for m in mounts])
        return convert.descriptor_from_pb(call(self._stub.Apply, req, metadata=self._metadata).applied)


__all__ = ["RemoteApplier"]
