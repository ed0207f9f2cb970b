"""kill -9 of a writer process, at chosen and at random moments: no partial or wrong blob, ever; the next writer resumes."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hoist.content import Digest, write_blob
from hoist_content_local.store import LocalContentStore

CHILD = r"""
import random, sys, time
from hoist.content import Digest, write_blob
from hoist_content_local.store import LocalContentStore

root, mode = sys.argv[1], sys.argv[2]
store = LocalContentStore(root)
if mode == "slow":
    data = random.Random(1).randbytes(int(sys.argv[3]))
    w = store.writer("slow-layer", total=len(data), expected=Digest.from_bytes(data))
    off = w.status().offset
    print("start", off, flush=True)
    while off < len(data):
        w.write(data[off:off + 65536])
        off += 65536
        print(off, flush=True)
        time.sleep(0.002)
    w.commit(len(data), Digest.from_bytes(data))
    print("committed", flush=True)
else:
    print("ready", flush=True)
    for seed in range(int(sys.argv[3]), int(sys.argv[3]) + 6):
        data = random.Random(seed).randbytes(3 << 20)
        write_blob(store, f"layer-{seed}", __import__("io").BytesIO(data), len(data), Digest.from_bytes(data))
    print("all done", flush=True)
"""


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True)


def _check_blobs(root: Path) -> list[str]:
    """Every file under blobs/ is complete and named by its own digest."""
    names = []
    for alg_dir in (root / "blobs").iterdir():
        for blob in alg_dir.iterdir():
            h = hashlib.new(alg_dir.name)
            with open(blob, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            assert h.hexdigest() == blob.name, f"{blob} holds wrong or partial content"
            names.append(blob.name)
    return names


def test_kill_mid_write_resumes(tmp_path: Path) -> None:
    root = tmp_path / "content"
    size = 8 << 20
    child = _spawn(str(root), "slow", str(size))
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["start", "0"]
    reported = 0
    while reported < size // 3:
        reported = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    assert _check_blobs(root) == [], "no blob may appear before commit"
    store = LocalContentStore(root)
    data = random.Random(1).randbytes(size)
    st = store.status("slow-layer")
    assert reported <= st.offset < size and st.total == size

    w = store.writer("slow-layer", total=size, expected=Digest.from_bytes(data))
    assert w.status().offset == st.offset
    assert w.digest() == Digest.from_bytes(data[: st.offset]), "resume re-hashes exactly the bytes on disk"
    w.close()

    # and a second process picks the same ingest up and finishes it
    child = _spawn(str(root), "slow", str(size))
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["start", str(st.offset)]
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and out.strip().endswith("committed")
    assert _check_blobs(root) == [Digest.from_bytes(data).hex]
    assert store.list_statuses() == []


def test_kill_at_random_moments_never_publishes_bad_blobs(tmp_path: Path) -> None:
    root = tmp_path / "content"
    rnd = random.Random(20240601)
    for _ in range(8):
        child = _spawn(str(root), "many", "100")
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rnd.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        _check_blobs(root)
    store = LocalContentStore(root)
    for seed in range(100, 106):
        data = random.Random(seed).randbytes(3 << 20)
        write_blob(store, f"layer-{seed}", io.BytesIO(data), len(data), Digest.from_bytes(data))
    assert len(_check_blobs(root)) == 6
    assert store.list_statuses() == []
    assert os.listdir(root / "ingest") == []
