"""Resilient HTTP for registries: retry policy, backoff and ``Retry-After``, error bodies, resumable blob bodies.

Retries cover connection errors, cut-off responses, 408, 429 and 5xx (not 501/505), never 401/403/404
or a registry's ``*_UNKNOWN`` codes.  A blob body cut off mid-way continues with ``Range: bytes=N-``.
Whatever the network stack raises (httpx, httpcore, TLS, sockets) leaves this package as a Hoist error
naming the object and the endpoint: :func:`network_error`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from hoist.errors import (
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from hoist.remotes import UnauthorizedError

log = logging.getLogger("hoist.resolver.v1.docker")

#: Largest token or error body read.
MAX_SMALL_BODY = 1 << 20

#: Bytes per ``read()`` of a body read into a buffer.
SOCKET_READ_SIZE = 1 << 20

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524, 529})
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ssl.SSLError, OSError,
)


def _httpcore(*names: str) -> tuple[type[BaseException], ...]:
    """httpcore's exception types ``names``, when something in this process loaded httpcore (only then
    can they occur: Hoist's own transport does not use it); else none.
    """
    core = sys.modules.get("httpcore")
    return tuple(getattr(core, n) for n in names) if core is not None else ()


def network_errors() -> tuple[type[BaseException], ...]:
    """What the network stack can raise past httpx: its own errors, TLS and socket errors, and httpcore's
    (a transport built on httpcore can let them through).  For ``except network_errors() as e:``.
    """
    return _NETWORK_ERRORS + _httpcore("ConnectionNotAvailable", "ProtocolError", "NetworkError",
                                       "TimeoutException", "UnsupportedProtocol", "ProxyError")


#: A request body: bytes, or a factory of a fresh iterable of chunks (so a retry can send it again).
Body = bytes | Callable[[], Iterable[bytes]]

_FINAL_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "UNAUTHORIZED", "DENIED",
                          "NAME_INVALID", "DIGEST_INVALID", "TAG_INVALID", "MANIFEST_INVALID", "UNSUPPORTED"})


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how long to retry.

    :param attempts: tries per request (first included).
    :param backoff: first backoff in seconds; doubles each retry, with jitter.
    :param max_backoff: cap of one backoff.
    :param max_retry_after: cap on a server's ``Retry-After``.
    :param resume_attempts: consecutive resumes of a body without new bytes before giving up.
    """

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    resume_attempts: int = 3

    def delay(self, retry: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), honouring ``Retry-After``."""
        if response is not None:
            after = parse_retry_after(response.headers.get("retry-after"))
            if after is not None:
                return min(after, self.max_retry_after)
        base = min(self.max_backoff, self.backoff * (2 ** (retry - 1)))
        return base * (0.5 + random.random() / 2)


def sleep(seconds: float) -> None:
    """Wait before a retry (one place, so tests can record the delays instead of waiting)."""
    time.sleep(seconds)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date); ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retryable_status(code: int) -> bool:
    """408, 429 and transient 5xx."""
    return code in _RETRY_STATUS


def is_tls_verify_error(exc: BaseException) -> bool:
    """Whether a transport error came from certificate verification (never retried)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return True
        e = e.__cause__ or e.__context__
    return False


def retryable_error(exc: BaseException) -> bool:
    """Connection problems worth retrying (not TLS failures, not malformed requests or URLs)."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL,
                        httpx.DecodingError, httpx.TooManyRedirects, httpx.StreamError,
                        *_httpcore("UnsupportedProtocol", "LocalProtocolError"))):
        return False
    if isinstance(exc, (httpx.TransportError, OSError, *_httpcore("ConnectionNotAvailable", "ProtocolError",
                                                                  "NetworkError", "TimeoutException"))):
        return not is_tls_error(exc)
    return False


def network_error(exc: BaseException, what: str, where: str = "") -> HoistError:
    """The Hoist error for a failure below HTTP (one of :func:`network_errors`).

    :param what: names the object (``host/repo@digest``, ``token from …``).
    :param where: the endpoint (``https://host:port``); empty when ``what`` already names it.
    :returns: :class:`~hoist.errors.FailedPreconditionError` for a URL that cannot be used (a registry's
        ``Location``, a realm), :class:`~hoist.errors.UnavailableError` for everything else.
    """
    if isinstance(exc, HoistError):
        return exc
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, *_httpcore("UnsupportedProtocol"))):
        return FailedPreconditionError(f"{what}: {where + ': ' if where else ''}unusable URL: {_root_message(exc)}")
    if where:
        return UnavailableError(f"{what}: {describe_transport_error(exc, where)}")
    return UnavailableError(describe_transport_error(exc, what))


def endpoint(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of a URL, for messages."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else str(url)


def close_quietly(response: httpx.Response | None) -> None:
    """Close a response; a connection that fails while closing is only dropped."""
    if response is None:
        return
    try:
        response.close()
    except network_errors() as e:
        log.debug("%s: closing the response: %s", endpoint(response.request.url), e)


def describe_transport_error(exc: BaseException, url: str) -> str:
    """One line for a transport failure."""
    if is_tls_verify_error(exc):
        return (f"{url}: TLS certificate verification failed ({_root_message(exc)}); "
                "trust its CA with 'ca' in hosts.toml, or use --skip-verify")
    if isinstance(exc, httpx.TimeoutException):
        kind = {httpx.ConnectTimeout: "connecting", httpx.ReadTimeout: "no data received",
                httpx.WriteTimeout: "sending", httpx.PoolTimeout: "waiting for a free connection"}
        return f"{url}: timed out {kind.get(type(exc), '')}".rstrip()
    return f"{url}: {_root_message(exc)}"


def _root_message(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    while not text and cause is not None:
        text = str(cause).strip()
        cause = cause.__cause__ or cause.__context__
    return re.sub(r"^\[Errno -?\d+\] ", "", text) or type(exc).__name__


def iter_body(response: httpx.Response) -> Any:
    """The raw body chunks of a streamed response (or of one whose body is already in memory)."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        return response.iter_raw()
    return iter([content] if content else [])


def read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    """Read a streamed response body, refusing more than ``limit`` bytes (closes the response either way).

    :raises FailedPreconditionError: the body is longer than ``limit``.
    :raises UnavailableError: the connection failed while the body was read.
    """
    out = bytearray()
    try:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise FailedPreconditionError(f"{what}: {declared}-byte body exceeds the {limit}-byte limit")
        for chunk in iter_body(response):
            out += chunk
            if len(out) > limit:
                raise FailedPreconditionError(f"{what}: body exceeds the {limit}-byte limit")
    except network_errors() as e:
        raise network_error(e, what, endpoint(response.request.url)) from e
    finally:
        close_quietly(response)
    return bytes(out)


def read_error_body(response: httpx.Response, what: str) -> bytes:
    """The (limited) body of an error response, for its message; ``b""`` when it cannot be read.

    Registries answer some errors with a ``Content-Length`` their body does not fill (distribution's
    416): the status alone must then tell what happened.
    """
    if response.request.method == "HEAD":
        close_quietly(response)
        return b""
    try:
        return read_limited(response, MAX_SMALL_BODY, what)
    except HoistError as e:
        log.debug("%s: HTTP %d body unreadable: %s", what, response.status_code, e)
        return b""


@attrs.frozen(kw_only=True)
class RegistryErrorInfo:
    """The ``errors`` array of a registry error body, summarised."""

    codes: tuple[str, ...] = ()
    message: str = ""


def parse_error_body(body: bytes) -> RegistryErrorInfo:
    """Codes and messages from ``{"errors": [{"code", "message", "detail"}]}`` (anything else: the text)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:200].decode("utf-8", "replace").strip()
        return RegistryErrorInfo(message=" ".join(text.split()))
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return RegistryErrorInfo(message=" ".join(str(doc)[:200].split()))
    codes, parts = [], []
    for e in errors[:8]:
        if not isinstance(e, dict):
            continue
        code = str(e.get("code", "")).upper()
        msg = str(e.get("message", "")).strip()
        codes.append(code)
        parts.append(f"{code}: {msg}" if code and msg else code or msg)
    return RegistryErrorInfo(codes=tuple(codes), message="; ".join(p for p in parts if p))


def error_for_status(response: httpx.Response, what: str, body: bytes = b"") -> HoistError:
    """The Hoist error for a failed registry response; ``what`` names the object."""
    info = parse_error_body(body) if body else RegistryErrorInfo()
    code = response.status_code
    detail = f" ({info.message})" if info.message else ""
    if code == 404:
        return NotFoundError(f"{what}: not found{detail}")
    if code in (401, 403):
        reason = "authentication required" if code == 401 else "access denied"
        return UnauthorizedError(f"{what}: {reason}{detail}")
    if code == 400:
        return InvalidArgumentError(f"{what}: registry rejected the request{detail}")
    if code in (405, 501):
        return UnsupportedError(f"{what}: registry does not support this request (HTTP {code}){detail}")
    if code >= 500 or code in (408, 429):
        return UnavailableError(f"{what}: registry unavailable (HTTP {code}){detail}")
    return FailedPreconditionError(f"{what}: unexpected HTTP {code}{detail}")


def final_error_codes(info: RegistryErrorInfo) -> bool:
    """Whether the body carries a code that retrying cannot fix."""
    return any(c in _FINAL_CODES for c in info.codes)


def parse_content_range(value: str | None) -> tuple[int, int | None, int | None] | None:
    """``(start, end, total)`` from ``bytes start-end/total`` (``total`` ``None`` for ``*``)."""
    if not value or not value.startswith("bytes "):
        return None
    spec = value[6:].strip()
    rng, _, total = spec.partition("/")
    start, _, end = rng.partition("-")
    if not start.isdigit() or not (end.isdigit() or end == ""):
        return None
    return int(start), int(end) if end else None, int(total) if total.isdigit() else None


OpenFunc = Callable[[int], httpx.Response]


class ResumingBody:
    """A raw stream over a blob response that resumes with ``Range`` when the connection drops.

    ``open_at(offset)`` issues the request (with ``Range: bytes=offset-`` when ``offset > 0``) and returns
    a streamed response: 200, 206 or 416.  A 206 must carry a ``Content-Range`` starting at ``offset``; a
    200 makes the reader discard the prefix it already delivered.  A 416, or a resumed 200 whose
    ``Content-Length`` differs from ``size``, means the object is not ``size`` bytes long.  Gives up
    after ``resume_attempts`` consecutive attempts that brought no new byte.  Seeking to ``size`` makes
    no request.  ``readinto`` fills the caller's buffer from the response's chunks with slice copies only.

    :param size: the expected length, or ``None`` when unknown (no resume then).
    :param where: the endpoint, for messages.
    """

    def __init__(self, open_at: OpenFunc, first: httpx.Response, *, size: int | None, name: str,
                 policy: RetryPolicy, offset: int = 0, where: str = "") -> None:
        self._open_at = open_at
        self._name = name
        self._where = where or endpoint(first.request.url)
        self._size = size
        self._policy = policy
        self._offset = offset
        self._skip = 0
        self._response: httpx.Response | None = None
        self._iter: Any = None
        self._chunk: bytes = b""
        self._pos = 0
        self._failures = 0
        self._progress_mark = offset
        self._closed = False
        # a body read straight into the caller's buffer with this, instead of as chunks
        self._direct: Callable[[memoryview], int] | None = None
        self._attach(first, offset)

    def _attach(self, response: httpx.Response, offset: int) -> None:
        self._chunk, self._pos, self._skip = b"", 0, 0
        code = response.status_code
        if code == 416:
            close_quietly(response)
            raise self._range_refused(response, offset)
        if code == 206:
            rng = parse_content_range(response.headers.get("content-range"))
            if rng is not None and rng[2] is not None and self._size is not None and rng[2] != self._size:
                close_quietly(response)
                raise self._size_mismatch(rng[2])
            if rng is None or rng[0] != offset:
                close_quietly(response)
                raise UnavailableError(
                    f"{self._name}: registry answered 'Range: bytes={offset}-' with Content-Range "
                    f"{response.headers.get('content-range')!r}"
                )
        elif offset > 0:
            # The whole object again, in answer to a resume: its length is now twice confirmed.
            declared = response.headers.get("content-length", "")
            if self._size is not None and declared.isdigit() and int(declared) != self._size:
                close_quietly(response)
                raise self._size_mismatch(int(declared))
            self._skip = offset
        self._response = response
        self._direct = None if self._skip else _direct_body(response)
        self._iter = iter_body(response) if self._direct is None else None

    def _size_mismatch(self, actual: int) -> FailedPreconditionError:
        if self._size is not None and actual > self._size:
            return FailedPreconditionError(
                f"content {self._name}: size mismatch: stream is longer than the expected {self._size} bytes "
                f"({self._where} has {actual})")
        return FailedPreconditionError(
            f"content {self._name}: size mismatch: {self._where} has {actual} bytes, expected {self._size}")

    def _range_refused(self, response: httpx.Response, offset: int) -> HoistError:
        rng = response.headers.get("content-range", "")
        total = rng.rpartition("/")[2].strip()
        if total.isdigit() and self._size is not None and int(total) != self._size:
            return self._size_mismatch(int(total))
        return FailedPreconditionError(
            f"content {self._name}: {self._where} refused 'Range: bytes={offset}-' (HTTP 416"
            f"{', Content-Range ' + repr(rng) if rng else ''}); expected {self._size} bytes")

    @property
    def offset(self) -> int:
        return self._offset

    def seekable(self) -> bool:
        return self._size is not None

    def seek(self, offset: int) -> int:
        """Continue from ``offset`` (reopens the request with ``Range``; at the end, no request)."""
        if offset == self._offset:
            return offset
        self._drop()
        self._offset = offset
        self._progress_mark = offset
        if self._size is not None and offset >= self._size:
            self._chunk, self._pos, self._iter = b"", 0, iter(())
            return offset
        self._attach(self._open_at(offset), offset)
        return offset

    def _drop(self) -> None:
        close_quietly(self._response)
        self._response = None
        self._iter = None
        self._direct = None

    def _next_chunk(self) -> bool:
        """Load the next chunk; False at the end of the object."""
        while True:
            if self._closed:
                raise ValueError(f"{self._name}: read from a closed stream")
            try:
                if self._iter is None:
                    raise httpx.ReadError("connection lost")
                chunk = next(self._iter)
            except StopIteration:
                if self._size is None or self._offset >= self._size:
                    return False
                cause: BaseException = httpx.RemoteProtocolError(
                    f"response ended at byte {self._offset} of {self._size}")
            except network_errors() as e:
                if self._size is not None and self._offset >= self._size:
                    return False
                if not retryable_error(e):
                    raise network_error(e, self._name, self._where) from e
                cause = e
            else:
                if self._skip:
                    if len(chunk) <= self._skip:
                        self._skip -= len(chunk)
                        continue
                    chunk = chunk[self._skip:]
                    self._skip = 0
                if not chunk:
                    continue
                self._chunk, self._pos = chunk, 0
                return True
            self._resume(cause)

    def _read_direct(self, view: memoryview) -> int:
        """Read the body into ``view``; 0 at the end of the object, -1 when the body is now read as chunks."""
        while True:
            if self._closed:
                raise ValueError(f"{self._name}: read from a closed stream")
            if self._direct is None:
                return -1  # resumed on a response that cannot be read so
            try:
                n = self._direct(view)  # 0 only at the end of the body; a body cut short raises
            except network_errors() as e:
                if not retryable_error(e):
                    raise network_error(e, self._name, self._where) from e
                cause: BaseException = e
            else:
                if n or self._size is None or self._offset >= self._size:
                    return n
                cause = httpx.RemoteProtocolError(f"response ended at byte {self._offset} of {self._size}")
            self._resume(cause)

    def _resume(self, cause: BaseException) -> None:
        self._drop()
        if self._size is None:
            raise network_error(cause, self._name, self._where) from cause
        if self._offset > self._progress_mark:
            self._failures = 0
        self._progress_mark = self._offset
        self._failures += 1
        if self._failures > self._policy.resume_attempts:
            reason = describe_transport_error(cause, self._where)
            raise UnavailableError(
                f"{self._name}: download stopped at byte {self._offset} of {self._size} after "
                f"{self._policy.resume_attempts} attempts without progress: {reason}"
            ) from cause
        if self._failures > 1:
            sleep(self._policy.delay(self._failures - 1))
        log.info("%s: resuming at byte %d of %d (%s)", self._name, self._offset, self._size,
                 describe_transport_error(cause, "").lstrip(": "))
        self._attach(self._open_at(self._offset), self._offset)

    def readinto(self, b: bytearray | memoryview) -> int:
        view = memoryview(b).cast("B")
        want = len(view)
        filled = 0
        while filled < want:
            if self._pos >= len(self._chunk):
                if self._direct is not None:
                    n = self._read_direct(view[filled:])
                    if n > 0:
                        filled += n
                        self._offset += n
                        continue
                    if n == 0:
                        break
                if not self._next_chunk():
                    break
                continue
            n = min(want - filled, len(self._chunk) - self._pos)
            view[filled:filled + n] = memoryview(self._chunk)[self._pos:self._pos + n]
            self._pos += n
            filled += n
            self._offset += n
        return filled

    def read(self, n: int = -1) -> bytes:
        if self._direct is not None:  # a direct body goes through readinto only
            if n is None or n < 0:
                return b"".join(iter(lambda: self.read(SOCKET_READ_SIZE), b""))
            buf = bytearray(n)
            return bytes(memoryview(buf)[:self.readinto(buf)])
        if n is None or n < 0:
            parts = []
            while self._pos < len(self._chunk) or self._next_chunk():
                parts.append(self._chunk[self._pos:] if self._pos else self._chunk)
                self._offset += len(self._chunk) - self._pos
                self._pos = len(self._chunk)
            return b"".join(parts)
        if self._pos >= len(self._chunk) and not self._next_chunk():
            return b""
        if self._pos == 0 and n >= len(self._chunk):
            data = self._chunk
        else:
            data = self._chunk[self._pos:self._pos + n]
        self._pos += len(data)
        self._offset += len(data)
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._drop()


def _direct_body(response: httpx.Response) -> Callable[[memoryview], int] | None:
    """``readinto`` of a body that can be read straight into a buffer, or ``None``.

    That is a body of a known length from :class:`~hoist_resolver_docker.http1.RegistryTransport` (whose
    stream reads the socket into the caller's buffer); anything else goes through ``iter_raw``.
    """
    stream = response.stream
    if not isinstance(getattr(stream, "length", None), int):
        return None
    return getattr(stream, "readinto", None)
