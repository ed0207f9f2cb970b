"""A fault-injecting HTTP reverse proxy on 127.0.0.1 for registry protocol tests.

:class:`FaultProxy` forwards every request to an upstream (the test registry, the token server,
anything on loopback), records it, counts the body bytes it serves, and applies the faults whose
rules match: reset the connection after N body bytes, ignore ``Range``, truncate the body, flip
one byte, answer an error status (429 with ``Retry-After``, 500, ...), stall, or redirect.

Example::

    proxy = FaultProxy(registry.url, verify=registry.ssl_context()).start()
    rule = proxy.inject(reset_after(1000), path=r"/blobs/sha256:", method="GET", times=1)
    ...  # the first blob GET is cut after 1000 bytes, later ones pass
    assert rule.hits == 1 and proxy.requests[1].headers.get("range") == "bytes=1000-"
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import struct
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

from support.pki import IssuedCert

_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "content-length")
)
_CHUNK = 256 * 1024


# ---------------------------------------------------------------- faults


@attrs.frozen(kw_only=True)
class Fault:
    """One fault; build them with the functions below (:func:`reset_after`, :func:`truncate`, ...)."""

    kind: str
    count: int = 0
    seconds: float = 0.0
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    target: str = ""

    def __str__(self) -> str:
        return self.kind


def reset_after(nbytes: int) -> Fault:
    """Send the headers and ``nbytes`` of the body, then reset the connection (TCP RST)."""
    return Fault(kind="reset", count=nbytes)


def truncate(nbytes: int) -> Fault:
    """Announce the full ``Content-Length`` but send only ``nbytes`` of the body, then close cleanly."""
    return Fault(kind="truncate", count=nbytes)


def flip_byte(offset: int) -> Fault:
    """Invert the body byte at ``offset`` (relative to this response's body)."""
    return Fault(kind="flip", count=offset)


def ignore_range() -> Fault:
    """Drop the request's ``Range`` header: the upstream answers 200 with the whole body."""
    return Fault(kind="ignore_range")


def stall(seconds: float, *, after_bytes: int = 0) -> Fault:
    """Pause ``seconds`` after ``after_bytes`` of the body (0: before the status line)."""
    return Fault(kind="stall", seconds=seconds, count=after_bytes)


def respond(status: int, *, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None) -> Fault:
    """Answer ``status`` without asking the upstream (body: a registry-style JSON error)."""
    if body is None:
        code = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED", 404: "NOT_FOUND"}.get(status, "UNKNOWN")
        body = json.dumps({"errors": [{"code": code, "message": f"injected HTTP {status}"}]}).encode()
    return Fault(kind="status", status=status, headers=tuple(headers), body=body)


def too_many_requests(retry_after: int | str = 1) -> Fault:
    """Answer 429 with ``Retry-After``."""
    return respond(429, headers=[("Retry-After", str(retry_after))])


def server_error(status: int = 500) -> Fault:
    """Answer a 5xx registry error."""
    return respond(status)


def redirect(target: str, *, status: int = 307) -> Fault:
    """Answer ``status`` with ``Location: <target base URL><same path and query>``."""
    return Fault(kind="redirect", status=status, target=target.rstrip("/"))


@attrs.define(kw_only=True)
class Rule:
    """Faults applied to requests matching ``path`` (regex, searched) and ``method``.

    ``times`` limits how many requests it hits (None: all); ``hits`` counts them.
    """

    faults: tuple[Fault, ...]
    path: re.Pattern[str]
    method: str | None
    times: int | None
    hits: int = 0

    def active(self) -> bool:
        return self.times is None or self.hits < self.times

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and self.path.search(target) is not None


@attrs.define(kw_only=True)
class ProxiedRequest:
    """One request the proxy handled; ``headers`` keys are lower case.

    Recorded when the request arrives; ``status`` and ``bytes_sent`` are updated before the
    bytes go out, so a client that has read the response sees them final.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    faults: tuple[str, ...]
    status: int = 0
    bytes_sent: int = 0

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


# ---------------------------------------------------------------- proxy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hanging up between or during exchanges is routine for a fault proxy
        super().handle_error(request, client_address)


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 (port 0) in front of ``upstream`` (``http(s)://host:port``).

    :param verify: SSL context (or True/False) for an https upstream.
    :param tls: serve TLS to clients with this certificate (default: plain HTTP).
    :param max_requests: after this many requests the proxy answers 503 (a runaway client stays bounded).
    """

    def __init__(self, upstream: str, *, verify: ssl.SSLContext | bool = True, tls: IssuedCert | None = None,
                 max_requests: int = 10_000, timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(upstream)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"fault proxy upstream {upstream!r}: expected http(s)://host:port")
        self.upstream = upstream.rstrip("/")
        self._up_scheme, self._up_host = u.scheme, u.hostname
        self._up_port = u.port or (443 if u.scheme == "https" else 80)
        if u.scheme == "https":
            if isinstance(verify, ssl.SSLContext):
                self._up_ctx = verify
            else:
                self._up_ctx = ssl.create_default_context()
                if not verify:
                    self._up_ctx.check_hostname = False
                    self._up_ctx.verify_mode = ssl.CERT_NONE
        self.tls = tls
        self.max_requests = max_requests
        self.timeout = timeout
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[ProxiedRequest] = []
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", 0), _make_handler(self))
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls.cert_path, self.tls.key_path)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hoist-test-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (stalled handlers wake up and end)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "fault proxy not started"
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` — use it as the registry host in references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    # ---- rules and records

    def inject(self, *faults: Fault, path: str = "", method: str | None = None, times: int | None = None) -> Rule:
        """Apply ``faults`` to requests whose path+query matches ``path`` (regex); returns the rule.

        Rules are tried in order; the first active match applies. ``times=k`` makes a rule
        hit only the first k matching requests (e.g. 500 for the first 2 requests).
        """
        rule = Rule(faults=faults, path=re.compile(path), method=method.upper() if method else None, times=times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def clear(self) -> None:
        """Forget recorded requests and the byte count (rules stay)."""
        with self._lock:
            self._requests.clear()

    @property
    def requests(self) -> list[ProxiedRequest]:
        """A copy of the requests handled so far, oldest first (recorded when each response ends)."""
        with self._lock:
            return list(self._requests)

    @property
    def bytes_served(self) -> int:
        """Response body bytes sent to clients so far."""
        with self._lock:
            return sum(r.bytes_sent for r in self._requests)

    def _match(self, method: str, target: str) -> tuple[Fault, ...]:
        with self._lock:
            for rule in self._rules:
                if rule.active() and rule.matches(method, target):
                    rule.hits += 1
                    return rule.faults
        return ()

    def _record(self, req: ProxiedRequest) -> bool:
        """Keep ``req``; False once ``max_requests`` were handled."""
        with self._lock:
            self._requests.append(req)
            return len(self._requests) <= self.max_requests

    def _upstream(self) -> http.client.HTTPConnection:
        if self._up_scheme == "https":
            return http.client.HTTPSConnection(self._up_host, self._up_port, timeout=self.timeout, context=self._up_ctx)
        return http.client.HTTPConnection(self._up_host, self._up_port, timeout=self.timeout)


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = proxy.timeout

        def log_message(self, format: str, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy._conns.add(self.connection)

        def finish(self) -> None:
            with proxy._lock:
                proxy._conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def do_GET(self) -> None:
            self._proxy()

        do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _proxy(self) -> None:
            method = self.command
            target = self.path
            path, _, query = target.partition("?")
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = self._read_body()
            faults = proxy._match(method, target)
            kinds = {f.kind: f for f in faults}
            state = ProxiedRequest(method=method, path=path, query=query, headers=headers,
                                   faults=tuple(f.kind for f in faults))
            try:
                if not proxy._record(state):
                    self._answer(state, respond(503))
                    return
                if "stall" in kinds and kinds["stall"].count == 0:
                    proxy._stopping.wait(kinds["stall"].seconds)
                if "status" in kinds:
                    self._answer(state, kinds["status"])
                    return
                if "redirect" in kinds:
                    f = kinds["redirect"]
                    self._answer(state, respond(f.status, headers=[("Location", f.target + target)], body=b""))
                    return
                self._forward(method, target, body, kinds, state)
            except (ConnectionError, TimeoutError, OSError):
                self.close_connection = True

        def _answer(self, state: ProxiedRequest, fault: Fault) -> None:
            self.send_response(fault.status)
            for k, v in fault.headers:
                self.send_header(k, v)
            if fault.body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(fault.body)))
            state.status = fault.status
            if self.command != "HEAD" and fault.body:
                state.bytes_sent = len(fault.body)
            self.end_headers()
            if self.command != "HEAD" and fault.body:
                self.wfile.write(fault.body)

        def _forward(self, method: str, target: str, body: bytes, kinds: dict[str, Fault],
                     state: ProxiedRequest) -> None:
            conn = proxy._upstream()
            try:
                out_headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if "ignore_range" in kinds:
                    out_headers = {k: v for k, v in out_headers.items() if k.lower() not in ("range", "if-range")}
                out_headers["X-Forwarded-Proto"] = "https" if proxy.tls else "http"
                if body or method in ("POST", "PUT", "PATCH"):
                    out_headers["Content-Length"] = str(len(body))
                conn.request(method, target, body=body or None, headers=out_headers)
                resp = conn.getresponse()
                status = resp.status
                length_header = resp.getheader("Content-Length")
                data_iter = None
                if length_header is None and method != "HEAD" and status not in (204, 304):
                    whole = resp.read()  # chunked upstream: send it with a length
                    length_header = str(len(whole))
                    data_iter = iter([whole] if whole else [])
                self.send_response_only(status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v)
                if length_header is not None:
                    self.send_header("Content-Length", length_header)
                state.status = status
                self.end_headers()
                if method == "HEAD":
                    return
                self._send_body(resp, data_iter, kinds, state)
            finally:
                conn.close()

        def _send_body(self, resp: http.client.HTTPResponse, data_iter: object, kinds: dict[str, Fault],
                       state: ProxiedRequest) -> None:
            cut = None
            if "reset" in kinds:
                cut = kinds["reset"].count
            if "truncate" in kinds:
                cut = kinds["truncate"].count if cut is None else min(cut, kinds["truncate"].count)
            flip = kinds["flip"].count if "flip" in kinds else None
            stall_at = kinds["stall"].count if "stall" in kinds and kinds["stall"].count > 0 else None
            offset = 0
            while True:
                if data_iter is not None:
                    chunk = next(data_iter, b"")  # type: ignore[call-overload]
                else:
                    chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                if flip is not None and offset <= flip < offset + len(chunk):
                    b = bytearray(chunk)
                    b[flip - offset] ^= 0xFF
                    chunk = bytes(b)
                if stall_at is not None and offset <= stall_at < offset + len(chunk):
                    head = stall_at - offset
                    state.bytes_sent += head
                    self.wfile.write(chunk[:head])
                    self.wfile.flush()
                    proxy._stopping.wait(kinds["stall"].seconds)
                    chunk = chunk[head:]
                    offset += head
                    stall_at = None
                if cut is not None and offset + len(chunk) >= cut:
                    state.bytes_sent += cut - offset
                    self.wfile.write(chunk[: cut - offset])
                    self.wfile.flush()
                    self._cut("reset" in kinds and kinds["reset"].count == cut)
                    return
                state.bytes_sent += len(chunk)
                self.wfile.write(chunk)
                offset += len(chunk)
            self.wfile.flush()
            if cut is not None:  # body shorter than the cut point: still end the connection as asked
                self._cut("reset" in kinds)

        def _cut(self, reset: bool) -> None:
            self.close_connection = True
            sock = self.connection
            if reset:
                # SO_LINGER 0 makes close() send RST instead of FIN; rfile holds the last other
                # reference to the socket, so close it first for the close to be real.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()
                sock.close()
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    return Handler
