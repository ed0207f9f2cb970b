"""Client of the Version service: which release a daemon (hoistd or containerd) runs."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from hoist.api.containerd.services.version.v1 import version_pb2_grpc
from hoist.api.errors import call


def server_version(channel: grpc.Channel) -> tuple[str, str]:
    """``(version, revision)`` of the daemon on ``channel``.

    :raises UnavailableError: nothing answers on the channel's address.
    """
    resp = call(version_pb2_grpc.VersionStub(channel).Version, empty_pb2.Empty())
    return resp.version, resp.revision


__all__ = ["server_version"]
