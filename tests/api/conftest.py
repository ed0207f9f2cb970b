"""Fixtures for the API tests: a private, real containerd on a unix socket in a temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hoistd import HoistdProcess

CONTAINERD = "/usr/bin/containerd"

# Everything that would reach outside the temp dir, or needs a runtime, is off.
_DISABLED = [
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
]


class PrivateContainerd:
    """A containerd process with its own root, state and socket under ``workdir``; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.address = workdir / "containerd.sock"
        self.log = workdir / "containerd.log"
        self.config = workdir / "config.toml"
        disabled = ", ".join(f'"{p}"' for p in _DISABLED)
        self.config.write_text(
            "version = 2\n"
            f'root = "{workdir / "root"}"\n'
            f'state = "{workdir / "state"}"\n'
            f"disabled_plugins = [{disabled}]\n"
            f'[grpc]\naddress = "{self.address}"\n'
            f'[ttrpc]\naddress = "{self.address}.ttrpc"\n'
            '[debug]\naddress = ""\n'
            '[metrics]\naddress = ""\n'
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([CONTAINERD, "--config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while b"containerd successfully booted" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"containerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateContainerd]:
    """A running private containerd (Debian's 1.6); its socket is ``containerd.address``."""
    daemon = PrivateContainerd(tmp_path_factory.mktemp("containerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# -- Hoist's daemon with every core service (support.hoistd) ------------------------------------


@pytest.fixture(scope="module")
def hoistd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoistdProcess]:
    """A running ``hoistd`` process serving every core service (its socket is ``hoistd.address``)."""
    daemon = HoistdProcess(tmp_path_factory.mktemp("hoistd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
