#!/usr/bin/env python3
"""Time create + start + exit + delete of ``busybox true`` with the builtin runtime, next to ``runc run``.

Both run the same OCI spec (from :func:`hoist.oci_spec.generate_spec`) over the same busybox root
filesystem, built here from Debian's busybox-static.  Needs root.  Reports the median and the
fastest of ``--runs`` runs in milliseconds; runc is skipped with a note when it is not installed.

usage: benchmarks/runtime_start.py [--runs 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.runtime import IO, Bundle
from hoist_runtime_builtin.runtime import BuiltinRuntime


def make_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for name in ("sh", "true"):
        os.symlink("busybox", root / "bin" / name)
    for d in ("proc", "sys", "dev", "etc", "tmp"):
        (root / d).mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def time_hoist(work: Path, rootfs: Path, runs: int) -> list[float]:
    rt = BuiltinRuntime(root=work / "root", state=work / "state")
    spec = generate_spec(ImageConfig(cmd=["true"]), SpecOptions(), rootfs=rootfs)
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        task = rt.create(f"bench-{i}", Bundle(spec=spec, rootfs=rootfs), IO())
        task.start()
        status = task.wait(30).status
        task.delete()
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 0, status
    return out


def time_runc(work: Path, rootfs: Path, runs: int) -> list[float] | None:
    runc = shutil.which("runc")
    if runc is None:
        return None
    bundle = work / "runc-bundle"
    bundle.mkdir()
    spec = generate_spec(ImageConfig(cmd=["true"]), SpecOptions(), rootfs=rootfs)
    spec["root"]["path"] = str(rootfs)
    spec["linux"]["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}  # runc applies a device cgroup
    (bundle / "config.json").write_text(json.dumps(spec))
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        subprocess.run([runc, "--root", str(work / "runc-state"), "run", "--bundle", str(bundle), f"bench-{i}"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("runtime_start: needs root", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="hoist-bench-runtime-") as tmp:
        work = Path(tmp)
        rootfs = make_rootfs(work / "rootfs")
        for name, fn in (("hoist", time_hoist), ("runc", time_runc)):
            times = fn(work, rootfs, args.runs)
            if times is None:
                results[name] = "not installed"
                print(f"{name:6} not installed")
                continue
            results[name] = {"median_ms": statistics.median(times), "min_ms": min(times)}
            print(f"{name:6} median {statistics.median(times):7.1f} ms   min {min(times):7.1f} ms   ({args.runs} runs)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
