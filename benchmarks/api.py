#!/usr/bin/env python3
"""The gRPC API under load: the real ``ctr`` against ``hoistd`` and against a private containerd.

In one run, for each daemon (fresh root each round, daemon start-up not timed):

* ``ingest`` — ``ctr content ingest`` of a random blob (default 256 MiB) from a file;
* ``get``    — ``ctr content get`` of that blob to /dev/null;
* ``fetch``  — ``ctr content fetch --plain-http`` of a 4 × 256 MiB image from a loopback registry
  (``docker-registry``, started here on a free port).

hoistd runs with the local content store (fsync on, as containerd), the SQLite metadata store and
every core service.  Reports medians (min–max) of wall time, the ratio hoistd/containerd per case
(target ≤ 1.0), for ``get`` the time per Content.Read call (ctr reads 32 KiB per call), each daemon's
peak RSS (VmHWM) over the run, and the load average before and after.  The machine is shared and
noisy: compare ratios within one run.

usage: benchmarks/api.py [--runs 1] [--blob-mib 256] [--layers 4] [--layer-mib 256] [--reduced]
                         [--only ingest,get,fetch] [--transport hoist|grpcio] [--workdir DIR] [--json FILE]
``--reduced`` makes the blob 64 MiB and the image 4 × 64 MiB for a quick check.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from pull import build_and_push  # noqa: E402
from support.cli import config_text  # noqa: E402
from support.containerd import Containerd  # noqa: E402
from support.hoistd import HOISTD_PLUGINS, HoistdProcess  # noqa: E402
from support.registry import Registry  # noqa: E402

MiB = 1 << 20
CTR = "ctr"
TARGET = 1.0  # hoistd time / containerd time, every case
CTR_READ = 32 << 10  # what ctr content get asks per Content.Read (io.Copy's buffer behind its ReaderAt)


class Hoistd(HoistdProcess):
    """hoistd with every core service (the local store with fsync, as containerd), under ``workdir/hoistd``."""

    def __init__(self, workdir: Path, transport: str = "hoist") -> None:
        self.transport = transport
        base = workdir / "hoistd"
        super().__init__(base, config=workdir / "hoistd.toml", address=base / "run" / "hoistd.sock")

    def fresh(self) -> None:
        """Restart on an empty root and state (start-up is not timed)."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        self.config.write_text(config_text(self.base, HOISTD_PLUGINS, grpc_address=self.address,
                                            transport=self.transport))
        self.start()


def vm_hwm_mib(pid: int) -> float:
    """Peak RSS of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> float:
    """Wall seconds of ``cmd`` (after ``sync``); exits with its stderr when it fails."""
    subprocess.run(["sync"], check=True)
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
    fout = open(stdout or os.devnull, "wb")
    try:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    finally:
        if stdin:
            fin.close()  # type: ignore[union-attr]
        fout.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')[-2000:]}")
    return wall


def make_blob(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(4 * MiB, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return "sha256:" + h.hexdigest()


def fmt(times: list[float]) -> str:
    if not times:
        return "-"
    return f"{statistics.median(times):7.2f}s ({min(times):.2f}–{max(times):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mib", type=int, default=256)
    ap.add_argument("--reduced", action="store_true", help="64 MiB blob, layers of 64 MiB")
    ap.add_argument("--only", default="ingest,get,fetch")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--transport", choices=("hoist", "grpcio"), default="hoist",
                    help="hoistd's [grpc] transport (default hoist)")
    args = ap.parse_args()
    load_before = os.getloadavg()
    if args.reduced:
        args.blob_mib, args.layer_mib = 64, 64
    cases = [c for c in args.only.split(",") if c]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hoist-bench-api-"))
    work.mkdir(parents=True, exist_ok=True)
    daemons = {"hoistd": Hoistd(work, args.transport), "containerd": Containerd(work / "containerd")}
    times: dict[tuple[str, str], list[float]] = {}
    peak: dict[str, float] = {}
    reg = None
    try:
        blob = work / "blob.bin"
        digest = make_blob(blob, args.blob_mib * MiB) if {"ingest", "get"} & set(cases) else ""
        img = None
        if "fetch" in cases:
            reg = Registry(work / "registry").start()
            img = build_and_push(reg, work, "api", args.layers, args.layer_mib)
        for run in range(args.runs):
            for name, d in (daemons.items() if run % 2 == 0 else reversed(list(daemons.items()))):
                d.fresh()
                sock = str(d.address)
                base = [CTR, "--address", sock]
                if "ingest" in cases or "get" in cases:
                    t = timed([*base, "content", "ingest", "--expected-size", str(args.blob_mib * MiB),
                               "--expected-digest", digest, f"bench-{run}"], stdin=blob)
                    if "ingest" in cases:
                        times.setdefault((name, "ingest"), []).append(t)
                if "get" in cases:
                    times.setdefault((name, "get"), []).append(timed([*base, "content", "get", digest]))
                if img is not None:
                    times.setdefault((name, "fetch"), []).append(
                        timed([*base, "content", "fetch", "--plain-http", img["ref"]]))
                assert d.proc is not None
                peak[name] = max(peak.get(name, 0.0), vm_hwm_mib(d.proc.pid))
                d.stop()
    finally:
        for d in daemons.values():
            d.stop()
        if reg is not None:
            reg.stop()

    sizes = {"ingest": args.blob_mib, "get": args.blob_mib, "fetch": args.layers * args.layer_mib}
    print(f"ctr against hoistd ({args.transport} transport) and containerd, {args.runs} run(s); MiB = 2^20; "
          f"target hoistd/containerd ≤ {TARGET}")
    print(f"{'case':<8}{'MiB':>6}  {'hoistd':<28}{'containerd':<28}{'ratio':>6}")
    result: dict = {"transport": args.transport, "cases": {}, "peak_rss_mib": peak}
    for case in cases:
        h, c = times.get(("hoistd", case), []), times.get(("containerd", case), [])
        ratio = statistics.median(h) / statistics.median(c) if h and c else float("nan")
        flag = "" if ratio <= TARGET else "  (over target)"
        print(f"{case:<8}{sizes[case]:>6}  {fmt(h):<28}{fmt(c):<28}{ratio:6.2f}{flag}")
        result["cases"][case] = {"mib": sizes[case], "hoistd": h, "containerd": c, "ratio": ratio}
    if "get" in cases and times.get(("hoistd", "get")) and times.get(("containerd", "get")):
        # ctr reads through a ReaderAt 32 KiB at a time: each piece is one Content.Read call
        calls = args.blob_mib * MiB // CTR_READ
        per_call = {d: statistics.median(times[(d, "get")]) / calls * 1e6 for d in daemons}
        print(f"get: {calls} Read calls of {CTR_READ >> 10} KiB; per call hoistd {per_call['hoistd']:.0f} µs, "
              f"containerd {per_call['containerd']:.0f} µs")
        result["get_us_per_call"] = per_call
    print("daemon peak RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in peak.items()))
    load_after = os.getloadavg()
    print("load average (1, 5, 15 min): before " + ", ".join(f"{x:.2f}" for x in load_before)
          + "; after " + ", ".join(f"{x:.2f}" for x in load_after))
    result["loadavg"] = {"before": load_before, "after": load_after}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
