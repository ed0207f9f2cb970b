"""``hoistd`` for tests: every core service, a config under a temp dir, the process, and ``ctr``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from hoist.builtins import BUILTINS
from support.cli import HOISTD, config_text

#: Plugins a full hoistd serves: the local store, metadata, snapshotters and every core gRPC service.
HOISTD_PLUGINS = ("hoist.content.v1.local", *BUILTINS)


def hoistd_config_text(base: Path) -> str:
    """A hoistd TOML config under ``base``: every core service, the local store without fsync."""
    return config_text(base, HOISTD_PLUGINS, required=("hoist.content.v1.local", "hoist.grpc.v1.content"),
                       grpc_address=base / "run" / "hoistd.sock",
                       plugin_config={"hoist.content.v1.local": "fsync = false"})


class HoistdProcess:
    """``hoistd --config`` running as a child process with its root under ``base``; stopped by PID."""

    def __init__(self, base: Path, *, config: Path | None = None, address: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        """Without ``config``, one serving every core service is written (its socket is ``base/run/hoistd.sock``);
        with one, ``address`` is the socket it names."""
        self.base = base
        if config is None:
            config = base / "config.toml"
            config.write_text(hoistd_config_text(base))
            address = base / "run" / "hoistd.sock"
        if address is None:
            raise ValueError("HoistdProcess: a given config needs its grpc address")
        self.config = config
        self.address = address
        self.env = None if env is None else dict(env)
        self.log = base / "hoistd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([HOISTD, "--config", str(self.config)], env=self.env, stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while b"hoistd serving on" not in self.log.read_bytes()[mark:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hoistd did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def run_ctr(address: Path | str, *args: str, namespace: str = "default", stdin: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real ``ctr`` against ``address``."""
    return subprocess.run(
        ["/usr/bin/ctr", "--address", str(address), "--namespace", namespace, *args],
        input=stdin, capture_output=True, timeout=timeout, check=False,
    )
