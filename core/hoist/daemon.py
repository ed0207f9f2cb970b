"""hoistd's life: load plugins, report each one's status, serve gRPC on the socket, shut down cleanly on a signal."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from hoist.config import Config
from hoist.errors import UnavailableError
from hoist.host import PluginHost

log = logging.getLogger("hoistd")


def socket_in_use(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def prepare_socket(path: str, uid: int, gid: int) -> None:
    """Create the socket's directory and remove a stale socket file.

    :raises UnavailableError: another process is serving on ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if socket_in_use(path):
            raise UnavailableError(f"{path}: another daemon is already serving on this socket")
        p.unlink()


def start_server(address: str, host: PluginHost, uid: int = 0, gid: int = 0) -> Any:
    """A started grpc server on ``unix://address`` with every ``hoist.grpc.v1`` plugin's services registered."""
    import grpc
    from concurrent import futures

    prepare_socket(address, uid, gid)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"), options=[
        ("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20),
        ("grpc.so_reuseport", 0)])
    for sid, service in sorted(host.get_all("hoist.grpc.v1").items()):
        register = getattr(service, "register", None)
        if callable(register):
            register(server)
            log.debug("hoist.grpc.v1.%s: registered", sid)
    if server.add_insecure_port(f"unix://{address}") == 0:
        raise UnavailableError(f"{address}: cannot listen on this socket")
    server.start()
    os.chmod(address, 0o660)
    if (uid, gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(address, uid, gid)
        except PermissionError as e:
            log.warning("%s: cannot chown to %d:%d: %s", address, uid, gid, e)
    return server


def run_daemon(cfg: Config, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Run hoistd until SIGTERM/SIGINT (or ``stop`` is set); return the exit code.

    :raises PluginError: a required plugin did not load.
    """
    stop = stop or threading.Event()
    host = PluginHost(cfg)
    server = None
    address = cfg.grpc.address
    try:
        log.info("hoistd starting: root %s, state %s", cfg.root, cfg.state)
        for r in host.load():
            if r.ok:
                log.info("%s: ok", r.uri)
            elif r.status == "skip":
                log.info("%s: skip: %s", r.uri, r.reason())
            else:
                log.warning("%s: error: %s", r.uri, r.reason())
        host.check_required()
        server = start_server(address, host, cfg.grpc.uid, cfg.grpc.gid)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: stop.set())
        log.info("hoistd serving on %s", address)
        if ready is not None:
            ready.set()
        while not stop.wait(3600):
            pass
        log.info("hoistd stopping")
        return 0
    finally:
        if server is not None:
            server.stop(grace=5).wait(10)
            try:
                os.unlink(address)
            except FileNotFoundError:
                pass
        host.close()
