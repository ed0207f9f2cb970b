#!/usr/bin/env python3
"""Run every Hoist benchmark in turn (`make bench`), each side by side with its peers; never part of the tests.

Each benchmark starts what it needs on loopback (registry, private containerd), prints its own table
with medians, ratios and peak RSS, and stops what it started. Pass ``--quick`` for reduced sizes (a
smoke run of the benchmarks themselves), or names to run only some of them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (full-size arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "content_ingest": (["--runs", "3"], ["--size-mib", "64", "--runs", "1"]),
    "pull": (["--runs", "3"], ["--reduced", "--runs", "1"]),
    "unpack": (["--runs", "3"], ["--reduced", "--runs", "1"]),
    "api": (["--runs", "3"], ["--reduced", "--runs", "1"]),
    "runtime_start": (["--runs", "20"], ["--runs", "3"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="reduced sizes, one run each")
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})")
    failed = []
    for name in args.names or list(BENCHMARKS):
        extra = BENCHMARKS[name][1 if args.quick else 0]
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"\n### {name}: {' '.join(cmd[1:])}  (load average {Path('/proc/loadavg').read_text().split()[0]})",
              flush=True)
        started = time.monotonic()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"### {name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
