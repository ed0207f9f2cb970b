"""The layer applier against hostile and ordinary archives: containment, whiteouts, metadata, streams, diff IDs, unpack."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
import zlib
from pathlib import Path

import pytest
import zstandard

import hoist.archive
from hoist.archive import apply_layer, iter_entries
from hoist.content import Descriptor, Digest, write_blob
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnsupportedError
from hoist.snapshots import Kind, list_snapshots, mounted
from hoist.snapshotters.native import NativeSnapshotter
from hoist.snapshotters.overlay import OverlaySnapshotter
from hoist.unpack import chain_ids, unpack
from hoist_content_local.store import LocalContentStore

MTIME = 1_600_000_000


# -- building archives ---------------------------------------------------------------------------


def member(name: str, kind: str = "f", payload: bytes | str = b"", *, mode: int | None = None, uid: int = 0, gid: int = 0,
           mtime: int = MTIME, dev: tuple[int, int] = (0, 0), pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.uid, ti.gid = mtime, uid, gid
    data = b""
    if kind == "f":
        data = payload if isinstance(payload, bytes) else payload.encode()
        ti.size, ti.mode = len(data), 0o644 if mode is None else mode
    elif kind == "d":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755 if mode is None else mode
    elif kind == "l":
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, str(payload), 0o777
    elif kind == "h":
        ti.type, ti.linkname = tarfile.LNKTYPE, str(payload)
    elif kind in "cbp":
        ti.type = {"c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE}[kind]
        ti.devmajor, ti.devminor = dev
        ti.mode = 0o600 if mode is None else mode
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def tar_of(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def raw_header(name: bytes, typ: bytes = b"0", size: int = 0, linkname: bytes = b"", mode: int = 0o644) -> bytes:
    """A ustar header with exactly the bytes given (no normalisation), checksum included."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    h[136:148] = b"%011o\0" % MTIME
    h[156:157] = typ
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def apply(root: Path, data: bytes, **kw) -> object:
    return apply_layer(root, io.BytesIO(data), layer="sha256:test", **kw)


# -- canaries ------------------------------------------------------------------------------------


class Host:
    """A directory outside the extraction root with canary files whose every detail is checked afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.root.mkdir()
        self.outside = tmp / "outside"
        self.outside.mkdir()
        self.canary = self.outside / "canary"
        self.canary.write_text("precious")
        os.chmod(self.canary, 0o640)
        os.utime(self.canary, (MTIME, MTIME))
        (self.outside / "dir").mkdir(mode=0o750)
        self.tmp = tmp
        self.before = self.state()

    def state(self) -> dict:
        out = {}
        for base in (self.tmp, self.outside, self.outside / "dir"):
            for name in sorted(os.listdir(base)):
                p = base / name
                if p == self.root:
                    continue
                st = p.lstat()
                content = p.read_bytes() if p.is_file() and not p.is_symlink() else None
                out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink, content)
        return out

    def unchanged(self) -> None:
        assert self.state() == self.before


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def rel(p: Path) -> str:
    return str(p).lstrip("/")


# -- breakout corpus -----------------------------------------------------------------------------


def test_dotdot_escape_is_rejected_naming_the_entry(host: Host) -> None:
    with pytest.raises(InvalidArgumentError, match=r"layer sha256:test: entry '\.\./outside/evil': path climbs above the root"):
        apply(host.root, tar_of(member("../outside/evil", payload="x")))
    with pytest.raises(InvalidArgumentError, match="climbs above"):
        apply(host.root, tar_of(member("a/../../outside/evil", payload="x")))
    host.unchanged()


def test_absolute_names_land_inside_the_root(host: Host) -> None:
    apply(host.root, tar_of(member(str(host.outside / "evil"), payload="x"), member(str(host.canary), payload="overwritten")))
    assert (host.root / rel(host.outside) / "evil").read_text() == "x"
    assert (host.root / rel(host.canary)).read_text() == "overwritten"
    host.unchanged()


def test_file_through_an_absolute_symlink_stays_inside(host: Host) -> None:
    apply(host.root, tar_of(member("a", "l", str(host.outside)), member("a/canary", payload="pwned"), member("a/new", payload="n")))
    assert os.readlink(host.root / "a") == str(host.outside)  # kept exactly as written
    assert (host.root / rel(host.outside) / "canary").read_text() == "pwned"
    assert (host.root / rel(host.outside) / "new").read_text() == "n"
    host.unchanged()


def test_symlink_to_a_parent_chain_is_clamped_at_the_root(host: Host) -> None:
    up = "../" * 12
    apply(host.root, tar_of(member("d", "d"), member("d/up", "l", up), member(f"d/up/{rel(host.outside)}/canary", payload="pwned"),
                            member("loop", "l", "d/up/loop"), member("dot", "l", "."), member("dot/dot/x", payload="x")))
    assert (host.root / rel(host.outside) / "canary").read_text() == "pwned"
    assert (host.root / "x").read_text() == "x"
    assert os.readlink(host.root / "d" / "up") == up
    host.unchanged()


def test_symlink_loop_is_an_error(host: Host) -> None:
    with pytest.raises(InvalidArgumentError, match="entry 'a/x': too many levels of symbolic links"):
        apply(host.root, tar_of(member("a", "l", "b"), member("b", "l", "a"), member("a/x", payload="x")))
    host.unchanged()


def test_symlink_replacing_a_directory_then_written_through(host: Host) -> None:
    apply(host.root, tar_of(member("d", "d"), member("d/old", payload="o"), member("d", "l", str(host.outside / "dir")),
                            member("d/x", payload="x")))
    assert os.readlink(host.root / "d") == str(host.outside / "dir")
    assert (host.root / rel(host.outside) / "dir" / "x").read_text() == "x"
    host.unchanged()


def test_two_layers_evil_root_symlink_then_write_through_it(host: Host) -> None:
    apply(host.root, tar_of(member("evil", "l", "/")))
    apply(host.root, tar_of(member(f"evil/{rel(host.outside)}/pwned", payload="x"), member(f"evil/{rel(host.canary)}", payload="x")))
    assert (host.root / rel(host.outside) / "pwned").read_text() == "x"
    host.unchanged()


def test_metadata_entries_never_follow_symlinks(host: Host) -> None:
    # chmod/chown/utime of a name that is a symlink to a host file or directory: the name is replaced, the target untouched
    apply(host.root, tar_of(member("f", "l", str(host.canary)), member("d", "l", str(host.outside / "dir"))))
    apply(host.root, tar_of(member("f", payload="new", mode=0o777, uid=1, mtime=1), member("d", "d", mode=0o777, uid=1, mtime=1)))
    assert (host.root / "f").read_text() == "new" and not (host.root / "f").is_symlink()
    assert (host.root / "d").is_dir() and not (host.root / "d").is_symlink()
    host.unchanged()


def test_hardlinks_only_inside_the_root(host: Host) -> None:
    with pytest.raises(InvalidArgumentError, match=r"entry 'h': hardlink target '\.\./outside/canary' is outside the root"):
        apply(host.root, tar_of(member("h", "h", "../outside/canary")))
    with pytest.raises(NotFoundError, match="entry 'h': hardlink target .* does not exist"):
        apply(host.root, tar_of(member("h", "h", str(host.canary))))
    with pytest.raises(NotFoundError, match="does not exist"):
        apply(host.root, tar_of(member("a", "l", str(host.outside)), member("h", "h", "a/canary")))
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        apply(host.root, tar_of(member("d", "d"), member("h", "h", "d")))
    host.unchanged()
    assert host.canary.stat().st_nlink == 1


def test_hardlink_to_a_symlink_links_the_symlink_itself(host: Host) -> None:
    apply(host.root, tar_of(member("s", "l", str(host.canary)), member("h", "h", "s")))
    assert os.readlink(host.root / "h") == str(host.canary)
    assert (host.root / "h").lstat().st_ino == (host.root / "s").lstat().st_ino
    apply(host.root, tar_of(member("h", payload="replaced")))
    assert (host.root / "h").read_text() == "replaced"
    host.unchanged()


def test_whiteouts_of_invalid_names_are_errors(host: Host) -> None:
    for bad in (".wh...", "a/.wh...", ".wh..", ".wh."):
        with pytest.raises(InvalidArgumentError, match="whiteout of an invalid name"):
            apply(host.root, tar_of(member("a", "d"), member(bad)))
    host.unchanged()


def test_whiteout_through_a_symlink_deletes_nothing_outside(host: Host) -> None:
    apply(host.root, tar_of(member("a", "l", str(host.outside))))
    apply(host.root, tar_of(member("a/.wh.canary"), member("b/../a/.wh.dir"), member("a/.wh..wh..opq")))
    host.unchanged()


def test_entries_naming_the_root(host: Host) -> None:
    apply(host.root, tar_of(member("./", "d", mode=0o711, mtime=12345), member("/", "d", mode=0o711, mtime=12345)))
    st = host.root.stat()
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 12345
    for kind, payload in (("l", "/"), ("f", "x"), ("h", "x")):
        with pytest.raises(InvalidArgumentError, match="only a directory may name the root"):
            apply(host.root, tar_of(member("x", payload="x"), member(".", kind, payload)))
    host.unchanged()


def test_nul_bytes_in_names_are_rejected(host: Host) -> None:
    data = tar_of(member("ok", pax={"path": "a\0/../../outside/evil"}))
    with pytest.raises(InvalidArgumentError, match="NUL byte"):
        apply(host.root, data)
    host.unchanged()


def test_file_under_a_file_is_an_error(host: Host) -> None:
    with pytest.raises(InvalidArgumentError, match="entry 'a/b': a is not a directory"):
        apply(host.root, tar_of(member("a", payload="x"), member("a/b", payload="y")))


# -- broken streams ------------------------------------------------------------------------------


def test_truncated_archive_with_a_huge_declared_size_fails_fast(host: Host) -> None:
    data = raw_header(b"big", size=8 << 30) + b"x" * 4096
    started = time.monotonic()
    with pytest.raises(InvalidArgumentError, match=r"entry 'big': unexpected end of archive \(declared size 8589934592\)"):
        apply(host.root, data)
    with pytest.raises(InvalidArgumentError, match="unexpected end of archive"):
        apply(host.root, gzip.compress(data))
    assert time.monotonic() - started < 5
    host.unchanged()


def test_truncated_and_corrupt_compressed_streams(host: Host) -> None:
    layer = tar_of(member("f", payload=os.urandom(200_000)))
    gz = gzip.compress(layer)
    with pytest.raises(InvalidArgumentError, match="layer sha256:test: gzip stream"):
        apply(host.root, gz[: len(gz) // 2])
    zs = zstandard.ZstdCompressor().compress(layer)
    # a cut zstd frame just ends early (zstandard does not flag it): the tar reader notices
    with pytest.raises(InvalidArgumentError, match="layer sha256:test: (zstd stream|entry 'f': unexpected end of archive)"):
        apply(host.root, zs[:-100])
    with pytest.raises(InvalidArgumentError, match="gzip stream"):
        apply(host.root, gz[:100] + bytes(1000) + gz[1100:])


def test_bad_header_checksum_and_garbage(host: Host) -> None:
    h = bytearray(raw_header(b"f", size=1) + b"x".ljust(512, b"\0"))
    h[0] = ord("g")
    with pytest.raises(InvalidArgumentError, match="invalid tar header checksum"):
        apply(host.root, bytes(h))
    with pytest.raises(InvalidArgumentError, match="invalid tar header checksum"):
        apply(host.root, os.urandom(2048))


def test_unsupported_entry_types_and_media_types(host: Host) -> None:
    with pytest.raises(UnsupportedError, match="entry 'v': unsupported tar entry type b'V'"):
        apply(host.root, raw_header(b"v", typ=b"V"))
    with pytest.raises(UnsupportedError, match="sparse"):
        apply(host.root, tar_of(member("s", payload="x", pax={"GNU.sparse.map": "0,1"})))
    with pytest.raises(UnsupportedError, match="not supported"):
        apply(host.root, tar_of(member("f")), media_type="application/vnd.oci.image.layer.v1.tar+encrypted")
    with pytest.raises(InvalidArgumentError, match="says gzip, the data is none"):
        apply(host.root, tar_of(member("f")), media_type="application/vnd.oci.image.layer.v1.tar+gzip")


def test_gzip_bomb_streams_with_bounded_memory(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import gzip, io, resource, tarfile
        from hoist.archive import apply_layer
        size = 512 << 20
        ti = tarfile.TarInfo("zeros"); ti.size = size
        zeros = gzip.compress(bytes(16 << 20), 9)  # gzip members concatenate: one member of zeros, repeated
        bomb = gzip.compress(ti.tobuf(format=tarfile.PAX_FORMAT)) + zeros * (size // (16 << 20)) + gzip.compress(bytes(1024))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res = apply_layer({str(tmp_path / 'root')!r}, io.BytesIO(bomb))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(bomb), res.size, base, peak)
    """)
    (tmp_path / "root").mkdir()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    compressed, size, base, peak = map(int, out)
    assert compressed < 1 << 20 and size == (512 << 20) + 512 + 1024  # header + data + end blocks
    assert (tmp_path / "root" / "zeros").stat().st_size == 512 << 20
    assert peak - base < 64 << 10, f"peak RSS grew by {(peak - base) // 1024} MiB"  # ru_maxrss is in KiB


# -- metadata and ordinary content ---------------------------------------------------------------


def test_metadata_devices_setuid_xattrs_and_long_names(host: Host) -> None:
    long_dir = "d" * 120
    long_name = f"{long_dir}/" + "n" * 150
    layer = tar_of(
        member(long_dir, "d", mode=0o750, uid=7, gid=8, mtime=1000),
        member(long_name, payload="long", mode=0o4755, uid=1000, gid=1000, mtime=2000),
        member("hl-" + "x" * 200, "h", long_name),
        member("sl", "l", "/" + "t" * 300),
        member("sgid", payload="g", mode=0o2711, uid=5, gid=6),
        member("sticky", "d", mode=0o1777),
        member("null", "c", dev=(1, 3), mode=0o666),
        member("loop0", "b", dev=(7, 0), mode=0o660, gid=6),
        member("fifo", "p", mode=0o620),
        member("x", payload="x", pax={"SCHILY.xattr.user.one": "1", "SCHILY.xattr.trusted.two": "2"}),
        member("frac", payload="t", pax={"mtime": "1600000000.123456789"}),
    )
    apply(host.root, layer)
    r = host.root
    st = (r / long_dir).lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 7, 8, 1000)  # set after its contents
    st = (r / long_name).lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime, st.st_nlink) == (0o4755, 1000, 1000, 2000, 2)
    assert (r / ("hl-" + "x" * 200)).read_text() == "long"
    assert os.readlink(r / "sl") == "/" + "t" * 300
    assert stat.S_IMODE((r / "sgid").lstat().st_mode) == 0o2711
    assert stat.S_IMODE((r / "sticky").lstat().st_mode) == 0o1777
    st = (r / "null").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o666
    st = (r / "loop0").lstat()
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0) and st.st_gid == 6
    assert stat.S_ISFIFO((r / "fifo").lstat().st_mode) and stat.S_IMODE((r / "fifo").lstat().st_mode) == 0o620
    assert os.getxattr(r / "x", "user.one") == b"1" and os.getxattr(r / "x", "trusted.two") == b"2"
    assert (r / "frac").lstat().st_mtime_ns == 1_600_000_000_123_456_789


def test_gnu_long_names_and_base256_numbers(host: Host) -> None:
    name = "g" * 180
    layer = tar_of(member(name, payload="gnu", uid=3_000_000), member("l" * 130, "l", "t" * 200), fmt=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in layer
    apply(host.root, layer)
    assert (host.root / name).read_text() == "gnu" and (host.root / name).stat().st_uid == 3_000_000
    assert os.readlink(host.root / ("l" * 130)) == "t" * 200


def _tree(root: Path) -> dict:
    out, inodes = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for name in ([""] if dirpath == str(root) else []) + dirs + files:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            rec = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns // 10**9}
            if stat.S_ISREG(st.st_mode):
                rec["sha"] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                rec["inode"] = inodes.setdefault((st.st_dev, st.st_ino), os.path.relpath(p, root))
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = st.st_rdev
            rec["xattrs"] = {k: os.getxattr(p, k, follow_symlinks=False) for k in sorted(os.listxattr(p, follow_symlinks=False))}
            out[os.path.relpath(p, root)] = rec
    return out


@pytest.mark.parametrize("fmt", ["posix", "gnu"])
def test_same_tree_as_gnu_tar(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_bytes(os.urandom(3 << 20))
    os.chmod(src / "bin" / "tool", 0o4755)
    os.chown(src / "bin" / "tool", 0, 50)
    os.link(src / "bin" / "tool", src / "bin" / "tool2")
    os.symlink("/usr/bin/env", src / "bin" / "env")
    os.symlink("../bin/tool", src / "bin" / "rel")
    (src / "deep" / ("n" * 90) / ("m" * 90)).mkdir(parents=True)
    (src / "deep" / ("n" * 90) / ("m" * 90) / ("f" * 120)).write_text("deep")
    (src / "empty").write_bytes(b"")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(src / "fifo", 0o644)
    os.setxattr(src / "bin" / "tool", "user.comment", b"hello")
    (src / "owned").mkdir(mode=0o700)
    os.chown(src / "owned", 1234, 4321)
    for i in range(50):
        (src / "owned" / f"f{i}").write_text(str(i) * i)
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", f"--format={fmt}", "--xattrs", "--xattrs-include=*", "-C", src, "-cf", layer, "."], check=True)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-C", theirs, "-xpf", layer], check=True)
    gz = gzip.compress(layer.read_bytes(), 1)
    res = apply_layer(ours, io.BytesIO(gz), media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    assert res.diff_id == Digest.from_bytes(layer.read_bytes()) and res.size == layer.stat().st_size
    assert _tree(ours) == _tree(theirs)


def _gzip_with_every_header_field(data: bytes) -> bytes:
    """One gzip member with FEXTRA, FNAME, FCOMMENT and FHCRC set (the header CRC is checked on reading)."""
    head = b"\x1f\x8b\x08\x1e" + bytes(5) + b"\x03" + (4).to_bytes(2, "little") + b"ab\x00\x00" + b"layer.tar\0" + b"note\0"
    head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little")
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return head + c.compress(data) + c.flush() + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")


@pytest.mark.parametrize("decompressor", ["isal", "zlib"])
def test_compressions_give_the_same_diff_id(tmp_path: Path, decompressor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if decompressor == "zlib":
        monkeypatch.setattr(hoist.archive, "_isal_zlib", None)
    payload = os.urandom(300_000)
    layer = tar_of(member("a", payload=payload), member("b", "l", "a"))
    want = Digest.from_bytes(layer)
    variants = {
        "none": layer,
        "gzip": gzip.compress(layer),
        "multi-member gzip": gzip.compress(layer[:10240]) + gzip.compress(layer[10240:]),
        "gzip padded with zeros": gzip.compress(layer) + bytes(700),
        "gzip with every header field": _gzip_with_every_header_field(layer[:512]) + _gzip_with_every_header_field(layer[512:]),
        "zstd": zstandard.ZstdCompressor().compress(layer),
    }
    for i, (what, blob) in enumerate(variants.items()):
        for threaded in (True, False):
            root = tmp_path / f"{i}-{threaded}"
            root.mkdir()
            res = apply_layer(root, _Trickle(blob), threaded=threaded)
            assert res.diff_id == want, what
            assert (root / "a").read_bytes() == payload and os.readlink(root / "b") == "a"


class _Trickle(io.RawIOBase):
    """A stream whose reads return 7 bytes and 4 KiB in turn, as a slow network would (headers arrive in pieces)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos, self._short = data, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        self._short = not self._short
        n = min(len(b), 7 if self._short else 4096, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_diff_id_mismatch_is_an_error(host: Host) -> None:
    layer = tar_of(member("f", payload="x"))
    with pytest.raises(FailedPreconditionError, match=r"layer sha256:test: diff ID mismatch: expected sha256:0{64}, got sha256:"):
        apply(host.root, layer, expected_diff_id="sha256:" + "0" * 64)
    assert apply(host.root, layer, expected_diff_id=Digest.from_bytes(layer)).diff_id == Digest.from_bytes(layer)


def test_entries_listing() -> None:
    layer = tar_of(member("a", payload="12345"), member("d", "d"), member("l", "l", "a"))
    assert [(e.name, e.type, e.size) for e in iter_entries(io.BytesIO(layer))] == [
        (b"a", b"0", 5), (b"d/", b"5", 0), (b"l", b"2", 0)]


# -- overlay whiteouts ---------------------------------------------------------------------------


def test_overlay_whiteouts_in_an_upperdir(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    os.chmod(lower / "etc", 0o711)
    (lower / "etc" / "gone").write_text("g")
    (lower / "data").mkdir()
    upper.mkdir()
    apply_layer(upper, io.BytesIO(tar_of(member("etc/.wh.gone"), member("data/.wh..wh..opq"), member("data/new", payload="n"))),
                whiteouts="overlay", parents=[lower])
    st = (upper / "etc" / "gone").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert stat.S_IMODE((upper / "etc").stat().st_mode) == 0o711  # copied from the lower directory
    assert os.getxattr(upper / "data", "trusted.overlay.opaque") == b"y"
    assert (upper / "data" / "new").read_text() == "n"


# -- unpack --------------------------------------------------------------------------------------


def _image(store: LocalContentStore, layers: list[bytes], compress=gzip.compress) -> tuple[list[Descriptor], dict]:
    descs = []
    for i, layer in enumerate(layers):
        blob = compress(layer)
        d = Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+gzip", digest=Digest.from_bytes(blob), size=len(blob))
        write_blob(store, f"layer-{i}", io.BytesIO(blob), len(blob), d.digest)
        descs.append(d)
    config = {"rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(layer)) for layer in layers]}}
    return descs, config


@pytest.fixture(params=["native", "overlayfs"])
def snapshotter(request, tmp_path: Path):
    sn = (NativeSnapshotter if request.param == "native" else OverlaySnapshotter)(tmp_path / request.param)
    yield sn
    sn.close()


def test_unpack_commits_chains_and_reuses_them(tmp_path: Path, snapshotter) -> None:
    store = LocalContentStore(tmp_path / "content")
    layers = [
        tar_of(member("etc", "d"), member("etc/a", payload="a"), member("etc/b", payload="b"), member("bin", "d"),
               member("bin/sh", payload="#!", mode=0o755)),
        tar_of(member("etc/.wh.a"), member("etc/c", payload="c")),
        tar_of(),  # empty layer
    ]
    descs, config = _image(store, layers)
    res = unpack(store, snapshotter, descs, config)
    chains = chain_ids(config["rootfs"]["diff_ids"])
    assert res.chain_id == chains[-1] and [r.reused for r in res.layers] == [False, False, False]
    assert [i.name for i in list_snapshots(snapshotter)] == sorted(str(c) for c in chains)
    assert all(i.kind is Kind.COMMITTED for i in list_snapshots(snapshotter))
    assert snapshotter.stat(str(chains[1])).parent == str(chains[0])
    with mounted(snapshotter.view("v", str(res.chain_id))) as root:
        assert sorted(os.listdir(root / "etc")) == ["b", "c"]
        assert (root / "bin" / "sh").stat().st_mode & 0o777 == 0o755
    snapshotter.remove("v")
    assert store.info(descs[1].digest).labels["containerd.io/uncompressed"] == config["rootfs"]["diff_ids"][1]
    again = unpack(store, snapshotter, descs, config)
    assert [r.reused for r in again.layers] == [True, True, True]


def test_unpack_diff_id_mismatch_leaves_no_snapshot(tmp_path: Path, snapshotter) -> None:
    store = LocalContentStore(tmp_path / "content")
    descs, config = _image(store, [tar_of(member("a", payload="a")), tar_of(member("b", payload="b"))])
    config["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    with pytest.raises(FailedPreconditionError, match=f"layer {descs[1].digest}: diff ID mismatch"):
        unpack(store, snapshotter, descs, config)
    assert [i.name for i in list_snapshots(snapshotter)] == [config["rootfs"]["diff_ids"][0]]
    assert sorted(os.listdir(snapshotter.snapshots_dir)) == ["1"]


def test_unpack_hostile_layer_leaves_no_snapshot(tmp_path: Path, snapshotter) -> None:
    store = LocalContentStore(tmp_path / "content")
    descs, config = _image(store, [tar_of(member("ok", payload="1"), member("../../../../escape", payload="x"))])
    with pytest.raises(InvalidArgumentError, match=rf"layer {descs[0].digest}: entry '\.\./\.\./\.\./\.\./escape'"):
        unpack(store, snapshotter, descs, config)
    assert list_snapshots(snapshotter) == []
    assert os.listdir(snapshotter.snapshots_dir) == []


def test_unpack_rejects_config_layer_count_mismatch(tmp_path: Path, snapshotter) -> None:
    store = LocalContentStore(tmp_path / "content")
    descs, config = _image(store, [tar_of(member("a"))])
    config["rootfs"]["diff_ids"].append(config["rootfs"]["diff_ids"][0])
    with pytest.raises(InvalidArgumentError, match="2 diff_ids for 1 layers"):
        unpack(store, snapshotter, descs, config)
    with pytest.raises(InvalidArgumentError, match="rootfs"):
        unpack(store, snapshotter, descs, json.loads('{"rootfs": {"type": "other"}}'))
