"""Remotes: the resolver, fetcher and pusher interfaces, and a verifying stream any resolver plugin can use.

``Resolver.resolve(ref)`` answers in one call what an image name points at and how to fetch it
and its children; ``Fetcher.fetch(desc)`` yields exactly ``desc.size`` bytes whose digest is
``desc.digest`` (or fails).  Resolvers are plugins of type ``hoist.resolver.v1``: each plugin
instance exposes ``claims(ref) -> bool`` and ``new_resolver(options) -> Resolver``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, InvalidArgumentError

#: Plugin type of resolvers.
RESOLVER_PLUGIN_TYPE = "hoist.resolver.v1"

#: Largest manifest, index or config a resolver accepts (distribution's own limit).
MAX_MANIFEST_SIZE = 4 << 20

#: Buffer size for streaming blob data.
CHUNK_SIZE = 1 << 20


class UnauthorizedError(FailedPreconditionError):
    """The registry refused the request's credentials (HTTP 401/403), or none were available."""


@attrs.frozen(kw_only=True)
class Credentials:
    """A username and secret (password or token) for one registry host.

    ``refresh_token`` is an OAuth2 refresh (identity) token; when set, Bearer tokens are obtained
    with an OAuth POST instead of Basic authentication to the token endpoint.
    """

    username: str = ""
    secret: str = attrs.field(default="", repr=False)
    refresh_token: str = attrs.field(default="", repr=False)


CredentialsFunc = Callable[[str], "Credentials | None"]


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value in (None, "") else Path(value)


@attrs.frozen(kw_only=True)
class ResolverOptions:
    """Per-use options for a resolver; ``None`` fields fall back to the plugin's configuration.

    :param plain_http: talk plain HTTP to the reference's registry (never to mirrors configured with https).
    :param skip_verify: do not verify TLS certificates.
    :param username: user for the reference's registry (``--user``); with ``secret``.
    :param secret: password or token for ``username``.
    :param credentials: ``host -> Credentials | None`` consulted before the Docker config file.
    :param hosts_dir: directory of per-registry ``hosts.toml`` files (containerd's ``config_path``).
    :param timeout: network timeout in seconds: connecting, and waiting for the next bytes.
    :param allow_foreign_urls: fetch foreign-layer ``urls`` (without credentials, verified).
    :param headers: extra request headers for every registry request.
    :param user_agent: the ``User-Agent`` header.
    :param max_concurrency: connections to size the pool for (parallel fetches or uploads).
    """

    plain_http: bool | None = None
    skip_verify: bool | None = None
    username: str = ""
    secret: str = attrs.field(default="", repr=False)
    credentials: CredentialsFunc | None = None
    hosts_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    timeout: float | None = attrs.field(default=None)
    allow_foreign_urls: bool | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    user_agent: str = ""
    max_concurrency: int | None = None

    @timeout.validator
    def _check_timeout(self, _a: attrs.Attribute, value: float | None) -> None:
        if value is not None and not value > 0:
            raise InvalidArgumentError(f"resolver timeout must be positive, got {value!r}")


class ReadStream(Protocol):
    """A readable binary stream; close it (or use it as a context manager) when done."""

    def read(self, n: int = -1) -> bytes: ...

    def readinto(self, b: bytearray | memoryview) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> ReadStream: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Fetcher(Protocol):
    """Fetches objects of one repository by descriptor."""

    def fetch(self, desc: Descriptor) -> ReadStream:
        """A stream of exactly ``desc.size`` bytes hashing to ``desc.digest``.

        The stream raises :class:`~hoist.errors.FailedPreconditionError` when the data turns out longer,
        shorter or different, before it hands out the bytes that would complete a wrong object.

        :raises NotFoundError: the registry does not have the object.
        :raises UnavailableError: the registry cannot be reached after retries.
        """


@runtime_checkable
class PushWriter(Protocol):
    """Uploads one object: ``write`` its bytes, then ``commit``; ``close`` without commit abandons it."""

    def write(self, data: bytes | memoryview) -> int: ...

    def commit(self, size: int, expected: Digest | str) -> None:
        """Finish the upload; the registry checks ``size`` and ``expected``.

        :raises FailedPreconditionError: the registry disagrees with the digest or size.
        """

    def close(self) -> None: ...


@runtime_checkable
class Pusher(Protocol):
    """Pushes objects to one repository by descriptor."""

    def push(self, desc: Descriptor) -> PushWriter:
        """A writer for ``desc``.

        :raises AlreadyExistsError: the registry already has the object (nothing to upload).
        """


@attrs.frozen(kw_only=True)
class Resolved:
    """What ``resolve`` found: the canonical ``name``, the object's ``descriptor``, a ``fetcher`` for it and its children."""

    name: str
    descriptor: Descriptor
    fetcher: Fetcher


@runtime_checkable
class Resolver(Protocol):
    """Turns references into descriptors and fetchers (and pushers)."""

    def resolve(self, ref: str) -> Resolved:
        """Resolve ``ref`` (with a tag or digest) to the object it names.

        :raises InvalidArgumentError: the reference is malformed (before any network traffic).
        :raises NotFoundError: the registry does not know it.
        """

    def fetcher(self, ref: str) -> Fetcher:
        """A fetcher for the repository of ``ref`` (its object is ignored)."""

    def pusher(self, ref: str) -> Pusher:
        """A pusher for the repository of ``ref``.

        :raises UnsupportedError: the resolver cannot push.
        """

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class ResolverPlugin(Protocol):
    """What a ``hoist.resolver.v1`` plugin's ``init`` returns."""

    def claims(self, ref: str) -> bool:
        """Whether this plugin handles ``ref`` (by its host or scheme)."""

    def new_resolver(self, options: ResolverOptions | None = None) -> Resolver:
        """A resolver using ``options`` over the plugin's configuration."""


class VerifyingReader(io.RawIOBase):
    """Wraps a raw stream of one object and checks it is exactly ``desc.size`` bytes of ``desc.digest``.

    ``raw`` needs ``readinto`` (or ``read``) and ``close``.  At most ``size + 1`` bytes are taken from it.
    The read that would complete the object first checks the end of ``raw`` and the digest, so a
    consumer never receives the last bytes of a wrong object.  ``seek(offset)`` before the first read
    is passed to ``raw`` (which must support it) to resume a partial download: the size is still
    checked, the digest is then left to whoever holds the prefix (the content store's commit).

    :param name: how errors name the object (defaults to its digest).
    """

    def __init__(self, raw: Any, desc: Descriptor, *, name: str = "") -> None:
        super().__init__()
        self._raw = raw
        self._desc = desc
        self._name = name or str(desc.digest)
        self._hasher: Any = desc.digest.hasher()
        self._offset = 0
        self._start = 0
        self._done = desc.size == 0
        self._probe = bytearray(1)
        self._verified = False
        self._error: BaseException | None = None
        if desc.size == 0:
            self._finish()

    @property
    def descriptor(self) -> Descriptor:
        return self._desc

    @property
    def offset(self) -> int:
        """Bytes of the object delivered so far (counting a seeked-over prefix)."""
        return self._offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        seekable = getattr(self._raw, "seekable", None)
        return bool(seekable and seekable())

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Resume at ``offset`` before anything was read (only ``SEEK_SET``; ``SEEK_CUR`` with 0 reports)."""
        if whence == io.SEEK_CUR and offset == 0:
            return self._offset
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks are supported")
        if offset == self._offset:
            return offset
        if self._offset != self._start or not 0 <= offset <= self._desc.size:
            raise io.UnsupportedOperation(f"{self._name}: cannot seek to {offset} after reading")
        self._raw.seek(offset)
        self._offset = self._start = offset
        self._hasher = None
        self._done = offset == self._desc.size
        if self._done:
            self._finish()
        return offset

    def _raw_readinto(self, view: memoryview) -> int:
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            return readinto(view) or 0
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("read from a closed stream")
        if self._error is not None:
            raise self._error
        if self._done:
            return 0
        try:
            return self._readinto(b)
        except Exception as e:
            self._error = e
            raise

    def _readinto(self, b: bytearray | memoryview) -> int:
        view = memoryview(b).cast("B")
        remaining = self._desc.size - self._offset
        want = min(len(view), remaining)
        if want == 0:
            return 0
        n = self._raw_readinto(view[:want])
        if n == 0:
            raise FailedPreconditionError(
                f"content {self._name}: size mismatch: stream ended at {self._offset} bytes, expected {self._desc.size}"
            )
        if self._hasher is not None:
            self._hasher.update(view[:n])
        self._offset += n
        if self._offset == self._desc.size:
            self._finish()
        return n

    def _finish(self) -> None:
        self._done = True
        extra = self._raw_readinto(memoryview(self._probe))
        if extra:
            raise FailedPreconditionError(
                f"content {self._name}: size mismatch: stream is longer than the expected {self._desc.size} bytes"
            )
        if self._hasher is not None:
            got = Digest(self._desc.digest.algorithm, self._hasher.hexdigest())
            if got != self._desc.digest:
                raise FailedPreconditionError(f"content {self._name}: digest mismatch: got {got}")
        self._verified = self._hasher is not None

    @property
    def verified(self) -> bool:
        """True once the whole object was read and its digest checked here."""
        return self._verified

    def defer_digest(self) -> None:
        """Leave the digest check to the consumer, which verifies what it stored (a content store's commit).

        Only the size is checked here from now on; hashing every byte twice would double the CPU cost of
        a download.  Call before the first read.
        """
        if self._offset != self._start:
            raise io.UnsupportedOperation(f"{self._name}: cannot defer the digest check after reading")
        self._hasher = None

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0:
            return self.readall()
        buf = bytearray(min(n, self._desc.size - self._offset))
        got = self.readinto(buf)
        del buf[got:]
        return bytes(buf)

    def readall(self) -> bytes:
        buf = bytearray(self._desc.size - self._offset)
        view = memoryview(buf)
        pos = 0
        while pos < len(buf):
            got = self.readinto(view[pos:])
            if got == 0:
                break
            pos += got
        return bytes(buf)

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


def read_all(stream: ReadStream, limit: int, *, name: str = "") -> bytes:
    """Read a whole (small) stream into memory, refusing more than ``limit`` bytes.

    :raises FailedPreconditionError: the stream exceeds ``limit``.
    """
    out = bytearray()
    chunk = bytearray(min(limit + 1, CHUNK_SIZE))
    view = memoryview(chunk)
    while True:
        n = stream.readinto(view)
        if not n:
            return bytes(out)
        out += view[:n]
        if len(out) > limit:
            raise FailedPreconditionError(f"{name or 'object'}: larger than the {limit}-byte limit")


__all__ = [
    "RESOLVER_PLUGIN_TYPE",
    "MAX_MANIFEST_SIZE",
    "CHUNK_SIZE",
    "UnauthorizedError",
    "Credentials",
    "CredentialsFunc",
    "ResolverOptions",
    "ReadStream",
    "Fetcher",
    "PushWriter",
    "Pusher",
    "Resolved",
    "Resolver",
    "ResolverPlugin",
    "VerifyingReader",
    "read_all",
]
