"""The gRPC server of ``hoistd``: a unix socket, Hoist's error mapping, and every ``hoist.grpc.v1`` plugin's services.

Also the request helpers servicers share: the namespace (``containerd-namespace`` metadata, as
containerd's clients send it) and the lease (``containerd-lease``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any, Protocol

import grpc

from hoist.api.errors import ErrorInterceptor
from hoist.api.transport import server as transport_server
from hoist.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError

log = logging.getLogger("hoist.api")

GRPC_PLUGIN_TYPE = "hoist.grpc.v1"
"""Plugin type of the gRPC services; each instance has ``register(server: grpc.Server)``."""

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
MAX_MESSAGE_SIZE = 16 << 20
"""Largest request or response message, as containerd's default."""
DEFAULT_WORKERS = 32
"""Threads serving calls; long streams (Read, Write, List) each hold one."""

_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_MAX_IDENTIFIER = 76


class PluginSource(Protocol):
    """Anything that can list plugin instances of a type (the plugin host, an init context)."""

    def get_all(self, type: str) -> dict[str, Any]: ...


def socket_path(address: str) -> Path:
    """The filesystem path of ``unix://<path>`` or a plain path.

    :raises InvalidArgumentError: an abstract socket, another scheme, or an empty or relative path.
    """
    path = address[len("unix://"):] if address.startswith("unix://") else address
    if address.startswith("unix-abstract:") or path.startswith("@") or path.startswith("\0"):
        raise InvalidArgumentError(f"address {address!r}: abstract sockets are not supported, use a filesystem path")
    if "://" in path or not path:
        raise InvalidArgumentError(f"address {address!r}: expected unix://<absolute path> or an absolute path")
    p = Path(path)
    if not p.is_absolute():
        raise InvalidArgumentError(f"address {address!r}: the socket path must be absolute")
    return p


def socket_answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether some process accepts connections on the unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


SERVICE_PLUGIN_TYPE = "hoist.service.v1"


def _grpc_services(plugins: PluginSource | Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, Any]]:
    if hasattr(plugins, "get_all"):
        # hoist.grpc.v1 plugins are services by definition; hoist.service.v1 plugins serve when they can register.
        services = sorted(plugins.get_all(GRPC_PLUGIN_TYPE).items())
        return services + sorted((k, v) for k, v in plugins.get_all(SERVICE_PLUGIN_TYPE).items()
                                 if callable(getattr(v, "register", None)))
    if isinstance(plugins, Mapping):
        return sorted(plugins.items())
    return [(type(p).__name__, p) for p in plugins]


def serve(
    address: str,
    plugins: PluginSource | Mapping[str, Any] | Iterable[Any],
    *,
    uid: int | None = None,
    gid: int | None = None,
    mode: int = 0o660,
    max_workers: int = DEFAULT_WORKERS,
    transport: str = "hoist",
) -> Any:
    """Start a gRPC server on the unix socket ``address`` and return it (call ``stop`` to end it).

    The socket's directory is created; a socket file left by a dead daemon is removed, a live one
    is an error. The socket gets ``mode`` and, when given, owner ``uid`` and group ``gid``.

    :param plugins: the plugin host (or an init context): every ``hoist.grpc.v1`` instance is asked
        to ``register(server)``; or directly a mapping ``{id: instance}`` or a list of such instances.
    :param transport: ``hoist`` (:mod:`hoist.api.transport`) or ``grpcio`` (grpcio's own server); both
        serve the same handlers and interceptors.
    :raises InvalidArgumentError: ``address`` is not a filesystem unix socket path, or an unknown ``transport``.
    :raises UnavailableError: another process serves on ``address``, or it cannot be bound.
    """
    path = socket_path(address)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if socket_answers(path):
            raise UnavailableError(f"{path}: another process is already serving on this socket")
        if not path.is_socket() and not path.is_symlink():
            raise UnavailableError(f"{path}: exists and is not a socket; refusing to remove it")
        path.unlink()
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ("grpc.so_reuseport", 0),
    ]
    if transport == "hoist":
        server: Any = transport_server(max_workers=max_workers, interceptors=[ErrorInterceptor()], options=options)
    elif transport == "grpcio":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hoist-grpc"),
                             interceptors=[ErrorInterceptor()], options=options)
    else:
        raise InvalidArgumentError(f"transport {transport!r}: expected 'hoist' or 'grpcio'")
    for sid, service in _grpc_services(plugins):
        register = getattr(service, "register", None)
        if not callable(register):
            log.warning("%s.%s: has no register(server) method; not served", GRPC_PLUGIN_TYPE, sid)
            continue
        register(server)
        log.debug("%s.%s: registered", GRPC_PLUGIN_TYPE, sid)
    old_umask = os.umask(0o117)  # no window in which the socket is world-accessible
    try:
        bound = server.add_insecure_port(f"unix://{path}")
    finally:
        os.umask(old_umask)
    if bound == 0:
        raise UnavailableError(f"{path}: cannot listen on this socket")
    server.start()
    os.chmod(path, mode)
    want = (-1 if uid is None else uid, -1 if gid is None else gid)
    st = path.stat()
    if (want[0] not in (-1, st.st_uid)) or (want[1] not in (-1, st.st_gid)):
        try:
            os.chown(path, *want)
        except PermissionError as err:
            # the socket stays owned by this process's user with `mode`: narrower, never wider
            log.warning("%s: cannot give the socket to uid %s, gid %s: %s", path, uid, gid, err.strerror)
    return server


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def validate_identifier(kind: str, value: str) -> str:
    """``value`` if it is a valid containerd identifier (namespace, lease id, ...).

    :raises InvalidArgumentError: empty, longer than 76 characters, or not ``[A-Za-z0-9]+([._-][A-Za-z0-9]+)*``.
    """
    if not value:
        raise InvalidArgumentError(f"{kind}: identifier must not be empty")
    if len(value) > _MAX_IDENTIFIER:
        raise InvalidArgumentError(f"{kind}: identifier {value[:_MAX_IDENTIFIER]!r}... longer than {_MAX_IDENTIFIER} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidArgumentError(f"{kind}: identifier {value!r} must match {_IDENTIFIER.pattern}")
    return value


def namespace_of(context: grpc.ServicerContext) -> str:
    """The namespace a call is made in, from its ``containerd-namespace`` metadata.

    :raises FailedPreconditionError: the metadata is missing (containerd's "namespace is required").
    :raises InvalidArgumentError: the name is not a valid identifier.
    """
    ns = _metadata(context, NAMESPACE_HEADER)
    if not ns:
        raise FailedPreconditionError("namespace is required")
    return validate_identifier("namespace", ns)


_LEASE_ID = re.compile(r"[A-Za-z0-9._=-]+")
_MAX_LEASE_ID = 255


def validate_lease_id(value: str) -> str:
    """``value`` if it can name a lease: containerd's clients make ids like ``565143709-W5G_bA==``.

    :raises InvalidArgumentError: empty, longer than 255 characters, or not ``[A-Za-z0-9._=-]+``.
    """
    if not value:
        raise InvalidArgumentError("lease id must not be empty")
    if len(value) > _MAX_LEASE_ID or not _LEASE_ID.fullmatch(value):
        raise InvalidArgumentError(f"lease id {value[:_MAX_LEASE_ID]!r}: must be at most {_MAX_LEASE_ID} of [A-Za-z0-9._=-]")
    return value


def lease_of(context: grpc.ServicerContext) -> str | None:
    """The lease a call is made under (``containerd-lease`` metadata), or ``None``.

    :raises InvalidArgumentError: the id is malformed (see :func:`validate_lease_id`).
    """
    lease = _metadata(context, LEASE_HEADER)
    return validate_lease_id(lease) if lease else None


__all__ = [
    "GRPC_PLUGIN_TYPE",
    "LEASE_HEADER",
    "MAX_MESSAGE_SIZE",
    "NAMESPACE_HEADER",
    "PluginSource",
    "lease_of",
    "namespace_of",
    "serve",
    "socket_answers",
    "socket_path",
    "validate_identifier",
    "validate_lease_id",
]
