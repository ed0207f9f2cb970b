"""Unpacking real OCI images into the native and overlayfs snapshotters gives the same tree as ``umoci unpack``."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from hoist.content import Descriptor, write_blob
from hoist.images import documents
from hoist.snapshots import mounted
from hoist.snapshotters.native import NativeSnapshotter
from hoist.snapshotters.overlay import OverlaySnapshotter
from hoist.unpack import chain_ids, image_layers, unpack
from hoist_content_local.store import LocalContentStore
from support.images import (
    MTIME,
    ImageLayout,
    LayoutWriter,
    tar_dir,
    tar_file,
    tar_hardlink,
    tar_opaque,
    tar_raw,
    tar_symlink,
    tar_whiteout,
)


def _info(name: str, typ: bytes, mode: int, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = typ, mode, MTIME
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> ImageLayout:
    """Hardlinks, setuid/setgid/sticky, owners, xattrs, devices, absolute and relative symlinks, long names,
    whiteouts, opaque directories, type changes across layers, and an empty layer."""
    w = LayoutWriter(tmp_path_factory.mktemp("layouts") / "rich")
    long = "l" * 120 + "/" + "m" * 140
    xattr = _info("etc/xattr", tarfile.REGTYPE, 0o644)
    xattr.pax_headers = {"SCHILY.xattr.user.note": "kept", "SCHILY.xattr.trusted.hoist": "t"}
    base = w.add_layer([
        tar_dir("etc"), tar_file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), tar_raw(xattr, b"x\n"),
        tar_dir("bin"), tar_file("bin/tool", b"\x7fELF" + bytes(5000), 0o4755), tar_hardlink("bin/tool-again", "bin/tool"),
        tar_file("bin/group-tool", "g", 0o2711, uid=0, gid=50), tar_symlink("bin/abs", "/bin/tool"),
        tar_symlink("bin/rel", "../etc/passwd"), tar_dir("tmp", 0o1777), tar_dir("home/user", 0o700, uid=1000, gid=1000),
        tar_file("home/user/.profile", "x", 0o600, uid=1000, gid=1000),
        tar_dir("dev"), tar_raw(_info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)),
        tar_raw(_info("dev/loop9", tarfile.BLKTYPE, 0o660, devmajor=7, devminor=9, gid=6)),
        tar_raw(_info("dev/fifo", tarfile.FIFOTYPE, 0o620)),
        tar_dir("l" * 120), tar_file(long, "long"),
        tar_dir("data"), tar_file("data/old", "old"), tar_dir("data/sub"), tar_file("data/sub/old2", "old2"),
        tar_dir("swap"), tar_file("swap/inner", "i"), tar_file("becomes-dir", "f"), tar_symlink("link-to-swap", "swap"),
    ])
    change = w.add_layer([
        tar_whiteout("etc/xattr"), tar_opaque("data"), tar_file("data/new", "new"), tar_dir("data/sub"),
        tar_file("data/sub/new2", "new2"), tar_symlink("swap", "/etc"), tar_dir("becomes-dir"),
        tar_file("becomes-dir/f", "now a dir"), tar_whiteout("link-to-swap"), tar_dir("bin"),
        tar_file("bin/tool", "replaced", 0o755), tar_hardlink("bin/tool-link2", "bin/tool"),
    ])
    empty = w.add_layer([])
    again = w.add_layer([tar_dir("tmp", 0o1777), tar_file("tmp/late", "late"), tar_whiteout("l" * 120)], compression="zstd")
    return w.finish(w.add_image([base, change, empty, again]))


def tree(root: Path) -> dict[str, tuple]:
    out, inodes = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = (hashlib.sha256(p.read_bytes()).hexdigest(), inodes.setdefault((st.st_dev, st.st_ino), name))
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            xattrs = {k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False)
                      if not k.startswith("trusted.overlay.")}
            out[str(p.relative_to(root))] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime), extra, xattrs)
    return out


def umoci_tree(layout: ImageLayout, tmp_path: Path) -> dict[str, tuple]:
    bundle = tmp_path / f"umoci-{layout.name}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout.path}:{layout.tag}", str(bundle)], check=True, capture_output=True)
    return tree(bundle / "rootfs")


def store_with(layout: ImageLayout, root: Path) -> LocalContentStore:
    store = LocalContentStore(root)
    for desc in layout.all_blobs():
        data = layout.blob(desc.digest)
        write_blob(store, f"blob-{desc.digest}", io.BytesIO(data), len(data), desc.digest)
    return store


@pytest.fixture(params=["native", "overlayfs"])
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path):
    sn = (NativeSnapshotter if request.param == "native" else OverlaySnapshotter)(tmp_path / request.param)
    yield sn
    sn.close()


def unpacked_tree(layout: ImageLayout, sn, tmp_path: Path) -> dict[str, tuple]:
    store = store_with(layout, tmp_path / "content")
    _mdesc, manifest, config = image_layers(store, Descriptor(media_type=layout.target.media_type,
                                                               digest=layout.target.digest, size=layout.target.size))
    result = unpack(store, sn, manifest.layers, config)
    assert result.chain_id == chain_ids(layout.image.diff_ids)[-1]
    try:
        with mounted(sn.view("check", str(result.chain_id))) as root:
            return tree(root)
    finally:
        sn.remove("check")


def test_rich_image_matches_umoci(rich: ImageLayout, snapshotter, tmp_path: Path) -> None:
    # umoci 0.4 cannot read zstd layers: compare the first three layers with it
    ours_full = unpacked_tree(rich, snapshotter, tmp_path)
    assert ours_full["tmp/late"][4][0] == hashlib.sha256(b"late").hexdigest()
    assert not any(k.startswith("l" * 120) for k in ours_full)

    w = LayoutWriter(tmp_path / "rich-gzip")
    layers = [w.copy_layer(layer, rich.blob_path(layer.digest)) for layer in rich.image.layers[:3]]
    gz = w.finish(w.add_image(layers))
    ours = unpacked_tree(gz, snapshotter, tmp_path / "again")
    theirs = umoci_tree(gz, tmp_path)
    for implicit in ("home",):  # made for home/user: its time is "now" on both sides
        ours[implicit], theirs[implicit] = ours[implicit][:3], theirs[implicit][:3]
    assert ours == theirs
    assert ours["bin/tool"][:3] == ("-rwxr-xr-x", 0, 0) and ours["bin/tool-link2"][4][1] == "tool"
    assert ours["bin/group-tool"][:3] == ("-rwx--s--x", 0, 50)
    assert ours["bin/abs"][4] == "/bin/tool" and ours["swap"][4] == "/etc"
    assert ours["dev/null"][0] == "crw-rw-rw-" and ours["tmp"][0] == "drwxrwxrwt"
    assert "etc/xattr" not in ours and "link-to-swap" not in ours and "data/old" not in ours
    assert ours["becomes-dir/f"][4][0] == hashlib.sha256(b"now a dir").hexdigest()


@pytest.mark.parametrize("name", ["whiteout", "opaque", "busybox", "multi"])
def test_standard_images_match_umoci(images, name: str, snapshotter, tmp_path: Path) -> None:
    layout = getattr(images, name)()
    if layout.is_index:
        # umoci unpacks one manifest: give it the amd64 one
        w = LayoutWriter(tmp_path / f"{name}-amd64")
        img = layout.image_for("linux/amd64")
        for d in img.blobs():
            w.add_blob(layout.blob(d.digest), d.media_type)
        layout = w.finish(img)
    assert unpacked_tree(layout, snapshotter, tmp_path) == umoci_tree(layout, tmp_path)


def test_config_and_manifest_are_read_from_the_store(images, tmp_path: Path) -> None:
    layout = images.zstd()
    store = store_with(layout, tmp_path / "content")
    mdesc, manifest, config = image_layers(store, layout.target)
    assert mdesc.digest == layout.image.manifest.digest
    assert [str(d.digest) for d in manifest.layers] == [layer.digest for layer in layout.image.layers]
    assert config == documents.loads_strict(layout.image.config_bytes, "config")
