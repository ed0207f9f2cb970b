"""Hoist's gRPC server transport: gRPC over HTTP/2 on a unix socket, serving grpcio method handlers.

``hoistd`` answers clients such as ``ctr`` that make thousands of small calls one after another
(``ctr content get`` asks for 32 KiB per Content.Read).  grpcio's Python server hands every call
between its polling thread and a worker several times; on a 2-core machine those hand-offs cost more
than the work.  This server keeps one reader thread per connection that parses frames and runs
nothing else, and one worker per call that writes its response, headers to trailers, in a single
``sendmsg``.

It serves the same :class:`grpc.RpcMethodHandler` objects the generated ``add_*Servicer_to_server``
functions register, through the same :class:`grpc.ServerInterceptor` chain, and hands servicers a
:class:`grpc.ServicerContext`; servicers are unchanged.  Only what gRPC clients use is implemented:

* HTTP/2 (RFC 9113) without TLS, push or priorities: SETTINGS, PING, WINDOW_UPDATE with flow
  control both ways, HEADERS/CONTINUATION decoded with ``hpack``, RST_STREAM, GOAWAY;
* gRPC framing: length-prefixed messages (uncompressed: a client that compresses is told
  UNIMPLEMENTED), ``grpc-timeout`` deadlines, metadata (``-bin`` keys base64), trailers with
  ``grpc-status`` and a percent-encoded ``grpc-message``, trailers-only error responses;
* message limits: a request larger than ``max_receive_message_length`` is RESOURCE_EXHAUSTED, and
  so is a response larger than ``max_send_message_length`` (the call fails instead of sending it).

A protocol violation ends that connection with GOAWAY; a bad call ends that call only.
"""

from __future__ import annotations

import base64
import collections
import heapq
import logging
import re
import socket
import struct
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from typing import Any, NamedTuple, TypeVar

import grpc
import hpack

log = logging.getLogger("hoist.api.transport")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes (§7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
# settings (§6.5.2)
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 1 << 14

STREAM_WINDOW = 1 << 20
"""Bytes a client may send on one call before it hears from us (our SETTINGS_INITIAL_WINDOW_SIZE)."""
CONNECTION_WINDOW = 16 << 20
"""Bytes a client may send on the whole connection before it hears from us."""
MAX_FRAME_SIZE = 1 << 20
"""Largest frame we accept (SETTINGS_MAX_FRAME_SIZE); we send at most the client's limit."""
MAX_HEADER_LIST = 16 << 10
"""Decoded size of a request's headers (SETTINGS_MAX_HEADER_LIST_SIZE)."""
MAX_CONCURRENT_STREAMS = 512
QUEUED_REQUEST_BYTES = 4 << 20
"""Received request messages a call's handler has not taken yet, past which its window stays shut."""
DECODED_BLOCKS = 64
"""Request header blocks a connection remembers decoded (see :meth:`_Connection._decode`)."""
SEND_BATCH = 1 << 20
"""Most response bytes handed to one ``sendmsg``."""

_FRAME = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_MSG = struct.Struct(">BI")  # gRPC message prefix: compressed flag, length

_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNIT = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESERVED_HEADERS = frozenset({b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"})


def _frame(type_: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack((len(payload) << 8) | type_, flags, stream_id) + payload


def _header_block(*fields: tuple[bytes, bytes]) -> bytes:
    """An HPACK block that leaves both sides' dynamic tables as they are: static-table hits and
    never-indexed literals only, so blocks can be made once and sent in any order."""
    return hpack.Encoder().encode(
        [(n, v) if (n, v) == (b":status", b"200") else hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields],
        huffman=False)


PROMPT_ATTRIBUTE = "hoist_prompt"

F = TypeVar("F", bound=Callable[..., Any])


def prompt(fn: F) -> F:
    """Mark a handler that answers without waiting on outside events (a read, a listing), only on
    the disk and short locks.  The server may then run it on the connection's reader thread when it
    is the connection's only call, and, for a stream, hold each response back until the next one or
    the end is known, so the last goes out together with the status in one write.

    Wrappers made with :func:`functools.wraps` keep the mark.  Never use it on a subscription or on
    anything that waits for a client or a process.
    """
    setattr(fn, PROMPT_ATTRIBUTE, True)
    return fn


_RESPONSE_HEADERS = _header_block((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = _header_block((b"grpc-status", b"0"))


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY and ``code``."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Abort(Exception):
    """Raised by :meth:`_Context.abort` to end the handler; the status is on the context."""


class _Metadatum(NamedTuple):
    key: str
    value: str | bytes


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[_Metadatum, ...]


def _percent_encode(message: str) -> bytes:
    return urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


def _trailers(code: grpc.StatusCode, details: str | None, metadata: Iterable[tuple[str, Any]] = ()) -> bytes:
    if code is grpc.StatusCode.OK and not details and not metadata:
        return _OK_TRAILERS
    fields = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        fields.append((b"grpc-message", _percent_encode(details)))
    fields.extend(_metadata_fields(metadata))
    return _header_block(*fields)


def _metadata_fields(metadata: Iterable[tuple[str, Any]] | None) -> list[tuple[bytes, bytes]]:
    fields = []
    for key, value in metadata or ():
        k = key.lower().encode("ascii")
        if k.endswith(b"-bin"):
            v = base64.b64encode(value if isinstance(value, bytes) else value.encode()).rstrip(b"=")
        else:
            v = value.encode("ascii") if isinstance(value, str) else bytes(value)
        fields.append((k, v))
    return fields


class _Deadlines:
    """One thread that cancels calls whose ``grpc-timeout`` has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[_Call]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, deadline: float, call: _Call) -> None:
        with self._cond:
            if self._closed:
                return
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, weakref.ref(call)))  # a call that ended may go
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hoist-grpc-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        call = heapq.heappop(self._heap)[2]()
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                else:
                    return
            if call is not None and not call.finished:
                call.cancel(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _Context(grpc.ServicerContext):
    """What a servicer sees of its call."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: tuple[tuple[str, Any], ...] = ()

    # RpcContext
    def is_active(self) -> bool:
        return not self._call.finished

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def cancel(self) -> None:
        self._call.cancel(grpc.StatusCode.CANCELLED, "Cancelled")

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._call.add_callback(callback)

    # ServicerContext
    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self._call.metadata

    def peer(self) -> str:
        return "unix:"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def set_compression(self, compression: Any) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        self._call.send_headers(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        self._code, self._details = code, details
        raise _Abort(details)

    def abort_with_status(self, status: grpc.Status) -> None:
        self._trailing = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details


class _Call:
    """One stream: its request messages in, its response out."""

    __slots__ = ("conn", "id", "method", "metadata", "deadline", "streaming_request", "handler", "messages",
                 "rbuf", "queued", "unacked", "recv_window", "send_window", "remote_closed", "finished",
                 "headers_sent", "callbacks", "cond", "dispatched", "prompt", "head", "ended",
                 "__weakref__")

    def __init__(self, conn: _Connection, stream_id: int, method: str, metadata: tuple[_Metadatum, ...],
                 deadline: float | None) -> None:
        self.conn = conn
        self.id = stream_id
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.streaming_request = False
        self.handler: Any = None
        self.messages: collections.deque[bytes] = collections.deque()
        self.rbuf = bytearray()
        self.queued = 0  # bytes of complete request messages not yet taken
        self.unacked = 0  # bytes received and not yet given back to the client's window
        self.recv_window = STREAM_WINDOW
        self.send_window = conn.peer_initial_window
        self.remote_closed = False
        self.finished = False
        self.headers_sent = False  # HEADERS written (under the connection's write lock)
        self.ended = False  # END_STREAM or RST_STREAM written (likewise)
        self.head = _RESPONSE_HEADERS
        self.callbacks: list[Callable[[], None]] | None = []
        self.cond = threading.Condition(conn.lock)
        self.dispatched = False
        self.prompt = False

    # -- requests (reader thread adds, handler takes) --

    def requests(self) -> Iterator[bytes]:
        """The request messages as they arrive; ends when the client half-closes.

        :raises grpc.RpcError: the call ended first (cancelled, deadline, reset, connection lost), as
            grpcio's request iterator does: a cut-off request stream must not look complete.
        """
        conn = self.conn
        while True:
            with self.cond:
                while not self.messages and not self.remote_closed and not self.finished:
                    self.cond.wait()
                if self.finished:
                    raise grpc.RpcError()
                if not self.messages:
                    return
                message = self.messages.popleft()
                self.queued -= len(message) + 5
                update = self._window_update_locked()
            if update:
                conn.send_frames([update])
            yield message

    def _window_update_locked(self) -> bytes | None:
        """A WINDOW_UPDATE giving the client back what it sent, unless the handler lags behind."""
        if self.remote_closed or self.queued >= QUEUED_REQUEST_BYTES or self.unacked < STREAM_WINDOW // 4:
            return None
        increment, self.unacked = self.unacked, 0
        self.recv_window += increment
        return _frame(WINDOW_UPDATE, 0, self.id, _U32.pack(increment))

    # -- responses (handler thread) --

    def send_headers(self, metadata: Iterable[tuple[str, Any]] | None = None) -> None:
        if metadata:
            self.head = _RESPONSE_HEADERS + _header_block(*_metadata_fields(metadata))
        self.conn.write(self, [], headers_only=True)

    def send_message(self, message: bytes, trailers: bytes | None = None) -> bool:
        """Send one response message (then the trailers, when given); False once the call has ended.

        A message over the server's ``max_send_message_length`` ends the call with RESOURCE_EXHAUSTED
        instead, as grpcio does: the client would refuse it anyway.
        """
        conn = self.conn
        limit = conn.server.max_send
        if len(message) > limit:
            self.finish(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"grpc: trying to send message larger than max ({len(message)} vs. {limit})")
            return False
        prefix = _MSG.pack(0, len(message))
        data = memoryview(message)
        total = len(message) + 5
        sent = 0
        while sent < total:
            with self.cond:
                while (self.send_window <= 0 or conn.send_window <= 0) and not self.finished and not conn.closed:
                    if threading.get_ident() == conn.reader:
                        # answering on the reader thread: read the client's WINDOW_UPDATE ourselves
                        self.cond.release()
                        try:
                            conn.pump()
                        finally:
                            self.cond.acquire()
                    else:
                        self.cond.wait()
                if self.finished or conn.closed:
                    return False
                n = min(total - sent, self.send_window, conn.send_window, SEND_BATCH)
                self.send_window -= n
                conn.send_window -= n
                max_frame = conn.peer_max_frame
            frames: list[bytes | memoryview] = []
            end = sent + n
            while sent < end:
                k = min(end - sent, max_frame)
                frames.append(_FRAME.pack((k << 8) | DATA, 0, self.id))
                if sent < 5:
                    frames.append(prefix[sent:min(sent + k, 5)])
                if sent + k > 5:
                    frames.append(data[max(sent - 5, 0):sent + k - 5])
                sent += k
            if sent == total and trailers is not None:
                return self._finish(frames, trailers)
            if not conn.write(self, frames):
                return False
        return True

    def finish(self, code: grpc.StatusCode, details: str | None, metadata: Iterable[tuple[str, Any]] = ()) -> None:
        """End the call with its status (a trailers-only response when nothing was sent)."""
        if not self.finished:
            self._finish([], _trailers(code, details, metadata))

    def _finish(self, frames: list[bytes | memoryview], trailers: bytes) -> bool:
        with self.cond:
            if self.finished:
                return False
            self.finished = True
            # a client still sending is told to stop (RFC 9113 §8.1)
            reset = None if self.remote_closed else NO_ERROR
            self.cond.notify_all()
        ok = self.conn.write(self, frames, trailers=trailers, reset=reset)
        self.conn.forget(self)
        self._run_callbacks()
        return ok

    def cancel(self, code: grpc.StatusCode, details: str, *, send: bool = True) -> None:
        """End the call from outside its handler: deadline, cancellation, reset or a lost connection."""
        with self.cond:
            if self.finished:
                return
            self.finished = True
            self.cond.notify_all()
        if send and not self.conn.closed:
            trailers = _trailers(code, details) if code is grpc.StatusCode.DEADLINE_EXCEEDED else None
            self.conn.write(self, [], trailers=trailers, reset=CANCEL)
        self.conn.forget(self)
        self._run_callbacks()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self.cond:
            if self.callbacks is None:
                return False
            self.callbacks.append(callback)
            return True

    def _run_callbacks(self) -> None:
        with self.cond:
            callbacks, self.callbacks = self.callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("%s: callback failed", self.method)


class _Connection:
    """One client connection: a reader thread that parses frames and starts calls."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.lock = threading.Lock()  # windows, call states
        self.wlock = threading.Lock()  # the socket's write side
        self.closed = False
        self.calls: dict[int, _Call] = {}
        self.last_stream = 0
        self.goaway_sent = False
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME_SIZE
        self.send_window = DEFAULT_WINDOW
        self.recv_window = CONNECTION_WINDOW
        self.recv_unacked = 0
        # past MAX_HEADER_LIST a call fails alone (its block is still decoded whole, keeping the HPACK
        # state); only a block past this guard ends the connection
        self.decoder = hpack.Decoder(max_header_list_size=4 * MAX_HEADER_LIST)
        self._decoded: dict[tuple[int, bytes], tuple[list[tuple[bytes, bytes]], int]] = {}
        self._table_generation = 0
        self.buf = bytearray()
        self.reader: int | None = None  # the reader thread's ident
        self.first_frame = True
        self.inline: _Call | None = None  # a prompt call the reader thread answers itself
        self.running_inline = False
        self._block: tuple[int, int, bytearray] | None = None  # header block awaiting CONTINUATION
        self._out: list[bytes] = []  # frames the reader thread owes the client
        self._handlers = {
            DATA: self._on_data, HEADERS: self._on_headers, PRIORITY: self._on_priority,
            RST_STREAM: self._on_rst_stream, SETTINGS: self._on_settings, PUSH_PROMISE: self._on_push_promise,
            PING: self._on_ping, GOAWAY: self._on_goaway, WINDOW_UPDATE: self._on_window_update,
            CONTINUATION: self._on_continuation,
        }

    # -- writing --

    def send_frames(self, frames: list[bytes]) -> bool:
        """Write ``frames`` whole; False when the connection is gone."""
        if self._out and threading.get_ident() == self.reader:
            # the reader thread answering a call sends what it owes (acks, window updates) along
            frames = self._out + frames
            self._out = []
        with self.wlock:
            if self.closed:
                return False
            try:
                _sendall(self.sock, frames)
                return True
            except OSError:
                pass
        self._lost()
        return False

    def write(self, call: _Call, frames: list[bytes | memoryview], *, trailers: bytes | None = None,
              reset: int | None = None, headers_only: bool = False) -> bool:
        """Write a call's frames: its response HEADERS first when none went out yet, then ``frames``,
        then ``trailers`` ending the stream (alone, a trailers-only response), then RST_STREAM with
        ``reset``.  Whether HEADERS went out, and whether the stream has ended, is decided under
        the write lock, so a status from the reader thread and a response from the handler cannot
        make a response without ``:status``, nor DATA after the end of the stream."""
        out: list[bytes | memoryview] = []
        with self.wlock:
            if self.closed or call.ended:
                return False
            if self._out and threading.get_ident() == self.reader:
                out, self._out = self._out, []  # what the reader thread owes goes along
            if not call.headers_sent and (frames or trailers is not None or headers_only):
                call.headers_sent = True
                if trailers is not None and not frames:
                    out.append(_frame(HEADERS, END_HEADERS | END_STREAM, call.id, call.head + trailers))
                    trailers = None
                    call.ended = True
                else:
                    out.append(_frame(HEADERS, END_HEADERS, call.id, call.head))
            out.extend(frames)
            if trailers is not None:
                out.append(_frame(HEADERS, END_HEADERS | END_STREAM, call.id, trailers))
                call.ended = True
            if reset is not None:
                out.append(_frame(RST_STREAM, 0, call.id, _U32.pack(reset)))
                call.ended = True
            try:
                _sendall(self.sock, out)
                return True
            except OSError:
                pass
        self._lost()
        return False

    def forget(self, call: _Call) -> None:
        with self.lock:
            if self.calls.get(call.id) is call:
                del self.calls[call.id]
                if self.goaway_sent and not self.calls:
                    self.server._drained(self)

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        with self.lock:
            if self.goaway_sent and code == NO_ERROR:
                return
            self.goaway_sent = True
            last = self.last_stream
            idle = not self.calls
        self.send_frames([_frame(GOAWAY, 0, 0, _U32.pack(last) + _U32.pack(code) + message.encode()[:256])])
        if idle:
            self.server._drained(self)

    def _lost(self) -> None:
        """The connection is gone: every call still open is cancelled."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            calls = list(self.calls.values())
            for call in calls:
                call.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for call in calls:
            call.cancel(grpc.StatusCode.CANCELLED, "connection closed", send=False)

    def close(self) -> None:
        self._lost()

    # -- reading --

    def run(self) -> None:
        try:
            self._serve()
        except ProtocolError as err:
            log.debug("grpc connection: %s", err)
            self.goaway(err.code, str(err))
        except OSError as err:
            log.debug("grpc connection: %s", err)
        except Exception:
            log.exception("grpc connection failed")
            self.goaway(INTERNAL_ERROR, "internal error")
        finally:
            self._lost()
            with self.wlock:  # no writer is inside sendmsg on this descriptor, nor will be
                self.sock.close()
            self.server._closed(self)

    def _serve(self) -> None:
        sock = self.sock
        self.reader = threading.get_ident()
        self.send_frames([
            _frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in (
                (S_ENABLE_PUSH, 0), (S_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
                (S_INITIAL_WINDOW_SIZE, STREAM_WINDOW), (S_MAX_FRAME_SIZE, MAX_FRAME_SIZE),
                (S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST)))),
            _frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW)),
        ])
        buf = self.buf
        while len(buf) < len(PREFACE):
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        if not buf.startswith(PREFACE):
            raise ProtocolError("not an HTTP/2 client (bad connection preface)")
        del buf[:len(PREFACE)]
        while True:
            self._parse()
            call = self.inline
            if call is not None:
                # answered here, on the reader thread: no hand-off to a worker and back
                self.inline = None
                self.running_inline = True
                try:
                    _run_call(call)
                finally:
                    self.running_inline = False
            if self._out:
                out, self._out = self._out, []
                if not self.send_frames(out):
                    return
            data = sock.recv(262144)
            if not data:
                return
            buf += data

    def pump(self) -> bool:
        """Read and handle what the client sent, on the reader thread while it runs a call itself
        (to hear the WINDOW_UPDATE that call waits for); False when the connection is gone."""
        try:
            data = self.sock.recv(262144)
        except OSError:
            data = b""
        if not data:
            self._lost()
            return False
        self.buf += data
        try:
            self._parse()
        except ProtocolError as err:
            log.debug("grpc connection: %s", err)
            self.goaway(err.code, str(err))
            self._lost()
            return False
        if self._out:
            out, self._out = self._out, []
            return self.send_frames(out)
        return True

    def _parse(self) -> None:
        """Handle every whole frame in the buffer."""
        buf = self.buf
        handlers = self._handlers
        unpack = _FRAME.unpack_from
        pos, size = 0, len(buf)
        try:
            while size - pos >= 9:
                length_type, flags, stream_id = unpack(buf, pos)
                length = length_type >> 8
                if length > MAX_FRAME_SIZE:
                    raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME_SIZE}", FRAME_SIZE_ERROR)
                if size - pos - 9 < length:
                    break
                type_ = length_type & 0xFF
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                if self.first_frame:
                    if type_ != SETTINGS or flags & ACK:
                        raise ProtocolError("the first frame must be SETTINGS")
                    self.first_frame = False
                if self._block is not None and type_ != CONTINUATION:
                    raise ProtocolError("header block interrupted by another frame")
                handler = handlers.get(type_)
                if handler is not None:  # unknown frame types are ignored (§5.5)
                    handler(flags, stream_id & 0x7FFFFFFF, payload)
        finally:
            if pos:
                del buf[:pos]

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError("SETTINGS ack with a payload", FRAME_SIZE_ERROR)
            return
        if len(payload) % 6:
            raise ProtocolError("SETTINGS payload not a multiple of 6", FRAME_SIZE_ERROR)
        window = max_frame = None
        for off in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, off)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError("initial window too large", FLOW_CONTROL_ERROR)
                window = value
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= (1 << 24) - 1:
                    raise ProtocolError(f"invalid SETTINGS_MAX_FRAME_SIZE {value}")
                max_frame = value
            elif key == S_ENABLE_PUSH and value > 1:
                raise ProtocolError("invalid SETTINGS_ENABLE_PUSH")
        # A client may hold to its old limits until it has our ACK (grpc-core does): the new values
        # take effect and the ACK is written in one step under the write lock, so no frame sized by
        # them can reach the client before the ACK does.
        lost = False
        with self.wlock:
            with self.lock:
                if window is not None:
                    delta = window - self.peer_initial_window
                    self.peer_initial_window = window
                    for call in self.calls.values():
                        call.send_window += delta
                        call.cond.notify_all()
                if max_frame is not None:
                    self.peer_max_frame = max_frame
            if not self.closed:
                try:
                    _sendall(self.sock, [_frame(SETTINGS, ACK, 0)])
                except OSError:
                    lost = True
        if lost:
            self._lost()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolError("PING on a stream")
        if len(payload) != 8:
            raise ProtocolError("PING payload must be 8 bytes", FRAME_SIZE_ERROR)
        if not flags & ACK:
            self._out.append(_frame(PING, ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolError("GOAWAY on a stream")

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ProtocolError("clients must not push")

    def _on_priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolError("PRIORITY on stream 0")
        if len(payload) != 5:
            raise ProtocolError("PRIORITY payload must be 5 bytes", FRAME_SIZE_ERROR)

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError("WINDOW_UPDATE payload must be 4 bytes", FRAME_SIZE_ERROR)
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        with self.lock:
            if stream_id == 0:
                if not increment:
                    raise ProtocolError("WINDOW_UPDATE of 0")
                self.send_window += increment
                if self.send_window > MAX_WINDOW:
                    raise ProtocolError("connection window overflow", FLOW_CONTROL_ERROR)
                for call in self.calls.values():
                    call.cond.notify_all()
                return
            call = self.calls.get(stream_id)
            if call is None:
                if stream_id > self.last_stream:
                    raise ProtocolError(f"WINDOW_UPDATE on idle stream {stream_id}")
                return
            if not increment or call.send_window + increment > MAX_WINDOW:
                self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(PROTOCOL_ERROR if not increment
                                                                             else FLOW_CONTROL_ERROR)))
                failed = call
            else:
                call.send_window += increment
                call.cond.notify_all()
                return
        failed.cancel(grpc.StatusCode.INTERNAL, "bad WINDOW_UPDATE", send=False)

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolError("RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolError("RST_STREAM payload must be 4 bytes", FRAME_SIZE_ERROR)
        with self.lock:
            call = self.calls.get(stream_id)
            if call is None and stream_id > self.last_stream:
                raise ProtocolError(f"RST_STREAM on idle stream {stream_id}")
        if call is not None:
            call.cancel(grpc.StatusCode.CANCELLED, "Cancelled", send=False)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolError("DATA on stream 0")
        length = len(payload)
        # connection-level flow control counts every DATA frame, for live streams or not
        self.recv_window -= length
        if self.recv_window < 0:
            raise ProtocolError("client overran the connection window", FLOW_CONTROL_ERROR)
        self.recv_unacked += length
        if self.recv_unacked >= CONNECTION_WINDOW // 4:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_unacked)))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        if flags & PADDED:
            if not payload or payload[0] >= length:
                raise ProtocolError("DATA padding longer than the frame")
            payload = payload[1:length - payload[0]]
        call = self.calls.get(stream_id)
        if call is None:
            if stream_id > self.last_stream:
                raise ProtocolError(f"DATA on idle stream {stream_id}")
            return  # a call that ended; the client had not heard yet
        if call.remote_closed:
            self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED)))
            call.cancel(grpc.StatusCode.INTERNAL, "DATA after the end of the request", send=False)
            return
        with call.cond:
            call.recv_window -= length
            if call.recv_window < 0:
                overrun = True
            else:
                overrun = False
                call.unacked += length
                if payload:
                    call.rbuf += payload
        if overrun:
            self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(FLOW_CONTROL_ERROR)))
            call.cancel(grpc.StatusCode.INTERNAL, "client overran the stream window", send=False)
            return
        if not self._take_messages(call):
            return
        if flags & END_STREAM:
            self._end_of_request(call)
        else:
            with call.cond:
                update = call._window_update_locked()
            if update:
                self._out.append(update)

    def _take_messages(self, call: _Call) -> bool:
        """Move the complete messages of ``call``'s buffer to its queue; False when the call failed."""
        rbuf = call.rbuf
        limit = self.server.max_receive
        while len(rbuf) >= 5:
            compressed, size = _MSG.unpack_from(rbuf)
            if size > limit:
                self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"grpc: received message larger than max ({size} vs. {limit})")
                return False
            if compressed:
                self._fail(call, grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
                return False
            if len(rbuf) < 5 + size:
                break
            message = bytes(rbuf[5:5 + size])
            del rbuf[:5 + size]
            with call.cond:
                call.messages.append(message)
                call.queued += size + 5
                call.cond.notify_all()
            if not call.streaming_request and len(call.messages) > 1:
                self._fail(call, grpc.StatusCode.INTERNAL, "more than one request message for a unary call")
                return False
        return True

    def _end_of_request(self, call: _Call) -> None:
        with call.cond:
            call.remote_closed = True
            call.cond.notify_all()
        if call.rbuf:
            self._fail(call, grpc.StatusCode.INTERNAL, "request ended inside a message")
            return
        if not call.streaming_request and not call.dispatched:
            if len(call.messages) != 1:
                self._fail(call, grpc.StatusCode.INTERNAL, "expected one request message")
                return
            self._dispatch(call)

    def _fail(self, call: _Call, code: grpc.StatusCode, details: str) -> None:
        """End ``call`` from the reader thread, before or while its handler runs."""
        log.debug("%s: %s: %s", call.method, code.name, details)
        with call.cond:
            if call.finished:
                return
            call.finished = True
            call.cond.notify_all()
        self.write(call, [], trailers=_trailers(code, details), reset=None if call.remote_closed else NO_ERROR)
        self.forget(call)
        call._run_callbacks()

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolError("HEADERS on stream 0")
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ProtocolError("HEADERS padding longer than the frame")
            payload = payload[1:len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolError("HEADERS priority fields missing", FRAME_SIZE_ERROR)
            payload = payload[5:]
        if flags & END_HEADERS:
            self._headers_done(stream_id, flags, payload)
        else:
            self._block = (stream_id, flags, bytearray(payload))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != stream_id:
            raise ProtocolError("CONTINUATION without HEADERS")
        block = self._block[2]
        block += payload
        if len(block) > 4 * MAX_HEADER_LIST:
            raise ProtocolError("header block too large", ENHANCE_YOUR_CALM)
        if flags & END_HEADERS:
            first_flags = self._block[1]
            self._block = None
            self._headers_done(stream_id, first_flags, bytes(block))

    def _decode(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """The header fields of ``block``, and their size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.

        A client repeating a call sends the same block, made of references to the dynamic table;
        a block whose decoding left the table as it was means the same the next time, as long as
        no other block has changed the table since.  Those are remembered.
        """
        key = (self._table_generation, block)
        known = self._decoded.get(key)
        if known is not None:
            return known
        table = self.decoder.header_table
        before = (table.maxsize, tuple(table.dynamic_entries))
        try:
            fields = self.decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as err:
            raise ProtocolError(f"request headers too large: {err}", ENHANCE_YOUR_CALM) from None
        except hpack.HPACKError as err:
            raise ProtocolError(f"bad header block: {err}", COMPRESSION_ERROR) from None
        decoded = fields, sum(len(name) + len(value) + 32 for name, value in fields)
        if before != (table.maxsize, tuple(table.dynamic_entries)):
            self._table_generation += 1
            self._decoded.clear()
        else:
            if len(self._decoded) >= DECODED_BLOCKS:
                self._decoded.clear()
            self._decoded[key] = decoded
        return decoded

    def _headers_done(self, stream_id: int, flags: int, block: bytes) -> None:
        fields, size = self._decode(block)
        call = self.calls.get(stream_id)
        if call is not None:  # trailers from the client: they must end the request
            if not flags & END_STREAM:
                raise ProtocolError("second HEADERS without END_STREAM")
            self._end_of_request(call)
            return
        if stream_id <= self.last_stream or not stream_id & 1:
            raise ProtocolError(f"HEADERS on stream {stream_id}: not a new client stream", STREAM_CLOSED)
        self.last_stream = stream_id
        if self.goaway_sent or len(self.calls) >= MAX_CONCURRENT_STREAMS:
            self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM)))
            return
        if size > MAX_HEADER_LIST:  # as grpcio: this call fails, the connection's other calls go on
            self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream_id, _RESPONSE_HEADERS + _trailers(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request metadata of {size} bytes exceeds {MAX_HEADER_LIST}")))
            if not flags & END_STREAM:
                self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(NO_ERROR)))
            return
        self._start_call(stream_id, flags, fields)

    def _start_call(self, stream_id: int, flags: int, fields: Iterable[tuple[bytes, bytes]]) -> None:
        method = b""
        http_method = content_type = encoding = timeout = None
        metadata = []
        for name, value in fields:
            if name[:1] == b":":
                if name == b":path":
                    method = value
                elif name == b":method":
                    http_method = value
                continue
            if name in _RESERVED_HEADERS:
                if name == b"content-type":
                    content_type = value
                elif name == b"grpc-timeout":
                    timeout = value
                elif name == b"grpc-encoding":
                    encoding = value
                continue
            key = name.decode("ascii", "replace")
            if key.endswith("-bin"):
                try:
                    metadata.append(_Metadatum(key, base64.b64decode(value + b"=" * (-len(value) % 4))))
                except ValueError:
                    continue
            else:
                metadata.append(_Metadatum(key, value.decode("latin-1")))
        if http_method != b"POST" or not method or not (content_type or b"").startswith(b"application/grpc"):
            status = b"405" if http_method != b"POST" else b"415"
            self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream_id, _header_block(
                (b":status", status), (b"content-type", b"text/plain"))))
            if not flags & END_STREAM:
                self._out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(PROTOCOL_ERROR)))
            return
        deadline = None
        if timeout is not None:
            m = _TIMEOUT.fullmatch(timeout)
            if m is not None:
                deadline = time.monotonic() + int(m.group(1)) * _TIMEOUT_UNIT[m.group(2)]
        call = _Call(self, stream_id, method.decode("latin-1"), tuple(metadata), deadline)
        with self.lock:
            self.calls[stream_id] = call
        if encoding not in (None, b"identity"):
            self._fail(call, grpc.StatusCode.UNIMPLEMENTED,
                       f"grpc-encoding {encoding.decode('latin-1')!r} is not supported")
            return
        handler = self.server.lookup(call)
        if handler is None:
            self._fail(call, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {call.method}")
            return
        call.handler = handler
        call.streaming_request = handler.request_streaming
        call.prompt = getattr(handler.unary_stream or handler.unary_unary, PROMPT_ATTRIBUTE, False)
        if deadline is not None:
            self.server.deadlines.add(deadline, call)
        if call.streaming_request:
            self._dispatch(call)
        if flags & END_STREAM:
            self._end_of_request(call)

    def _dispatch(self, call: _Call) -> None:
        call.dispatched = True
        if (call.prompt and not call.streaming_request and self.inline is None and not self.running_inline
                and all(c is call or c.finished for c in list(self.calls.values()))):
            self.inline = call  # the only live call on this connection: answer it without a hand-off
            return
        try:
            self.server.executor.submit(_run_call, call)
        except RuntimeError:  # shutting down
            self._fail(call, grpc.StatusCode.UNAVAILABLE, "server is shutting down")


def _sendall(sock: socket.socket, frames: list[bytes | memoryview]) -> None:
    """Write every buffer of ``frames`` in order, as few ``sendmsg`` calls as the kernel allows."""
    while frames:
        sent = sock.sendmsg(frames[:512])
        while sent:
            first = frames[0]
            if sent >= len(first):
                sent -= len(first)
                frames = frames[1:]
            else:
                frames = [memoryview(first)[sent:], *frames[1:]]
                sent = 0


def _run_call(call: _Call) -> None:
    """Run a call's handler on a worker thread and send its responses and status."""
    handler = call.handler
    context = _Context(call)
    try:
        if call.streaming_request:
            request: Any = _deserialized(call.requests(), handler.request_deserializer)
        else:
            with call.cond:
                raw = call.messages.popleft() if call.messages else b""
            request = handler.request_deserializer(raw) if handler.request_deserializer else raw
    except Exception as err:
        log.debug("%s: cannot parse the request: %s", call.method, err)
        call.finish(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
        return
    serialize = handler.response_serializer
    if not handler.response_streaming:
        behavior = handler.unary_unary or handler.stream_unary
        try:
            response = behavior(request, context)
        except _Abort:
            call.finish(context._code or grpc.StatusCode.UNKNOWN, context._details, context._trailing)
            return
        except Exception as err:
            if not call.finished:
                log.exception("%s: handler failed", call.method)
            call.finish(grpc.StatusCode.UNKNOWN, f"Exception calling application: {err}")
            return
        code = context._code
        if code is not None and code is not grpc.StatusCode.OK:
            call.finish(code, context._details, context._trailing)
            return
        if response is None:
            call.finish(grpc.StatusCode.INTERNAL, "the handler returned no response")
            return
        data = serialize(response) if serialize else response
        call.send_message(data, _trailers(grpc.StatusCode.OK, context._details, context._trailing))
        return
    behavior = handler.unary_stream or handler.stream_stream
    # a prompt stream's next response never waits on outside events: hold each one back until the
    # next (or the end) is known, so the last goes out in one write with the status
    prompt = getattr(behavior, PROMPT_ATTRIBUTE, False)
    responses = None
    pending: bytes | None = None
    try:
        responses = behavior(request, context)
        for response in responses:
            data = serialize(response) if serialize else response
            if prompt:
                data, pending = pending, data
                if data is None:
                    continue
            if not call.send_message(data):
                break
    except _Abort:
        _end_stream(call, pending, context._code or grpc.StatusCode.UNKNOWN, context._details, context._trailing)
        return
    except Exception as err:
        if not call.finished:
            log.exception("%s: handler failed", call.method)
        _end_stream(call, pending, grpc.StatusCode.UNKNOWN, f"Exception iterating responses: {err}")
        return
    finally:
        close = getattr(responses, "close", None)
        if call.finished and close is not None:
            close()  # the client went away: let the handler's finally blocks run now
    _end_stream(call, pending, context._code or grpc.StatusCode.OK, context._details, context._trailing)


def _end_stream(call: _Call, pending: bytes | None, code: grpc.StatusCode, details: str | None,
                trailing: Iterable[tuple[str, Any]] = ()) -> None:
    """End a response stream: the response held back (if any), then the status; one write when all went well."""
    if pending is None:
        call.finish(code, details, trailing)
    elif code is grpc.StatusCode.OK:
        call.send_message(pending, _trailers(code, details, trailing))
    elif call.send_message(pending):
        call.finish(code, details, trailing)


def _deserialized(messages: Iterator[bytes], deserialize: Callable[[bytes], Any] | None) -> Iterator[Any]:
    for raw in messages:
        yield deserialize(raw) if deserialize else raw


class Server:
    """A gRPC server on unix sockets with grpcio's server interface (the parts ``hoistd`` uses).

    :param max_workers: threads running handlers; a long stream (Write, Events, Logs) holds one.
    :param interceptors: :class:`grpc.ServerInterceptor` objects, the first outermost.
    :param max_receive_message_length: largest request message.
    :param max_send_message_length: largest response message.
    """

    def __init__(self, *, max_workers: int = 32, interceptors: Sequence[grpc.ServerInterceptor] = (),
                 max_receive_message_length: int = 4 << 20, max_send_message_length: int = MAX_WINDOW) -> None:
        self.executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hoist-grpc")
        self.max_receive = max_receive_message_length
        self.max_send = max_send_message_length
        self.deadlines = _Deadlines()
        self._interceptors = tuple(interceptors)
        self._generic: list[grpc.GenericRpcHandler] = []
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self._listeners: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._drain = threading.Condition(self._lock)
        self._lookup: Callable[[_CallDetails], Any] = self._find
        for interceptor in reversed(self._interceptors):
            self._lookup = _chain(interceptor, self._lookup)

    # -- registration (what generated code calls) --

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        for name, handler in method_handlers.items():
            self._methods[f"/{service_name}/{name}"] = handler

    def lookup(self, call: _Call) -> Any:
        """The handler of ``call``'s method through the interceptors, or ``None``."""
        return self._lookup(_CallDetails(call.method, call.metadata))

    def _find(self, details: _CallDetails) -> Any:
        handler = self._methods.get(details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    # -- sockets --

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``unix://PATH``; 1 when bound, 0 when not (as grpcio)."""
        if not address.startswith("unix://"):
            raise ValueError(f"{address}: only unix:// addresses are served")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(address[len("unix://"):])
            listener.listen(128)
        except OSError as err:
            log.warning("%s: cannot listen: %s", address, err)
            listener.close()
            return 0
        self._listeners.append(listener)
        return 1

    def start(self) -> None:
        for listener in self._listeners:
            threading.Thread(target=self._accept, args=(listener,), name="hoist-grpc-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    sock.close()
                    continue
                conn = _Connection(self, sock)
                self._connections.add(conn)
            threading.Thread(target=conn.run, name="hoist-grpc-conn", daemon=True).start()

    def _closed(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._drain.notify_all()

    def _drained(self, conn: _Connection) -> None:
        with self._lock:
            self._drain.notify_all()

    # -- stopping --

    def stop(self, grace: float | None) -> threading.Event:
        """Stop accepting calls; calls in flight get ``grace`` seconds, then are cancelled."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
            connections = list(self._connections)
        if not first:
            return self._stopped
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in connections:
            conn.goaway()
        threading.Thread(target=self._finish_stop, args=(grace,), name="hoist-grpc-stop", daemon=True).start()
        return self._stopped

    def _finish_stop(self, grace: float | None) -> None:
        deadline = time.monotonic() + (grace or 0.0)
        with self._lock:
            while any(c.calls for c in self._connections):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._drain.wait(left)
            connections = list(self._connections)
        for conn in connections:
            conn.close()
        self.deadlines.close()
        # handlers still running were cancelled above; one that never looks may keep its thread
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def _chain(interceptor: grpc.ServerInterceptor, continuation: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda details: interceptor.intercept_service(continuation, details)


def server(*, max_workers: int = 32, interceptors: Sequence[grpc.ServerInterceptor] = (),
           options: Sequence[tuple[str, Any]] = ()) -> Server:
    """A :class:`Server`; ``options`` takes grpcio's ``grpc.max_receive_message_length`` and
    ``grpc.max_send_message_length``."""
    opts = dict(options)
    return Server(max_workers=max_workers, interceptors=interceptors,
                  max_receive_message_length=opts.get("grpc.max_receive_message_length", 4 << 20),
                  max_send_message_length=opts.get("grpc.max_send_message_length", MAX_WINDOW))


__all__ = ["PROMPT_ATTRIBUTE", "ProtocolError", "Server", "prompt", "server"]
