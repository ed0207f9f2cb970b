"""``[grpc] transport``: hoistd serves the same API on Hoist's own HTTP/2 server and on grpcio's.

Each transport runs in a real ``hoistd`` process configured through the key as docs/daemon.md shows
it; the real ``ctr`` and ``dist`` then go through the same calls and must see the same results.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import config_text, run_dist
from support.hoistd import HOISTD_PLUGINS, HoistdProcess, run_ctr


@pytest.fixture(params=["hoist", "grpcio"])
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HoistdProcess]:
    base = tmp_path / "hoistd"
    base.mkdir()
    config = base / "config.toml"
    config.write_text(config_text(base, HOISTD_PLUGINS, grpc_address=base / "run" / "hoistd.sock",
                                  transport=request.param, plugin_config={"hoist.content.v1.local": "fsync = false"}))
    assert f'transport = "{request.param}"' in config.read_text()
    d = HoistdProcess(base, config=config, address=base / "run" / "hoistd.sock")
    d.start()
    try:
        yield d
    finally:
        assert d.stop() == 0


def test_ctr_and_dist_see_the_same_api(daemon: HoistdProcess) -> None:
    blob = os.urandom(3 << 20) + b"tail"  # several Read calls, one message each
    dgst = "sha256:" + hashlib.sha256(blob).hexdigest()
    v = run_ctr(daemon.address, "version")
    assert v.returncode == 0 and b"Server:" in v.stdout
    ing = run_ctr(daemon.address, "content", "ingest", "--expected-digest", dgst, "up-1", stdin=blob)
    assert ing.returncode == 0, ing.stderr
    got = run_ctr(daemon.address, "content", "get", dgst)
    assert got.returncode == 0 and got.stdout == blob
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOIST_")}
    ls = run_dist(env, "--address", daemon.address, "content", "ls", "-q")
    assert ls.returncode == 0 and ls.stdout.split() == [dgst]
    missing = "sha256:" + "0" * 64
    gone = run_ctr(daemon.address, "content", "get", missing)
    assert gone.returncode == 1 and gone.stderr == f"ctr: content {missing}: not found\n".encode()
    other = run_dist(env, "--address", daemon.address, "-n", "other", "content", "info", dgst)
    assert other.returncode == 1 and other.stderr.strip() == f"dist: content {dgst}: not found"
