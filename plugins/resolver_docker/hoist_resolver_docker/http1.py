"""HTTP/1.1 to registries: h11 frames each message, bodies of a known length go socket → caller's buffer.

:class:`RegistryTransport` is an ``httpx`` transport with a pool of keep-alive connections.  h11 writes each
request and parses each response head; a body with a ``Content-Length`` is then read from the socket
by the response's stream itself — straight into the caller's buffer with ``readinto`` — starting with
the bytes h11 had received past the head (``trailing_data``).  A connection whose body was read to the
end goes back to the pool and its next exchange starts on a fresh h11 state, so large and small blobs
alike cost one copy per byte (the kernel's) and keep their connection.  Chunked and close-delimited
bodies are read through h11.

Errors are httpx's (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``, ...), the TLS or socket
error as their cause.  An idle connection the server has closed is noticed before reuse; a GET or
HEAD that finds its reused connection dead before any response byte is sent again once on a new one.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import h11
import httpx

#: Bytes asked of the socket per read.
READ_SIZE = 1 << 20
#: Longest response head accepted.
MAX_HEAD = 64 << 10

_IDEMPOTENT = frozenset({"GET", "HEAD"})


class _Conn:
    __slots__ = ("sock", "key", "idle_since", "used")

    def __init__(self, sock: socket.socket, key: tuple[str, str, int]) -> None:
        self.sock = sock
        self.key = key
        self.idle_since = 0.0
        self.used = False  # has carried an exchange before (a failure may be a stale keep-alive)

    def readable(self) -> bool:
        """Whether the server sent something (EOF included) while the connection sat idle: unusable."""
        try:
            poll = select.poll()
            poll.register(self.sock, select.POLLIN)
            return bool(poll.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Stale(Exception):
    """A reused connection failed before the response began (``error``: what to raise if not retried)."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class RegistryTransport(httpx.BaseTransport):
    """Pooled HTTP/1.1 over h11, with bodies read into the caller's buffer (see the module docstring).

    :param verify: the TLS context for ``https`` URLs.
    :param limits: ``max_connections`` open at once (requests beyond wait up to the pool timeout),
        ``max_keepalive_connections`` kept idle, closed after ``keepalive_expiry`` seconds idle.
    """

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl = verify
        self._max = limits.max_connections or 1 << 30
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else self._max
        self._expiry = limits.keepalive_expiry
        self._cv = threading.Condition()
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open = 0
        self._closed = False

    # -- pool ----------------------------------------------------------------------------------------

    def _take(self, key: tuple[str, str, int], timeout: float | None) -> _Conn | None:
        """An idle connection to ``key``, or None after reserving a slot for a new one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                if self._closed:
                    raise httpx.ConnectError("the resolver is closed")
                idle = self._idle.get(key)
                now = time.monotonic()
                while idle:
                    conn = idle.pop()
                    if (self._expiry is None or now - conn.idle_since < self._expiry) and not conn.readable():
                        return conn
                    conn.close()
                    self._open -= 1
                if self._open < self._max:
                    self._open += 1
                    return None
                # full: free an idle connection to another host, else wait for one to come back
                for other in self._idle.values():
                    if other:
                        other.pop(0).close()
                        self._open -= 1
                        break
                else:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise httpx.PoolTimeout("timed out waiting for a free connection")
                    self._cv.wait(left)

    def _give_back(self, conn: _Conn) -> None:
        with self._cv:
            idle = self._idle.setdefault(conn.key, [])
            if self._closed or sum(map(len, self._idle.values())) >= self._max_idle:
                conn.close()
                self._open -= 1
            else:
                conn.idle_since = time.monotonic()
                conn.used = True
                idle.append(conn)
            self._cv.notify()

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        with self._cv:
            self._open -= 1
            self._cv.notify()

    def _release_slot(self) -> None:
        with self._cv:
            self._open -= 1
            self._cv.notify()

    def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Conn:
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    sock.settimeout(timeout)
                    sock = self._ssl.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        except socket.timeout as e:
            raise httpx.ConnectTimeout(str(e) or "timed out connecting") from e
        except OSError as e:
            raise httpx.ConnectError(str(e)) from e
        return _Conn(sock, key)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for idle in self._idle.values():
                for conn in idle:
                    conn.close()
                    self._open -= 1
            self._idle.clear()
            self._cv.notify_all()

    # -- one exchange --------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        for attempt in (1, 2):
            conn = self._take(key, timeouts.get("pool"))
            if conn is None:
                try:
                    conn = self._connect(key, timeouts.get("connect"))
                except BaseException:
                    self._release_slot()
                    raise
            try:
                return self._exchange(conn, request, timeouts)
            except _Stale as e:
                self._discard(conn)
                if attempt == 2 or request.method not in _IDEMPOTENT:
                    raise e.error from e.__cause__
            except BaseException:
                self._discard(conn)
                raise
        raise AssertionError("unreachable")

    def _exchange(self, conn: _Conn, request: httpx.Request, timeouts: dict[str, Any]) -> httpx.Response:
        h = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        url = request.url
        headers = list(request.headers.raw)
        if not any(k.lower() == b"host" for k, _ in headers):
            headers.insert(0, (b"Host", url.netloc))
        sock = conn.sock
        reused = conn.used
        write_error: httpx.TransportError | None = None
        try:
            sock.settimeout(timeouts.get("write"))
            pending = h.send(h11.Request(method=request.method, target=url.raw_path, headers=headers))
            for chunk in request.stream:  # type: ignore[union-attr]
                if not chunk:
                    continue
                data = h.send(h11.Data(data=chunk))
                if pending and len(pending) + len(data) <= 65536:  # head and a small body in one segment
                    pending += data
                    continue
                if pending:
                    sock.sendall(pending)
                    pending = b""
                sock.sendall(data)
            sock.sendall(pending + h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as e:
            raise httpx.LocalProtocolError(str(e)) from e
        except socket.timeout as e:
            raise httpx.WriteTimeout(str(e) or "timed out sending") from e
        except OSError as e:
            # A server may answer (413, 401, ...) and close before taking the whole request: read that answer,
            # on a reused connection too (an upload follows its POST on the same connection); none there: stale.
            write_error = httpx.WriteError(str(e))
            write_error.__cause__ = e
        received = False
        try:
            sock.settimeout(timeouts.get("read"))
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    data = sock.recv(65536)
                    if not data:
                        error = write_error or httpx.RemoteProtocolError(
                            "server disconnected before the end of the response head" if received
                            else "server disconnected without sending a response")
                        raise (_Stale(error) if reused and not received else error) from error.__cause__
                    received = True
                    h.receive_data(data)
                elif not isinstance(ev, h11.InformationalResponse):
                    break
        except h11.RemoteProtocolError as e:
            if write_error is not None:
                raise write_error from write_error.__cause__
            raise httpx.RemoteProtocolError(str(e) or "malformed response") from e
        except socket.timeout as e:
            raise httpx.ReadTimeout(str(e) or "timed out waiting for the response") from e
        except ConnectionError as e:
            if reused and not received:
                if write_error is not None:
                    raise _Stale(write_error) from write_error.__cause__
                raise _Stale(httpx.ReadError(str(e))) from e
            if write_error is not None:
                raise write_error from write_error.__cause__
            raise httpx.ReadError(str(e)) from e
        except OSError as e:
            if write_error is not None:
                raise write_error from write_error.__cause__
            raise httpx.ReadError(str(e)) from e
        if not isinstance(ev, h11.Response):
            raise httpx.RemoteProtocolError(f"expected a response, got {type(ev).__name__}")
        stream = _Body(self, conn, h, ev, request.method, reusable=write_error is None)
        return httpx.Response(ev.status_code, headers=ev.headers.raw_items(), stream=stream,
                              extensions={"http_version": b"HTTP/" + ev.http_version, "reason_phrase": ev.reason})


class _Body(httpx.SyncByteStream):
    """A response body: iterated by httpx (``read``, ``iter_raw``) or read into a buffer (:meth:`readinto`).

    Read to its end, it returns the connection to the pool; closed before, it closes the connection.
    """

    def __init__(self, pool: RegistryTransport, conn: _Conn, h: h11.Connection, response: h11.Response, method: str,
                 *, reusable: bool = True) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._h = h
        self._error: httpx.TransportError | None = None
        self._keep = reusable and h.their_http_version == b"1.1" and not any(
            k == b"connection" and b"close" in v.lower() for k, v in response.headers)
        length: int | None = None
        if method == "HEAD" or response.status_code in (204, 304):
            length = 0
        elif not any(k == b"transfer-encoding" for k, _ in response.headers):
            for k, v in response.headers:
                if k == b"content-length" and v.isdigit():
                    length = int(v)
        #: bytes of a Content-Length body not yet delivered; None for a body framed by h11 (chunked, until close)
        self.length = length
        self._left = length
        self._pending = memoryview(b"")  # received and not yet delivered
        if length is not None:
            prefix = h.trailing_data[0]
            if len(prefix) > length:
                self._keep = False  # bytes past the body: the connection is out of step
                prefix = prefix[:length]
            self._pending = memoryview(prefix)
            if length == 0:
                self._finish()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep:
                self._pool._give_back(conn)
            else:
                self._pool._discard(conn)

    def _fail(self, e: BaseException) -> httpx.TransportError:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._discard(conn)
        if isinstance(e, socket.timeout):
            error: httpx.TransportError = httpx.ReadTimeout(str(e) or "timed out reading the body")
        elif isinstance(e, h11.RemoteProtocolError):
            error = httpx.RemoteProtocolError(str(e))
        else:
            error = httpx.ReadError(str(e))
        self._error = error  # later reads fail the same way rather than look like the end
        return error

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with the next body bytes (at most one socket read); 0 at the end of the body."""
        if self._error is not None:
            raise self._error
        if not view:
            return 0
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
        elif self._left is None:
            if self._conn is None:
                return 0
            self._pending = memoryview(self._next_framed())
            return self.readinto(view) if self._pending else 0
        elif self._left == 0 or self._conn is None:
            return 0
        else:
            try:
                n = self._conn.sock.recv_into(view[:min(len(view), self._left)])
            except OSError as e:
                raise self._fail(e) from e
            if not n:
                raise self._fail(h11.RemoteProtocolError(
                    f"peer closed connection without sending complete message body ({self._left} bytes short)"))
        if self._left is not None:
            self._left -= n
            if self._left == 0:
                self._finish()
        return n

    def _next_framed(self) -> bytes:
        """The next chunk h11 frames; b"" at the end of the body (the connection is then returned or closed)."""
        assert self._conn is not None
        while True:
            try:
                ev = self._h.next_event()
                if ev is h11.NEED_DATA:
                    self._h.receive_data(self._conn.sock.recv(READ_SIZE))
                    continue
            except (OSError, h11.RemoteProtocolError) as e:
                raise self._fail(e) from e
            if isinstance(ev, h11.Data):
                if ev.data:
                    return bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                extra, closed = self._h.trailing_data  # bytes past the body, or a body ended by the close
                self._keep = self._keep and self._h.their_state is h11.DONE and not extra and not closed
                self._finish()
                return b""
            else:
                raise self._fail(h11.RemoteProtocolError(f"unexpected {type(ev).__name__} in a response body"))

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._error is not None:
                raise self._error
            if self._pending:
                chunk, self._pending = bytes(self._pending), memoryview(b"")
                if self._left is not None:
                    self._left -= len(chunk)
                    if self._left == 0:
                        self._finish()
                yield chunk
                continue
            if self._left is None:
                if self._conn is None:
                    return
                chunk = self._next_framed()
                if not chunk:
                    return
                yield chunk
                continue
            if self._left == 0 or self._conn is None:
                return
            buf = bytearray(min(READ_SIZE, self._left))
            n = self.readinto(memoryview(buf))
            yield bytes(memoryview(buf)[:n])

    def close(self) -> None:
        if self._conn is not None:  # not read to the end: the connection cannot carry another exchange
            conn, self._conn = self._conn, None
            self._pool._discard(conn)

    def __del__(self) -> None:
        # A response dropped without being read or closed must not keep its pool slot.
        if getattr(self, "_conn", None) is not None:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
                pass
