"""A raw HTTP/2 client on a unix socket for protocol tests of Hoist's gRPC server: hand-built frames in,
parsed frames out, so a test can send what no real client would and assert every frame the server answers."""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

import hpack

# the protocol's numbers (RFC 9113 §6, §7, §6.5.2), as the server under test names them
from hoist.api.transport import (  # noqa: E402,F401
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    S_INITIAL_WINDOW_SIZE,
    S_MAX_FRAME_SIZE,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
)

_HEADER = struct.Struct(">IBI")


class Frame(NamedTuple):
    type: int
    flags: int
    stream: int
    payload: bytes


def frame(type_: int, flags: int, stream: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """One frame; ``length`` overrides the length field (to lie about the payload)."""
    n = len(payload) if length is None else length
    return _HEADER.pack((n << 8) | type_, flags, stream) + payload


def settings(**values: int) -> bytes:
    ids = {"initial_window_size": S_INITIAL_WINDOW_SIZE, "max_frame_size": S_MAX_FRAME_SIZE}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def grpc_message(data: bytes, *, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(data)) + data


def parse_settings(payload: bytes) -> dict[int, int]:
    return dict(struct.unpack_from(">HI", payload, off) for off in range(0, len(payload), 6))


def request_fields(path: str, *, method: str = "POST", content_type: str | None = "application/grpc",
                   extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """The header fields of a gRPC request (``content_type=None`` leaves it out)."""
    fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost")]
    if content_type is not None:
        fields.append(("content-type", content_type))
    fields.append(("te", "trailers"))
    fields.extend(extra)
    return fields


def parse_messages(data: bytes) -> list[bytes]:
    """The gRPC messages of a stream's DATA, concatenated."""
    messages, pos = [], 0
    while pos < len(data):
        flag, size = struct.unpack_from(">BI", data, pos)
        assert flag == 0 and pos + 5 + size <= len(data), (flag, size, len(data) - pos)
        messages.append(bytes(data[pos + 5:pos + 5 + size]))
        pos += 5 + size
    return messages


class Goaway(NamedTuple):
    last_stream: int
    code: int
    debug: bytes


def parse_goaway(payload: bytes) -> Goaway:
    last, code = struct.unpack_from(">II", payload)
    return Goaway(last & 0x7FFFFFFF, code, payload[8:])


class Response(NamedTuple):
    """What the server answered on one stream."""

    headers: list[dict[bytes, bytes]]  # each HEADERS block, decoded
    messages: list[bytes]
    resets: list[int]  # RST_STREAM error codes

    @property
    def status(self) -> dict[bytes, bytes]:
        """The last header block (the trailers, or the only block of a trailers-only answer)."""
        return self.headers[-1]


class RawClient:
    """One HTTP/2 connection to a unix socket, spoken frame by frame."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = bytearray()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        self.stash: list[Frame] = []  # frames read while looking for others

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *chunks: bytes) -> None:
        self.sock.sendall(b"".join(chunks))

    def handshake(self, **client_settings: int) -> None:
        """Send the preface and our SETTINGS; read the server's SETTINGS and its ack of ours."""
        self.send(PREFACE, settings(**client_settings))
        first = self.read_frame()
        assert first is not None and first.type == SETTINGS and not first.flags & ACK, first
        self.server_settings = parse_settings(first.payload)
        self.send(frame(SETTINGS, ACK, 0))
        self.wait_for(lambda f: f.type == SETTINGS and f.flags & ACK)

    def read_frame(self) -> Frame | None:
        """The next frame, or ``None`` at the end of the connection."""
        while True:
            if len(self.buf) >= 9:
                length_type, flags, stream = _HEADER.unpack_from(self.buf)
                length = length_type >> 8
                if len(self.buf) >= 9 + length:
                    payload = bytes(self.buf[9:9 + length])
                    del self.buf[:9 + length]
                    return Frame(length_type & 0xFF, flags, stream & 0x7FFFFFFF, payload)
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                assert not self.buf, f"connection ended inside a frame: {bytes(self.buf[:32])!r}"
                return None
            self.buf += data

    def wait_for(self, match) -> Frame:  # type: ignore[no-untyped-def]
        """Read until a frame ``match`` accepts; others are kept in ``stash``."""
        while True:
            f = self.read_frame()
            assert f is not None, f"connection ended; frames seen: {self.stash}"
            if match(f):
                return f
            self.stash.append(f)

    def frames_until_eof(self) -> list[Frame]:
        out = []
        while (f := self.read_frame()) is not None:
            out.append(f)
        return out

    def expect_goaway(self) -> Goaway:
        """Read to the end of the connection, which must hold exactly one GOAWAY, as its last frame."""
        frames = self.frames_until_eof()
        goaways = [f for f in frames if f.type == GOAWAY]
        assert len(goaways) == 1 and frames[-1].type == GOAWAY, frames
        assert goaways[0].stream == 0
        return parse_goaway(goaways[0].payload)

    def headers_block(self, path: str, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
        return self.encoder.encode(request_fields(path, **kwargs))

    def request(self, stream: int, path: str, message: bytes | None = b"",
                **headers) -> None:  # type: ignore[no-untyped-def]
        """Send a whole request: HEADERS, then one gRPC message ending the stream (``None``: no DATA)."""
        block = self.headers_block(path, **headers)
        if message is None:
            self.send(frame(HEADERS, END_HEADERS | END_STREAM, stream, block))
        else:
            self.send(frame(HEADERS, END_HEADERS, stream, block),
                      frame(DATA, END_STREAM, stream, grpc_message(message)))

    def response(self, stream: int) -> Response:
        """Read ``stream``'s answer up to its END_STREAM or RST_STREAM (frames of other streams are stashed)."""
        headers: list[dict[bytes, bytes]] = []
        data = bytearray()
        resets: list[int] = []
        while True:
            f = self.wait_for(lambda f: f.stream == stream or f.type in (GOAWAY,))
            assert f.type != GOAWAY, parse_goaway(f.payload)
            if f.type == HEADERS:
                assert f.flags & END_HEADERS
                headers.append(dict(self.decoder.decode(f.payload, raw=True)))
            elif f.type == DATA:
                data += f.payload
            elif f.type == RST_STREAM:
                resets.append(struct.unpack(">I", f.payload)[0])
                break
            if f.flags & END_STREAM:
                # the server may follow its answer with RST_STREAM(NO_ERROR) when we had not finished
                break
        messages = parse_messages(bytes(data))
        return Response(headers, messages, resets)
