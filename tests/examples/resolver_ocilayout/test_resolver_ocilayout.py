"""The third-party OCI layout resolver: installed as its own distribution, conformant, and used by ``dist``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hoist.content import Digest
from hoist.errors import InvalidArgumentError, NotFoundError
from hoist.testing.resolver import ResolverCase, ResolverSuite
from support.cli import run_dist, run_hoist


@pytest.fixture(scope="package")
def site(install_example) -> Path:  # noqa: ANN001
    return install_example("resolver_ocilayout")


def _blobs(layout) -> dict[Digest, bytes]:  # noqa: ANN001
    return {d.digest: layout.blob(d.digest) for d in layout.all_blobs()}


class TestLayoutDirectory(ResolverSuite):
    @pytest.fixture
    def resolver_case(self, site, images, tmp_path):  # noqa: ANN001
        from hoist_resolver_ocilayout.resolver import OCILayoutResolver

        layout = images.multi()
        copy = tmp_path / "layout"
        shutil.copytree(layout.path, copy)

        def tamper(d: Digest, data: bytes) -> None:
            path = copy / "blobs" / d.algorithm / d.hex
            path.chmod(0o644)
            path.write_bytes(data)

        resolver = OCILayoutResolver()
        yield ResolverCase(
            resolver=resolver, ref=f"oci-layout://{copy}:1", digest_ref=f"oci-layout://{copy}@{layout.digest}",
            digest=layout.digest, blobs=_blobs(layout), name=f"oci-layout://{copy}:1",
            missing_ref=f"oci-layout://{copy}:nope", invalid_ref="oci-layout:relative/dir:1", tamper=tamper)
        resolver.close()


class TestArchive(ResolverSuite):
    @pytest.fixture
    def resolver_case(self, site, images, tmp_path):  # noqa: ANN001
        from hoist_resolver_ocilayout.resolver import OCILayoutResolver

        layout = images.busybox()
        archive = tmp_path / "busybox.tar"
        with tarfile.open(archive, "w") as tf:
            for name in ("oci-layout", "index.json", "blobs"):
                tf.add(layout.path / name, arcname=name)
        offsets = {}
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.startswith("blobs/"):
                    offsets[m.name] = m.offset_data

        def tamper(d: Digest, data: bytes) -> None:
            with open(archive, "r+b") as f:
                f.seek(offsets[f"blobs/{d.algorithm}/{d.hex}"])
                f.write(data)

        resolver = OCILayoutResolver()
        yield ResolverCase(
            resolver=resolver, ref=f"oci-archive:{archive}:1", digest_ref=f"oci-archive://{archive}@{layout.digest}",
            digest=layout.digest, blobs=_blobs(layout), name=f"oci-archive://{archive}:1",
            missing_ref=f"oci-archive:{tmp_path}/absent.tar:1", invalid_ref=f"oci-archive:{archive}@sha256:xyz",
            tamper=tamper)
        resolver.close()


def test_allowed_roots_and_wrong_scheme_for_the_path(site, images, tmp_path):
    from hoist_resolver_ocilayout.resolver import OCILayoutConfig, OCILayoutResolver

    layout = images.busybox()
    r = OCILayoutResolver(OCILayoutConfig(allowed_roots=(str(tmp_path),)))
    with pytest.raises(InvalidArgumentError, match="is outside the allowed roots"):
        r.resolve(f"oci-layout://{layout.path}:1")
    with pytest.raises(InvalidArgumentError, match="is a directory; use oci-layout: for layouts"):
        OCILayoutResolver().resolve(f"oci-archive:{layout.path}:1")
    with pytest.raises(NotFoundError, match="no such file or directory"):
        OCILayoutResolver().resolve(f"oci-layout://{tmp_path}/nothing:1")


def test_dist_fetch_pull_and_resolve_with_the_installed_plugin(site, images, tmp_path, example_env):
    layout = images.busybox()
    env = example_env(site)
    archive = tmp_path / "busybox.tar"
    assert subprocess.run(["skopeo", "--insecure-policy", "copy", layout.oci_ref, f"oci-archive:{archive}:1"],
                          capture_output=True).returncode == 0

    r = run_hoist(env, "plugins", "ls", timeout=60)
    assert ["hoist.resolver.v1", "ocilayout", "ok"] in [line.split() for line in r.stdout.splitlines()]

    ref = f"oci-layout://{layout.path}:1"
    r = run_dist(env, "resolve", ref, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"name        {ref}", f"digest      {layout.digest}"]

    r = run_dist(env, "fetch", "--progress", "none", ref, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{ref} {layout.digest}: 3 blobs fetched, 0 already present")

    r = run_dist(env, "pull", "--progress", "none", f"oci-archive:{archive}:1", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"oci-archive://{archive}:1 {layout.digest}: 0 blobs fetched, 3 already present")
    assert "unpacked into" in r.stdout

    r = run_dist(env, "images", "ls", "-q", timeout=60)
    assert r.stdout.split() == sorted([ref, f"oci-archive://{archive}:1"])

    r = run_dist(env, "resolve", f"oci-archive:{archive}@{layout.digest}", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"name        oci-archive://{archive}@{layout.digest}", f"digest      {layout.digest}"]

    r = run_dist(env, "fetch", "--progress", "none", f"oci-layout://{layout.path}:missing", timeout=60)
    assert (r.returncode, r.stderr) == (1, f"dist: image layout {layout.path}: missing: not found\n")
    assert os.path.exists(layout.path / "index.json")
