"""The gRPC content proxy passes the content-store conformance suite against hoistd's Content service.

Each test gets a fresh local store served by an in-process gRPC server on a unix socket in a temp dir.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.api.content_client import RemoteContentStore, open_store
from hoist.api.server import serve
from hoist.services.content import ContentService
from hoist.testing.content import ContentStoreSuite
from hoist_content_local.store import LocalContentStore


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    local = LocalContentStore(tmp_path / "root", fsync=False)
    sock = tmp_path / "run" / "hoistd.sock"
    server = serve(f"unix://{sock}", [ContentService(local)])
    try:
        yield str(sock)
    finally:
        server.stop(None).wait(5)


class TestContentProxy(ContentStoreSuite):
    @pytest.fixture
    def store(self, address: str) -> Iterator[RemoteContentStore]:
        remote = open_store(address, namespace="default")
        try:
            yield remote
        finally:
            remote.close()

    @pytest.fixture
    def store_opener(self, address: str):  # type: ignore[no-untyped-def]
        return functools.partial(open_store, address, "default")


def test_client_killed_mid_write_leaves_a_resumable_ingest(address: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from hoist.content import Digest
    from hoist.errors import UnavailableError

    script = tmp_path / "writer.py"
    script.write_text(
        "import sys, time\n"
        "from hoist.api.content_client import open_store\n"
        f"w = open_store({address!r}).writer('killed-upload', total=1 << 20)\n"
        "w.write(b'k' * 300000)\n"
        "print('written', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
        store = open_store(address)
        with pytest.raises(UnavailableError, match="locked"):
            store.writer("killed-upload")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    deadline = time.monotonic() + 10
    while True:
        try:
            w = store.writer("killed-upload")
            break
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert w.status().offset == 300000
    assert w.digest() == Digest.from_bytes(b"k" * 300000)
    w.close()
    store.close()
