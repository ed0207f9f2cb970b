"""hoist.content value types and helpers (write_blob, read_blob, file adaptors) and hoist.filters."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from hoist import filters
from hoist.content import (
    Descriptor,
    Digest,
    Info,
    Platform,
    ReaderAtFile,
    Status,
    info_fields,
    read_blob,
    status_fields,
    write_blob,
)
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, OutOfRangeError
from hoist.testing.content import BAD_DIGESTS, make_content
from hoist_content_local.store import LocalContentStore

HEX = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(tmp_path / "c")


# -- Digest -------------------------------------------------------------------------------------


def test_digest_parse_valid() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert (d.algorithm, d.hex, str(d), d.short()) == ("sha256", HEX, f"sha256:{HEX}", f"sha256:{HEX[:12]}")
    assert Digest.parse(d) is d
    assert str(Digest.parse("sha512:" + "0" * 128)) == "sha512:" + "0" * 128
    assert Digest.from_bytes(b"abc") == Digest("sha256", hashlib.sha256(b"abc").hexdigest())
    assert Digest.from_bytes(b"abc", "sha512").hex == hashlib.sha512(b"abc").hexdigest()


@pytest.mark.parametrize("bad", [*BAD_DIGESTS, None, 42, " sha256:" + HEX, "sha256:" + HEX + " ", "SHA256:" + HEX, "sha256:" + "g" * 64])
def test_digest_parse_invalid(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid digest"):
        Digest.parse(bad)  # type: ignore[arg-type]


def test_digest_error_messages_name_the_problem() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported algorithm 'md5'"):
        Digest.parse("md5:" + "a" * 32)
    with pytest.raises(InvalidArgumentError, match="needs 64 hex characters, got 63"):
        Digest.parse("sha256:" + "a" * 63)
    with pytest.raises(InvalidArgumentError, match="lower-case"):
        Digest.parse("sha256:" + "A" * 64)
    long = "sha256:" + "z" * 5000
    with pytest.raises(InvalidArgumentError) as e:
        Digest.parse(long)
    assert len(str(e.value)) < 300, "a huge input is not echoed whole"


# -- Descriptor / Info / Status -------------------------------------------------------------------


def test_descriptor_json_round_trip() -> None:
    obj = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{HEX}",
        "size": 1234,
        "urls": ["https://example.com/blob"],
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    }
    d = Descriptor.from_json(obj)
    assert d.platform == Platform(os="linux", architecture="arm64", variant="v8")
    assert str(d.platform) == "linux/arm64/v8"
    assert d.to_json() == obj
    assert Descriptor.from_json(d.to_json()) == d


@pytest.mark.parametrize(
    "obj",
    [
        {"mediaType": "x", "digest": "sha256:nope", "size": 1},
        {"mediaType": "x", "digest": f"sha256:{HEX}", "size": -1},
        {"mediaType": "x", "digest": f"sha256:{HEX}", "size": "1"},
        {"mediaType": "x", "digest": f"sha256:{HEX}", "size": True},
        {"mediaType": 5, "digest": f"sha256:{HEX}", "size": 1},
        {"mediaType": "x", "size": 1},
        [],
    ],
)
def test_descriptor_rejects_malformed(obj: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Descriptor.from_json(obj)  # type: ignore[arg-type]


def test_status_and_info_fields_for_filters() -> None:
    info = Info(digest=f"sha256:{HEX}", size=5, labels={"a.b": "c"})
    f = info_fields(info)
    assert f(("digest",)) == (f"sha256:{HEX}", True)
    assert f(("size",)) == ("5", True)
    assert f(("labels", "a", "b")) == ("c", True)
    assert f(("labels", "x")) == ("", False)
    assert f(("other",)) == ("", False)
    st = Status(ref="layer-1", offset=3, total=10, expected="")
    assert st.expected is None
    g = status_fields(st)
    assert g(("ref",)) == ("layer-1", True)
    assert g(("expected",)) == ("", False)
    assert g(("total",)) == ("10", True)


# -- filters ------------------------------------------------------------------------------------


def _m(flt: str | tuple[str, ...], fields: dict[str, str]) -> bool:
    parsed = filters.parse(*(flt if isinstance(flt, tuple) else (flt,)))
    return parsed.match(lambda path: (fields[".".join(path)], True) if ".".join(path) in fields else ("", False))


@pytest.mark.parametrize(
    ("flt", "fields", "want"),
    [
        ("name==foo", {"name": "foo"}, True),
        ("name==foo", {"name": "bar"}, False),
        ("name!=foo", {}, True),
        ("name", {"name": ""}, True),
        ("name", {}, False),
        ("name==foo,labels.bar", {"name": "foo", "labels.bar": "1"}, True),
        ("name==foo,labels.bar", {"name": "foo"}, False),
        (("name==foo", "name==bar"), {"name": "bar"}, True),
        ('labels."very complex label"==something', {"labels.very complex label": "something"}, True),
        ('labels."with\\"quote"==x', {'labels.with"quote': "x"}, True),
        ("ref~=^layer-", {"ref": "layer-sha256:1"}, True),
        ("ref~=^layer-", {"ref": "manifest-1"}, False),
        ("ref~=/a,b/", {"ref": "xa,by"}, True),
        ("ref~=|a/b|", {"ref": "a/b"}, True),
        ('name=="quoted value"', {"name": "quoted value"}, True),
        (" name == foo , labels.x ", {"name": "foo", "labels.x": "1"}, True),
        ("", {}, True),
    ],
)
def test_filters_match(flt: str | tuple[str, ...], fields: dict[str, str], want: bool) -> None:
    assert _m(flt, fields) is want


@pytest.mark.parametrize("bad", ["name=foo", "name==", "==foo", "name==foo,", "name==foo bar", "name~=(", "a..b", 'name=="open', "name==/x/", "-x"])
def test_filters_reject(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid filter"):
        filters.parse(bad)


# -- write_blob ---------------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._b = io.BytesIO(data)
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = self._b.readinto(buf)
        self.served += n
        return n


class _ReadOnly:
    """A source with only .read(), no readinto, no seek."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(n)


def _partial(store: LocalContentStore, ref: str, data: bytes, n: int) -> None:
    w = store.writer(ref, total=len(data), expected=Digest.from_bytes(data))
    w.write(data[:n])
    w.close()


def test_write_blob_resumes_seekable_source_at_offset(store: LocalContentStore) -> None:
    data, d = make_content(5 << 20)
    _partial(store, "r", data, 3 << 20)
    src = io.BytesIO(b"prefix" + data)
    src.seek(6)  # the blob starts where the stream is positioned
    seen: list[int] = []
    write_blob(store, "r", src, len(data), d, labels={"k": "v"}, progress=seen.append)
    assert seen[0] == 3 << 20 and seen[-1] == 5 << 20
    assert seen == sorted(seen) and len(seen) == 3, "1 MiB chunks from the resume point"
    assert store.info(d).labels == {"k": "v"}
    with store.reader_at(Descriptor(media_type="x", digest=d, size=len(data))) as ra:
        assert ra.read() == data


def test_write_blob_non_seekable_source_truncates(store: LocalContentStore) -> None:
    data, d = make_content(3 << 20)
    _partial(store, "r", data, 2 << 20)
    src = _Pipe(data)
    seen: list[int] = []
    write_blob(store, "r", src, len(data), d, progress=seen.append)
    assert seen[0] == 0 and src.served == len(data)
    assert store.info(d).size == len(data)

    data2, d2 = make_content(100)
    _partial(store, "r2", data2, 50)
    write_blob(store, "r2", _ReadOnly(data2), len(data2), d2)
    assert store.info(d2).size == 100


def test_write_blob_opener_reopens_at_offset(store: LocalContentStore) -> None:
    data, d = make_content(2 << 20)
    _partial(store, "r", data, 1 << 20)
    calls: list[int] = []
    closed: list[bool] = []

    class Body(io.BytesIO):
        def close(self) -> None:
            closed.append(True)
            super().close()

    def open_at(offset: int) -> io.BytesIO:
        calls.append(offset)
        return Body(data[offset:])

    write_blob(store, "r", open_at, len(data), d)
    assert calls == [1 << 20] and closed == [True]
    assert store.info(d).size == len(data)


def test_write_blob_unknown_size_and_digest(store: LocalContentStore) -> None:
    data, d = make_content(1000)
    write_blob(store, "anon", io.BytesIO(data), None, None)
    assert store.info(d).size == 1000


def test_write_blob_resume_longer_than_size_restarts(store: LocalContentStore) -> None:
    data, d = make_content(1000)
    w = store.writer("r")
    w.write(b"x" * 2000)
    w.close()
    write_blob(store, "r", _Pipe(data), 1000, d)
    assert store.info(d).size == 1000


def test_write_blob_bad_arguments(store: LocalContentStore) -> None:
    with pytest.raises(InvalidArgumentError):
        write_blob(store, "r", io.BytesIO(b""), -1, None)
    with pytest.raises(InvalidArgumentError):
        write_blob(store, "r", io.BytesIO(b""), 0, "sha256:short")
    assert store.list_statuses() == []


def test_write_blob_failed_verification_of_fresh_data_is_reported(store: LocalContentStore) -> None:
    data, _ = make_content(100)
    wrong = Digest.from_bytes(b"other")
    with pytest.raises(FailedPreconditionError, match=f"expected {wrong}"):
        write_blob(store, "r", io.BytesIO(data), 100, wrong)


# -- read_blob / ReaderAtFile ---------------------------------------------------------------------


def test_read_blob_cap_and_size_check(store: LocalContentStore) -> None:
    data, d = make_content(1000)
    write_blob(store, "r", io.BytesIO(data), 1000, d)
    assert read_blob(store, Descriptor(media_type="x", digest=d, size=1000), max_size=1000) == data
    assert read_blob(store, Descriptor(media_type="x", digest=d, size=0)) == data
    with pytest.raises(OutOfRangeError, match="size 1000 exceeds the limit of 999 bytes"):
        read_blob(store, Descriptor(media_type="x", digest=d, size=0), max_size=999)
    with pytest.raises(OutOfRangeError, match="exceeds the limit"):
        read_blob(store, Descriptor(media_type="x", digest=d, size=10**12))
    with pytest.raises(FailedPreconditionError, match="descriptor says 999, store has 1000"):
        read_blob(store, Descriptor(media_type="x", digest=d, size=999))
    with pytest.raises(NotFoundError):
        read_blob(store, Descriptor(media_type="x", digest=Digest.from_bytes(b"nope"), size=4))


class _MinimalReaderAt:
    """Only the ReaderAt protocol: size, read_at, close."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, n: int) -> bytes:
        return self.data[offset : offset + n]

    def close(self) -> None:
        self.closed = True


def test_reader_at_file_adapts_any_reader_at() -> None:
    import gzip

    raw = b"hello world\n" * 10000
    ra = _MinimalReaderAt(gzip.compress(raw))
    f = ReaderAtFile(ra)
    with gzip.GzipFile(fileobj=f) as gz:
        assert gz.read() == raw
    f.seek(0)
    assert f.read(2) == b"\x1f\x8b"
    f.close()
    assert ra.closed
