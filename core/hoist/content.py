"""Content: digests, descriptors and the content-store interfaces (Provider, Ingester, Writer, ...).

Pure types and helpers only; stores are plugins (``hoist.content.v1``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO, Protocol, runtime_checkable

import attrs

from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    UnavailableError,
)

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@attrs.frozen(order=True)
class Digest:
    """A validated content digest, ``<algorithm>:<lower-case hex>`` (sha256 or sha512).

    Construct with :meth:`parse`; anything else than a well-formed digest is
    :class:`~hoist.errors.InvalidArgumentError` before it can reach a path or a URL.
    """

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str | Digest) -> Digest:
        """Validate ``value`` and return it as a :class:`Digest`.

        :raises InvalidArgumentError: unknown algorithm, wrong length, non lower-case hex, stray characters.
        """
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str):
            raise InvalidArgumentError(f"invalid digest {value!r}: not a string")
        alg, sep, hx = value.partition(":")
        shown = value if len(value) <= 80 else value[:77] + "..."
        if not sep:
            raise InvalidArgumentError(f"invalid digest {shown!r}: expected <algorithm>:<hex>")
        if alg not in _ALGORITHMS:
            raise InvalidArgumentError(f"invalid digest {shown!r}: unsupported algorithm {alg!r} (sha256, sha512)")
        if not _HEX.fullmatch(hx):
            raise InvalidArgumentError(f"invalid digest {shown!r}: hex part must be lower-case hexadecimal")
        if len(hx) != _ALGORITHMS[alg]:
            raise InvalidArgumentError(
                f"invalid digest {shown!r}: {alg} needs {_ALGORITHMS[alg]} hex characters, got {len(hx)}"
            )
        return cls(alg, hx)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """Digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def short(self) -> str:
        """``sha256:0123456789ab`` — for logs and progress rows."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def _digest(value: str | Digest) -> Digest:
    return Digest.parse(value)


def _optional_digest(value: str | Digest | None) -> Digest | None:
    return None if value is None or value == "" else Digest.parse(value)


@attrs.frozen(kw_only=True)
class Platform:
    """An OCI platform: os, architecture, optional variant and os details."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict:
        d: dict = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        return d

    @classmethod
    def from_json(cls, obj: Mapping) -> Platform:
        return cls(
            os=obj.get("os", ""),
            architecture=obj.get("architecture", ""),
            variant=obj.get("variant", "") or "",
            os_version=obj.get("os.version", "") or "",
            os_features=obj.get("os.features", ()) or (),
        )


def _annotations(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Descriptor:
    """An OCI content descriptor: what an object is, its digest and exact size."""

    media_type: str
    digest: Digest = attrs.field(converter=_digest)
    size: int = attrs.field()
    urls: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_annotations, hash=False)
    platform: Platform | None = None

    @size.validator
    def _check_size(self, _attr: attrs.Attribute, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(f"descriptor {self.digest}: invalid size {value!r}")

    def to_json(self) -> dict:
        """The descriptor as OCI JSON (``mediaType``, ``digest``, ``size``, ...)."""
        d: dict = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        return d

    @classmethod
    def from_json(cls, obj: Mapping) -> Descriptor:
        """Parse an OCI JSON descriptor.

        :raises InvalidArgumentError: a missing or malformed digest, media type or size.
        """
        if not isinstance(obj, Mapping):
            raise InvalidArgumentError(f"invalid descriptor: expected an object, got {type(obj).__name__}")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgumentError(f"invalid descriptor {obj.get('digest')!r}: size {size!r}")
        mt = obj.get("mediaType", "")
        if not isinstance(mt, str):
            raise InvalidArgumentError(f"invalid descriptor {obj.get('digest')!r}: mediaType {mt!r}")
        platform = obj.get("platform")
        return cls(
            media_type=mt,
            digest=Digest.parse(obj.get("digest", "")),
            size=size,
            urls=obj.get("urls") or (),
            annotations=obj.get("annotations") or {},
            platform=Platform.from_json(platform) if isinstance(platform, Mapping) else None,
        )


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@attrs.frozen(kw_only=True)
class Info:
    """A committed blob: digest, size, timestamps and labels."""

    digest: Digest = attrs.field(converter=_digest)
    size: int
    created_at: _dt.datetime = attrs.field(factory=_now)
    updated_at: _dt.datetime = attrs.field(factory=_now)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_annotations, hash=False)


@attrs.frozen(kw_only=True)
class Status:
    """An ingest in progress: its ref, how far it got and what it expects."""

    ref: str
    offset: int
    total: int = 0
    expected: Digest | None = attrs.field(default=None, converter=_optional_digest)
    started_at: _dt.datetime = attrs.field(factory=_now)
    updated_at: _dt.datetime = attrs.field(factory=_now)


@runtime_checkable
class ReaderAt(Protocol):
    """Random-access reader of one committed blob."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; fewer only at the end of the blob."""

    def close(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """Gives read access to committed blobs."""

    def reader_at(self, desc: Descriptor) -> ReaderAt:
        """Open the blob ``desc.digest``.

        :raises NotFoundError: the blob is not in the store.
        """


@runtime_checkable
class Writer(Protocol):
    """An open, exclusively locked ingest.

    A writer may also offer ``write_from(readinto, limit) -> int``: append up to ``limit`` bytes that
    ``readinto(view)`` puts straight into the writer's own buffer, returning how many (0 once the source
    has ended).  :func:`write_blob` uses it where present, so a store that writes from buffers of its own
    gets the source's bytes without a copy in between.
    """

    def write(self, data: bytes | memoryview) -> int: ...

    def digest(self) -> Digest:
        """Digest of everything written so far."""

    def status(self) -> Status: ...

    def truncate(self, size: int) -> None:
        """Discard written data; only ``0`` is supported."""

    def commit(self, size: int, expected: Digest | str | None, labels: Mapping[str, str] | None = None) -> None:
        """Verify and publish the blob atomically, then release the ref.

        :raises FailedPreconditionError: size or digest disagree with what was written.
        :raises AlreadyExistsError: the blob is already committed.
        """

    def close(self) -> None:
        """Release the lock, keeping the ingest for a later resume."""


@runtime_checkable
class Ingester(Protocol):
    """Starts or resumes ingests."""

    def writer(self, ref: str, total: int | None = None, expected: Digest | str | None = None) -> Writer:
        """Open the ingest ``ref``, resuming it at its current offset.

        :raises UnavailableError: another writer holds ``ref``.
        :raises AlreadyExistsError: ``expected`` is already committed.
        """


WalkFunc = Callable[[Info], None]


@runtime_checkable
class Manager(Protocol):
    """Metadata operations on committed blobs."""

    def info(self, digest: Digest | str) -> Info: ...

    def update(self, info: Info, fieldpaths: tuple[str, ...] = ()) -> Info:
        """Replace labels (all, or only ``labels.<key>`` paths listed)."""

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        """Call ``fn`` for each blob matching any of ``filters`` (containerd filter syntax)."""

    def delete(self, digest: Digest | str) -> None: ...


@runtime_checkable
class IngestManager(Protocol):
    """Operations on ingests in progress."""

    def status(self, ref: str) -> Status: ...

    def list_statuses(self, *filters: str) -> list[Status]: ...

    def abort(self, ref: str) -> None: ...


@runtime_checkable
class Store(Provider, Ingester, Manager, IngestManager, Protocol):
    """A complete content store, as a ``hoist.content.v1`` plugin provides."""


def updated_labels(digest: Digest, current: Mapping[str, str], given: Mapping[str, str],
                   fieldpaths: tuple[str, ...]) -> dict[str, str]:
    """The labels a label update leaves: ``given`` whole (no paths, or ``labels``), else ``current`` with
    each ``labels.<key>`` path set from ``given`` — removed when missing there or empty.

    :raises InvalidArgumentError: a field path other than ``labels`` or ``labels.<key>``.
    """
    for p in fieldpaths:
        if p != "labels" and not (p.startswith("labels.") and len(p) > len("labels.")):
            raise InvalidArgumentError(f"content {digest}: cannot update field {p!r} (only labels)")
    if not fieldpaths or "labels" in fieldpaths:
        return {k: v for k, v in given.items() if v != ""}
    labels = dict(current)
    for p in fieldpaths:
        key = p[len("labels."):]
        value = given.get(key, "")
        if value == "":
            labels.pop(key, None)
        else:
            labels[key] = value
    return labels


def copy_reader_at(provider: Provider, desc: Descriptor, write: Callable[[bytes], object], *,
                   chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> None:
    """Pass the ``desc.size`` bytes of blob ``desc`` from ``provider`` to ``write``, ``chunk`` at a time.

    ``progress`` gets the running byte count after each chunk.

    :raises FailedPreconditionError: the blob ends before ``desc.size`` bytes.
    """
    ra = provider.reader_at(desc)
    try:
        offset = 0
        while offset < desc.size:
            data = ra.read_at(offset, min(chunk, desc.size - offset))
            if not data:
                raise FailedPreconditionError(f"content {desc.digest}: short read at {offset} of {desc.size}")
            write(data)
            offset += len(data)
            if progress is not None:
                progress(offset)
    finally:
        ra.close()


def iter_reader(reader: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield ``reader``'s bytes in chunks of ``chunk``."""
    while True:
        b = reader.read(chunk)
        if not b:
            return
        yield b


# -- filters ------------------------------------------------------------------------------------


def info_fields(info: Info) -> Callable[[tuple[str, ...]], tuple[str, bool]]:
    """Filter adaptor for an :class:`Info`: ``digest``, ``size``, ``labels.<key>``."""
    from hoist.filters import map_field

    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "digest" and len(path) == 1:
            return str(info.digest), True
        if path[0] == "size" and len(path) == 1:
            return str(info.size), True
        if path[0] == "labels":
            return map_field(path[1:], dict(info.labels))
        return "", False

    return field


def status_fields(status: Status) -> Callable[[tuple[str, ...]], tuple[str, bool]]:
    """Filter adaptor for a :class:`Status`: ``ref``, ``expected``, ``total``."""

    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("ref",):
            return status.ref, True
        if path == ("expected",):
            return (str(status.expected), True) if status.expected else ("", False)
        if path == ("total",):
            return str(status.total), True
        return "", False

    return field


# -- helpers ------------------------------------------------------------------------------------

CHUNK_SIZE = 1 << 20
"""Bytes moved per read/write/hash call on blob data."""

DEFAULT_MAX_READ = 16 << 20
"""Default cap of :func:`read_blob`: more than any sane manifest, index or config."""

Source = BinaryIO | Callable[[int], BinaryIO]
"""What :func:`write_blob` copies from: a stream positioned at the blob's first byte, or an opener
``open_at(offset)`` returning a stream of the blob from ``offset`` (e.g. an HTTP range request)."""


def _seekable(reader: object) -> bool:
    try:
        return bool(reader.seekable())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _open_writer(ingester: Ingester, ref: str, total: int | None, expected: Digest | None, lock_timeout: float) -> Writer:
    import time

    deadline = time.monotonic() + lock_timeout
    delay = 0.002
    while True:
        try:
            return ingester.writer(ref, total=total, expected=expected)
        except UnavailableError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def write_from_buffer(write: Callable[[memoryview], int], readinto: Callable[[memoryview], int | None],
                      buf: bytearray, limit: int) -> int:
    """``write_from`` for a writer without a buffer of its own: ``readinto`` fills ``buf`` (at most
    ``limit`` bytes of it), then ``write`` takes what came.  Returns the bytes written; 0 once the source
    has ended.
    """
    with memoryview(buf) as whole:
        n = readinto(whole[:limit]) or 0
        return write(whole[:n]) if n else 0


def _copy(writer: Writer, src: BinaryIO, offset: int, progress: Callable[[int], None] | None, size: int | None,
          read_ahead: bool = True) -> int:
    readinto = getattr(src, "readinto", None)
    if readinto is None:
        return _copy_simple(writer, src, offset, progress)
    if not read_ahead or (size is not None and size - offset < _PREFETCH_MIN):
        write_from = getattr(writer, "write_from", None)
        if write_from is not None:  # the source fills the writer's buffer: no copy in between
            while n := write_from(readinto, CHUNK_SIZE):
                offset += n
                if progress is not None:
                    progress(offset)
            return offset
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        while n := readinto(view):
            writer.write(view[:n])
            offset += n
            if progress is not None:
                progress(offset)
        return offset
    return _copy_prefetch(writer, readinto, offset, progress)


def _copy_simple(writer: Writer, src: BinaryIO, offset: int, progress: Callable[[int], None] | None) -> int:
    while b := src.read(CHUNK_SIZE):
        writer.write(b)
        offset += len(b)
        if progress is not None:
            progress(offset)
    return offset


_PREFETCH_MIN = 4 * CHUNK_SIZE
_PREFETCH_BUFFERS = 4


def _copy_prefetch(
    writer: Writer, readinto: Callable[[memoryview], int | None], offset: int, progress: Callable[[int], None] | None
) -> int:
    """Read ahead in a thread while this one writes and hashes: source I/O overlaps the hashing."""
    import queue
    import threading

    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(_PREFETCH_BUFFERS):
        free.put(bytearray(CHUNK_SIZE))
    filled: queue.Queue[tuple[bytearray, int] | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            while True:
                buf = free.get()
                if stop.is_set():
                    return
                n = readinto(memoryview(buf))
                if not n:
                    filled.put(None)
                    return
                filled.put((buf, n))
        except BaseException as e:  # noqa: BLE001 - handed to the writing thread, which raises it
            filled.put(e)

    t = threading.Thread(target=read, name="hoist-write-blob-read", daemon=True)
    t.start()
    try:
        while True:
            item = filled.get()
            if item is None:
                return offset
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            writer.write(memoryview(buf)[:n])
            free.put(buf)
            offset += n
            if progress is not None:
                progress(offset)
    finally:
        stop.set()
        free.put(bytearray(0))
        t.join()


def write_blob(
    ingester: Ingester,
    ref: str,
    reader: Source,
    size: int | None,
    expected: Digest | str | None,
    labels: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    lock_timeout: float = 60.0,
    read_ahead: bool = True,
) -> None:
    """Copy ``reader`` into the store under ingest ``ref`` and commit it, verifying ``size`` and ``expected``.

    A blob that is already committed is success (the source is not read). An ingest left by an earlier
    attempt is resumed: the source is seeked to the ingest's offset (or re-opened there when
    ``reader`` is an opener); a source that can do neither is copied again from the start. If a resumed
    ingest then fails verification and the source can restart, it is rewritten once from scratch.
    While another writer holds ``ref``, waits up to ``lock_timeout`` seconds for it.

    :param size: expected size, or ``None`` when unknown.
    :param expected: expected digest, or ``None`` when unknown.
    :param progress: called with the ingest's offset after each chunk.
    :param read_ahead: read large sources in a second thread while this one hashes and writes (worth it
        for a lone transfer; when several run at once they already overlap, and the extra threads only
        contend for the interpreter lock).
    :raises FailedPreconditionError: the data does not match ``size``/``expected``, or the source ended early.
    :raises OutOfRangeError: the source is longer than ``size``.
    :raises UnavailableError: ``ref`` stayed locked for ``lock_timeout``.
    """
    want = Digest.parse(expected) if expected is not None else None
    if size is not None and (not isinstance(size, int) or size < 0):
        raise InvalidArgumentError(f"ref {ref!r}: invalid size {size!r}")
    restartable = callable(reader) or _seekable(reader)
    base = reader.tell() if not callable(reader) and _seekable(reader) else 0
    fresh = False
    while True:
        try:
            w = _open_writer(ingester, ref, size or None, want, lock_timeout)
        except AlreadyExistsError:
            return
        try:
            offset = w.status().offset
            if fresh and offset:
                w.truncate(0)
                offset = 0
            if size is not None and offset > size:
                w.truncate(0)
                offset = 0
            if callable(reader):
                src = reader(offset)
            elif restartable:
                reader.seek(base + offset)
                src = reader
            else:
                if offset:
                    w.truncate(0)
                    offset = 0
                src = reader
            resumed = offset > 0
            if progress is not None:
                progress(offset)
            try:
                offset = _copy(w, src, offset, progress, size, read_ahead)
            finally:
                if callable(reader):
                    close = getattr(src, "close", None)
                    if close is not None:
                        close()
            if size is not None and offset < size:
                raise FailedPreconditionError(
                    f"ref {ref!r}: unexpected end of data: expected {size} bytes, got {offset}"
                )
            try:
                w.commit(size or 0, want, labels)
            except AlreadyExistsError:
                return
            except FailedPreconditionError:
                if resumed and restartable and not fresh:
                    fresh = True
                    continue
                raise
            return
        finally:
            w.close()


def read_blob(provider: Provider, desc: Descriptor, max_size: int = DEFAULT_MAX_READ) -> bytes:
    """The whole blob ``desc`` as bytes, refusing blobs larger than ``max_size``.

    :raises OutOfRangeError: the blob (or the descriptor's size) exceeds ``max_size``.
    :raises FailedPreconditionError: the stored blob's size disagrees with a non-zero ``desc.size``.
    :raises NotFoundError: the blob is not in the store.
    """
    if desc.size > max_size:
        raise OutOfRangeError(f"content {desc.digest}: size {desc.size} exceeds the limit of {max_size} bytes")
    ra = provider.reader_at(desc)
    try:
        size = ra.size
        if size > max_size:
            raise OutOfRangeError(f"content {desc.digest}: size {size} exceeds the limit of {max_size} bytes")
        if desc.size and size != desc.size:
            raise FailedPreconditionError(
                f"content {desc.digest}: size mismatch: descriptor says {desc.size}, store has {size}"
            )
        parts: list[bytes] = []
        offset = 0
        while offset < size:
            b = ra.read_at(offset, min(size - offset, 8 << 20))
            if not b:
                raise FailedPreconditionError(f"content {desc.digest}: short read at {offset} of {size} bytes")
            parts.append(b)
            offset += len(b)
        return b"".join(parts)
    finally:
        ra.close()


class ReaderAtFile(io.RawIOBase):
    """A read-only, seekable file object over any :class:`ReaderAt` (feeds decompressors, tarfile, ...).

    Closing it closes the underlying reader.  Stores whose readers are file objects themselves subclass it
    and override ``size``, ``read_at`` (and ``readinto``/``close`` where they can do better).
    """

    def __init__(self, ra: ReaderAt | None) -> None:
        super().__init__()
        self._ra = ra
        self._pos = 0

    def _prefix(self) -> str:
        """What error messages start with (``content <digest>: `` where the reader knows its blob)."""
        return ""

    def _check(self) -> None:
        if self.closed:
            raise ValueError(f"{self._prefix()}reader is closed")

    @property
    def size(self) -> int:
        assert self._ra is not None
        return self._ra.size

    def read_at(self, offset: int, n: int) -> bytes:
        assert self._ra is not None
        return self._ra.read_at(offset, n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise InvalidArgumentError(f"invalid whence {whence}")
        if base + offset < 0:
            raise InvalidArgumentError(f"{self._prefix()}negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        self._check()
        remaining = self.size - self._pos
        if remaining <= 0:
            return b""
        if n is None or n < 0 or n > remaining:
            n = remaining
        b = self.read_at(self._pos, n)
        self._pos += len(b)
        return b

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        b = self.read(len(buf))
        buf[: len(b)] = b
        return len(b)

    def close(self) -> None:
        if not self.closed and self._ra is not None:
            self._ra.close()
        super().close()


def as_file(ra: ReaderAt) -> BinaryIO:
    """``ra`` itself when it already is a seekable file object, else a :class:`ReaderAtFile` over it."""
    if all(hasattr(ra, a) for a in ("read", "seek", "tell", "readinto")):
        return ra  # type: ignore[return-value]
    return ReaderAtFile(ra)  # type: ignore[return-value]
