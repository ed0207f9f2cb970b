"""``dist export`` / ``dist import``: OCI archives with skopeo both ways, docker save archives, hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from support.cli import local_env, run_dist

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)


def dist(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_dist(env, *args)


def stored_blobs(env: dict[str, str]) -> set[str]:
    root = Path(env["HOIST_ROOT"]) / "hoist.content.v1.local" / "blobs"
    return {f"{p.parent.name}:{p.name}" for p in root.glob("*/*")} if root.exists() else set()


def skopeo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_skopeo_archive_imports_with_the_same_digests_and_exports_back(images, env, tmp_path):
    layout = images.busybox()
    archive = tmp_path / "busybox.tar"
    r = skopeo("copy", layout.oci_ref, f"oci-archive:{archive}:1")
    assert r.returncode == 0, r.stderr

    r = dist(env, "import", "--base-name", "example.com/busybox", archive)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example.com/busybox:1 {layout.digest}\n"
    assert "imported 1 image(s) from a oci archive: 3 blobs written, 0 already present" in r.stderr
    assert stored_blobs(env) == {str(d.digest) for d in layout.all_blobs()}

    again = dist(env, "import", "--name", "example.com/other:2", archive)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"example.com/other:2 {layout.digest}\n"
    assert "0 blobs written, 3 already present" in again.stderr

    out = tmp_path / "out.tar"
    r = dist(env, "export", "example.com/busybox:1", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"exported 1 image, 3 blobs (") and r.stdout.endswith(f") to {out}\n")
    inspect = skopeo("inspect", "--raw", f"oci-archive:{out}")
    assert inspect.returncode == 0, inspect.stderr
    assert hashlib.sha256(inspect.stdout.encode()).hexdigest() == layout.digest.split(":")[1]
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))
        names = set(tf.getnames())
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": "example.com/busybox:1",
                                                    "org.opencontainers.image.ref.name": "1"}
    assert {f"blobs/sha256/{d.digest.hex}" for d in layout.all_blobs()} <= names

    copied = tmp_path / "copied"
    r = skopeo("copy", f"oci-archive:{out}", f"oci:{copied}:x")
    assert r.returncode == 0, r.stderr
    assert json.loads((copied / "index.json").read_text())["manifests"][0]["digest"] == layout.digest


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_archive_imports_like_the_plain_one(images, env, tmp_path, compression):
    """``skopeo copy … oci-archive:`` piped through gzip or zstd imports without decompressing it first."""
    layout = images.busybox()
    archive = tmp_path / "busybox.tar"
    assert skopeo("copy", layout.oci_ref, f"oci-archive:{archive}:1").returncode == 0
    packed = tmp_path / f"busybox.tar.{'gz' if compression == 'gzip' else 'zst'}"
    packed.write_bytes(gzip.compress(archive.read_bytes()) if compression == "gzip"
                       else zstandard.ZstdCompressor().compress(archive.read_bytes()))
    r = dist(env, "import", "--base-name", "example.com/busybox", packed)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example.com/busybox:1 {layout.digest}\n"
    assert stored_blobs(env) == {str(d.digest) for d in layout.all_blobs()}


def test_multi_platform_index_all_platforms_and_default_platform(images, env, tmp_path):
    layout = images.multi()
    archive = tmp_path / "multi.tar"
    assert skopeo("copy", "--all", layout.oci_ref, f"oci-archive:{archive}:1").returncode == 0

    r = dist(env, "import", "--all-platforms", "--base-name", "example.com/multi", archive)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example.com/multi:1 {layout.digest}\n"
    assert stored_blobs(env) == {str(d.digest) for d in layout.all_blobs()}

    out = tmp_path / "out.tar"
    r = dist(env, "export", "--platform", "linux/arm64/v8", "example.com/multi:1", out)
    assert r.returncode == 0, r.stderr
    arm = layout.image_for("linux/arm64/v8")
    with tarfile.open(out) as tf:
        blobs = {n for n in tf.getnames() if n.startswith("blobs/sha256/")}
    assert blobs == {f"blobs/sha256/{d.digest.hex}" for d in (layout.target, *arm.blobs())}


def test_docker_save_archive_becomes_a_schema2_image(images, env, tmp_path):
    layout = images.busybox()
    archive = tmp_path / "saved.tar"
    r = skopeo("copy", layout.oci_ref, f"docker-archive:{archive}:busybox:saved")
    assert r.returncode == 0, r.stderr
    r = dist(env, "import", archive)
    assert r.returncode == 0, r.stderr
    name, digest = r.stdout.split()
    assert name == "docker.io/library/busybox:saved"
    assert "from a docker archive" in r.stderr
    inspect = dist(env, "images", "inspect", name)
    assert inspect.returncode == 0, inspect.stderr
    doc = json.loads(inspect.stdout)
    assert doc["target"]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    manifest = doc["document"]
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    # The layer is stored uncompressed: its digest is the image's diff ID.
    assert [layer["digest"] for layer in manifest["layers"]] == list(layout.image.diff_ids)
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.docker.image.rootfs.diff.tar"]
    # The converted image exports again and skopeo reads the same manifest.
    out = tmp_path / "out.tar"
    assert dist(env, "export", name, out).returncode == 0
    raw = skopeo("inspect", "--raw", f"oci-archive:{out}")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == digest


# -- hostile archives ------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _valid_members() -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cd = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cd}",
                                      "size": len(config)}, "layers": []}).encode()
    md = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{md}", "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).encode()
    return [_file("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), _file("index.json", index),
            _file(f"blobs/sha256/{cd}", config), _file(f"blobs/sha256/{md}", manifest)], manifest


def test_a_valid_hand_made_archive_imports(env, tmp_path):
    members, manifest = _valid_members()
    r = dist(env, "import", "--base-name", "example.com/tiny", _tar(tmp_path / "ok.tar", members))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"example.com/tiny:1 sha256:{hashlib.sha256(manifest).hexdigest()}\n"


def _hostile(kind: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members, _ = _valid_members()
    if kind == "dotdot":
        return members + [_file("../escape.txt", b"x")]
    if kind == "absolute":
        return members + [_file("/etc/evil", b"x")]
    if kind == "symlink":
        name = members[2][0].name
        return [m for m in members if m[0].name != name] + [_link(name, "/etc/passwd")]
    if kind == "symlink-climb":
        name = members[2][0].name
        return [m for m in members if m[0].name != name] + [_link(name, "../../../../etc/passwd")]
    if kind == "huge-index":
        return [members[0], _file("index.json", b'{"manifests": [' + b" " * (5 << 20) + b"]}")] + members[2:]
    if kind == "wrong-digest":
        info, data = members[2]
        return members[:2] + [(info, data.replace(b"amd64", b"arm64"))] + members[3:]
    if kind == "device":
        dev = tarfile.TarInfo("blobs/sha256/dev")
        dev.type = tarfile.CHRTYPE
        return members + [(dev, None)]
    raise AssertionError(kind)


HOSTILE = {
    "dotdot": "archive {a}: member '../escape.txt': path climbs out of the archive",
    "absolute": "archive {a}: member '/etc/evil': absolute path",
    "symlink": "points outside the archive",
    "symlink-climb": "path climbs out of the archive",
    "huge-index": "dist: archive {a}: index.json: 5242897 bytes is larger than the 4194304-byte limit",
    "wrong-digest": "digest mismatch",
    "device": "member 'blobs/sha256/dev': not a regular file, directory or link",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_fail_with_one_line_and_store_nothing(env, tmp_path, kind):
    archive = _tar(tmp_path / f"{kind}.tar", _hostile(kind))
    r = dist(env, "import", "--base-name", "example.com/evil", archive)
    assert r.returncode == 1
    assert r.stderr.startswith("dist: ") and r.stderr.count("\n") == 1, r.stderr
    assert HOSTILE[kind].format(a=archive) in r.stderr
    assert stored_blobs(env) == set()
    assert dist(env, "images", "ls", "-q").stdout == ""
    assert not (tmp_path / "escape.txt").exists()


def test_not_an_archive_and_missing_names(env, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x01\x02" + b"\x00" * 2000)
    r = dist(env, "import", junk)
    assert (r.returncode, r.stderr) == (1, f"dist: archive {junk}: not a tar archive (nor a gzip- or zstd-compressed one)\n")
    fake_gzip = tmp_path / "junk.tar.gz"
    fake_gzip.write_bytes(b"\x1f\x8b" + b"\x00" * 2000)
    r = dist(env, "import", fake_gzip)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"dist: archive {fake_gzip}: corrupt gzip stream: "), r.stderr
    gzipped_junk = tmp_path / "junk2.tar.gz"
    gzipped_junk.write_bytes(gzip.compress(b"not a tar" * 100))
    r = dist(env, "import", gzipped_junk)
    assert (r.returncode, r.stderr) == (1, f"dist: archive {gzipped_junk}: its gzip stream does not hold a tar archive\n")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(gzip.compress(_tar(tmp_path / "t.tar", _valid_members()[0]).read_bytes())[:-40])
    r = dist(env, "import", "--base-name", "example.com/t", truncated)
    assert r.returncode == 1 and r.stderr.startswith(f"dist: archive {truncated}: corrupt gzip stream: "), r.stderr
    assert stored_blobs(env) == set()
    members, manifest = _valid_members()
    archive = _tar(tmp_path / "tagonly.tar", members)
    r = dist(env, "import", archive)
    d = hashlib.sha256(manifest).hexdigest()[:12]
    assert (r.returncode, r.stderr) == (1, f"dist: archive {archive}: image sha256:{d} has the tag '1'; name it with --base-name or --name\n")
    r = dist(env, "export", "example.com/none:1", tmp_path / "none.tar")
    assert (r.returncode, r.stderr) == (1, "dist: image 'example.com/none:1': not found\n")
    assert not (tmp_path / "none.tar").exists()


def test_the_docs_example_runs(images, env, tmp_path):
    text = (REPO / "docs" / "transfer.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0].replace("/tmp/", f"{tmp_path}/")
    assert skopeo("copy", images.busybox().oci_ref, f"oci-archive:{tmp_path}/busybox.tar:1").returncode == 0
    lines = block.strip().splitlines()
    i = 0
    while i < len(lines):
        cmd = lines[i].split()
        expected = []
        i += 1
        while i < len(lines) and not lines[i].startswith(("dist ", "skopeo ")):
            expected.append(lines[i])
            i += 1
        r = dist(env, *cmd[1:]) if cmd[0] == "dist" else skopeo(*cmd[1:])
        assert r.returncode == 0, (cmd, r.stderr)
        got = r.stdout.splitlines() if expected else []
        assert len(got) == len(expected)
        for want, line in zip(expected, got):
            assert re.fullmatch(".*".join(map(re.escape, want.split("…"))), line), (want, line)
