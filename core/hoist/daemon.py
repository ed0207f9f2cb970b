"""hoistd's life: load plugins, report each one's status, serve gRPC on the socket, shut down cleanly on a signal."""

from __future__ import annotations

import logging
import os
import signal
import threading

from hoist.api.server import serve
from hoist.config import Config
from hoist.host import PluginHost

log = logging.getLogger("hoistd")


def run_daemon(cfg: Config, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Run hoistd until SIGTERM/SIGINT (or ``stop`` is set); return the exit code.

    :raises PluginError: a required plugin did not load.
    """
    stop = stop or threading.Event()
    host = PluginHost(cfg)
    server = None
    address = cfg.grpc.address
    if threading.current_thread() is threading.main_thread():
        # before the socket exists, so a signal sent as soon as it appears is a clean stop, not a traceback
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: stop.set())
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
        server = serve(address, host, uid=cfg.grpc.uid, gid=cfg.grpc.gid, transport=cfg.grpc.transport)
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
