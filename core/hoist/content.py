"""Content: digests, descriptors and the content-store interfaces (Provider, Ingester, Writer, ...).

Pure types and helpers only; stores are plugins (``hoist.content.v1``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO, Protocol, runtime_checkable

import attrs

from hoist.errors import InvalidArgumentError

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
    """An open, exclusively locked ingest."""

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


def iter_reader(reader: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield ``reader``'s bytes in chunks of ``chunk``."""
    while True:
        b = reader.read(chunk)
        if not b:
            return
        yield b
