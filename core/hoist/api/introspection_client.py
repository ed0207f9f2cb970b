"""Client of the Introspection service: a daemon's plugins as :class:`~hoist.plugin.PluginResult` rows."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from hoist.api.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from hoist.api.errors import call, from_status
from hoist.errors import UnsupportedError
from hoist.plugin import InitContext, PluginResult, Registration

SKIP_MARKER = "skip plugin"
_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _remote(ic: InitContext) -> None:
    raise UnsupportedError(f"plugin {ic.registration.uri} runs in the daemon; it cannot be started here")


def plugin_result(plugin: introspection_pb2.Plugin) -> PluginResult:
    """One daemon plugin as a result row: ``ok``, ``skip`` (message mentions "skip plugin") or ``error``."""
    reg = Registration(type=plugin.type, id=plugin.id, requires=tuple(plugin.requires), init=_remote)
    if not plugin.HasField("init_err"):
        return PluginResult(uri=reg.uri, registration=reg, status="ok")
    message = plugin.init_err.message
    code = _CODES.get(plugin.init_err.code, grpc.StatusCode.UNKNOWN)
    if SKIP_MARKER in message:
        reason = message.removesuffix(f": {SKIP_MARKER}") if message != SKIP_MARKER else message
        return PluginResult(uri=reg.uri, registration=reg, status="skip", error=from_status(code, reason))
    return PluginResult(uri=reg.uri, registration=reg, status="error", error=from_status(code, message))


def plugin_results(channel: grpc.Channel, *filters: str) -> list[PluginResult]:
    """Every plugin of the daemon on ``channel`` (matching any of ``filters``), in the daemon's order."""
    stub = introspection_pb2_grpc.IntrospectionStub(channel)
    resp = call(stub.Plugins, introspection_pb2.PluginsRequest(filters=list(filters)))
    return [plugin_result(p) for p in resp.plugins]


def server_uuid(channel: grpc.Channel) -> str:
    """The daemon's identity (Introspection.Server)."""
    return call(introspection_pb2_grpc.IntrospectionStub(channel).Server, empty_pb2.Empty()).uuid


__all__ = ["plugin_result", "plugin_results", "server_uuid"]
