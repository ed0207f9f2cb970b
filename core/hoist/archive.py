"""The layer applier: streaming decompression, Hoist's own tar reader, and a contained extraction.

A layer is untrusted input.  Every path is cleaned lexically (an entry climbing above the root is
rejected), then walked one component at a time from a directory descriptor of the root with
``O_NOFOLLOW``; a symlink met on the way is resolved *inside* the root (an absolute target restarts
at the root, ``..`` stops at the root), so nothing is ever created, changed or linked outside it.
Symlinks are written exactly as the archive says (absolute ones too).  OCI whiteouts become
deletions (``whiteouts="delete"``, native snapshots) or overlay whiteouts (``"overlay"``: a 0/0
character device, ``trusted.overlay.opaque=y``).  The uncompressed digest (the diff ID) is computed
while applying.
"""

from __future__ import annotations

import base64
import collections
import enum
import errno
import hashlib
import logging
import os
import queue
import shutil
import stat
import threading
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import attrs

from hoist.content import Digest
from hoist.errors import (
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnsupportedError,
)

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _isal_zlib = None

log = logging.getLogger("hoist.archive")

CHUNK = 1 << 20
_GZIP_READ = 256 << 10  # compressed bytes per read: about 1 MiB of output for a typical layer
BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_MAX_META = 1 << 20  # PAX and GNU long-name records are held in memory: bound them
_MAX_SYMLINKS = 40
_DIR_CACHE = 64

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IS_ROOT = os.geteuid() == 0


class Compression(str, enum.Enum):
    """How a layer blob is compressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def compression_of_media_type(media_type: str) -> Compression | None:
    """The compression a layer media type declares; ``None`` when it does not say (or is unknown).

    :raises UnsupportedError: the media type names a compression or encryption Hoist does not read.
    """
    mt = media_type.lower()
    if not mt:
        return None
    if mt.endswith(("+gzip", ".tar.gzip", ".gzip")) or mt.endswith("rootfs.diff.tar.gzip"):
        return Compression.GZIP
    if mt.endswith(("+zstd", ".zstd")):
        return Compression.ZSTD
    if mt.endswith(("+encrypted", "+bzip2", "+xz")) or "+encrypted" in mt:
        raise UnsupportedError(f"layer media type {media_type}: compression not supported (gzip, zstd, none)")
    if mt.endswith((".tar", "rootfs.diff.tar")):
        return Compression.NONE
    return None


def detect_compression(head: bytes) -> Compression:
    """The compression the first bytes of a blob show (gzip and zstd magic numbers)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._raw.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._raw.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


def _gzip_header_size(buf: bytes) -> int | None:
    """The length of the gzip member header ``buf`` starts with; ``None`` while ``buf`` ends inside it."""
    if len(buf) < 10:
        return None
    flags, pos = buf[3], 10
    if flags & 0x04:  # FEXTRA
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            end = buf.find(b"\0", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos if len(buf) >= pos else None


class _GzipReader:
    """Multi-member gzip decompression through ``isal_zlib`` (zlib when isal is missing).

    One ``read`` is one raw read at most and one call into the decompressor, which releases the GIL:
    few hand-overs when a helper thread decompresses while the applier runs Python code.  Trailer
    checks (CRC-32, length) are the decompressor's; zero bytes after a member are padding.  Each
    member's header reaches the decompressor in one piece (isal rejects a header CRC split across calls).
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._zlib = _isal_zlib if _isal_zlib is not None else zlib
        self._d = self._zlib.decompressobj(wbits=31)
        self._pending = b""  # compressed bytes read and not yet given to the decompressor
        self._started = False  # the current member has seen input
        self._eof = False

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while not self._eof:
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            elif self._pending:
                data, self._pending = self._pending, b""
            else:
                data = self._raw.read(_GZIP_READ)
                if not data:
                    if self._started:
                        raise EOFError("compressed stream ended before the end-of-stream marker")
                    self._eof = True
                    return b""
            if not self._started:
                data = data.lstrip(b"\0")  # padding after the previous member
                if not data:
                    continue
                while _gzip_header_size(data) is None and len(data) < _MAX_META:
                    more = self._raw.read(_GZIP_READ)
                    if not more:
                        break  # the decompressor tells what is wrong
                    data += more
                self._started = True
            out = self._d.decompress(data, n)
            if self._d.eof:
                self._pending = self._d.unused_data
                self._d = self._zlib.decompressobj(wbits=31)
                self._started = False
            if out:
                return out
        return b""


def decompressed(raw: BinaryIO, media_type: str = "") -> tuple[BinaryIO, Compression]:
    """Wrap ``raw`` so that reading it yields the uncompressed tar stream.

    The magic bytes decide; a media type that declares a compression the bytes do not show is an error.

    :raises UnsupportedError: the media type names an unsupported compression.
    :raises InvalidArgumentError: the media type and the bytes disagree.
    """
    declared = compression_of_media_type(media_type)
    head = raw.read(4)
    while len(head) < 4:
        more = raw.read(4 - len(head))
        if not more:
            break
        head += more
    found = detect_compression(head)
    if declared is not None and declared is not Compression.NONE and declared is not found:
        raise InvalidArgumentError(f"layer media type {media_type} says {declared.value}, the data is {found.value}")
    stream: BinaryIO = _Prefixed(head, raw)  # type: ignore[assignment]
    if found is Compression.GZIP:
        return _GzipReader(stream), found  # type: ignore[return-value]
    if found is Compression.ZSTD:
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
        return dctx.stream_reader(stream, read_size=CHUNK, read_across_frames=True), found  # type: ignore[return-value]
    return stream, found


class _Chunks:
    """Pulls uncompressed chunks, hashing and counting every byte (optionally in a helper thread)."""

    def __init__(self, stream: BinaryIO, *, threaded: bool, depth: int = 4, what: str = "layer") -> None:
        self._stream = stream
        self._what = what
        self.hasher = hashlib.sha256()
        self.size = 0
        self._threaded = threaded
        self._done = False
        if threaded:
            self._q: queue.Queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._t = threading.Thread(target=self._run, name="hoist-layer-decompress", daemon=True)
            self._t.start()

    def _read(self) -> bytes:
        try:
            data = self._stream.read(CHUNK)
        except HoistError:
            raise
        except Exception as e:  # zlib, isal, zstandard and EOF errors all mean a broken stream
            raise InvalidArgumentError(f"{self._what}: {e}") from e
        if data:
            self.hasher.update(data)
            self.size += len(data)
        return data

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._read()
                self._put(data)
                if not data:
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> bytes:
        """The next chunk; ``b""`` at the end of the stream."""
        if self._done:
            return b""
        item = self._q.get() if self._threaded else self._read()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
        return item

    def close(self) -> None:
        if self._threaded:
            self._stop.set()
            self._t.join()


class _TarStream:
    """Exact reads over the chunk source: headers, file data copied to descriptors, skips."""

    def __init__(self, chunks: _Chunks) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._pos = 0

    def _fill(self) -> bool:
        data = self._chunks.next()
        if not data:
            return False
        self._buf = memoryview(data)
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end].tobytes()
            self._pos = end
            return out
        parts = []
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                break
            take = min(n, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            n -= take
        return b"".join(parts)

    def copy_to(self, fd: int, n: int) -> int:
        """Copy ``n`` bytes into ``fd``; return how many there were (fewer means the stream ended)."""
        left = n
        while left:
            if self._pos >= len(self._buf) and not self._fill():
                break
            take = min(left, len(self._buf) - self._pos)
            view = self._buf[self._pos : self._pos + take]
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self._pos += take
            left -= take
        return n - left

    def skip(self, n: int) -> int:
        left = n
        while left:
            if self._pos >= len(self._buf) and not self._fill():
                break
            take = min(left, len(self._buf) - self._pos)
            self._pos += take
            left -= take
        return n - left

    def drain(self) -> None:
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)


# -- tar headers ----------------------------------------------------------------------------------

REGTYPE = b"0"
AREGTYPE = b"\0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
CONTTYPE = b"7"
XHDTYPE = b"x"
XGLTYPE = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"


@attrs.frozen(kw_only=True)
class Entry:
    """One archive member after PAX and GNU extensions are merged in."""

    name: bytes
    type: bytes
    size: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def shown(self) -> str:
        return os.fsdecode(self.name)


def _number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        elif field[0] != 0x80:
            raise InvalidArgumentError(f"tar header: invalid base-256 {what}")
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise InvalidArgumentError(f"tar header: invalid {what} {text[:20]!r}") from None


def _byte_sum(data: bytes) -> int:
    # Adler-32's low half is 1 + the byte sum modulo 65521: exact for 256 bytes (at most 65280), and done in C.
    return (zlib.adler32(data[:256]) & 0xFFFF) + (zlib.adler32(data[256:]) & 0xFFFF) - 2


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum")
    except InvalidArgumentError:
        return False
    unsigned = _byte_sum(block) - sum(block[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    signed = sum((b - 256 if b > 127 else b) for b in block[:148] + block[156:]) + 8 * 32
    return stored == signed


def _pax_time_ns(value: bytes) -> int:
    text = value.strip()
    neg = text.startswith(b"-")
    whole, _, frac = (text[1:] if neg else text).partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise InvalidArgumentError(f"PAX header: invalid time {text[:40].decode('ascii', 'replace')!r}")
    ns = int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9])
    return -ns if neg else ns


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise InvalidArgumentError("PAX header: record without a length")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise InvalidArgumentError(f"PAX header: invalid record length {data[pos:sp][:20]!r}") from None
        if length <= sp - pos + 1 or pos + length > len(data) or data[pos + length - 1 : pos + length] != b"\n":
            raise InvalidArgumentError("PAX header: malformed record")
        record = data[sp + 1 : pos + length - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise InvalidArgumentError(f"PAX header: record {key[:40]!r} without '='")
        out[key] = value
        pos += length
    return out


class _TarReader:
    """Iterates over the members of a tar stream (ustar, GNU, PAX), never seeking."""

    def __init__(self, stream: _TarStream, layer: str) -> None:
        self.s = stream
        self.layer = layer
        self._global: dict[bytes, bytes] = {}
        self._last_entry: Entry | None = None

    @property
    def _last(self) -> str:
        """The previous entry's name, for errors about what follows it."""
        return self._last_entry.shown if self._last_entry is not None else "(start of archive)"

    def fail(self, reason: str, cls: type[HoistError] = InvalidArgumentError) -> HoistError:
        return cls(f"layer {self.layer}: {reason}")

    def _block(self, eof_ok: bool) -> bytes | None:
        block = self.s.read(BLOCK)
        if not block and eof_ok:
            return None
        if len(block) < BLOCK:
            raise self.fail(f"unexpected end of archive after entry {self._last!r}")
        return block

    def _meta(self, size: int, kind: str) -> bytes:
        if size > _MAX_META:
            raise self.fail(f"{kind} of {size} bytes after entry {self._last!r}: larger than {_MAX_META}")
        data = self.s.read(size)
        if len(data) < size:
            raise self.fail(f"unexpected end of archive in a {kind} after entry {self._last!r}")
        self.skip_padding(size)
        return data

    def skip_padding(self, size: int) -> None:
        pad = -size % BLOCK
        if pad and self.s.skip(pad) < pad:
            raise self.fail(f"unexpected end of archive in the padding of entry {self._last!r}")

    def __iter__(self) -> Iterator[Entry]:
        pax: dict[bytes, bytes] = {}
        longname: bytes | None = None
        longlink: bytes | None = None
        while True:
            block = self._block(eof_ok=not pax and longname is None and longlink is None)
            if block is None:
                return
            if block == _ZERO_BLOCK:
                nxt = self._block(eof_ok=True)
                if nxt is None or nxt == _ZERO_BLOCK:
                    return
                raise self.fail(f"a zero block followed by data after entry {self._last!r}")
            if not _checksum_ok(block):
                raise self.fail(f"invalid tar header checksum after entry {self._last!r}")
            typ = block[156:157]
            size = _number(block[124:136], "size")
            if size < 0:
                raise self.fail(f"negative size after entry {self._last!r}")
            if typ == XHDTYPE:
                pax.update(_parse_pax(self._meta(size, "PAX header")))
                continue
            if typ == XGLTYPE:
                for k, v in _parse_pax(self._meta(size, "PAX global header")).items():
                    if v:
                        self._global[k] = v
                    else:
                        self._global.pop(k, None)
                continue
            if typ == GNU_LONGNAME:
                longname = self._meta(size, "GNU long name").split(b"\0", 1)[0]
                continue
            if typ == GNU_LONGLINK:
                longlink = self._meta(size, "GNU long link name").split(b"\0", 1)[0]
                continue
            entry = self._entry(block, typ, size, {**self._global, **pax} if self._global else pax, longname, longlink)
            pax, longname, longlink = {}, None, None
            self._last_entry = entry
            yield entry

    def _entry(self, block: bytes, typ: bytes, size: int, pax: dict[bytes, bytes],
               longname: bytes | None, longlink: bytes | None) -> Entry:
        name = block[0:100].split(b"\0", 1)[0]
        magic = block[257:265]
        if magic[:6] == b"ustar\0":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if longname is not None:
            name = longname
        linkname = block[157:257].split(b"\0", 1)[0]
        if longlink is not None:
            linkname = longlink
        mtime_ns = _number(block[136:148], "mtime") * 1_000_000_000
        atime_ns = None
        uid = _number(block[108:116], "uid")
        gid = _number(block[116:124], "gid")
        xattrs: list[tuple[str, bytes]] = []
        for key, value in pax.items():
            if key == b"path":
                name = value
            elif key == b"linkpath":
                linkname = value
            elif key == b"size":
                size = self._pax_int(value, "size")
            elif key == b"uid":
                uid = self._pax_int(value, "uid")
            elif key == b"gid":
                gid = self._pax_int(value, "gid")
            elif key == b"mtime":
                mtime_ns = _pax_time_ns(value)
            elif key == b"atime":
                atime_ns = _pax_time_ns(value)
            elif key.startswith(b"SCHILY.xattr."):
                xattrs.append((key[len(b"SCHILY.xattr."):].decode("utf-8", "surrogateescape"), value))
            elif key.startswith(b"LIBARCHIVE.xattr."):
                xname = urllib.parse.unquote_to_bytes(key[len(b"LIBARCHIVE.xattr."):]).decode("utf-8", "surrogateescape")
                try:
                    xattrs.append((xname, base64.b64decode(value + b"=" * (-len(value) % 4))))
                except ValueError:
                    raise self.fail(f"entry {os.fsdecode(name)!r}: invalid base64 in xattr {xname}") from None
            elif key.startswith(b"GNU.sparse."):
                raise self.fail(f"entry {os.fsdecode(name)!r}: sparse files are not supported", UnsupportedError)
        if b"\0" in name or b"\0" in linkname:
            shown = os.fsdecode(name.replace(b"\0", b"\\0"))
            raise self.fail(f"entry {shown!r}: NUL byte in the name or link target")
        if typ == AREGTYPE and name.endswith(b"/"):
            typ = DIRTYPE
        return Entry(
            name=name,
            type=typ,
            size=size,
            mode=_number(block[100:108], "mode") & 0o7777,
            uid=uid,
            gid=gid,
            mtime_ns=mtime_ns,
            atime_ns=atime_ns,
            linkname=linkname,
            devmajor=_number(block[329:337], "devmajor") if typ in (CHRTYPE, BLKTYPE) else 0,
            devminor=_number(block[337:345], "devminor") if typ in (CHRTYPE, BLKTYPE) else 0,
            xattrs=tuple(xattrs),
        )

    def _pax_int(self, value: bytes, what: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise self.fail(f"PAX header: invalid {what} {value[:20]!r}") from None
        if n < 0:
            raise self.fail(f"PAX header: negative {what}")
        return n


def iter_entries(stream: BinaryIO, layer: str = "layer") -> Iterator[Entry]:
    """The members of an uncompressed tar ``stream`` (data skipped); for inspection and tests."""
    chunks = _Chunks(stream, threaded=False)
    ts = _TarStream(chunks)
    reader = _TarReader(ts, layer)
    for entry in reader:
        yield entry
        if ts.skip(entry.size) < entry.size:
            raise reader.fail(f"unexpected end of archive in entry {entry.shown!r}")
        reader.skip_padding(entry.size)


# -- applying -------------------------------------------------------------------------------------


class WhiteoutMode(str, enum.Enum):
    """How OCI whiteouts are applied: as deletions (a plain directory) or as overlay whiteouts (an upperdir)."""

    DELETE = "delete"
    OVERLAY = "overlay"


@attrs.frozen(kw_only=True)
class ApplyResult:
    """What applying a layer produced: the uncompressed digest (diff ID) and size, and the compression seen."""

    diff_id: Digest
    size: int
    compression: Compression = Compression.NONE


def clean_name(name: bytes) -> list[bytes]:
    """``name`` as path components relative to the root (``/`` and ``.`` dropped, ``..`` applied).

    :raises InvalidArgumentError: the name climbs above the root.
    """
    parts: list[bytes] = []
    for c in name.split(b"/"):
        if c in (b"", b"."):
            continue
        if c == b"..":
            if not parts:
                raise InvalidArgumentError("path climbs above the root")
            parts.pop()
        else:
            parts.append(c)
    return parts


def _proc(fd: int, name: bytes | None = None) -> bytes:
    path = b"/proc/self/fd/%d" % fd
    return path + b"/" + name if name is not None else path


class _Applier:
    """Writes entries under one root directory; holds the root's descriptor for the whole layer.

    Resolved directories are cached by their archive path (entries of one directory come together),
    so a typical entry costs its own system calls only: no lookup from the root, no ``stat`` before
    creating (an existing name shows up as ``EEXIST`` and is replaced then).  A cached descriptor is
    lent to the entry being applied; one dropped from the cache meanwhile is closed after that entry.
    """

    def __init__(self, root: Path, mode: WhiteoutMode, parents: Sequence[Path], layer: str) -> None:
        self.layer = layer
        self.mode = mode
        self.root_fd = os.open(root, _O_DIR)
        self.parent_fds: list[int] = []
        try:
            for p in parents:
                self.parent_fds.append(os.open(p, _O_DIR))
        except OSError:
            self.close()
            raise
        self.written: set[bytes] = set()
        self.dir_times: dict[tuple[bytes, ...], tuple[int, int]] = {}
        self.touched: dict[tuple[bytes, ...], tuple[int, int]] = {}
        self._xattr_warned = False
        self._dirs: collections.OrderedDict[tuple[bytes, ...], tuple[int, tuple[bytes, ...]]] = collections.OrderedDict()
        self._retired: list[int] = []

    def close(self) -> None:
        self.forget_dirs()
        self.release()
        for fd in [self.root_fd, *self.parent_fds]:
            os.close(fd)
        self.parent_fds = []

    def forget_dirs(self) -> None:
        """Drop the resolved-directory cache (after anything that could change how a path resolves)."""
        self._retired.extend(fd for fd, _ in self._dirs.values())
        self._dirs.clear()

    def release(self) -> None:
        """Close the descriptors dropped from the cache while an entry may still have been using them."""
        retired, self._retired = self._retired, []
        for fd in retired:
            os.close(fd)

    def fail(self, entry: Entry, reason: str, cls: type[HoistError] = InvalidArgumentError) -> HoistError:
        return cls(f"layer {self.layer}: entry {entry.shown!r}: {reason}")

    # -- path walking --

    def walk(self, comps: Sequence[bytes], entry: Entry, *, create: bool) -> tuple[int, tuple[bytes, ...]]:
        """Open the directory ``comps`` names under the root, resolving symlinks inside the root.

        Returns a descriptor (lent: valid until :meth:`release`; do not close it) and the real path
        components; missing directories are made when ``create`` (else ``NotFoundError``).
        """
        key = tuple(comps)
        hit = self._dirs.get(key)
        if hit is not None:
            self._dirs.move_to_end(key)
            return hit
        fd, names = self._walk(comps, entry, create=create)
        rel = tuple(names)
        self._remember(key, fd, rel)
        return fd, rel

    def _remember(self, key: tuple[bytes, ...], fd: int, rel: tuple[bytes, ...]) -> None:
        old = self._dirs.pop(key, None)
        if old is not None:
            self._retired.append(old[0])
        self._dirs[key] = (fd, rel)
        if len(self._dirs) > _DIR_CACHE:
            self._retired.append(self._dirs.popitem(last=False)[1][0])

    def _walk(self, comps: Sequence[bytes], entry: Entry, *, create: bool) -> tuple[int, list[bytes]]:
        stack = [self.root_fd]
        names: list[bytes] = []
        todo = list(reversed(comps))
        links = 0
        try:
            while todo:
                c = todo.pop()
                if c in (b"", b"."):
                    continue
                if c == b"..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    continue
                cur = stack[-1]
                try:
                    fd = os.open(c, _O_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise self.fail(entry, f"{os.fsdecode(b'/'.join([*names, c]))} does not exist", NotFoundError) from None
                    self._mkparent(cur, c, names)
                    fd = os.open(c, _O_DIR, dir_fd=cur)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(c, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise self.fail(entry, f"{os.fsdecode(b'/'.join([*names, c]))} is not a directory") from None
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise self.fail(entry, "too many levels of symbolic links") from None
                    target = os.readlink(c, dir_fd=cur)
                    if target.startswith(b"/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                    todo.extend(reversed(target.split(b"/")))
                    continue
                stack.append(fd)
                names.append(c)
            result = stack.pop() if len(stack) > 1 else os.dup(self.root_fd)
            return result, names
        finally:
            for fd in stack[1:]:
                os.close(fd)

    def note(self, dirfd: int, names: tuple[bytes, ...]) -> None:
        """Remember a directory's times before this layer first changes its contents, to restore them at the end."""
        if names not in self.touched and names not in self.dir_times:
            st = os.fstat(dirfd)
            self.touched[names] = (st.st_atime_ns, st.st_mtime_ns)

    def _mkparent(self, dirfd: int, name: bytes, names: list[bytes]) -> None:
        """Create a directory the archive did not list; in an upperdir, copy its metadata from the lowers."""
        self.note(dirfd, tuple(names))
        mode, uid, gid = 0o755, 0, 0
        found = self._lower_dir(names + [name]) if self.parent_fds else None
        if found is not None:
            mode, uid, gid = stat.S_IMODE(found.st_mode), found.st_uid, found.st_gid
        os.mkdir(name, 0o700, dir_fd=dirfd)
        fd = os.open(name, _O_DIR, dir_fd=dirfd)
        try:
            if _IS_ROOT:
                os.chown(fd, uid, gid)
            os.chmod(fd, mode)
            if found is not None:
                os.utime(fd, ns=(found.st_atime_ns, found.st_mtime_ns))
        finally:
            os.close(fd)

    def _lower_dir(self, comps: list[bytes]) -> os.stat_result | None:
        for lower in self.parent_fds:
            fd = os.dup(lower)
            try:
                for c in comps[:-1]:
                    nfd = os.open(c, _O_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
                st = os.stat(comps[-1], dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            finally:
                os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                return st
            return None
        return None

    # -- entries --

    def apply(self, entry: Entry, data: _TarStream, reader: _TarReader) -> None:
        try:
            self._apply(entry, data, reader)
        finally:
            if self._retired:
                self.release()

    def _apply(self, entry: Entry, data: _TarStream, reader: _TarReader) -> None:
        try:
            comps = clean_name(entry.name)
        except InvalidArgumentError as e:
            raise self.fail(entry, str(e)) from None
        if not comps:
            if entry.type != DIRTYPE:
                raise self.fail(entry, "only a directory may name the root")
            fd = os.dup(self.root_fd)
            try:
                self._owner_mode_xattrs(fd, entry)
            finally:
                os.close(fd)
            self._dir_time((), entry)
            return
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(entry, comps)
            return
        dirfd, parent = self.walk(comps[:-1], entry, create=True)
        self.note(dirfd, parent)
        rel = (*parent, base)
        if self.mode is WhiteoutMode.DELETE:
            self.written.add(b"/".join(rel))
        typ = entry.type
        if typ in (REGTYPE, AREGTYPE, CONTTYPE):
            self._regular(dirfd, base, entry, data, reader)
            return
        if typ == DIRTYPE:
            self._directory(dirfd, base, entry, comps, rel)
        elif typ == SYMTYPE:
            self._symlink(dirfd, base, entry)
        elif typ == LNKTYPE:
            self._hardlink(dirfd, base, entry)
        elif typ in (CHRTYPE, BLKTYPE, FIFOTYPE):
            self._node(dirfd, base, entry)
        else:
            raise self.fail(entry, f"unsupported tar entry type {typ!r}", UnsupportedError)
        if entry.size:
            if data.skip(entry.size) < entry.size:
                raise self.fail(entry, "unexpected end of archive")
            reader.skip_padding(entry.size)

    def _existing(self, dirfd: int, base: bytes) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, dirfd: int, base: bytes, st: os.stat_result | None) -> None:
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.forget_dirs()
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=dirfd)
        else:
            os.unlink(base, dir_fd=dirfd)

    def _directory(self, dirfd: int, base: bytes, entry: Entry, comps: list[bytes], rel: tuple[bytes, ...]) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=dirfd)
        except FileExistsError:
            st = self._existing(dirfd, base)
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._remove(dirfd, base, st)
                os.mkdir(base, 0o700, dir_fd=dirfd)
        fd = os.open(base, _O_DIR, dir_fd=dirfd)
        self._remember(tuple(comps), fd, rel)  # the entries that follow are likely inside it
        self._owner_mode_xattrs(fd, entry)
        self._dir_time(rel, entry)

    def _dir_time(self, rel: tuple[bytes, ...], entry: Entry) -> None:
        self.dir_times[rel] = (entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns, entry.mtime_ns)

    def _owner_mode_xattrs(self, fd: int, entry: Entry) -> None:
        if _IS_ROOT:
            os.chown(fd, entry.uid, entry.gid)
        os.chmod(fd, entry.mode)  # after chown, which clears setuid bits
        for key, value in entry.xattrs:
            self._setxattr(fd, key, value, entry)

    def _setxattr(self, target: int | bytes, key: str, value: bytes, entry: Entry, *, follow: bool = True) -> None:
        try:
            os.setxattr(target, key, value, follow_symlinks=follow)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EPERM):
                if not self._xattr_warned:
                    log.warning("layer %s: entry %r: xattr %s not kept: %s", self.layer, entry.shown, key, e.strerror)
                    self._xattr_warned = True
                return
            raise self.fail(entry, f"xattr {key}: {e.strerror}") from e

    def _regular(self, dirfd: int, base: bytes, entry: Entry, data: _TarStream, reader: _TarReader) -> None:
        try:
            fd = os.open(base, _O_NEW, 0o600, dir_fd=dirfd)
        except FileExistsError:
            self._remove(dirfd, base, self._existing(dirfd, base))
            fd = os.open(base, _O_NEW, 0o600, dir_fd=dirfd)
        try:
            if entry.size and data.copy_to(fd, entry.size) < entry.size:
                raise self.fail(entry, f"unexpected end of archive (declared size {entry.size})")
            self._owner_mode_xattrs(fd, entry)
            os.utime(fd, ns=(entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        reader.skip_padding(entry.size)

    def _symlink(self, dirfd: int, base: bytes, entry: Entry) -> None:
        if not entry.linkname:
            raise self.fail(entry, "symlink with an empty target")
        try:
            os.symlink(entry.linkname, base, dir_fd=dirfd)
        except FileExistsError:
            self._remove(dirfd, base, self._existing(dirfd, base))
            os.symlink(entry.linkname, base, dir_fd=dirfd)
        if _IS_ROOT:
            os.chown(base, entry.uid, entry.gid, dir_fd=dirfd, follow_symlinks=False)
        for key, value in entry.xattrs:
            self._setxattr(_proc(dirfd, base), key, value, entry, follow=False)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dirfd, follow_symlinks=False)

    def _hardlink(self, dirfd: int, base: bytes, entry: Entry) -> None:
        try:
            target = clean_name(entry.linkname)
        except InvalidArgumentError:
            raise self.fail(entry, f"hardlink target {os.fsdecode(entry.linkname)!r} is outside the root") from None
        if not target:
            raise self.fail(entry, "hardlink to the root directory")
        try:
            tfd, _ = self.walk(target[:-1], entry, create=False)
        except NotFoundError:
            raise self.fail(entry, f"hardlink target {os.fsdecode(entry.linkname)!r} does not exist in the layer", NotFoundError) from None
        tst = self._existing(tfd, target[-1])
        if tst is None:
            raise self.fail(entry, f"hardlink target {os.fsdecode(entry.linkname)!r} does not exist in the layer", NotFoundError)
        if stat.S_ISDIR(tst.st_mode):
            raise self.fail(entry, f"hardlink target {os.fsdecode(entry.linkname)!r} is a directory")
        st = self._existing(dirfd, base)
        if st is not None and (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
            return
        self._remove(dirfd, base, st)
        os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=dirfd, follow_symlinks=False)

    def _node(self, dirfd: int, base: bytes, entry: Entry) -> None:
        self._remove(dirfd, base, self._existing(dirfd, base))
        kind = {CHRTYPE: stat.S_IFCHR, BLKTYPE: stat.S_IFBLK, FIFOTYPE: stat.S_IFIFO}[entry.type]
        try:
            if entry.type == FIFOTYPE:
                os.mkfifo(base, 0o600, dir_fd=dirfd)
            else:
                os.mknod(base, kind | 0o600, os.makedev(entry.devmajor, entry.devminor), dir_fd=dirfd)
        except PermissionError as e:
            raise self.fail(entry, f"cannot create device node: {e.strerror}", FailedPreconditionError) from e
        fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
                raise self.fail(entry, "node changed while it was made")
            path = _proc(fd)
            if _IS_ROOT:
                os.chown(path, entry.uid, entry.gid)
            os.chmod(path, entry.mode)
            for key, value in entry.xattrs:
                self._setxattr(path, key, value, entry)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    # -- whiteouts --

    def _whiteout(self, entry: Entry, comps: list[bytes]) -> None:
        base = comps[-1]
        if base.startswith(WHITEOUT_META_PREFIX) and base != WHITEOUT_OPAQUE:
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        victim = base[len(WHITEOUT_PREFIX):]
        if base != WHITEOUT_OPAQUE and victim in (b"", b".", b".."):
            raise self.fail(entry, "whiteout of an invalid name")
        overlay = self.mode is WhiteoutMode.OVERLAY
        try:
            dirfd, parent = self.walk(comps[:-1], entry, create=overlay)
        except NotFoundError:
            return  # nothing below to delete
        self.note(dirfd, parent)
        if base == WHITEOUT_OPAQUE:
            if overlay:
                self._setxattr(dirfd, "trusted.overlay.opaque", b"y", entry)
            else:
                self._opaque(dirfd, b"/".join(parent))
            return
        self._remove(dirfd, victim, self._existing(dirfd, victim))
        if overlay:
            os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dirfd)

    def _opaque(self, dirfd: int, rel: bytes) -> None:
        """Delete what lower layers left in a directory, keeping what this layer wrote."""
        self.forget_dirs()
        for item in os.scandir(dirfd):
            name = os.fsencode(item.name)
            path = rel + b"/" + name if rel else name
            if path in self.written:
                if item.is_dir(follow_symlinks=False):
                    fd = os.open(name, _O_DIR, dir_fd=dirfd)
                    try:
                        self._opaque(fd, path)
                    finally:
                        os.close(fd)
                continue
            if item.is_dir(follow_symlinks=False):
                self.forget_dirs()
                shutil.rmtree(name, dir_fd=dirfd)
            else:
                os.unlink(name, dir_fd=dirfd)

    def finish(self) -> None:
        """Set directory times last, now that nothing more is written into them.

        Directories the layer lists get the archive's times; directories it only changed get their
        times back (a whiteout does not make its parent directory look modified).  The directories
        are visited in path order, each opened once (``O_NOFOLLOW``) from its already open parent.
        """
        self.forget_dirs()
        self.release()
        times = {**self.touched, **self.dir_times}
        root = times.pop((), None)
        stack: list[tuple[tuple[bytes, ...], int | None]] = [((), self.root_fd)]  # (path, fd or None if unopenable)

        def pop() -> None:
            rel, fd = stack.pop()
            if fd is None:
                return
            try:
                if rel in times:
                    os.utime(fd, ns=times[rel])
            except OSError:
                pass  # as for a directory that could not be opened: its times are not worth failing the layer
            finally:
                os.close(fd)

        try:
            for rel in sorted(times):
                while stack[-1][0] != rel[: len(stack[-1][0])]:
                    pop()
                while len(stack[-1][0]) < len(rel):
                    path, fd = stack[-1]
                    c = rel[len(path)]
                    nfd = None
                    if fd is not None:
                        try:
                            nfd = os.open(c, _O_DIR, dir_fd=fd)
                        except OSError:
                            pass  # replaced or removed later in the layer
                    stack.append(((*path, c), nfd))
        finally:
            while len(stack) > 1:
                pop()
        if root is not None:
            try:
                os.utime(self.root_fd, ns=root)
            except OSError:
                pass


def apply_layer(
    root: str | os.PathLike[str],
    stream: BinaryIO,
    *,
    media_type: str = "",
    whiteouts: WhiteoutMode | str = WhiteoutMode.DELETE,
    parents: Sequence[str | os.PathLike[str]] = (),
    expected_diff_id: Digest | str | None = None,
    layer: str = "layer",
    threaded: bool = True,
) -> ApplyResult:
    """Apply a (compressed or plain) tar layer from ``stream`` onto directory ``root``.

    :param media_type: the layer's media type; compression is also detected from the magic bytes.
    :param whiteouts: ``delete`` for a plain directory, ``overlay`` for an overlayfs upperdir.
    :param parents: the lower directories (nearest first) when ``root`` is an upperdir; directories
        the layer does not list are created with their metadata.
    :param expected_diff_id: the config's ``rootfs.diff_ids[i]``; a different digest is an error.
    :param layer: names the layer (its digest) in errors.
    :param threaded: decompress and hash in a helper thread while entries are written.
    :raises InvalidArgumentError: a malformed or hostile archive (the message names the entry).
    :raises UnsupportedError: an unsupported entry type or compression.
    :raises FailedPreconditionError: the diff ID differs from ``expected_diff_id``.
    """
    mode = WhiteoutMode(whiteouts)
    expected = Digest.parse(expected_diff_id) if expected_diff_id else None
    if expected is not None and expected.algorithm != "sha256":
        raise UnsupportedError(f"layer {layer}: diff ID {expected}: only sha256 diff IDs are supported")
    tar, compression = decompressed(stream, media_type)
    chunks = _Chunks(tar, threaded=threaded, what=f"layer {layer}: {compression.value} stream")
    try:
        applier = _Applier(Path(root), mode, [Path(p) for p in parents], layer)
    except BaseException:
        chunks.close()
        raise
    try:
        ts = _TarStream(chunks)
        reader = _TarReader(ts, layer)
        for entry in reader:
            try:
                applier.apply(entry, ts, reader)
            except HoistError:
                raise
            except (OSError, ValueError) as e:
                raise applier.fail(entry, getattr(e, "strerror", None) or str(e)) from e
        applier.finish()
        ts.drain()
    finally:
        chunks.close()
        applier.close()
    diff_id = Digest("sha256", chunks.hasher.hexdigest())
    if expected is not None and diff_id != expected:
        raise FailedPreconditionError(f"layer {layer}: diff ID mismatch: expected {expected}, got {diff_id}")
    return ApplyResult(diff_id=diff_id, size=chunks.size, compression=compression)


def apply_to_mounts(mounts: Sequence[object], stream: BinaryIO, **kwargs: object) -> ApplyResult:
    """Apply a layer onto the snapshot that ``mounts`` describe.

    One overlay mount is applied straight into its upperdir with overlay whiteouts (lowers consulted
    for missing directories); one bind mount straight into its source; anything else is mounted on a
    temporary directory first.
    """
    from hoist.snapshots import Mount, mounted

    ms = [m for m in mounts if isinstance(m, Mount)]
    if len(ms) == 1 and ms[0].type == "overlay" and ms[0].option("upperdir"):
        upper = ms[0].option("upperdir") or ""
        lowers = (ms[0].option("lowerdir") or "").split(":")
        return apply_layer(upper, stream, whiteouts=WhiteoutMode.OVERLAY, parents=[p for p in lowers if p], **kwargs)  # type: ignore[arg-type]
    if len(ms) == 1 and ms[0].type == "bind" and not ms[0].read_only:
        return apply_layer(ms[0].source, stream, **kwargs)  # type: ignore[arg-type]
    with mounted(ms) as target:
        return apply_layer(target, stream, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "Compression",
    "WhiteoutMode",
    "ApplyResult",
    "Entry",
    "apply_layer",
    "apply_to_mounts",
    "clean_name",
    "compression_of_media_type",
    "decompressed",
    "detect_compression",
    "iter_entries",
]
