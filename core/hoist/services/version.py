"""The Version service (``hoist.grpc.v1.version``): which Hoist release the daemon is."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from hoist.api.containerd.services.version.v1 import version_pb2, version_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.plugin import InitContext, Registration, hookimpl


def _describe() -> tuple[str, str]:
    from hoist import version

    return version.describe(), version.revision()


@translate_errors
class VersionService(version_pb2_grpc.VersionServicer):
    """containerd.services.version.v1.Version over Hoist's version string and source revision."""

    def __init__(self, version: str, revision: str) -> None:
        self._response = version_pb2.VersionResponse(version=version, revision=revision)

    def register(self, server: grpc.Server) -> None:
        version_pb2_grpc.add_VersionServicer_to_server(self, server)

    def Version(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> version_pb2.VersionResponse:
        return self._response


def _init(ic: InitContext) -> VersionService:
    version, revision = _describe()
    return VersionService(version, revision)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="version", init=_init))
