"""Fixtures for the example distributions: each is pip-installed into a temp ``--target`` dir, never the venv."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="package")
def install_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``install_example("resolver_ocilayout") -> site dir``: ``pip install --target`` once, on sys.path for this package's tests.

    The site dirs leave ``sys.path`` (and their modules ``sys.modules``) afterwards, so tests outside
    ``tests/examples`` never see the examples as installed plugins.
    """
    done: dict[str, Path] = {}

    def install(name: str) -> Path:
        if name not in done:
            site = tmp_path_factory.mktemp(f"site-{name}")
            r = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
                 str(site), str(REPO / "examples" / name)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            sys.path.insert(0, str(site))
            done[name] = site
        return done[name]

    yield install
    for site in done.values():
        while str(site) in sys.path:
            sys.path.remove(str(site))
        for mod in [m for m, v in sys.modules.items() if str(site) in str(getattr(v, "__file__", "") or "")]:
            del sys.modules[mod]
    importlib.invalidate_caches()


@pytest.fixture
def example_env(tmp_path: Path) -> Callable[[Path], dict[str, str]]:
    """``example_env(site)``: the environment for Hoist's commands with an installed example on ``PYTHONPATH``."""

    def make(site: Path) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(site), HOIST_ROOT=str(tmp_path / "root"),
                   HOIST_STATE=str(tmp_path / "state"))
        for k in ("HOIST_ADDRESS", "HOIST_CONFIG"):
            env.pop(k, None)
        return env

    return make
