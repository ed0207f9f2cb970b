"""The Introspection service (``hoist.grpc.v1.introspection``): the daemon's plugins and their status, its identity."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from google.rpc import status_pb2

from hoist import filters
from hoist.api.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from hoist.api.errors import code_of, translate_errors
from hoist.errors import FailedPreconditionError
from hoist.plugin import InitContext, PluginResult, Registration, hookimpl

SKIP_MARKER = "skip plugin"
"""ctr reports a plugin as ``skip`` when its init error message contains this text."""


def plugin_message(result: PluginResult) -> introspection_pb2.Plugin:
    """One plugin's row: type, id, requires, and ``init_err`` unless it is ``ok``."""
    msg = introspection_pb2.Plugin(type=result.type, id=result.id, requires=list(result.requires))
    if result.status != "ok":
        reason = result.reason() or result.status
        if result.status == "skip":
            text = reason if SKIP_MARKER in reason else f"{reason}: {SKIP_MARKER}"
        else:
            text = reason
        code = _cause_code(result.error)
        msg.init_err.CopyFrom(status_pb2.Status(code=code.value[0], message=text))
    return msg


def _cause_code(err: BaseException | None) -> grpc.StatusCode:
    """The code of the first error in the ``__cause__`` chain that has one (the host wraps init errors)."""
    seen = 0
    while err is not None and seen < 10:
        code = code_of(err)
        if code != grpc.StatusCode.UNKNOWN:
            return code
        err, seen = err.__cause__, seen + 1
    return grpc.StatusCode.UNKNOWN


def _plugin_fields(plugin: introspection_pb2.Plugin) -> filters.Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("type",):
            return plugin.type, bool(plugin.type)
        if path == ("id",):
            return plugin.id, bool(plugin.id)
        return "", False

    return field


def server_uuid(root: Path) -> str:
    """This daemon's identity, kept in ``<root>/uuid`` (created on first use)."""
    path = root / "uuid"
    try:
        text = path.read_text().strip()
        return str(uuid.UUID(text))
    except FileNotFoundError:
        pass
    except ValueError as err:
        raise FailedPreconditionError(f"{path}: not a UUID: {err}; remove the file to make a new one") from err
    value = str(uuid.uuid4())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    tmp.replace(path)
    return value


@translate_errors
class IntrospectionService(introspection_pb2_grpc.IntrospectionServicer):
    """containerd.services.introspection.v1.Introspection over the plugin host's results."""

    def __init__(self, results: Callable[[], Sequence[PluginResult]], root: Path) -> None:
        self._results = results
        self._root = root

    def register(self, server: grpc.Server) -> None:
        introspection_pb2_grpc.add_IntrospectionServicer_to_server(self, server)

    def Plugins(
        self, request: introspection_pb2.PluginsRequest, context: grpc.ServicerContext
    ) -> introspection_pb2.PluginsResponse:
        selected = filters.parse(*request.filters)
        rows = [plugin_message(r) for r in self._results()]
        return introspection_pb2.PluginsResponse(plugins=[p for p in rows if selected.match(_plugin_fields(p))])

    def Server(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> introspection_pb2.ServerResponse:
        return introspection_pb2.ServerResponse(uuid=server_uuid(self._root))


def _init(ic: InitContext) -> IntrospectionService:
    return IntrospectionService(ic.plugin_results, ic.root)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="introspection", init=_init))
