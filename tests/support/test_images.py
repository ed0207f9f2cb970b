"""The test image builder writes valid, deterministic OCI layouts that real tools read."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import zlib
from pathlib import Path

import zstandard

from support.images import (
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
    ImageLayout,
    ImageSet,
    LayoutWriter,
    busybox_entries,
    read_layer_members,
    tar_file,
    tar_raw,
)


def _decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip"):
        return zlib.decompress(data, 31)
    if media_type.endswith("+zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _check_layout(layout: ImageLayout) -> None:
    index = json.loads((layout.path / "index.json").read_bytes())
    (entry,) = index["manifests"]
    assert entry["digest"] == layout.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == layout.tag
    assert json.loads((layout.path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    for desc in layout.all_blobs():
        data = layout.blob(desc.digest)
        assert len(data) == desc.size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == str(desc.digest)
    for img in layout.images:
        config = img.config_json
        assert config["rootfs"]["diff_ids"] == list(img.diff_ids)
        for layer in img.layers:
            tar = _decompress(layout.blob(layer.digest), layer.descriptor.media_type)
            assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.diff_id
            assert len(tar) == layer.uncompressed_size


def test_busybox_layout_holds_real_busybox_and_command(images: ImageSet) -> None:
    layout = images.busybox()
    _check_layout(layout)
    assert layout.target.media_type == MT_OCI_MANIFEST
    img = layout.image
    assert img.config_json["config"]["Cmd"] == ["/bin/sh", "-c", "echo hello from busybox"]
    assert str(img.platform) == "linux/amd64"
    (layer,) = img.layers
    assert layer.descriptor.media_type == MT_OCI_LAYER_GZIP
    members = read_layer_members(layout.blob_path(layer.digest), layer.descriptor.media_type)
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/busybox"].size == Path("/bin/busybox").stat().st_size
    assert members["bin/busybox"].mode == 0o755 and {"etc/passwd", "etc/group", "tmp"} <= set(members)
    assert members["tmp"].mode == 0o1777


def test_layouts_are_deterministic(tmp_path: Path, images: ImageSet) -> None:
    again = ImageSet(tmp_path)
    assert again.busybox().digest == images.busybox().digest
    assert again.multi().digest == images.multi().digest
    assert again.random_layers(2, 0.25).digest == images.random_layers(2, 0.25).digest
    assert again.random_layers(2, 0.25, seed=7).digest != images.random_layers(2, 0.25).digest


def test_multi_platform_index(images: ImageSet) -> None:
    layout = images.multi()
    _check_layout(layout)
    assert layout.is_index and layout.target.media_type == MT_OCI_INDEX
    index = json.loads(layout.target_bytes)
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    amd, arm = layout.image_for("linux/amd64"), layout.image_for("linux/arm64/v8")
    assert len(amd.layers) == 2 and len(arm.layers) == 1
    assert amd.layers[0].digest == images.busybox().image.layers[0].digest
    assert arm.config_json["variant"] == "v8" and arm.config_json["architecture"] == "arm64"


def test_whiteout_and_opaque_layers(images: ImageSet) -> None:
    wh = images.whiteout()
    _check_layout(wh)
    top = wh.image.layers[-1]
    assert "etc/.wh.gone.txt" in read_layer_members(wh.blob_path(top.digest), top.descriptor.media_type)
    op = images.opaque()
    _check_layout(op)
    top = op.image.layers[-1]
    members = read_layer_members(op.blob_path(top.digest), top.descriptor.media_type)
    assert {"data/.wh..wh..opq", "data/new"} <= set(members)


def test_compressions(images: ImageSet) -> None:
    z = images.zstd()
    _check_layout(z)
    assert {layer.descriptor.media_type for layer in z.image.layers} == {MT_OCI_LAYER_ZSTD}
    assert z.blob(z.image.layers[0].digest)[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    u = images.uncompressed()
    _check_layout(u)
    for layer in u.image.layers:
        assert layer.descriptor.media_type == MT_OCI_LAYER
        assert layer.diff_id == layer.digest


def test_random_layers_sizes(images: ImageSet) -> None:
    layout = images.random_layers(3, 0.5)
    _check_layout(layout)
    assert len(layout.image.layers) == 3
    assert len({layer.digest for layer in layout.image.layers}) == 3
    for layer in layout.image.layers:
        # random data does not compress: the blob is about as big as the payload
        assert layer.descriptor.size > 512 * 1024


def test_custom_layout_with_writer(images: ImageSet) -> None:
    def build(w: LayoutWriter) -> ImageLayout:
        hostile = tarfile.TarInfo("../escape.txt")
        hostile.size = 0
        layers = [w.add_layer(busybox_entries()), w.add_layer([tar_file("hello.txt", "hi\n"), tar_raw(hostile)], compression="zstd")]
        return w.finish(w.add_image(layers, entrypoint=["/bin/cat"], cmd=["/hello.txt"], user="65534"), tag="v1")

    layout = images.build("custom", build)
    assert images.build("custom", build) is layout
    _check_layout(layout)
    cfg = layout.image.config_json["config"]
    assert cfg["Entrypoint"] == ["/bin/cat"] and cfg["User"] == "65534"
    assert layout.oci_ref.endswith(":v1")
    top = layout.image.layers[1]
    assert "../escape.txt" in read_layer_members(layout.blob_path(top.digest), top.descriptor.media_type)


def test_skopeo_reads_layouts(images: ImageSet) -> None:
    for layout in (images.busybox(), images.multi(), images.zstd()):
        out = subprocess.run(["skopeo", "inspect", "--raw", layout.oci_ref], capture_output=True, check=True)
        assert out.stdout == layout.target_bytes
