"""The registry transport's HTTP/1.1 against scripted loopback servers: framing, keep-alive, faults, pool limits.

Each test starts a small threaded server on 127.0.0.1 whose handler writes exact bytes, so the test can
count the connections the transport opened, see what arrived, and close a connection at a chosen moment.
Requests go through :class:`RegistryClient` as the resolver sends them; bodies are read with
``response.read()``, ``response.iter_raw()`` and ``response.stream.readinto()``.
"""

from __future__ import annotations

import gc
import re
import socket
import threading
from collections.abc import Callable, Iterator

import attrs
import httpx
import pytest

from hoist_resolver_docker.http1 import RegistryTransport
from hoist_resolver_docker.resolver import RegistryClient

KiB = 1 << 10
MiB = 1 << 20

pytestmark = pytest.mark.timeout(30)

#: Longest any server-side socket operation may block.
SERVER_WAIT = 5.0


# -- scripted server ---------------------------------------------------------------------------------


@attrs.frozen
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Peer:
    """One accepted connection, as the server sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(SERVER_WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.requests: list[Request] = []
        self.eof = threading.Event()  # the client closed its side (or reset the connection)
        self.closed = threading.Event()  # the server closed the connection
        self._buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(256 * KiB)
        if not data:
            self.eof.set()
            return False
        self._buf += data
        return True

    def _line(self) -> bytes | None:
        while (i := self._buf.find(b"\r\n")) < 0:
            if not self._fill():
                return None
        line = bytes(self._buf[:i])
        del self._buf[:i + 2]
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise EOFError(f"client closed with {n - len(self._buf)} request body bytes missing")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_head(self) -> Request | None:
        """The next request's line and headers (``body`` empty); None if the client closed first."""
        line = self._line()
        if line is None:
            return None
        method, target, _ = line.decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (h := self._line()):
            name, _, value = h.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return Request(method, target, headers, b"")

    def read_body(self, head: Request) -> Request:
        if head.headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((self._line() or b"0").split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers up to the blank line
                        pass
                    break
                parts.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n"
            body = b"".join(parts)
        else:
            body = self._exactly(int(head.headers.get("content-length", "0")))
        return attrs.evolve(head, body=body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_eof(self) -> bool:
        """In a handler: read (and drop) whatever comes until the client closes; whether it did in time."""
        try:
            while self._fill():
                self._buf.clear()
        except OSError:
            pass
        return self.eof.is_set()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.closed.set()


def client_closed(peer: Peer) -> bool:
    """Whether the client closed ``peer``'s connection (seen by the server's reader) within SERVER_WAIT."""
    return peer.eof.wait(SERVER_WAIT)


#: ``handler(peer, request)``: answers one request; returns False to make the server close the connection.
Handler = Callable[[Peer, Request], "bool | None"]


class Server:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose handler scripts every byte of the answers."""

    def __init__(self, handler: Handler, *, read_body: bool = True) -> None:
        self.handler = handler
        self.read_body = read_body
        self.peers: list[Peer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, path: str = "/v2/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.peers)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return [r for p in self.peers for r in p.requests]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            peer = Peer(sock)
            t = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            with self._lock:
                self.peers.append(peer)
                self._threads.append(t)
            t.start()

    def _serve(self, peer: Peer) -> None:
        try:
            while not self._stop.is_set():
                req = peer.read_head()
                if req is None:
                    break
                if self.read_body:
                    req = peer.read_body(req)
                with self._lock:
                    peer.requests.append(req)
                if self.handler(peer, req) is False:
                    break
        except ConnectionError:
            peer.eof.set()  # reset by the client: it closed with data in flight
        except (OSError, EOFError):
            pass
        finally:
            peer.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            peers, threads = list(self.peers), list(self._threads)
        for p in peers:
            p.close()
        for t in threads:
            t.join(SERVER_WAIT)


def response(body: bytes = b"", *, status: str = "200 OK", headers: tuple[str, ...] = (),
             length: bool = True, version: str = "HTTP/1.1") -> bytes:
    """The exact bytes of a response (``length=False``: no Content-Length)."""
    lines = [f"{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes, trailers: tuple[str, ...] = ()) -> bytes:
    """A chunked body with ``chunks`` then the given trailer lines."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return out + b"0\r\n" + "".join(t + "\r\n" for t in trailers).encode() + b"\r\n"


def blob(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every offset (a misplaced byte shows)."""
    pattern = bytes((i * 7 + seed) % 251 for i in range(251 * 4))
    return (pattern * (n // len(pattern) + 1))[:n]


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(handler: Handler, **kw: bool) -> Server:
        s = Server(handler, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., RegistryClient]]:
    made: list[RegistryTransport] = []

    def make(*, limits: httpx.Limits | None = None, timeout: httpx.Timeout | None = None) -> RegistryClient:
        transport = RegistryTransport(verify=httpx.create_ssl_context(),
                                      limits=limits or httpx.Limits(max_connections=4, max_keepalive_connections=4))
        made.append(transport)
        return RegistryClient(transport, timeout or httpx.Timeout(5.0))

    yield make
    for t in made:
        t.close()


def read_into(response: httpx.Response, size: int = 64 * KiB) -> bytes:
    """The body as the blob reader takes it: ``readinto`` a fixed buffer until 0."""
    out = bytearray()
    buf = bytearray(size)
    while n := response.stream.readinto(memoryview(buf)):  # type: ignore[union-attr]
        out += memoryview(buf)[:n]
    return bytes(out)


READERS: dict[str, Callable[[httpx.Response], bytes]] = {
    "read": lambda r: r.read(),
    "iter_raw": lambda r: b"".join(r.iter_raw()),
    "readinto": read_into,
}


def by_path(bodies: dict[str, bytes]) -> Handler:
    """A keep-alive handler answering each path with its body and a Content-Length."""
    def handle(peer: Peer, req: Request) -> None:
        peer.send(response(bodies[req.target]))
    return handle


# -- 1. keep-alive with Content-Length bodies --------------------------------------------------------


@pytest.mark.parametrize("way", READERS)
def test_content_length_bodies_of_every_size_share_one_connection(serve, make_client, way: str) -> None:
    bodies = {f"/b/{n}": blob(n, seed=n % 97) for n in (0, 1, 100 * KiB, 3 * MiB)}
    server = serve(by_path(bodies))
    client = make_client()
    for path, body in [*bodies.items(), *bodies.items()]:
        r = client.send("GET", server.url(path), {})
        assert r.status_code == 200
        assert r.stream.length == len(body)  # type: ignore[union-attr]  # what the direct path keys on
        assert READERS[way](r) == body
    assert server.connections == 1
    assert [r.target for r in server.requests] == [*bodies, *bodies]


def test_readinto_hands_over_at_most_the_buffer_and_returns_0_after_the_end(serve, make_client) -> None:
    body = blob(300 * KiB)
    server = serve(by_path({"/x": body}))
    client = make_client()
    r = client.send("GET", server.url("/x"), {})
    got = bytearray()
    buf = bytearray(1000)
    while n := r.stream.readinto(memoryview(buf)):  # type: ignore[union-attr]
        assert 0 < n <= 1000
        got += buf[:n]
    assert bytes(got) == body
    assert r.stream.readinto(memoryview(buf)) == 0  # type: ignore[union-attr]
    assert client.send("GET", server.url("/x"), {}).read() == body
    assert server.connections == 1


def test_readinto_an_empty_buffer_reads_nothing_and_loses_nothing(serve, make_client) -> None:
    body = blob(3 * MiB)
    server = serve(by_path({"/x": body}))
    client = make_client()
    r = client.send("GET", server.url("/x"), {})
    buf = bytearray(64 * KiB)
    first = r.stream.readinto(memoryview(buf))  # type: ignore[union-attr]  # all h11 had past the head
    assert r.stream.readinto(memoryview(bytearray(0))) == 0  # type: ignore[union-attr]
    assert bytes(buf[:first]) + read_into(r) == body
    assert client.send("GET", server.url("/x"), {}).read() == body
    assert server.connections == 1


def test_head_204_and_304_have_no_body_and_keep_the_connection(serve, make_client) -> None:
    def handle(peer: Peer, req: Request) -> None:
        if req.method == "HEAD":
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nDocker-Content-Digest: sha256:ab\r\n\r\n")
        elif req.target == "/204":
            peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            peer.send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n")
        else:
            peer.send(response(b"hello"))
    server = serve(handle)
    client = make_client()
    head = client.send("HEAD", server.url("/blob"), {})
    assert head.headers["content-length"] == "5000"
    assert head.headers["docker-content-digest"] == "sha256:ab"
    assert read_into(head) == b""
    assert client.send("GET", server.url("/204"), {}).read() == b""
    assert b"".join(client.send("GET", server.url("/304"), {}).iter_raw()) == b""
    assert client.send("GET", server.url("/x"), {}).read() == b"hello"
    assert server.connections == 1
    assert [r.method for r in server.requests] == ["HEAD", "GET", "GET", "GET"]


def test_informational_response_before_the_final_one_is_skipped(serve, make_client) -> None:
    def handle(peer: Peer, req: Request) -> None:
        peer.send(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"final"))
    server = serve(handle)
    client = make_client()
    for _ in range(2):
        r = client.send("GET", server.url(), {})
        assert (r.status_code, r.read()) == (200, b"final")
    assert server.connections == 1


def test_the_request_carries_host_and_the_given_headers(serve, make_client) -> None:
    server = serve(by_path({"/v2/x/manifests/latest?n=1": b"{}"}))
    client = make_client()
    r = client.send("GET", server.url("/v2/x/manifests/latest?n=1"), {"Accept": "application/json", "X-A": "1"})
    assert r.read() == b"{}"
    (req,) = server.requests
    assert req.target == "/v2/x/manifests/latest?n=1"
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["accept"] == "application/json" and req.headers["x-a"] == "1"
    assert r.http_version == "HTTP/1.1" and r.reason_phrase == "OK"


# -- 2. chunked and close-delimited bodies -----------------------------------------------------------


@pytest.mark.parametrize("way", READERS)
def test_chunked_bodies_with_and_without_trailers_are_exact_and_keep_the_connection(serve, make_client,
                                                                                    way: str) -> None:
    parts = [b"a", blob(70 * KiB, 1), b"", blob(5, 2), blob(200 * KiB, 3)]
    body = b"".join(parts)

    def handle(peer: Peer, req: Request) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        if req.target == "/pieces":  # head, then each chunk in its own write
            peer.send(head)
            for p in parts:
                if p:
                    peer.send(b"%x\r\n%s\r\n" % (len(p), p))
            peer.send(b"0\r\n\r\n")
        elif req.target == "/trailers":
            peer.send(head + chunked(*[p for p in parts if p], trailers=("X-Digest: sha256:00", "X-Other: 1")))
        else:
            peer.send(head + chunked(*[p for p in parts if p]))
    server = serve(handle)
    client = make_client()
    for path in ("/whole", "/pieces", "/trailers", "/whole"):
        r = client.send("GET", server.url(path), {})
        assert r.stream.length is None  # type: ignore[union-attr]
        assert READERS[way](r) == body
    assert server.connections == 1


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
@pytest.mark.parametrize("way", READERS)
def test_close_delimited_body_is_exact_and_its_connection_is_not_reused(serve, make_client, version: str,
                                                                       way: str) -> None:
    body = blob(150 * KiB)

    def handle(peer: Peer, req: Request) -> bool:
        peer.send(response(body, length=False, version=version))
        return False  # the close ends the body
    server = serve(handle)
    client = make_client()
    for _ in range(2):
        assert READERS[way](client.send("GET", server.url(), {})) == body
    assert server.connections == 2
    assert [len(p.requests) for p in server.peers] == [1, 1]


def test_http10_response_with_a_length_is_not_reused(serve, make_client) -> None:
    server = serve(lambda peer, req: peer.send(response(b"old", version="HTTP/1.0")))
    client = make_client()
    assert client.send("GET", server.url(), {}).read() == b"old"
    assert client_closed(server.peers[0])  # the transport closed it
    assert client.send("GET", server.url(), {}).read() == b"old"
    assert server.connections == 2


# -- 3. Connection: close ----------------------------------------------------------------------------


@pytest.mark.parametrize("way", READERS)
def test_connection_close_in_a_response_makes_the_next_request_use_a_new_connection(serve, make_client,
                                                                                  way: str) -> None:
    def handle(peer: Peer, req: Request) -> None:
        peer.send(response(b"bye" * 1000, headers=("Connection: close",)))  # and keeps the socket open
    server = serve(handle)
    client = make_client()
    assert READERS[way](client.send("GET", server.url(), {})) == b"bye" * 1000
    assert client_closed(server.peers[0])  # closed by the transport once the body was read
    assert READERS[way](client.send("GET", server.url(), {})) == b"bye" * 1000
    assert server.connections == 2


# -- 4. a body closed before its end -----------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_closed_before_its_end_costs_its_connection_only(serve, make_client, framing: str) -> None:
    body = blob(2 * MiB)

    def handle(peer: Peer, req: Request) -> None:
        if framing == "length":
            peer.send(response(body))
        else:
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body[:MiB], body[MiB:]))
    server = serve(handle)
    client = make_client()
    r = client.send("GET", server.url(), {})
    assert r.stream.readinto(memoryview(bytearray(1000))) == 1000  # type: ignore[union-attr]
    r.close()
    assert client_closed(server.peers[0])
    assert client.send("GET", server.url(), {}).read() == body
    assert server.connections == 2


# -- 5. connections the server drops -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_idle_connection_the_server_closed_is_replaced_without_error(serve, make_client, method: str) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        peer.send(response(b"ok:" + req.body))
        return False  # closes right after answering, without saying so
    server = serve(handle)
    client = make_client()
    assert client.send("GET", server.url(), {}).read() == b"ok:"
    assert server.peers[0].closed.wait(SERVER_WAIT)
    # even a POST (never re-sent) goes through: the closed connection is dropped before anything is sent on it
    assert client.send(method, server.url(), {}, b"x" if method == "POST" else None).read() == \
        (b"ok:x" if method == "POST" else b"ok:")
    assert server.connections == 2
    assert [len(p.requests) for p in server.peers] == [1, 1]


def _close_on_second_request_of_first_connection(peer: Peer, req: Request, server: list[Server]) -> bool:
    if peer is server[0].peers[0] and len(peer.requests) == 2:
        return False  # read the request, close without an answer
    peer.send(response(b"answer") if req.method != "HEAD" else b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
    return True


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_reused_connection_closed_on_the_next_request_is_retried_once_for_get_and_head(serve, make_client,
                                                                                       method: str) -> None:
    ref: list[Server] = []
    server = serve(lambda peer, req: _close_on_second_request_of_first_connection(peer, req, ref))
    ref.append(server)
    client = make_client()
    assert client.send("GET", server.url(), {}).read() == b"answer"
    r = client.send(method, server.url("/again"), {})
    assert r.status_code == 200 and r.read() == (b"answer" if method == "GET" else b"")
    assert server.connections == 2
    assert [[q.target for q in p.requests] for p in server.peers] == [["/v2/", "/again"], ["/again"]]


@pytest.mark.parametrize("content", [b"layer-bytes", "generator"])
def test_a_post_on_a_connection_closed_on_receipt_is_not_sent_twice(serve, make_client, content) -> None:
    ref: list[Server] = []
    server = serve(lambda peer, req: _close_on_second_request_of_first_connection(peer, req, ref))
    ref.append(server)
    client = make_client()
    assert client.send("GET", server.url(), {}).read() == b"answer"
    body = content if isinstance(content, bytes) else (c for c in (b"layer-", b"bytes"))
    with pytest.raises(httpx.RemoteProtocolError, match="server disconnected without sending a response"):
        client.send("POST", server.url("/upload"), {}, body)
    assert [r.body for r in server.requests if r.method == "POST"] == [b"layer-bytes"]
    assert server.connections == 1
    # the pool is fine afterwards
    assert client.send("GET", server.url(), {}).read() == b"answer"
    assert server.connections == 2


def test_a_fresh_connection_closed_without_an_answer_is_not_retried(serve, make_client) -> None:
    server = serve(lambda peer, req: False)
    client = make_client()
    with pytest.raises(httpx.RemoteProtocolError, match="server disconnected without sending a response"):
        client.send("GET", server.url(), {})
    assert server.connections == 1


def test_a_connection_closed_in_the_middle_of_the_head_is_a_protocol_error(serve, make_client) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        return False
    server = serve(handle)
    client = make_client()
    with pytest.raises(httpx.RemoteProtocolError, match="^server disconnected before the end of the response head$"):
        client.send("GET", server.url(), {})
    assert server.connections == 1


# -- 6. truncated and stalled bodies -----------------------------------------------------------------


@pytest.mark.parametrize("way", READERS)
def test_a_truncated_length_body_raises_and_the_pool_stays_usable(serve, make_client, way: str) -> None:
    body = blob(200 * KiB)

    def handle(peer: Peer, req: Request) -> bool:
        if req.target == "/short":
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 1000) + body)
            return False
        peer.send(response(b"fine"))
        return True
    server = serve(handle)
    client = make_client()
    assert client.send("GET", server.url("/ok"), {}).read() == b"fine"
    r = client.send("GET", server.url("/short"), {})
    with pytest.raises(httpx.RemoteProtocolError, match=r"peer closed connection without sending complete "
                                                        r"message body \(1000 bytes short\)"):
        READERS[way](r)
    if way == "readinto":  # a failed body keeps failing: a later read never looks like a clean end
        with pytest.raises(httpx.RemoteProtocolError, match=r"\(1000 bytes short\)"):
            r.stream.readinto(memoryview(bytearray(10)))
    assert client.send("GET", server.url("/ok"), {}).read() == b"fine"
    assert server.connections == 2


@pytest.mark.parametrize("way", READERS)
def test_a_truncated_chunked_body_raises_and_the_pool_stays_usable(serve, make_client, way: str) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        if req.target == "/short":
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n10\r\nonly-part")
            return False
        peer.send(response(b"fine"))
        return True
    server = serve(handle)
    client = make_client()
    r = client.send("GET", server.url("/short"), {})
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        READERS[way](r)
    assert client.send("GET", server.url("/ok"), {}).read() == b"fine"
    assert server.connections == 2


@pytest.mark.parametrize("way", READERS)
def test_a_stalled_body_raises_read_timeout_and_the_pool_stays_usable(serve, make_client, way: str) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        if req.target == "/stall":
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100)
            peer.wait_eof()  # until the transport gives up on it
            return False
        peer.send(response(b"fine"))
        return True
    server = serve(handle)
    client = make_client(timeout=httpx.Timeout(5.0, read=0.3))
    assert client.send("GET", server.url("/ok"), {}).read() == b"fine"
    r = client.send("GET", server.url("/stall"), {})
    with pytest.raises(httpx.ReadTimeout):
        READERS[way](r)
    assert client_closed(server.peers[0])  # the timed-out connection was closed, not pooled
    assert client.send("GET", server.url("/ok"), {}).read() == b"fine"
    assert server.connections == 2


def test_a_missing_response_head_raises_read_timeout(serve, make_client) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        peer.wait_eof()
        return False
    server = serve(handle)
    client = make_client(timeout=httpx.Timeout(5.0, read=0.3))
    with pytest.raises(httpx.ReadTimeout):
        client.send("GET", server.url(), {})
    assert client_closed(server.peers[0])


# -- 7. bytes past the body --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 3 * MiB])
@pytest.mark.parametrize("way", READERS)
def test_bytes_past_a_length_body_are_not_delivered_and_the_connection_is_dropped(serve, make_client, way: str,
                                                                                  size: int) -> None:
    body = blob(size)

    def handle(peer: Peer, req: Request) -> None:
        peer.send(response(body) + b"GARBAGE-AFTER-THE-BODY")
    server = serve(handle)
    client = make_client()
    for _ in range(2):
        assert READERS[way](client.send("GET", server.url(), {}, None)) == body
    assert server.connections == 2
    assert [len(p.requests) for p in server.peers] == [1, 1]


def test_bytes_arriving_after_a_body_was_read_drop_the_idle_connection(serve, make_client) -> None:
    sent_extra = threading.Event()
    go = threading.Event()

    def handle(peer: Peer, req: Request) -> None:
        peer.send(response(b"body"))
        if len(server.peers) == 1 and len(peer.requests) == 1:
            go.wait(SERVER_WAIT)
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
            sent_extra.set()
    server = serve(handle)
    client = make_client()
    assert client.send("GET", server.url(), {}).read() == b"body"
    go.set()
    assert sent_extra.wait(SERVER_WAIT)
    assert client.send("GET", server.url(), {}).read() == b"body"
    assert server.connections == 2


def test_bytes_past_a_chunked_body_drop_the_connection_too(serve, make_client) -> None:
    # Same rule as a Content-Length body: a server that sent more than its response is out of step.
    def handle(peer: Peer, req: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abc") + b"GARBAGE")
    server = serve(handle)
    client = make_client()
    for _ in range(2):
        assert client.send("GET", server.url(), {}).read() == b"abc"
    assert server.connections == 2


# -- 8. pool limits ----------------------------------------------------------------------------------


def test_a_request_waits_for_the_only_connection_and_then_reuses_it(serve, make_client) -> None:
    body = blob(100 * KiB)
    server = serve(by_path({"/a": body, "/b": b"second"}))
    client = make_client(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
    first = client.send("GET", server.url("/a"), {})
    got: list[bytes] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            got.append(client.send("GET", server.url("/b"), {}).read())
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)
    t = threading.Thread(target=second)
    t.start()
    t.join(0.2)
    assert t.is_alive() and len(server.requests) == 1  # waiting for the pool, nothing sent
    assert first.read() == body
    t.join(SERVER_WAIT)
    assert not t.is_alive() and errors == [] and got == [b"second"]
    assert server.connections == 1


def test_a_full_pool_raises_pool_timeout_then_recovers(serve, make_client) -> None:
    server = serve(by_path({"/a": blob(100 * KiB), "/b": b"second"}))
    client = make_client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5.0, pool=0.2))
    first = client.send("GET", server.url("/a"), {})
    with pytest.raises(httpx.PoolTimeout, match="timed out waiting for a free connection"):
        client.send("GET", server.url("/b"), {})
    assert len(server.requests) == 1
    first.close()  # unread: its connection goes, its slot comes back
    assert client.send("GET", server.url("/b"), {}).read() == b"second"
    assert server.connections == 2


def test_a_response_dropped_unread_gives_its_slot_back(serve, make_client) -> None:
    server = serve(by_path({"/a": blob(100 * KiB), "/b": b"second"}))
    client = make_client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5.0, pool=0.5))
    client.send("GET", server.url("/a"), {})  # neither read nor closed: dropped at once
    gc.collect()
    assert client.send("GET", server.url("/b"), {}).read() == b"second"
    assert server.connections == 2


def test_a_full_pool_closes_an_idle_connection_to_another_host(serve, make_client) -> None:
    a = serve(by_path({"/": b"from a"}))
    b = serve(by_path({"/": b"from b"}))
    client = make_client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5.0, pool=0.2))
    assert client.send("GET", a.url("/"), {}).read() == b"from a"
    assert client.send("GET", b.url("/"), {}).read() == b"from b"
    assert client_closed(a.peers[0])
    assert (a.connections, b.connections) == (1, 1)


@pytest.mark.parametrize("limits", [httpx.Limits(max_keepalive_connections=0),
                                    httpx.Limits(keepalive_expiry=0.0)])
def test_no_keepalive_or_zero_expiry_opens_a_connection_per_request(serve, make_client, limits) -> None:
    server = serve(by_path({"/": b"x"}))
    client = make_client(limits=limits)
    for _ in range(3):
        assert client.send("GET", server.url("/"), {}).read() == b"x"
    assert server.connections == 3


def test_idle_connections_beyond_the_keepalive_limit_are_closed(serve, make_client) -> None:
    server = serve(by_path({"/": b"x" * 10}))
    client = make_client(limits=httpx.Limits(max_connections=3, max_keepalive_connections=1))
    held = [client.send("GET", server.url("/"), {}) for _ in range(3)]
    assert server.connections == 3
    for r in held:
        assert r.read() == b"x" * 10
    assert sum(client_closed(p) for p in server.peers[1:]) == 2  # last two returned: closed
    for _ in range(2):
        assert client.send("GET", server.url("/"), {}).read() == b"x" * 10
    assert server.connections == 3
    assert len(server.peers[0].requests) == 3


# -- 9. request bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 3, 60 * KiB, 300 * KiB, 5 * MiB])
def test_bytes_content_arrives_exactly_with_its_length(serve, make_client, size: int) -> None:
    server = serve(lambda peer, req: peer.send(response(b"%d" % len(req.body), status="201 Created")))
    client = make_client()
    data = blob(size, 5)
    for _ in range(2):
        r = client.send("PUT", server.url("/v2/r/blobs/uploads/1?digest=sha256:00"), {}, data)
        assert (r.status_code, r.read()) == (201, b"%d" % size)
    assert all(r.body == data and r.headers["content-length"] == str(size) for r in server.requests)
    assert server.connections == 1


def test_a_generator_body_is_sent_chunked_and_arrives_exactly(serve, make_client) -> None:
    server = serve(lambda peer, req: peer.send(response(b"%d" % len(req.body), status="202 Accepted")))
    client = make_client()
    parts = [b"a", b"", blob(70 * KiB, 1), blob(3, 2), b"", blob(MiB, 3)]
    for _ in range(2):
        r = client.send("PATCH", server.url("/upload"), {}, (p for p in parts))
        assert (r.status_code, r.read()) == (202, b"%d" % sum(map(len, parts)))
    for req in server.requests:
        assert req.headers["transfer-encoding"] == "chunked" and "content-length" not in req.headers
        assert req.body == b"".join(parts)
    assert server.connections == 1


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
@pytest.mark.parametrize("headers", [("Connection: close",), ()], ids=["close", "no-close"])
def test_an_early_answer_to_a_large_upload_is_returned(serve, make_client, headers: tuple[str, ...],
                                                       reused: bool) -> None:
    """A server may refuse an upload from its head (401, 413) and close without reading the body: the
    client sees the answer, as httpx's own transport shows it, not the broken pipe — also on a kept-alive
    connection (an upload usually follows the POST that opened it on the same connection)."""
    def handle(peer: Peer, req: Request) -> bool:
        if req.method == "GET":
            peer.send(response(b"fine"))
            return True
        peer.send(response(b"too large", status="413 Payload Too Large", headers=headers))
        return False  # closes with the body unread
    server = serve(handle, read_body=False)
    client = make_client()
    if reused:
        assert client.send("GET", server.url(), {}).read() == b"fine"
    r = client.send("PUT", server.url("/upload"), {}, blob(32 * MiB))
    assert (r.status_code, r.read()) == (413, b"too large")
    assert server.connections == 1
    assert client.send("GET", server.url(), {}).read() == b"fine"
    assert server.connections == 2


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_an_upload_cut_off_without_an_answer_is_a_write_error(serve, make_client, reused: bool) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        if req.method == "GET":
            peer.send(response(b"fine"))
            return True
        return False  # closes with the body unread, no answer
    server = serve(handle, read_body=False)
    client = make_client()
    if reused:
        assert client.send("GET", server.url(), {}).read() == b"fine"
    with pytest.raises(httpx.WriteError):
        client.send("PUT", server.url("/upload"), {}, blob(32 * MiB))
    assert server.connections == 1  # not sent again
    assert client.send("GET", server.url(), {}).read() == b"fine"


# -- 10. errors before any response ------------------------------------------------------------------


def test_connection_refused_is_a_connect_error(make_client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = s.getsockname()[1]
        with pytest.raises(httpx.ConnectError, match="Connection refused"):
            make_client().send("GET", f"http://127.0.0.1:{port}/v2/", {})


def test_a_refused_connection_gives_its_pool_slot_back(serve, make_client) -> None:
    client = make_client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5.0, pool=0.2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                client.send("GET", f"http://127.0.0.1:{s.getsockname()[1]}/", {})
    server = serve(by_path({"/": b"x"}))
    assert client.send("GET", server.url("/"), {}).read() == b"x"


@pytest.mark.parametrize("head", [b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"])
def test_a_malformed_response_head_is_a_protocol_error(serve, make_client, head: bytes) -> None:
    server = serve(lambda peer, req: peer.send(head))
    client = make_client()
    with pytest.raises(httpx.RemoteProtocolError):
        client.send("GET", server.url(), {})
    assert client_closed(server.peers[0])  # the connection is not kept


def test_an_endless_response_head_is_a_protocol_error(serve, make_client) -> None:
    def handle(peer: Peer, req: Request) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * (100 * KiB))
        peer.wait_eof()
        return False
    server = serve(handle)
    with pytest.raises(httpx.RemoteProtocolError):
        make_client().send("GET", server.url(), {})
    assert client_closed(server.peers[0])


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "unix:///run/x.sock"])
def test_an_unsupported_scheme_is_refused(make_client, url: str) -> None:
    scheme = url.split(":")[0]
    with pytest.raises(httpx.UnsupportedProtocol, match=re.escape(f"unsupported URL scheme {scheme!r}")):
        make_client().send("GET", url, {})


# -- 11. closing the transport -----------------------------------------------------------------------


def test_close_closes_idle_sockets_and_later_requests_raise(serve, make_client) -> None:
    server = serve(by_path({"/": b"x"}))
    client = make_client()
    assert client.send("GET", server.url("/"), {}).read() == b"x"
    client.close()
    assert client_closed(server.peers[0])
    with pytest.raises(httpx.ConnectError, match="closed"):
        client.send("GET", server.url("/"), {})
    assert server.connections == 1 and len(server.requests) == 1


def test_a_body_read_after_close_still_completes_and_then_closes_its_connection(serve, make_client) -> None:
    body = blob(500 * KiB)
    server = serve(by_path({"/": body}))
    client = make_client()
    r = client.send("GET", server.url("/"), {})
    client.close()
    assert read_into(r) == body
    assert client_closed(server.peers[0])
