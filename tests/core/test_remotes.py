"""hoist.remotes: the verifying stream every resolver plugin hands out, and the option types."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, InvalidArgumentError
from hoist.remotes import ResolverOptions, VerifyingReader, read_all


def _desc(data: bytes) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=Digest.from_bytes(data), size=len(data))


class Raw(io.RawIOBase):
    """A raw stream over ``data`` that hands out at most ``step`` bytes per read and counts them."""

    def __init__(self, data: bytes, step: int = 1 << 20) -> None:
        self.data, self.pos, self.step, self.taken = data, 0, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        self.taken += n
        return n


def _drain(stream: VerifyingReader, bufsize: int = 1 << 20) -> bytes:
    out = bytearray()
    buf = bytearray(bufsize)
    while n := stream.readinto(buf):
        out += buf[:n]
    return bytes(out)


def test_exact_stream_passes_and_is_verified() -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    with VerifyingReader(Raw(data, step=100_000), _desc(data)) as s:
        assert _drain(s) == data
        assert s.verified and s.offset == len(data)
        assert s.readinto(bytearray(10)) == 0


def test_read_and_readall() -> None:
    data = os.urandom(5000)
    s = VerifyingReader(Raw(data, step=999), _desc(data))
    assert s.read(10) == data[:10]
    assert s.read() == data[10:]
    assert s.read() == b""


def test_longer_stream_fails_after_at_most_size_plus_one_bytes() -> None:
    data = os.urandom(100_000)
    raw = Raw(data + b"X" * 1_000_000)
    s = VerifyingReader(raw, _desc(data), name="blob-a")
    with pytest.raises(FailedPreconditionError, match="content blob-a: size mismatch: stream is longer than the "
                                                       "expected 100000 bytes"):
        _drain(s)
    assert raw.taken == len(data) + 1
    with pytest.raises(FailedPreconditionError):  # the error sticks
        s.read(1)


def test_shorter_stream_fails() -> None:
    data = os.urandom(10_000)
    s = VerifyingReader(Raw(data[:9_000]), _desc(data))
    with pytest.raises(FailedPreconditionError, match="stream ended at 9000 bytes, expected 10000"):
        _drain(s)


def test_wrong_digest_fails_before_the_last_bytes_are_handed_out() -> None:
    data = bytearray(os.urandom(3 << 20))
    desc = _desc(bytes(data))
    data[-1] ^= 0xFF
    s = VerifyingReader(Raw(bytes(data)), desc)
    got = bytearray()
    buf = bytearray(1 << 20)
    with pytest.raises(FailedPreconditionError, match=f"content {desc.digest}: digest mismatch: got sha256:"):
        while n := s.readinto(buf):
            got += buf[:n]
    assert len(got) == 2 << 20  # the chunk completing the bad object never reached the caller


def test_empty_object() -> None:
    desc = _desc(b"")
    assert VerifyingReader(Raw(b""), desc).read() == b""
    with pytest.raises(FailedPreconditionError, match="longer"):
        VerifyingReader(Raw(b"x"), desc)


def test_seek_resumes_and_checks_the_size_only() -> None:
    data = os.urandom(10_000)

    class Seekable(Raw):
        def seekable(self) -> bool:
            return True

        def seek(self, offset: int, whence: int = 0) -> int:
            self.pos = offset
            return offset

    s = VerifyingReader(Seekable(data), _desc(data))
    assert s.seekable()
    assert s.seek(4_000) == 4_000
    assert _drain(s) == data[4_000:]
    assert not s.verified
    s2 = VerifyingReader(Seekable(data), _desc(data))
    s2.read(10)
    with pytest.raises(io.UnsupportedOperation):
        s2.seek(100)


def test_read_all_limit() -> None:
    data = os.urandom(2000)
    assert read_all(VerifyingReader(Raw(data), _desc(data)), 2000) == data
    with pytest.raises(FailedPreconditionError, match="larger than the 1999-byte limit"):
        read_all(VerifyingReader(Raw(data), _desc(data)), 1999, name="x")


@given(st.binary(max_size=5000), st.integers(1, 700), st.integers(1, 900), st.integers(-3, 3))
def test_any_chunking_yields_exactly_the_object_or_fails(data: bytes, step: int, bufsize: int, delta: int) -> None:
    served = data + b"\0" * delta if delta > 0 else data[: len(data) + delta] if delta < 0 else data
    try:
        got = _drain(VerifyingReader(Raw(served, step=step), _desc(data)), bufsize)
    except FailedPreconditionError:
        assert served != data
    else:
        assert served == data and got == data


def test_resolver_options() -> None:
    o = ResolverOptions(plain_http=True, username="u", secret="s", hosts_dir="/etc/x", timeout=5)
    assert o.hosts_dir is not None and str(o.hosts_dir) == "/etc/x"
    assert "secret=" not in repr(o)
    with pytest.raises(InvalidArgumentError, match="timeout must be positive"):
        ResolverOptions(timeout=0)


def test_deferred_digest_still_checks_the_size_and_leaves_the_digest_to_the_consumer() -> None:
    data = os.urandom(200_000)
    wrong = bytes([data[0] ^ 1]) + data[1:]
    s = VerifyingReader(Raw(wrong, step=70_000), _desc(data), name="blob-d")
    s.defer_digest()
    assert _drain(s) == wrong  # the content store's commit is what refuses these bytes
    assert not s.verified
    short = VerifyingReader(Raw(data[:-1]), _desc(data), name="blob-d")
    short.defer_digest()
    with pytest.raises(FailedPreconditionError, match="content blob-d: size mismatch: stream ended at 199999 bytes"):
        _drain(short)
    started = VerifyingReader(Raw(data), _desc(data), name="blob-d")
    started.read(10)
    with pytest.raises(io.UnsupportedOperation, match="blob-d: cannot defer the digest check after reading"):
        started.defer_digest()
