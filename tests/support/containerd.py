"""A private, real containerd for tests and benchmarks: its own root, state and socket under a directory.

:class:`Containerd` writes a config that turns off everything reaching outside its directory or needing a
runtime (CRI, tasks, exotic snapshotters), starts ``containerd`` as a child process, waits until it has
booted, and stops it by PID.  :meth:`Containerd.fresh` restarts it on an empty root (benchmarks do that
before every timed round).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CONTAINERD = "/usr/bin/containerd"

#: Everything that would reach outside the directory, or needs a runtime, is off.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)
_BOOTED = b"containerd successfully booted"


class Containerd:
    """A containerd process with its own root, state and socket under ``workdir``; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.address = self.workdir / "containerd.sock"
        self.log = self.workdir / "containerd.log"
        self.config = self.workdir / "config.toml"
        disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.workdir / "root"}"\n'
            f'state = "{self.workdir / "state"}"\n'
            f"disabled_plugins = [{disabled}]\n"
            f'[grpc]\naddress = "{self.address}"\n'
            f'[ttrpc]\naddress = "{self.address}.ttrpc"\n'
            '[debug]\naddress = ""\n'
            '[metrics]\naddress = ""\n'
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Containerd:
        """Start containerd and wait until it says it has booted."""
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([CONTAINERD, "--config", str(self.config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while _BOOTED not in self.log.read_bytes()[mark:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"containerd did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def fresh(self) -> None:
        """Restart on an empty root and state (a removed blob lingers until containerd's GC runs)."""
        self.stop()
        for d in ("root", "state"):
            shutil.rmtree(self.workdir / d, ignore_errors=True)
        self.start()

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
