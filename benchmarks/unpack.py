#!/usr/bin/env python3
"""Unpack benchmark: Hoist ``dist pull`` and ``dist rootfs unpack`` against ``ctr images pull`` and ``umoci unpack``, and the limits.

Starts its own Docker Distribution registry on 127.0.0.1 (free port) and pushes two images:
(a) ``big``: 4 gzip layers, each one file of 256 MiB random data (incompressible);
(b) ``usr``: one gzip layer (zlib level 6) of real small files copied from ``/usr`` (about 270 MB of tar).
Then, in one run, alternating tools round by round (fresh destination each time, ``sync`` before each
timed command; odd rounds in reverse order; the applier and its limit back to back):

* ``hoist pull (overlayfs|native)`` — ``dist pull`` into a fresh root (fetch overlapping unpack);
* ``hoist unpack (overlayfs|native)`` — ``dist rootfs unpack`` of the already fetched image (snapshots wiped);
* ``ctr images pull (overlayfs|native)`` — into a fresh private containerd each run (start-up not timed);
* ``hoist apply_layer`` — the layer applier alone, all layers into one directory, in one Python process;
* ``umoci unpack`` — from an OCI layout made once with ``skopeo copy`` (not timed);
* limits on the same layers: ``gzip -dc`` and in-process ``isal`` decompression to /dev/null, isal
  decompression plus a sequential write of each layer's tar bytes to a file (with and without the sha256
  that gives the diff ID, which every unpacker must compute), GNU ``tar -xzf``, and the
  decompression-plus-write limit (below).

The decompression-plus-write limit is what the issue's unpack target is measured against: the fastest
decompressor here (isal, in its own process, 1 MiB reads, with the sha256 every unpacker computes)
piped into the fastest native writer of the layer's files, GNU ``tar -x --numeric-owner --xattrs -b 2048``
run as root, so with owners, modes, mtimes and xattrs like Hoist's applier (``limit: isal + sha256 |
tar -x``).  It writes the same files as the applier, on two processes.  ``limit: isal + sha256 -> file``
(the tar bytes written to one file) is a lower bound that no unpacker can approach on a layer of many
small files; it is reported alongside.

Reports medians (min–max), MB/s of *uncompressed* bytes, peak RSS of the client process tree (for
``ctr`` the unpack happens in the daemon, whose RSS is not included), and the ratios against the
issue's targets: Hoist ``dist pull`` ≤ 0.5× ``ctr images pull`` (overlayfs), and Hoist's unpack (the
applier, so that process start-up and plugin loading do not count) within 1.5× of the
decompression-plus-write limit; also the applier against the single-file lower bound.  The machine is
noisy: compare ratios within one run.

For an image of many files (``usr``), the destinations of earlier runs are not deleted before each timed
command but moved aside, and deleted between rounds, after which the benchmark waits ``--settle`` seconds
(35 by default).  On ext4 without a journal (as on the machine these run on) the inode allocator skips
every inode freed in the last 30–35 s, so a command run right after a large tree was deleted spends
seconds of system time scanning them, whichever tool it is: that would measure the order of the cases,
not the tools.  (Deletions by other processes on the same file system still add noise.)

usage: benchmarks/unpack.py [--runs 3] [--images big,usr] [--reduced] [--size-mib N] [--settle S] [--workdir DIR] [--json FILE]
``--reduced`` makes ``big`` 4 × 64 MiB and ``usr`` about 64 MB for a quick check; ``--size-mib N`` makes them
4 × N MiB and about N MB (a smoke run of the benchmark itself).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from pull import timed  # noqa: E402  (the pull benchmark's timer)
from support.cli import DIST  # noqa: E402
from support.containerd import Containerd  # noqa: E402
from support.registry import Registry  # noqa: E402

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PULL_TARGET = 0.5
LIMIT_TARGET = 1.5
APPLIER = "hoist apply_layer (one process)"
LIMIT = "limit: isal + sha256 | tar -x"  # the decompression-plus-write limit of the unpack target
SETTLE = 35.0  # seconds: ext4 without a journal does not reuse an inode freed less than 30 (35) s ago
MANY_FILES = 1000  # members per image from which deletions are settled


# -- images --------------------------------------------------------------------------------------


def _gzip_file(src: Path, dst: Path, level: int) -> None:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    with open(src, "rb") as f, open(dst, "wb") as out:
        while b := f.read(4 * MiB):
            out.write(c.compress(b))
        out.write(c.flush())


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(4 * MiB):
            h.update(b)
    return "sha256:" + h.hexdigest()


def build_big(src: Path, layer_mib: int) -> list[Path]:
    tars = []
    for i in range(4):
        path = src / f"layer{i}.tar"
        if not path.exists():
            with tarfile.open(path.with_suffix(".tmp"), "w", format=tarfile.PAX_FORMAT) as tf:
                ti = tarfile.TarInfo(f"data/big-{i}.bin")
                ti.size, ti.mtime = layer_mib * MiB, 1700000000
                tf.addfile(ti, io.BytesIO(os.urandom(ti.size)))
            path.with_suffix(".tmp").rename(path)
        tars.append(path)
    return tars


def build_usr(src: Path, limit: int) -> list[Path]:
    path = src / "layer0.tar"
    if not path.exists():
        total = 0
        with tarfile.open(path.with_suffix(".tmp"), "w", format=tarfile.PAX_FORMAT) as tf:
            for top in ("/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec"):
                for dirpath, dirs, files in os.walk(top):
                    dirs.sort()
                    if total >= limit:
                        break
                    tf.add(dirpath, arcname=dirpath.lstrip("/"), recursive=False)
                    for name in sorted(files):
                        p = os.path.join(dirpath, name)
                        try:
                            st = os.lstat(p)
                            if st.st_size > 16 * MiB:
                                continue
                            tf.add(p, arcname=p.lstrip("/"), recursive=False)
                        except OSError:
                            continue
                        total += st.st_size
                        if total >= limit:
                            break
        path.with_suffix(".tmp").rename(path)
    return [path]


def push_image(reg: Registry, src: Path, name: str, tars: list[Path], level: int) -> dict:
    layers = []
    for t in tars:
        gz = t.with_suffix(f".tar.gz{level}")
        if not gz.exists():
            _gzip_file(t, gz.with_suffix(".tmp"), level)
            gz.with_suffix(".tmp").rename(gz)
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": _sha(gz), "size": gz.stat().st_size, "path": gz,
                       "diff_id": _sha(t), "usize": t.stat().st_size, "tar": t})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [ly["diff_id"] for ly in layers]}}).encode()
    (src / "config.json").write_bytes(config)
    cfg = {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                           "layers": [{k: ly[k] for k in ("mediaType", "digest", "size")} for ly in layers]}).encode()
    repo = f"bench/{name}"
    reg.upload_blob_file(repo, src / "config.json", cfg["digest"])
    for ly in layers:
        reg.upload_blob_file(repo, ly["path"], ly["digest"])
    reg.put_manifest(repo, "1", manifest, OCI_MANIFEST)
    members = 0
    for t in tars:
        with tarfile.open(t) as tf:
            members += sum(1 for _ in tf)
    return {"name": name, "ref": f"{reg.host}/{repo}:1", "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
            "layers": layers, "usize": sum(ly["usize"] for ly in layers), "members": members}


# -- cases ---------------------------------------------------------------------------------------


def hoist_config(workdir: Path) -> Path:
    cfg = workdir / "hoist-config.toml"
    cfg.write_text('version = 1\nenabled_plugins = ["hoist.content.v1.local", "hoist.resolver.v1.docker", '
                   '"hoist.metadata.v1.sqlite", "hoist.snapshotter.v1.native", "hoist.snapshotter.v1.overlayfs"]\n')
    return cfg


class Trash:
    """Where earlier runs' destinations go until they are deleted between rounds (see the module docstring)."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.defer = False  # False: delete at once (few files, nothing to settle)
        self._n = 0

    def discard(self, path: Path) -> None:
        if not path.exists():
            return
        if not self.defer:
            subprocess.run(["rm", "-rf", str(path)], check=True)
            return
        assert self.root is not None
        self.root.mkdir(parents=True, exist_ok=True)
        self._n += 1
        path.rename(self.root / f"{self._n}-{path.name}")

    def empty(self, settle: float) -> None:
        assert self.root is not None
        if self.root.exists() and any(self.root.iterdir()):
            subprocess.run(["rm", "-rf", str(self.root)], check=True)
            subprocess.run(["sync"], check=True)
            time.sleep(settle)


TRASH = Trash()


def _fresh(path: Path) -> None:
    TRASH.discard(path)
    path.mkdir(parents=True)


def hoist_pull_case(workdir: Path, img: dict, snapshotter: str):
    dest = workdir / "dst" / "hoist-pull"
    cmd = [DIST, "--config", str(hoist_config(workdir)), "--root", str(dest / "root"), "--state", str(dest / "state"),
           "pull", "--plain-http", "--progress", "none", "--snapshotter", snapshotter, img["ref"]]
    return (lambda: _fresh(dest)), cmd


def hoist_unpack_case(workdir: Path, img: dict, snapshotter: str):
    dest = workdir / "dst" / f"hoist-fetched-{img['digest'][7:19]}"
    base = [DIST, "--config", str(hoist_config(workdir)), "--root", str(dest / "root"), "--state", str(dest / "state")]
    if not (dest / "fetched").exists():
        _fresh(dest)
        subprocess.run([*base, "fetch", "--plain-http", "--progress", "none", img["ref"]], check=True, capture_output=True)
        (dest / "fetched").touch()

    def prepare() -> None:
        for sid in ("native", "overlayfs"):
            TRASH.discard(dest / "root" / f"hoist.snapshotter.v1.{sid}")

    return prepare, [*base, "rootfs", "unpack", "--snapshotter", snapshotter, img["digest"]]


def ctr_case(ctrd: Containerd, img: dict, snapshotter: str):
    def prepare() -> None:  # Containerd.fresh, with the old root moved aside rather than deleted
        ctrd.stop()
        for d in ("root", "state"):
            TRASH.discard(ctrd.workdir / d)
        ctrd.start()

    return prepare, ["ctr", "--address", str(ctrd.address), "images", "pull", "--plain-http", "--snapshotter", snapshotter,
                     img["ref"]]


def umoci_case(workdir: Path, img: dict):
    layout = workdir / "layouts" / img["name"]
    if not (layout / "index.json").exists():
        subprocess.run(["rm", "-rf", str(layout)], check=True)
        layout.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{img['ref']}", f"oci:{layout}:1"],
                       check=True)
    dest = workdir / "dst" / "umoci"

    def prepare() -> None:
        TRASH.discard(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)

    return prepare, ["umoci", "unpack", "--image", f"{layout}:1", str(dest)]


def tar_case(workdir: Path, img: dict):
    dest = workdir / "dst" / "tar"
    script = " && ".join(f"tar -C {dest} -xzf {ly['path']}" for ly in img["layers"])
    return (lambda: _fresh(dest)), ["sh", "-c", script]


def gzip_case(img: dict):
    return (lambda: None), ["sh", "-c", " && ".join(f"gzip -dc < {ly['path']} > /dev/null" for ly in img["layers"])]


LIMIT_SCRIPT = """
import hashlib, os, sys
from isal import igzip
out, digest = sys.argv[1], sys.argv[2] == "hash"
for i, path in enumerate(sys.argv[3:]):
    h = hashlib.sha256()
    with igzip.open(path, "rb") as f, open(os.path.join(out, str(i)) if out != "-" else "/dev/null", "wb") as o:
        while b := f.read(1 << 20):
            if digest:
                h.update(b)
            o.write(b)
"""


def isal_case(workdir: Path, img: dict, write: bool, digest: bool = False):
    out = workdir / "dst" / "limit"
    paths = [str(ly["path"]) for ly in img["layers"]]
    return (lambda: _fresh(out)), [sys.executable, "-c", LIMIT_SCRIPT, str(out) if write else "-",
                                   "hash" if digest else "-", *paths]


DECOMPRESS_SCRIPT = """
import hashlib, sys
from isal import igzip
h, out = hashlib.sha256(), sys.stdout.buffer
with igzip.open(sys.argv[1], "rb") as f:
    while b := f.read(1 << 20):
        h.update(b)
        out.write(b)
"""
TAR_X = "tar -x --numeric-owner --xattrs --xattrs-include='*' -b 2048"


def isal_tar_case(workdir: Path, img: dict):
    """The decompression-plus-write limit: isal + sha256 in one process, GNU tar writing the files in another."""
    out = workdir / "dst" / "limit-tar"
    dec = shlex.join([sys.executable, "-c", DECOMPRESS_SCRIPT])
    script = "set -o pipefail; " + " && ".join(f"{dec} {shlex.quote(str(ly['path']))} | {TAR_X} -C {shlex.quote(str(out))}"
                                                for ly in img["layers"])
    return (lambda: _fresh(out)), ["bash", "-c", script]


APPLY_SCRIPT = """
import sys
from hoist.archive import apply_layer
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        apply_layer(sys.argv[1], f, layer=path)
"""


def apply_case(workdir: Path, img: dict):
    dest = workdir / "dst" / "apply"
    return (lambda: _fresh(dest)), [sys.executable, "-c", APPLY_SCRIPT, str(dest), *(str(ly["path"]) for ly in img["layers"])]


def warm(img: dict) -> None:
    for ly in img["layers"]:
        with open(ly["path"], "rb", buffering=0) as f:
            while f.read(8 * MiB):
                pass


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", default="big,usr")
    ap.add_argument("--reduced", action="store_true")
    ap.add_argument("--size-mib", type=int, default=None, help="big = 4 x N MiB, usr = about N MB")
    ap.add_argument("--settle", type=float, default=SETTLE,
                    help=f"seconds to wait after deleting the earlier runs' trees of an image of {MANY_FILES}+ files")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hoist-bench-unpack")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: unpacking sets owners and device nodes, and the snapshotters mount")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    TRASH.root = work / "trash"
    subprocess.run(["rm", "-rf", str(TRASH.root)], check=True)
    reg = Registry(work / "registry").start()
    ctrd = Containerd(work / "containerd")
    results: dict = {}
    try:
        imgs = []
        for name in args.images.split(","):
            if name == "big":
                size = args.size_mib or (64 if args.reduced else 256)
                src = work / "src" / f"big-{size}"
                src.mkdir(parents=True, exist_ok=True)
                imgs.append(push_image(reg, src, "big", build_big(src, size), 1))
            elif name == "usr":
                limit = (args.size_mib or (64 if args.reduced else 270)) * 1_000_000
                src = work / "src" / f"usr-{limit}"
                src.mkdir(parents=True, exist_ok=True)
                imgs.append(push_image(reg, src, "usr", build_usr(src, limit), 6))
            else:
                raise SystemExit(f"unknown image {name!r} (big, usr)")
        for img in imgs:
            cases = {
                "hoist pull (overlayfs)": hoist_pull_case(work, img, "overlayfs"),
                "hoist pull (native)": hoist_pull_case(work, img, "native"),
                "ctr images pull (overlayfs)": ctr_case(ctrd, img, "overlayfs"),
                "ctr images pull (native)": ctr_case(ctrd, img, "native"),
                "hoist rootfs unpack (overlayfs)": hoist_unpack_case(work, img, "overlayfs"),
                "hoist rootfs unpack (native)": hoist_unpack_case(work, img, "native"),
                APPLIER: apply_case(work, img),
                "umoci unpack": umoci_case(work, img),
                "limit: tar -xzf": tar_case(work, img),
                LIMIT: isal_tar_case(work, img),
                "limit: gzip -dc > /dev/null": gzip_case(img),
                "limit: isal -> /dev/null": isal_case(work, img, write=False),
                "limit: isal -> file": isal_case(work, img, write=True),
                "limit: isal + sha256 -> file": isal_case(work, img, write=True, digest=True),
            }
            # Users run with compiled bytecode: let Python write it (one untimed warm-up), whatever this shell says.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            subprocess.run([DIST, "--config", str(hoist_config(work)), "--root", str(work / "dst" / "warm"), "--state",
                            str(work / "dst" / "warm-state"), "snapshots", "ls"], env=env, capture_output=True, check=True)
            times: dict[str, list[float]] = {k: [] for k in cases}
            rss: dict[str, list[float]] = {k: [] for k in cases}
            TRASH.defer = img["members"] >= MANY_FILES
            # The applier and its limit run back to back (the same conditions); odd rounds run in reverse order.
            order = [k for k in cases if k != LIMIT]
            order.insert(order.index(APPLIER) + 1, LIMIT)
            for r in range(args.runs):
                TRASH.empty(args.settle)
                for label in order if r % 2 == 0 else order[::-1]:
                    prepare, cmd = cases[label]
                    prepare()
                    warm(img)
                    wall, peak = timed(cmd, env=env)
                    times[label].append(wall)
                    rss[label].append(peak)
            ctrd.stop()
            TRASH.empty(0.0)
            n_layers = len(img["layers"])
            print(f"\n# {img['name']}: {n_layers} gzip layer(s), {img['members']} entries, {img['usize'] / 1e6:.0f} MB uncompressed, "
                  f"{sum(ly['size'] for ly in img['layers']) / 1e6:.0f} MB compressed; {args.runs} run(s), load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for label in cases:
                med = statistics.median(times[label])
                print(f"  {label:34s} {med:7.2f}s  {min(times[label]):6.2f}-{max(times[label]):<6.2f} "
                      f"{img['usize'] / med / 1e6:7.0f} MB/s  RSS {max(rss[label]):6.0f} MiB")
            med = {k: statistics.median(v) for k, v in times.items()}
            pull_ratio = med["hoist pull (overlayfs)"] / med["ctr images pull (overlayfs)"]
            applier = med[APPLIER]
            unpack_ratio = applier / med[LIMIT]
            bound_ratio = applier / med["limit: isal + sha256 -> file"]
            print(f"  ratio hoist pull / ctr pull (overlayfs): {pull_ratio:.2f} (target <= {PULL_TARGET})"
                  f" {'OK' if pull_ratio <= PULL_TARGET else 'MISSED'}")
            print(f"  ratio hoist apply_layer / decompress+write limit (isal + sha256 | tar -x): {unpack_ratio:.2f}"
                  f" (target <= {LIMIT_TARGET}) {'OK' if unpack_ratio <= LIMIT_TARGET else 'MISSED'}")
            print(f"  ratio hoist apply_layer / lower bound (isal + sha256 -> one file): {bound_ratio:.2f}")
            print(f"  ratio hoist apply_layer / tar -xzf: {applier / med['limit: tar -xzf']:.2f}")
            print(f"  ratio hoist rootfs unpack (overlayfs) / umoci unpack: "
                  f"{med['hoist rootfs unpack (overlayfs)'] / med['umoci unpack']:.2f}")
            results[img["name"]] = {"times": times, "rss": rss, "usize": img["usize"], "members": img["members"],
                                    "pull_ratio": pull_ratio, "unpack_ratio": unpack_ratio, "lower_bound_ratio": bound_ratio}
    finally:
        ctrd.stop()
        reg.stop()
        subprocess.run(["rm", "-rf", str(TRASH.root)], check=False)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
