"""Hoist's own gRPC server transport (hoist.api.transport): what a real grpcio client sees of every call
shape, metadata, status, large messages and flow control, deadlines, cancellation and stopping; and what a
hand-built HTTP/2 client sees when it breaks the protocol (GOAWAY and its code, the server still serving)."""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import queue
import random
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
from google.protobuf import wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoist import errors
from hoist.api import transport
from hoist.api.server import serve
from support import h2wire
from support.h2wire import RawClient, frame, grpc_message

SERVICE = "hoist.test.Transport"
MiB = 1 << 20
WAIT = 10.0  # bound of every wait on something that should happen at once
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)]


def _pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class TransportService:
    """The hand-made service the tests call: raw bytes in and out, except Metadata (protobuf)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.seen: dict[str, Any] = {}
        self._events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self._events.setdefault(name, threading.Event())

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] += 1

    # -- handlers --

    def Echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def Probe(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Probe")
        return b"probed:" + request

    def Blob(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return _pattern(0, int(request))

    def Chunks(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        count, size = map(int, request.split()[:2])
        for i in range(count):
            yield _pattern(i, size)

    @transport.prompt
    def PromptChunks(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        count, size, token = request.split()
        self.seen[token.decode()] = threading.current_thread().name
        for i in range(int(count)):
            yield _pattern(i, int(size))

    def Sum(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        digest, count = hashlib.sha256(), 0
        for message in requests:
            digest.update(message)
            count += 1
        return b"%d %s" % (count, digest.hexdigest().encode())

    def LazySum(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Sum, once the test lets it start reading."""
        self.event(dict(context.invocation_metadata())["x-token"] + ":go").wait(WAIT)
        return self.Sum(requests, context)

    def Bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for message in requests:
            yield message[::-1]

    def First(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Answers the first message and ends the call while the client may still be sending."""
        for message in requests:
            yield message[::-1]
            return

    def Metadata(self, request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> wrappers_pb2.StringValue:
        self.seen[request.value] = tuple(context.invocation_metadata())
        context.send_initial_metadata((("x-initial", "hello"), ("x-initial-bin", b"\x00\xff\x10")))
        context.set_trailing_metadata((("x-trailing", "bye"), ("x-trailing-bin", b"\x01\x02\x03\x04")))
        return wrappers_pb2.StringValue(value="ok:" + request.value)

    def Abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-why", "because"),))
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())
        raise AssertionError("abort returned")

    def SetCode(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("not now: 50% done")
        return b"ignored"

    def Raise(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise ValueError(request.decode())

    def StreamRaise(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise RuntimeError("midway")

    def NotFound(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise errors.NotFoundError(f"blob {request.decode()}: not here")

    def Sleep(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Waits until its call ends (the deadline), recording what its context said."""
        token = request.decode()
        cancelled = self.event(token + ":cancelled")
        self.seen[token + ":remaining"] = context.time_remaining()
        context.add_callback(cancelled.set)
        self.event(token + ":started").set()
        cancelled.wait(WAIT)
        self.seen[token + ":active"] = context.is_active()
        self.event(token + ":done").set()
        return b"late"

    def Hold(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """One response, then waits for the client to cancel."""
        token = request.decode()
        cancelled = self.event(token + ":cancelled")
        context.add_callback(cancelled.set)
        try:
            yield b"first"
            cancelled.wait(WAIT)
            self.seen[token + ":active"] = context.is_active()
            yield b"second"
            self.seen[token + ":after-second"] = True
        finally:
            self.event(token + ":closed").set()

    def Gate(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Waits until the test opens the gate or the call ends."""
        token = request.decode()
        wake = self.event(token + ":wake")
        context.add_callback(wake.set)
        self.event(token + ":started").set()
        wake.wait(WAIT)
        self.seen[token + ":active"] = context.is_active()
        self.event(token + ":done").set()
        return b"done:" + request

    def Upload(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Takes messages until the request ends; records how it ended."""
        token = dict(context.invocation_metadata())["x-token"]
        context.add_callback(self.event(token + ":callback").set)
        sizes = []
        try:
            for message in requests:
                sizes.append(len(message))
                self.event(f"{token}:got{len(sizes)}").set()
            outcome = "end of requests"
        except grpc.RpcError:
            outcome = "RpcError"
        self.seen[token] = (sizes, outcome, context.is_active())
        self.event(token + ":done").set()
        return b"%d" % len(sizes)

    # -- registration --

    def handlers(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        methods: dict[str, grpc.RpcMethodHandler] = {
            name: unary(getattr(self, name))
            for name in ("Echo", "Probe", "Blob", "Abort", "SetCode", "Raise", "NotFound", "Sleep", "Gate")
        }
        methods.update({
            name: grpc.unary_stream_rpc_method_handler(getattr(self, name))
            for name in ("Chunks", "PromptChunks", "StreamRaise", "Hold")
        })
        methods["Sum"] = grpc.stream_unary_rpc_method_handler(self.Sum)
        methods["Upload"] = grpc.stream_unary_rpc_method_handler(self.Upload)
        methods["LazySum"] = grpc.stream_unary_rpc_method_handler(self.LazySum)
        methods["Bidi"] = grpc.stream_stream_rpc_method_handler(self.Bidi)
        methods["First"] = grpc.stream_stream_rpc_method_handler(self.First)
        methods["Metadata"] = unary(self.Metadata, request_deserializer=wrappers_pb2.StringValue.FromString,
                                    response_serializer=wrappers_pb2.StringValue.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def register(self, server: Any) -> None:
        server.add_generic_rpc_handlers((self.handlers(),))


class Running:
    """A started transport server and its socket."""

    _numbers = itertools.count()

    def __init__(self, directory: Path, service: TransportService, **kwargs: Any) -> None:
        self.path = str(directory / f"t{next(self._numbers)}.sock")
        self.address = "unix://" + self.path
        self.service = service
        self.server = transport.server(**kwargs)
        self.server.add_generic_rpc_handlers((service.handlers(),))
        assert self.server.add_insecure_port(self.address) == 1
        self.server.start()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address, options=CLIENT_OPTIONS)


def _method(channel: grpc.Channel, name: str, kind: str = "unary_unary") -> Callable[..., Any]:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


def _assert_serves(running: Running) -> None:
    """A normal call on a new connection is answered."""
    with running.channel() as ch:
        assert _method(ch, "Echo")(b"still here", timeout=WAIT) == b"still here"


@pytest.fixture(scope="module")
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ht", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def running(short_dir: Path) -> Iterator[Running]:
    r = Running(short_dir, TransportService(), options=[("grpc.max_receive_message_length", 16 * MiB)])
    try:
        yield r
    finally:
        r.server.stop(None).wait(WAIT)


@pytest.fixture(scope="module")
def channel(running: Running) -> Iterator[grpc.Channel]:
    with running.channel() as ch:
        yield ch


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def transport_log() -> Iterator[_Records]:
    """Warnings and errors the transport logs (a failed connection is logged with its traceback)."""
    handler = _Records()
    logger = logging.getLogger("hoist.api.transport")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- call shapes, metadata, status -----------------------------------------------------------------


def test_unary(channel: grpc.Channel) -> None:
    echo = _method(channel, "Echo")
    assert echo(b"hello", timeout=WAIT) == b"hello"
    assert echo(b"", timeout=WAIT) == b""
    response, call = echo.with_call(b"x" * 100_000, timeout=WAIT)
    assert response == b"x" * 100_000
    assert call.code() == grpc.StatusCode.OK and call.details() in (None, "")


def test_server_streaming(channel: grpc.Channel) -> None:
    got = list(_method(channel, "Chunks", "unary_stream")(b"5 1000", timeout=WAIT))
    assert got == [_pattern(i, 1000) for i in range(5)]
    assert list(_method(channel, "Chunks", "unary_stream")(b"0 1", timeout=WAIT)) == []


def test_client_streaming(channel: grpc.Channel) -> None:
    messages = [_pattern(i, size) for i, size in enumerate([0, 1, 300_000, 5, MiB, 17])]
    expected = b"%d %s" % (len(messages), hashlib.sha256(b"".join(messages)).hexdigest().encode())
    assert _method(channel, "Sum", "stream_unary")(iter(messages), timeout=WAIT) == expected
    empty = b"0 " + hashlib.sha256().hexdigest().encode()
    assert _method(channel, "Sum", "stream_unary")(iter([]), timeout=WAIT) == empty


def test_bidi_answers_each_message_before_the_request_ends(channel: grpc.Channel) -> None:
    """Ping-pong: the client sends the next message only after the answer to the last one."""
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (message := outbox.get(timeout=WAIT)) is not None:
            yield message

    responses = _method(channel, "Bidi", "stream_stream")(requests(), timeout=WAIT)
    for i in range(5):
        message = _pattern(i, 10 ** i)
        outbox.put(message)
        assert next(responses) == message[::-1]
    outbox.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def test_server_ends_a_bidi_call_while_the_client_still_sends(channel: grpc.Channel) -> None:
    messages = (_pattern(i, 64 << 10) for i in range(100))
    responses = _method(channel, "First", "stream_stream")(messages, timeout=WAIT)
    assert list(responses) == [_pattern(0, 64 << 10)[::-1]]
    assert responses.code() == grpc.StatusCode.OK
    assert _method(channel, "Echo")(b"next", timeout=WAIT) == b"next"


def test_metadata_both_ways(running: Running, channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Metadata", request_serializer=wrappers_pb2.StringValue.SerializeToString,
                               response_deserializer=wrappers_pb2.StringValue.FromString)
    response, state = call.with_call(
        wrappers_pb2.StringValue(value="md1"), timeout=WAIT,
        metadata=(("x-plain", "some value"), ("x-data-bin", b"\x00\x01\xfe\xff"), ("x-plain", "second")))
    assert response.value == "ok:md1"
    seen = running.service.seen["md1"]
    assert [(k, v) for k, v in seen if k.startswith("x-")] == [
        ("x-plain", "some value"), ("x-data-bin", b"\x00\x01\xfe\xff"), ("x-plain", "second")]
    assert all(hasattr(m, "key") and hasattr(m, "value") for m in seen)  # grpcio's _Metadatum shape
    assert not {k for k, _ in seen} & {"content-type", "te", "grpc-timeout", ":path"}
    assert [(k, v) for k, v in state.initial_metadata() if k.startswith("x-")] == [
        ("x-initial", "hello"), ("x-initial-bin", b"\x00\xff\x10")]
    assert [(k, v) for k, v in state.trailing_metadata() if k.startswith("x-")] == [
        ("x-trailing", "bye"), ("x-trailing-bin", b"\x01\x02\x03\x04")]


def test_abort_sends_code_details_and_trailing_metadata(channel: grpc.Channel) -> None:
    details = "blob sha256:ab: not here — 100% ✓ \"quoted\"\ttab"
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "Abort")(details.encode(), timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == details
    assert ("x-why", "because") in tuple(err.value.trailing_metadata())


def test_set_code_and_details(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "SetCode")(b"", timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "not now: 50% done"


def test_unexpected_exceptions_are_unknown(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "Raise")(b"the disk is on fire", timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert err.value.details() == "Exception calling application: the disk is on fire"

    stream = _method(channel, "StreamRaise", "unary_stream")(b"", timeout=WAIT)
    assert next(stream) == b"first"
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert err.value.details() == "Exception iterating responses: midway"


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SERVICE}/Nope")(b"", timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.value.details() == f"Method not found: /{SERVICE}/Nope"
    with pytest.raises(grpc.RpcError) as err:
        list(channel.unary_stream("/no.Such/Service")(b"", timeout=WAIT))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_compressed_requests_are_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "Echo")(b"z" * 1000, timeout=WAIT, compression=grpc.Compression.Gzip)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "grpc-encoding 'gzip' is not supported" in err.value.details()
    assert _method(channel, "Echo")(b"after", timeout=WAIT) == b"after"


def test_interceptors_run_outermost_first_and_see_the_call(short_dir: Path) -> None:
    order: list[tuple[str, str, tuple[tuple[str, Any], ...]]] = []

    class Recording(grpc.ServerInterceptor):
        def __init__(self, name: str) -> None:
            self.name = name

        def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            order.append((self.name, details.method, tuple((k, v) for k, v in details.invocation_metadata
                                                           if k.startswith("x-"))))
            if details.method.endswith("/Raise"):
                return grpc.unary_unary_rpc_method_handler(
                    lambda request, context: context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you"))
            return continuation(details)

    r = Running(short_dir, TransportService(), interceptors=[Recording("outer"), Recording("inner")])
    try:
        with r.channel() as ch:
            assert _method(ch, "Echo")(b"e", timeout=WAIT, metadata=(("x-who", "me"),)) == b"e"
            with pytest.raises(grpc.RpcError) as err:
                _method(ch, "Raise")(b"never raised", timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and err.value.details() == "not you"
        echo = (f"/{SERVICE}/Echo", (("x-who", "me"),))
        assert order == [("outer", *echo), ("inner", *echo), ("outer", f"/{SERVICE}/Raise", ())]
    finally:
        r.server.stop(None).wait(WAIT)


def test_serve_builds_the_hoist_transport_with_error_mapping(short_dir: Path) -> None:
    service = TransportService()
    path = short_dir / "serve.sock"
    server = serve(str(path), [service], transport="hoist")
    try:
        assert isinstance(server, transport.Server)
        with grpc.insecure_channel(f"unix://{path}") as ch:
            # the prompt mark survives the ErrorInterceptor's wrapper: the connection's only call runs on
            # its reader thread (the first call of a new connection, so no earlier call is still finishing)
            got = list(_method(ch, "PromptChunks", "unary_stream")(b"3 1000 serve", timeout=WAIT))
            assert got == [_pattern(i, 1000) for i in range(3)]
            assert service.seen["serve"] == "hoist-grpc-conn"
            with pytest.raises(grpc.RpcError) as err:
                _method(ch, "NotFound")(b"sha256:ab", timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "blob sha256:ab: not here"
    finally:
        server.stop(None).wait(WAIT)


# -- large messages, flow control, concurrency -------------------------------------------------------


def test_15_mib_response(channel: grpc.Channel) -> None:
    size = 15 * MiB
    got = _method(channel, "Blob")(b"%d" % size, timeout=WAIT)
    assert len(got) == size and got == _pattern(0, size)


def test_15_mib_request_round_trips(channel: grpc.Channel) -> None:
    data = _pattern(15, 15 * MiB)
    assert _method(channel, "Echo")(data, timeout=WAIT) == data


def test_64_responses_of_1_mib(channel: grpc.Channel) -> None:
    responses = _method(channel, "Chunks", "unary_stream")(b"64 %d" % MiB, timeout=30)
    digests = [hashlib.sha256(m).digest() for m in responses]
    assert digests == [hashlib.sha256(_pattern(i, MiB)).digest() for i in range(64)]


def test_bidi_with_1_mib_messages(channel: grpc.Channel) -> None:
    messages = [_pattern(100 + i, MiB) for i in range(12)]
    got = list(_method(channel, "Bidi", "stream_stream")(iter(messages), timeout=WAIT))
    assert got == [m[::-1] for m in messages]


def test_a_handler_that_does_not_read_shuts_the_request_window(running: Running) -> None:
    """The client may send the stream window plus a bounded queue ahead of a handler that does not read;
    then no window comes back until it reads, and everything arrives once it does."""
    messages = [_pattern(500 + i, 64 << 10) for i in range(100)]
    payload = b"".join(grpc_message(m) for m in messages)
    with RawClient(running.path) as c:
        c.handshake()
        window = c.server_settings[h2wire.S_INITIAL_WINDOW_SIZE]
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1,
                     c.headers_block(f"/{SERVICE}/LazySum", extra=(("x-token", "lazy"),))))
        sent = 0

        def send_window() -> None:
            nonlocal sent, window
            while window and sent < len(payload):
                n = min(window, 16 << 10, len(payload) - sent)
                c.send(frame(h2wire.DATA, 0, 1, payload[sent:sent + n]))
                sent, window = sent + n, window - n

        def granted(f: h2wire.Frame) -> int:
            return struct.unpack(">I", f.payload)[0] if f.type == h2wire.WINDOW_UPDATE and f.stream == 1 else 0

        while True:  # a PING's ack comes after every window the server gives for what it read before it
            send_window()
            c.send(frame(h2wire.PING, 0, 0, b"flowctl!"))
            c.wait_for(lambda f: f.type == h2wire.PING)
            more = sum(granted(f) for f in c.stash)
            c.stash.clear()
            if not more:
                break
            window += more
        assert 4 * MiB <= sent <= 5 * MiB + (64 << 10) + 5 < len(payload)
        running.service.event("lazy:go").set()
        while sent < len(payload):
            if not window:
                window += granted(c.wait_for(lambda f: granted(f) > 0))
            send_window()
        c.send(frame(h2wire.DATA, h2wire.END_STREAM, 1))
        answer = c.response(1)
    assert answer.status[b"grpc-status"] == b"0"
    assert answer.messages == [b"100 %s" % hashlib.sha256(b"".join(messages)).hexdigest().encode()]


def test_50_concurrent_calls_on_one_channel(channel: grpc.Channel) -> None:
    echo, chunks = _method(channel, "Echo"), _method(channel, "Chunks", "unary_stream")

    def one(i: int) -> bool:
        if i % 5 == 0:
            return list(chunks(b"%d %d" % (i % 7 + 1, 70_000 + i), timeout=WAIT)) == [
                _pattern(k, 70_000 + i) for k in range(i % 7 + 1)]
        data = _pattern(1000 + i, i * 5000)
        return echo(data, timeout=WAIT) == data

    with futures.ThreadPoolExecutor(max_workers=50) as pool:
        assert list(pool.map(one, range(50))) == [True] * 50


def test_prompt_stream_with_concurrent_calls_on_its_connection(running: Running) -> None:
    """A prompt stream larger than the client's windows runs on the connection's reader thread and
    reads the client's frames itself while it waits: other calls on the channel are served meanwhile."""
    with running.channel() as ch:  # a new connection: the prompt call is its only call
        stream = _method(ch, "PromptChunks", "unary_stream")(b"8 %d pumped" % MiB, timeout=30)
        first = next(stream)
        with futures.ThreadPoolExecutor(max_workers=8) as pool:
            echoed = list(pool.map(lambda i: _method(ch, "Echo")(b"%d" % i * 1000, timeout=WAIT), range(24)))
        assert echoed == [b"%d" % i * 1000 for i in range(24)]
        got = [first, *stream]
    assert running.service.seen["pumped"] == "hoist-grpc-conn"
    assert [hashlib.sha256(m).digest() for m in got] == [hashlib.sha256(_pattern(i, MiB)).digest() for i in range(8)]


def test_prompt_stream_waiting_for_its_window_reads_other_calls(running: Running) -> None:
    """Frame by frame: the prompt stream fills stream 1's window and waits on the reader thread; a PING,
    a second call and a connection WINDOW_UPDATE are still read and answered; then stream 1 completes."""
    with RawClient(running.path) as c:
        c.handshake()
        c.request(1, f"/{SERVICE}/PromptChunks", b"2 %d waiting" % MiB)
        response_headers = c.wait_for(lambda f: f.stream == 1)
        assert response_headers.type == h2wire.HEADERS
        c.decoder.decode(response_headers.payload, raw=True)
        data = bytearray()
        while len(data) < 65535:  # both windows of a client that never said otherwise
            data += c.wait_for(lambda f: f.stream == 1 and f.type == h2wire.DATA).payload
        assert len(data) == 65535
        c.send(frame(h2wire.PING, 0, 0, b"12345678"))
        assert c.wait_for(lambda f: f.type == h2wire.PING).payload == b"12345678"
        c.request(3, f"/{SERVICE}/Echo", b"meanwhile")
        c.send(frame(h2wire.WINDOW_UPDATE, 0, 0, struct.pack(">I", 64 * MiB)))
        other = c.response(3)
        assert other.messages == [b"meanwhile"] and other.status[b"grpc-status"] == b"0"
        assert not [f for f in c.stash if f.stream == 1 and f.type == h2wire.DATA]
        c.send(frame(h2wire.WINDOW_UPDATE, 0, 1, struct.pack(">I", 8 * MiB)))
        while True:
            f = c.wait_for(lambda f: f.stream == 1)
            if f.type == h2wire.DATA:
                data += f.payload
            else:
                assert f.type == h2wire.HEADERS and f.flags & h2wire.END_STREAM, f
                assert dict(c.decoder.decode(f.payload, raw=True))[b"grpc-status"] == b"0"
                break
    assert running.service.seen["waiting"] == "hoist-grpc-conn"
    assert h2wire.parse_messages(bytes(data)) == [_pattern(0, MiB), _pattern(1, MiB)]


def test_cancelling_a_prompt_stream_that_waits_for_its_window(running: Running) -> None:
    """The reader thread running a prompt stream hears the client's RST_STREAM and goes back to serving."""
    with RawClient(running.path) as c:
        c.handshake()
        c.request(1, f"/{SERVICE}/PromptChunks", b"4 %d cancelled" % MiB)
        received = 0
        while received < 65535:
            f = c.wait_for(lambda f: f.stream == 1)
            received += len(f.payload) if f.type == h2wire.DATA else 0
        c.send(frame(h2wire.RST_STREAM, 0, 1, struct.pack(">I", h2wire.CANCEL)),
               frame(h2wire.WINDOW_UPDATE, 0, 0, struct.pack(">I", 64 * MiB)))
        c.request(3, f"/{SERVICE}/Echo", b"after the reset")
        answer = c.response(3)
        assert answer.messages == [b"after the reset"] and answer.status[b"grpc-status"] == b"0"
        assert not [f for f in c.stash if f.stream == 1 and f.type == h2wire.HEADERS]  # no status for stream 1
    assert running.service.seen["cancelled"] == "hoist-grpc-conn"


def test_cancelling_a_prompt_stream_from_grpcio(running: Running) -> None:
    with running.channel() as ch:
        stream = _method(ch, "PromptChunks", "unary_stream")(b"16 %d cancelled2" % MiB, timeout=WAIT)
        assert next(stream) == _pattern(0, MiB)
        stream.cancel()
        assert _method(ch, "Echo")(b"same channel", timeout=WAIT) == b"same channel"
    assert running.service.seen["cancelled2"] == "hoist-grpc-conn"


# -- limits ---------------------------------------------------------------------------------------------


def test_request_over_the_receive_limit(short_dir: Path) -> None:
    r = Running(short_dir, TransportService(), options=[("grpc.max_receive_message_length", MiB)])
    try:
        with r.channel() as ch:
            echo = _method(ch, "Echo")
            assert echo(b"a" * MiB, timeout=WAIT) == b"a" * MiB
            with pytest.raises(grpc.RpcError) as err:
                echo(b"b" * (MiB + 1), timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == f"grpc: received message larger than max ({MiB + 1} vs. {MiB})"
            assert echo(b"next", timeout=WAIT) == b"next"
            with pytest.raises(grpc.RpcError) as err:
                _method(ch, "Sum", "stream_unary")(iter([b"small", b"c" * (2 * MiB), b"never"]), timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in err.value.details()
            assert echo(b"next again", timeout=WAIT) == b"next again"
    finally:
        r.server.stop(None).wait(WAIT)


def test_response_over_the_send_limit(short_dir: Path) -> None:
    r = Running(short_dir, TransportService(), options=[("grpc.max_send_message_length", MiB)])
    try:
        with r.channel() as ch:
            blob = _method(ch, "Blob")
            assert blob(b"%d" % MiB, timeout=WAIT) == _pattern(0, MiB)
            with pytest.raises(grpc.RpcError) as err:
                blob(b"%d" % (MiB + 1), timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == f"grpc: trying to send message larger than max ({MiB + 1} vs. {MiB})"
            stream = _method(ch, "Chunks", "unary_stream")(b"3 %d" % (MiB + 1), timeout=WAIT)
            with pytest.raises(grpc.RpcError) as err:
                list(stream)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _method(ch, "Echo")(b"next", timeout=WAIT) == b"next"
    finally:
        r.server.stop(None).wait(WAIT)


def test_oversized_metadata_fails_that_call_only(running: Running, channel: grpc.Channel) -> None:
    service = running.service
    held = _method(channel, "Gate").future(b"bystander", timeout=WAIT)
    assert service.event("bystander:started").wait(WAIT)
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "Echo")(b"x", timeout=WAIT, metadata=(("x-big", "v" * 20_000),))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds 16384" in err.value.details()
    assert _method(channel, "Echo")(b"x", timeout=WAIT, metadata=(("x-fits", "v" * 7_000),)) == b"x"
    service.event("bystander:wake").set()
    assert held.result(timeout=WAIT) == b"done:bystander"  # the other call on the connection went on


def test_oversized_metadata_frame_by_frame(running: Running) -> None:
    """The large block is decoded whole, so the next block from the same HPACK encoder still decodes;
    a block past the decoder's guard ends the connection."""
    with RawClient(running.path) as c:
        c.handshake()
        block = c.headers_block(f"/{SERVICE}/Probe", extra=(("x-big", "b" * 20_000),))
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, block))
        answer = c.response(1)
        assert len(answer.headers) == 1 and answer.status[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED
        c.request(3, f"/{SERVICE}/Echo", b"in sync", extra=(("x-small", "s"),))
        assert c.response(3).messages == [b"in sync"]
        block = c.headers_block(f"/{SERVICE}/Echo", extra=(("x-huge", "h" * 70_000),))
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 5, block))
        assert c.expect_goaway().code == h2wire.ENHANCE_YOUR_CALM
    _assert_serves(running)


# -- deadlines and cancellation ----------------------------------------------------------------------


def test_deadline_exceeded(running: Running, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _method(channel, "Sleep")(b"sleepy", timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert running.service.event("sleepy:done").wait(WAIT)
    seen = running.service.seen
    assert 0 <= seen["sleepy:remaining"] < 1.0  # set; the client rounds its timeout up a little on the wire
    assert seen["sleepy:active"] is False  # the server ended the call at its deadline too


def test_no_deadline_means_no_time_remaining(running: Running, channel: grpc.Channel) -> None:
    future = _method(channel, "Sleep").future(b"forever")
    try:
        assert running.service.event("forever:started").wait(WAIT)
        assert running.service.seen["forever:remaining"] is None
    finally:
        future.cancel()
    assert running.service.event("forever:done").wait(WAIT)
    assert running.service.seen["forever:active"] is False


def test_cancelling_a_server_stream(running: Running, channel: grpc.Channel) -> None:
    stream = _method(channel, "Hold", "unary_stream")(b"held", timeout=WAIT)
    assert next(stream) == b"first"
    stream.cancel()
    service = running.service
    assert service.event("held:cancelled").wait(WAIT)  # the add_callback callback ran
    assert service.event("held:closed").wait(WAIT)  # the generator was closed: its finally ran
    assert service.seen["held:active"] is False
    assert "held:after-second" not in service.seen
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.CANCELLED


# -- hostile and broken clients ------------------------------------------------------------------------


def test_wrong_connection_preface(running: Running) -> None:
    with RawClient(running.path) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: hoistd\r\n\r\n")
        frames = c.frames_until_eof()
        assert [f.type for f in frames] == [h2wire.SETTINGS, h2wire.WINDOW_UPDATE, h2wire.GOAWAY]
        goaway = h2wire.parse_goaway(frames[-1].payload)
        assert (goaway.last_stream, goaway.code) == (0, h2wire.PROTOCOL_ERROR)
        assert b"preface" in goaway.debug
    _assert_serves(running)


@pytest.mark.parametrize("garbage, code", [
    (frame(h2wire.DATA, 0, 1, b"data before settings"), h2wire.PROTOCOL_ERROR),
    (frame(h2wire.SETTINGS, h2wire.ACK, 0), h2wire.PROTOCOL_ERROR),  # an ack is not the client's SETTINGS
    (b"\xff\xff\xffthis is not a frame at all", h2wire.FRAME_SIZE_ERROR),
], ids=["data-first", "ack-first", "junk"])
def test_garbage_after_the_preface(running: Running, garbage: bytes, code: int) -> None:
    with RawClient(running.path) as c:
        c.send(h2wire.PREFACE, garbage)
        assert c.expect_goaway().code == code
    _assert_serves(running)


def test_frame_larger_than_advertised(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        limit = c.server_settings[h2wire.S_MAX_FRAME_SIZE]
        assert limit == MiB
        c.send(frame(h2wire.DATA, 0, 1, b"x" * 100, length=limit + 1))
        goaway = c.expect_goaway()
        assert goaway.code == h2wire.FRAME_SIZE_ERROR and str(limit + 1).encode() in goaway.debug
    _assert_serves(running)


def test_headers_with_an_invalid_hpack_block(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, b"\xfe\x80"))  # index 126: in no table
        assert c.expect_goaway().code == h2wire.COMPRESSION_ERROR
    _assert_serves(running)


def test_data_on_a_stream_never_opened(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.DATA, 0, 7, grpc_message(b"who?")))
        goaway = c.expect_goaway()
        assert (goaway.last_stream, goaway.code) == (0, h2wire.PROTOCOL_ERROR)
        assert b"idle stream 7" in goaway.debug
    _assert_serves(running)


def test_connection_window_update_overflow(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
        assert c.expect_goaway().code == h2wire.FLOW_CONTROL_ERROR
    _assert_serves(running)


def test_stream_window_update_overflow_resets_that_stream_only(running: Running) -> None:
    service = running.service
    with RawClient(running.path) as c:
        c.handshake()
        block = c.headers_block(f"/{SERVICE}/Upload", extra=(("x-token", "overflow"),))
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, block), frame(h2wire.DATA, 0, 1, grpc_message(b"one")))
        assert service.event("overflow:got1").wait(WAIT)
        c.send(frame(h2wire.WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF)))
        rst = c.wait_for(lambda f: f.type == h2wire.RST_STREAM)
        assert (rst.stream, struct.unpack(">I", rst.payload)[0]) == (1, h2wire.FLOW_CONTROL_ERROR)
        assert service.event("overflow:done").wait(WAIT)
        assert service.seen["overflow"] == ([3], "RpcError", False)
        # the connection itself still serves
        c.request(3, f"/{SERVICE}/Echo", b"same connection")
        answer = c.response(3)
        assert answer.messages == [b"same connection"] and answer.status[b"grpc-status"] == b"0"
        assert not [f for f in c.stash if f.type == h2wire.GOAWAY]


def test_continuation_without_headers(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.CONTINUATION, h2wire.END_HEADERS, 1, c.headers_block(f"/{SERVICE}/Echo")))
        goaway = c.expect_goaway()
        assert goaway.code == h2wire.PROTOCOL_ERROR and b"CONTINUATION" in goaway.debug
    _assert_serves(running)


def test_headers_split_over_continuation_frames(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        block = c.headers_block(f"/{SERVICE}/Echo")
        c.send(frame(h2wire.HEADERS, 0, 1, block[:5]), frame(h2wire.CONTINUATION, 0, 1, block[5:9]),
               frame(h2wire.CONTINUATION, h2wire.END_HEADERS, 1, block[9:]),
               frame(h2wire.DATA, h2wire.END_STREAM, 1, grpc_message(b"continued")))
        answer = c.response(1)
        assert answer.messages == [b"continued"] and answer.status[b"grpc-status"] == b"0"


def test_padding_and_priority_fields_are_skipped(running: Running) -> None:
    with RawClient(running.path) as c:
        c.handshake()
        block = c.headers_block(f"/{SERVICE}/Echo")
        headers = bytes([3]) + struct.pack(">IB", 0, 15) + block + b"\0" * 3  # pad length, priority, block, padding
        message = grpc_message(b"padded")
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS | h2wire.PADDED | h2wire.PRIORITY_FLAG, 1, headers),
               frame(h2wire.DATA, h2wire.PADDED, 1, bytes([7]) + message[:4] + b"\0" * 7),
               frame(h2wire.DATA, h2wire.PADDED | h2wire.END_STREAM, 1, bytes([0]) + message[4:]),
               frame(h2wire.PRIORITY, 0, 1, struct.pack(">IB", 0, 200)))
        answer = c.response(1)
        assert answer.messages == [b"padded"] and answer.status[b"grpc-status"] == b"0"
        c.send(frame(h2wire.DATA, h2wire.PADDED, 1, bytes([9]) + b"short"))  # padding longer than the frame
        goaway = c.expect_goaway()
        assert goaway.code == h2wire.PROTOCOL_ERROR and goaway.last_stream == 1
    _assert_serves(running)


def test_repeated_header_blocks_follow_the_dynamic_table(running: Running) -> None:
    """The same block bytes mean what the client's HPACK dynamic table says at the time they arrive:
    an entry referenced by index 62 is replaced, and the next identical block sees the new value."""
    base = hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(k, v) for k, v in h2wire.request_fields(f"/{SERVICE}/Metadata")], huffman=False)

    def add(value: bytes) -> bytes:  # literal with incremental indexing, new name: becomes entry 62
        return base + b"\x40\x03x-k" + bytes([len(value)]) + value

    refer = base + bytes([0x80 | 62])
    blocks = [("c1", add(b"v1")), ("c2", refer), ("c3", refer), ("c4", add(b"v2")), ("c5", refer), ("c6", refer)]
    with RawClient(running.path) as c:
        c.handshake()
        for n, (token, block) in enumerate(blocks):
            stream = 2 * n + 1
            c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, stream, block),
                   frame(h2wire.DATA, h2wire.END_STREAM, stream,
                         grpc_message(wrappers_pb2.StringValue(value=token).SerializeToString())))
            assert c.response(stream).status[b"grpc-status"] == b"0"
    seen = {token: dict(running.service.seen[token])["x-k"] for token, _ in blocks}
    assert seen == {"c1": "v1", "c2": "v1", "c3": "v1", "c4": "v2", "c5": "v2", "c6": "v2"}


def test_client_gone_inside_a_unary_request_message(running: Running) -> None:
    before = running.service.calls["Probe"]
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, c.headers_block(f"/{SERVICE}/Probe")),
               frame(h2wire.DATA, 0, 1, struct.pack(">BI", 0, 1000) + b"only ten b"))
        c.sock.shutdown(socket.SHUT_WR)
        rest = c.frames_until_eof()  # the server ends the connection once it has read our end
        assert not [f for f in rest if f.stream == 1]
    assert running.service.calls["Probe"] == before
    _assert_serves(running)


def test_client_gone_inside_a_streaming_request(running: Running) -> None:
    """The handler of a request stream cut off mid-message learns it from its request iterator
    (grpc.RpcError, as under grpcio), never as a clean end of the requests."""
    service = running.service
    with RawClient(running.path) as c:
        c.handshake()
        block = c.headers_block(f"/{SERVICE}/Upload", extra=(("x-token", "cut"),))
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, block),
               frame(h2wire.DATA, 0, 1, grpc_message(b"a" * 10) + grpc_message(b"b" * 20)
                     + struct.pack(">BI", 0, 500) + b"half"))
        assert service.event("cut:got2").wait(WAIT)
    assert service.event("cut:done").wait(WAIT)
    assert service.event("cut:callback").is_set()
    assert service.seen["cut"] == ([10, 20], "RpcError", False)
    _assert_serves(running)


def test_non_post_and_wrong_content_type_are_refused_without_a_call(running: Running) -> None:
    service = running.service
    before = service.calls["Probe"]
    with RawClient(running.path) as c:
        c.handshake()
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS | h2wire.END_STREAM, 1,
                     c.headers_block(f"/{SERVICE}/Probe", method="GET")))
        answer = c.response(1)
        assert len(answer.headers) == 1 and answer.headers[0][b":status"] == b"405"
        assert b"grpc-status" not in answer.headers[0]

        block = c.headers_block(f"/{SERVICE}/Probe", content_type="text/plain")
        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 3, block))
        answer = c.response(3)
        assert len(answer.headers) == 1 and answer.headers[0][b":status"] == b"415"
        c.send(frame(h2wire.DATA, h2wire.END_STREAM, 3, grpc_message(b"ignored")))  # for a stream already answered

        c.send(frame(h2wire.HEADERS, h2wire.END_HEADERS, 5, c.headers_block(f"/{SERVICE}/Probe", content_type=None)))
        answer = c.response(5)
        assert answer.headers[0][b":status"] == b"415"

        c.request(7, f"/{SERVICE}/Probe", b"real", content_type="application/grpc+proto")
        answer = c.response(7)
        assert answer.headers[0][b":status"] == b"200" and answer.headers[0][b"content-type"] == b"application/grpc"
        assert answer.messages == [b"probed:real"] and answer.status[b"grpc-status"] == b"0"
        assert not [f for f in c.stash if f.type == h2wire.GOAWAY]
    assert service.calls["Probe"] == before + 1


def test_raw_call_shapes(running: Running) -> None:
    """What a client sees frame by frame: SETTINGS, PING ack, a trailers-only error."""
    with RawClient(running.path) as c:
        c.handshake()
        assert c.server_settings[h2wire.S_INITIAL_WINDOW_SIZE] == MiB
        c.send(frame(h2wire.PING, 0, 0, b"hoist!!!"))
        ack = c.wait_for(lambda f: f.type == h2wire.PING)
        assert (ack.flags, ack.payload) == (h2wire.ACK, b"hoist!!!")
        c.request(1, f"/{SERVICE}/Nope", b"")
        answer = c.response(1)
        assert len(answer.headers) == 1 and not answer.messages  # trailers-only
        assert answer.status[b":status"] == b"200" and answer.status[b"grpc-status"] == b"12"
        assert answer.status[b"grpc-message"] == f"Method not found: /{SERVICE}/Nope".encode()
        c.request(3, f"/{SERVICE}/Abort", "50% ✓".encode())
        assert c.response(3).status[b"grpc-message"] == b"50%25 %E2%9C%93"


VALID_CALL = [
    frame(h2wire.HEADERS, h2wire.END_HEADERS, 1, hpack.Encoder().encode(h2wire.request_fields(f"/{SERVICE}/Echo"))),
    frame(h2wire.DATA, h2wire.END_STREAM, 1, grpc_message(b"fuzz")),
]
_frames = st.builds(frame, st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 0x7FFFFFFF]),
                    st.binary(max_size=40))
_chunks = st.lists(st.one_of(_frames, st.binary(max_size=40), st.sampled_from(VALID_CALL)), max_size=10)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=_chunks)
def test_random_bytes_after_a_valid_start(running: Running, transport_log: _Records, chunks: list[bytes]) -> None:
    transport_log.records.clear()
    with RawClient(running.path) as c:
        try:
            c.send(h2wire.PREFACE, h2wire.settings(), *chunks)
            c.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server has already given up on us
        frames = c.frames_until_eof()
    goaways = [h2wire.parse_goaway(f.payload) for f in frames if f.type == h2wire.GOAWAY]
    assert all(g.code != h2wire.INTERNAL_ERROR for g in goaways), goaways
    assert not [r for r in transport_log.records if r.levelno >= logging.ERROR], transport_log.records
    with running.channel() as ch:
        assert _method(ch, "Echo")(b"alive", timeout=WAIT) == b"alive"


# -- stopping -------------------------------------------------------------------------------------------


def test_stop_lets_calls_in_flight_finish_and_refuses_new_connections(short_dir: Path) -> None:
    r = Running(short_dir, TransportService())
    service = r.service
    ch = r.channel()
    try:
        future = _method(ch, "Gate").future(b"inflight", timeout=WAIT)
        assert service.event("inflight:started").wait(WAIT)
        stopped = r.server.stop(WAIT)
        assert not stopped.is_set()  # the call is still running, inside its grace
        with pytest.raises(ConnectionRefusedError):
            RawClient(r.path)
        with r.channel() as other, pytest.raises(grpc.RpcError) as err:
            _method(other, "Echo")(b"too late", timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        service.event("inflight:wake").set()
        assert future.result(timeout=WAIT) == b"done:inflight"
        assert service.seen["inflight:active"] is True
        assert r.server.wait_for_termination(WAIT) is True
    finally:
        ch.close()
        r.server.stop(None)


def test_stop_cancels_calls_still_running_after_grace(short_dir: Path) -> None:
    r = Running(short_dir, TransportService())
    service = r.service
    ch = r.channel()
    try:
        future = _method(ch, "Gate").future(b"stuck", timeout=WAIT)
        assert service.event("stuck:started").wait(WAIT)
        r.server.stop(0.3)
        with pytest.raises(grpc.RpcError) as err:
            future.result(timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert service.event("stuck:done").wait(WAIT)  # woken by its add_callback callback
        assert service.seen["stuck:active"] is False
        assert r.server.wait_for_termination(WAIT) is True
    finally:
        ch.close()


def test_stop_frame_by_frame(short_dir: Path) -> None:
    """A connection with a call in flight hears GOAWAY(NO_ERROR) naming its last stream; a new stream
    on it is refused; the call in flight completes; then the server ends the connection."""
    r = Running(short_dir, TransportService())
    try:
        with RawClient(r.path) as c:
            c.handshake()
            c.request(1, f"/{SERVICE}/Gate", b"raw")
            assert r.service.event("raw:started").wait(WAIT)
            r.server.stop(WAIT)
            goaway = h2wire.parse_goaway(c.wait_for(lambda f: f.type == h2wire.GOAWAY).payload)
            assert (goaway.last_stream, goaway.code) == (1, h2wire.NO_ERROR)
            c.request(3, f"/{SERVICE}/Echo", b"refused")
            rst = c.wait_for(lambda f: f.stream == 3)
            assert rst.type == h2wire.RST_STREAM and struct.unpack(">I", rst.payload)[0] == h2wire.REFUSED_STREAM
            r.service.event("raw:wake").set()
            answer = c.response(1)
            assert answer.messages == [b"done:raw"] and answer.status[b"grpc-status"] == b"0"
            assert c.frames_until_eof() == []  # drained: the server closes the connection
        assert r.server.wait_for_termination(WAIT) is True
    finally:
        r.server.stop(None)


def test_stop_without_calls(short_dir: Path) -> None:
    r = Running(short_dir, TransportService())
    with r.channel() as ch:
        assert _method(ch, "Echo")(b"once", timeout=WAIT) == b"once"
        event = r.server.stop(None)
        assert event.wait(WAIT) and r.server.wait_for_termination(0) is True
        assert r.server.stop(None) is event  # a second stop changes nothing
