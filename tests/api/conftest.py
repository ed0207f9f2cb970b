"""Fixtures for the API tests: a private, real containerd and a hoistd, each on a unix socket in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.containerd import Containerd
from support.hoistd import HoistdProcess


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A running private containerd (Debian's 1.6); its socket is ``containerd.address``."""
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
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
