#!/usr/bin/env python3
"""Pull benchmark: Hoist ``dist fetch`` against ``skopeo copy`` and ``ctr content fetch``, and the limits.

Starts its own Docker Distribution registry on 127.0.0.1 (free port), pushes two images of random data —
(a) ``big``: 4 layers × 256 MiB, (b) ``many``: 64 layers × 1 MiB — and then, in one run, alternates the
tools round by round (fresh destination each time, ``sync`` before each timed command):

* ``hoist``  — ``dist fetch`` into a fresh root (local content store with fsync, SQLite metadata);
* ``skopeo`` — ``skopeo copy docker://… oci:…``;
* ``ctr``    — ``ctr content fetch`` into a fresh private containerd (daemon start-up not timed);
* limits on the same blobs: ``curl`` parallel GETs to /dev/null and to disk, hashlib sha256 over the
  blob files (page cache), and ``dd`` of the same byte count with ``conv=fsync`` (durable-write limit).

Reports medians (min–max), peak RSS of the client process tree, and the ratios Hoist/peer and
Hoist/limit against the targets of the pull issue.  The machine is noisy: compare ratios within a run.

Hoist's sources are byte-compiled first (``__pycache__`` next to them, as installing a wheel does): the
development install is editable, and where ``PYTHONDONTWRITEBYTECODE`` is set every ``dist`` run would
otherwise compile each module it imports again, which no installed copy does.  ``--no-compile`` skips it.

usage: benchmarks/pull.py [--runs 3] [--images big,many] [--reduced] [--workdir DIR] [--json FILE] [--no-compile]
``--reduced`` makes ``big`` 4 × 64 MiB for a quick check.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.cli import DIST  # noqa: E402
from support.containerd import Containerd  # noqa: E402
from support.registry import Registry  # noqa: E402

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
TARGETS = {  # image -> {peer: max ratio hoist/peer}
    "big": {"skopeo": 0.5, "ctr": 0.3},
    "many": {"skopeo": 0.8, "ctr": 0.7},
}
RSS_TARGET_MIB = 150


# -- images ---------------------------------------------------------------------------------------


def build_and_push(reg: Registry, workdir: Path, name: str, layers: int, layer_mib: int) -> dict:
    """Build (once, cached) and push an image of ``layers`` tar layers each holding ``layer_mib`` MiB of random data."""
    src = workdir / "src" / f"{name}-{layers}x{layer_mib}"
    src.mkdir(parents=True, exist_ok=True)
    descs = []
    for i in range(layers):
        path = src / f"layer{i}.tar"
        meta = src / f"layer{i}.json"
        if not meta.exists():
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
                ti = tarfile.TarInfo(f"data/{name}-{i}.bin")
                ti.size = layer_mib * MiB
                ti.mtime = 1700000000
                tf.addfile(ti, io.BytesIO(os.urandom(ti.size)))
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while b := f.read(4 * MiB):
                    h.update(b)
            meta.write_text(json.dumps({"digest": "sha256:" + h.hexdigest(), "size": path.stat().st_size}))
        descs.append({"mediaType": OCI_LAYER, **json.loads(meta.read_text())})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
                         "config": {}}).encode()
    cfg_desc = {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)}
    (src / "config.json").write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc, "layers": descs}).encode()
    repo = f"bench/{name}"
    reg.upload_blob_file(repo, src / "config.json", cfg_desc["digest"])
    for i, d in enumerate(descs):
        reg.upload_blob_file(repo, src / f"layer{i}.tar", d["digest"])
    reg.put_manifest(repo, "1", manifest, OCI_MANIFEST)
    blobs = [cfg_desc, *descs]
    return {"ref": f"{reg.host}/{repo}:1", "repo": repo, "blobs": blobs, "bytes": sum(b["size"] for b in blobs),
            "layers": descs}


# -- running and measuring -----------------------------------------------------------------------


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd`` under ``/usr/bin/time``; wall seconds and peak RSS (MiB) of the largest process in its tree."""
    subprocess.run(["sync"], check=True)
    rss_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"hoist-bench-rss-{os.getpid()}"
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')[-2000:]}")
    try:
        peak = int(rss_file.read_text().split()[-1]) / 1024
    finally:
        rss_file.unlink(missing_ok=True)
    return wall, peak


def hoist_case(workdir: Path, img: dict):
    dest = workdir / "dst" / "hoist"
    cfg = workdir / "hoist-config.toml"
    cfg.write_text('version = 1\nenabled_plugins = ["hoist.content.v1.local", "hoist.resolver.v1.docker", '
                   '"hoist.metadata.v1.sqlite"]\n')

    def prepare() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)

    cmd = [DIST, "--config", str(cfg), "--root", str(dest / "root"), "--state", str(dest / "state"),
           "fetch", "--plain-http", "--progress", "none", img["ref"]]
    return prepare, cmd


def skopeo_case(workdir: Path, img: dict):
    dest = workdir / "dst" / "skopeo"

    def prepare() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)

    return prepare, ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{img['ref']}", f"oci:{dest}:latest"]


def ctr_case(ctrd: Containerd, img: dict):
    return ctrd.fresh, ["ctr", "--address", str(ctrd.address), "content", "fetch", "--plain-http", img["ref"]]


def curl_case(workdir: Path, img: dict, to_disk: bool):
    dest = workdir / "dst" / "curl"

    def prepare() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)

    urls = []
    for b in img["layers"]:
        urls += [f"http://{img['ref'].split('/')[0]}/v2/{img['repo']}/blobs/{b['digest']}", "-o",
                 str(dest / b["digest"].split(":")[1]) if to_disk else "/dev/null"]
    return prepare, ["curl", "-sSfL", "--parallel", "--parallel-max", "4", *urls]


def byte_compile() -> int:
    """Byte-compile Hoist's core and plugins into their ``__pycache__`` (what a wheel install does); files compiled."""
    import compileall
    import contextlib
    import py_compile

    before = sum(1 for _ in ROOT.glob("[cp]*/**/__pycache__/*.pyc"))
    with contextlib.redirect_stdout(io.StringIO()):
        for d in ("core", "plugins"):
            # checked against the source's hash on import, so a file edited later is never run stale
            compileall.compile_dir(str(ROOT / d), quiet=1,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    return sum(1 for _ in ROOT.glob("[cp]*/**/__pycache__/*.pyc")) - before


def sha256_files(reg: Registry, img: dict) -> float:
    t0 = time.perf_counter()
    buf = bytearray(MiB)
    view = memoryview(buf)
    for b in img["layers"]:
        h = hashlib.sha256()
        with open(reg.blob_path(b["digest"]), "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    return time.perf_counter() - t0


def dd_fsync(workdir: Path, nbytes: int) -> tuple[float, float]:
    out = workdir / "dst" / "dd.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return timed(["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={max(1, nbytes // MiB)}", "conv=fsync", "status=none"])
    finally:
        out.unlink(missing_ok=True)


def warm_cache(reg: Registry, img: dict) -> None:
    for b in img["blobs"]:
        with open(reg.blob_path(b["digest"]), "rb", buffering=0) as f:
            while f.read(8 * MiB):
                pass


def fmt_row(name: str, times: list[float], rss: list[float], nbytes: int) -> str:
    med = statistics.median(times)
    rs = f"{max(rss):6.0f}" if rss else "     -"
    return f"  {name:34s} {med:7.2f}s  {min(times):6.2f}-{max(times):<6.2f} {nbytes / med / 1e6:8.0f} MB/s  RSS {rs} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", default="big,many")
    ap.add_argument("--reduced", action="store_true", help="big = 4 x 64 MiB instead of 4 x 256 MiB")
    ap.add_argument("--workdir", default=os.environ.get("HOIST_BENCH_DIR", "/tmp/hoist-bench"))
    ap.add_argument("--tools", default="hoist,skopeo,ctr,limits")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile Hoist's sources first")
    a = ap.parse_args()
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tools = a.tools.split(",")
    if "hoist" in tools and not a.no_compile:
        n = byte_compile()
        print(f"# byte-compiled Hoist's sources ({n} new .pyc), as a wheel install does; --no-compile to skip", flush=True)
    specs = {"big": (4, 64 if a.reduced else 256), "many": (64, 1)}
    reg = Registry(workdir / "registry").start()
    ctrd = Containerd(workdir / "containerd")
    results: dict = {}
    try:
        for name in a.images.split(","):
            layers, mib = specs[name]
            img = build_and_push(reg, workdir, name, layers, mib)
            nbytes = img["bytes"]
            cases: dict[str, tuple] = {}
            if "hoist" in tools:
                cases["hoist dist fetch"] = hoist_case(workdir, img)
            if "skopeo" in tools:
                cases["skopeo copy -> oci:"] = skopeo_case(workdir, img)
            if "ctr" in tools:
                cases["ctr content fetch"] = ctr_case(ctrd, img)
            if "limits" in tools:
                cases["curl -P4 -> /dev/null"] = curl_case(workdir, img, False)
                cases["curl -P4 -> disk"] = curl_case(workdir, img, True)
            times: dict[str, list[float]] = {k: [] for k in cases}
            rss: dict[str, list[float]] = {k: [] for k in cases}
            extra: dict[str, list[float]] = {"sha256 (hashlib, page cache)": [], "dd same bytes, conv=fsync": []}
            print(f"# {name}: {layers} layers x {mib} MiB, {nbytes / 1e6:.1f} MB ({img['ref']}), {a.runs} runs, alternating",
                  flush=True)
            for r in range(a.runs):
                warm_cache(reg, img)
                for case, (prepare, cmd) in cases.items():
                    prepare()
                    wall, peak = timed(cmd)
                    times[case].append(wall)
                    rss[case].append(peak)
                    print(f"  run {r + 1} {case}: {wall:.2f}s {peak:.0f} MiB", flush=True)
                if "limits" in tools:
                    extra["sha256 (hashlib, page cache)"].append(sha256_files(reg, img))
                    extra["dd same bytes, conv=fsync"].append(dd_fsync(workdir, nbytes)[0])
                ctrd.stop()
            print(f"# {name}: medians")
            for case in cases:
                print(fmt_row(case, times[case], rss[case], nbytes))
            for case, ts in extra.items():
                if ts:
                    print(fmt_row(case, ts, [], nbytes))
            med = {k: statistics.median(v) for k, v in {**times, **extra}.items() if v}
            res = {"bytes": nbytes, "runs": {k: v for k, v in {**times, **extra}.items() if v},
                   "rss_mib": {k: max(v) for k, v in rss.items() if v}, "median": med}
            h = med.get("hoist dist fetch")
            if h:
                print(f"# {name}: ratios (Hoist / other; target in brackets)")
                targets = TARGETS.get(name, {})
                for case, peer in (("skopeo copy -> oci:", "skopeo"), ("ctr content fetch", "ctr")):
                    if case in med:
                        ratio = h / med[case]
                        t = targets.get(peer)
                        mark = "" if t is None else f" [<= {t}] {'ok' if ratio <= t else 'MISSED'}"
                        print(f"  hoist / {peer:30s} {ratio:5.2f}{mark}")
                for case in ("curl -P4 -> /dev/null", "curl -P4 -> disk", "sha256 (hashlib, page cache)",
                             "dd same bytes, conv=fsync"):
                    if case in med:
                        print(f"  hoist / {case:30s} {h / med[case]:5.2f}")
                peak = max(rss["hoist dist fetch"])
                print(f"  hoist peak RSS {peak:.0f} MiB [<= {RSS_TARGET_MIB}] {'ok' if peak <= RSS_TARGET_MIB else 'MISSED'}")
            results[name] = res
    finally:
        ctrd.stop()
        reg.stop()
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
