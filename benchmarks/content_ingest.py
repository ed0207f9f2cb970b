#!/usr/bin/env python3
"""Ingest and commit one large blob from a file into the local content store, against the machine's limits.

Cases, each in a fresh child process (so its peak RSS is its own), with the source file's page
cache warm and then cold (evicted with posix_fadvise DONTNEED on that file only):

- ``sha256``: read the file in 1 MiB chunks and hash it with hashlib (the hashing limit);
- ``copy+fsync``: read/write it to a new file in 1 MiB chunks, then fsync (the disk limit);
- ``hoist``: ``write_blob`` into a fresh ``LocalContentStore`` (hash while writing, verify, commit);
- ``ctr``: ``ctr content ingest`` into a private containerd started here on a unix socket
  (skipped with a note when containerd/ctr are not installed).

MB = 1e6 bytes. Ratios: hoist / min(sha256, copy+fsync) and hoist / ctr for the same cache state.
Peak RSS is reported above a baseline child that only imports the same modules.

usage: benchmarks/content_ingest.py [--size-mib 1024] [--dir DIR] [--runs 1] [--json OUT] [--writeback-mib 8] [--only hoist,ctr]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.containerd import Containerd  # noqa: E402

CHUNK = 1 << 20


# -- child cases ----------------------------------------------------------------------------------


def _vm_hwm_kib(pid: str | int) -> int:
    """Peak RSS of this address space (unlike ru_maxrss, not inherited from the process before exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _child(case: str, src: str, dest: str, expected: str, size: int) -> dict:
    if case == "baseline":
        import hoist.content  # noqa: F401
        import hoist_content_local.store  # noqa: F401

        return {"seconds": 0.0}
    if case == "sha256":
        c, t = time.process_time(), time.perf_counter()
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(src, "rb", buffering=0) as f:
            while n := f.readinto(view):
                h.update(view[:n])
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        assert "sha256:" + h.hexdigest() == expected
        return {"seconds": dt, "cpu_seconds": cpu}
    if case == "copy+fsync":
        c, t = time.process_time(), time.perf_counter()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(src, "rb", buffering=0) as f, open(dest, "wb", buffering=0) as out:
            while n := f.readinto(view):
                out.write(view[:n])
            os.fsync(out.fileno())
        return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}
    if case == "hoist":
        from hoist.content import Digest, write_blob
        from hoist_content_local.store import LocalContentStore

        store = LocalContentStore(dest, writeback_bytes=int(os.environ.get("HOIST_BENCH_WRITEBACK_MIB", "8")) << 20)
        c, t = time.process_time(), time.perf_counter()
        with open(src, "rb") as f:
            write_blob(store, "bench-layer", f, size, Digest.parse(expected))
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        assert store.info(expected).size == size
        return {"seconds": dt, "cpu_seconds": cpu}
    raise SystemExit(f"unknown case {case}")


def _run_child(case: str, src: str, dest: str, expected: str, size: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, src, dest, expected, str(size)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- containerd -----------------------------------------------------------------------------------


def ctr_ingest(ctrd: Containerd, src: str, size: int, expected: str, ref: str) -> dict:
    """``ctr content ingest`` of ``src``; then containerd restarts on an empty root (start-up is not timed)."""
    # /usr/bin/time (tiny) reports the client's own peak RSS; ru_maxrss of a child of this
    # process would include this interpreter's, inherited across exec.
    timer = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    with open(src, "rb") as f:
        t = time.perf_counter()
        p = subprocess.run(
            [*timer, "ctr", "--address", str(ctrd.address), "content", "ingest", "--expected-size", str(size),
             "--expected-digest", expected, ref],
            stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
        )
        dt = time.perf_counter() - t
    rss = int(p.stderr.strip().splitlines()[-1]) if timer else 0
    assert ctrd.proc is not None
    hwm = _vm_hwm_kib(ctrd.proc.pid)
    # a removed blob lingers until containerd's GC runs, and a re-ingest of it would only relink it
    ctrd.fresh()
    return {"seconds": dt, "client_maxrss_kib": rss, "daemon_hwm_kib": hwm}


# -- driver ---------------------------------------------------------------------------------------


def _make_source(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb", buffering=0) as f:
        left = size
        while left:
            b = os.urandom(min(CHUNK * 8, left))
            h.update(b)
            f.write(b)
            left -= len(b)
        os.fsync(f.fileno())
    return "sha256:" + h.hexdigest()


def _fmt_rows(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under /tmp)")
    ap.add_argument("--runs", type=int, default=1, help="runs per case; the median is reported")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--writeback-mib", type=int, default=8, help="the local store's writeback_mib setting")
    ap.add_argument("--only", default="", help="comma-separated cases to run (sha256,copy+fsync,hoist,ctr)")
    ap.add_argument("--child", nargs=5, metavar=("CASE", "SRC", "DEST", "DIGEST", "SIZE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        case, src, dest, expected, size = a.child
        r = _child(case, src, dest, expected, int(size))
        r["maxrss_kib"] = _vm_hwm_kib("self")
        print(json.dumps(r))
        return

    size = a.size_mib << 20
    os.environ["HOIST_BENCH_WRITEBACK_MIB"] = str(a.writeback_mib)
    only = set(filter(None, a.only.split(",")))
    scratch = Path(tempfile.mkdtemp(prefix="hoist-bench-ingest-", dir=a.dir))
    ctrd: Containerd | None = None
    try:
        src = scratch / "source.bin"
        print(f"# creating a {a.size_mib} MiB source file in {scratch}", file=sys.stderr)
        expected = _make_source(src, size)
        have_ctr = shutil.which("containerd") is not None and shutil.which("ctr") is not None and (not only or "ctr" in only)
        if have_ctr:
            ctrd = Containerd(scratch / "containerd")
            ctrd.start()
        baseline = _run_child("baseline", str(src), "", expected, size)["maxrss_kib"]

        results: dict[tuple[str, str], dict] = {}
        for cache in ("warm", "cold"):
            for case in ("sha256", "copy+fsync", "hoist", "ctr"):
                if (case == "ctr" and ctrd is None) or (only and case not in only and case not in ("sha256", "copy+fsync")):
                    continue
                runs = []
                for i in range(a.runs):
                    dest = scratch / f"dest-{case}-{cache}-{i}"
                    os.sync()
                    if cache == "cold":
                        _evict(str(src))
                    else:
                        _run_child("sha256", str(src), "", expected, size)  # make sure it is cached
                    if case == "ctr":
                        assert ctrd is not None
                        r = ctr_ingest(ctrd, str(src), size, expected, f"bench-{cache}-{i}")
                        r["maxrss_kib"] = r["client_maxrss_kib"]
                    else:
                        r = _run_child(case, str(src), str(dest), expected, size)
                    runs.append(r)
                    if dest.is_dir():
                        shutil.rmtree(dest)
                    elif dest.exists():
                        dest.unlink()
                med = statistics.median(r["seconds"] for r in runs)
                results[(case, cache)] = {
                    "seconds": med,
                    "mb_s": size / med / 1e6,
                    "maxrss_kib": max(r["maxrss_kib"] for r in runs),
                    "daemon_hwm_kib": max(r.get("daemon_hwm_kib", 0) for r in runs),
                    "cpu_seconds": statistics.median(r.get("cpu_seconds", 0.0) for r in runs),
                    "runs": [r["seconds"] for r in runs],
                }

        rows = [["case", "cache", "seconds", "cpu s", "MB/s", "vs min(sha256,copy)", "vs ctr", "peak RSS MiB", "above baseline MiB"]]
        for (case, cache), r in results.items():
            limit = min(results[("sha256", cache)]["mb_s"], results[("copy+fsync", cache)]["mb_s"])
            vs_ctr = ""
            if case == "hoist" and ("ctr", cache) in results:
                vs_ctr = f"{r['mb_s'] / results[('ctr', cache)]['mb_s']:.2f}"
            rss = r["maxrss_kib"] / 1024
            above = "" if case == "ctr" else f"{(r['maxrss_kib'] - baseline) / 1024:.1f}"
            if case == "ctr":
                rss_s = f"{rss:.1f} (daemon {r['daemon_hwm_kib'] / 1024:.0f})"
            else:
                rss_s = f"{rss:.1f}"
            cpu_s = "" if case == "ctr" else f"{r['cpu_seconds']:.2f}"
            rows.append([case, cache, f"{r['seconds']:.3f}", cpu_s, f"{r['mb_s']:.0f}", f"{r['mb_s'] / limit:.2f}", vs_ctr, rss_s, above])
        print(f"content ingest of {a.size_mib} MiB ({size} bytes), median of {a.runs} run(s); baseline RSS {baseline / 1024:.1f} MiB")
        print(_fmt_rows(rows))
        if a.json:
            Path(a.json).write_text(json.dumps(
                {"size": size, "baseline_maxrss_kib": baseline,
                 "results": [{"case": c, "cache": k, **v} for (c, k), v in results.items()]}, indent=2))
    finally:
        if ctrd is not None:
            ctrd.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
