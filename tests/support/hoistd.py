"""``hoistd`` for tests: the core services as builtins, a config under a temp dir, the process, and ``ctr``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Builtins a full hoistd serves: metadata, snapshotters and every core gRPC service.
HOISTD_BUILTINS: dict[str, str] = {
    "hoist.metadata.v1.sqlite": "hoist.metadata.plugin",
    "hoist.snapshotter.v1.native": "hoist.snapshotters.native",
    "hoist.snapshotter.v1.overlayfs": "hoist.snapshotters.overlay",
    "hoist.grpc.v1.version": "hoist.services.version",
    "hoist.grpc.v1.introspection": "hoist.services.introspection",
    "hoist.grpc.v1.namespaces": "hoist.services.namespaces",
    "hoist.grpc.v1.content": "hoist.services.content",
    "hoist.grpc.v1.images": "hoist.services.images",
    "hoist.grpc.v1.leases": "hoist.services.leases",
    "hoist.grpc.v1.snapshots": "hoist.services.snapshots",
    "hoist.grpc.v1.diff": "hoist.services.diff",
}
HOISTD_PLUGINS = ("hoist.content.v1.local", *HOISTD_BUILTINS)


def hoistd_config_text(base: Path) -> str:
    """A hoistd TOML config under ``base``: every core service, the local store without fsync."""
    plugins = ", ".join(f'"{p}"' for p in HOISTD_PLUGINS)
    return (
        "version = 1\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        f"enabled_plugins = [{plugins}]\n"
        'required_plugins = ["hoist.content.v1.local", "hoist.grpc.v1.content"]\n'
        f'[grpc]\naddress = "{base / "run" / "hoistd.sock"}"\ngid = {os.getgid()}\n'
        '[plugins."hoist.content.v1.local"]\nfsync = false\n'
    )


# hoistd as a process, with the core services known as builtins whatever hoist.builtins lists today
_LAUNCH = (
    "import sys, hoist.builtins as b, json; b.BUILTINS.update(json.loads(sys.argv.pop(1))); "
    "from hoist.cli.hoistd import main; sys.argv[0] = 'hoistd'; main()"
)


class HoistdProcess:
    """``hoistd --config`` running as a child process with its root under ``base``; stopped by PID."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = base / "run" / "hoistd.sock"
        self.config = base / "config.toml"
        self.config.write_text(hoistd_config_text(base))
        self.log = base / "hoistd.log"
        self.python = sys.executable
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-c", _LAUNCH, json.dumps(HOISTD_BUILTINS), "--config", str(self.config)],
                stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while b"hoistd serving on" not in self.log.read_bytes().rsplit(b"hoistd starting", 1)[-1]:
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
