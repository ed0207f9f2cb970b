"""Blob bodies read straight from the socket into the reader's buffer (the transport's direct path), for real.

A body with a ``Content-Length`` is read with ``recv_into`` after the bytes h11 had received past the response head,
and its connection goes back to the pool once the body is read to the end.  These tests pin what a user of the
fetcher sees on that path: exact bytes over HTTP and TLS, resumes after stalls and resets, digest and size errors,
connections that stay usable for the next fetch, and ``read`` as well as ``readinto``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import httpx
import pytest
from support.faultproxy import Fault, flip_byte, ignore_range, reset_after, stall, truncate
from support.pki import TestPKI
from registry_blobs import hosts_dir, push_blob, read_all
from support.registry import Registry

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError
from hoist.remotes import ResolverOptions
from hoist_resolver_docker import http1
from hoist_resolver_docker.http1 import RegistryTransport
from hoist_resolver_docker.resolver import RegistryClient
from hoist_resolver_docker.transport import ResumingBody, RetryPolicy

MiB = 1 << 20

pytestmark = pytest.mark.timeout(60)  # a hang on the direct path fails here, not after the suite's 300 s


@pytest.fixture
def direct_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Byte counts of every body read into a caller's buffer (the direct path), recorded as they pass."""
    seen: list[int] = []
    original = http1._Body.readinto

    def recording(self: http1._Body, view: memoryview) -> int:
        n = original(self, view)
        seen.append(n)
        return n

    monkeypatch.setattr(http1._Body, "readinto", recording)
    return seen


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """``(host, port)`` of every TCP connection the resolvers open, in order."""
    seen: list[tuple[str, int]] = []
    original = http1.RegistryTransport._connect

    def recording(self: http1.RegistryTransport, key: tuple[str, str, int], timeout: float | None):  # type: ignore[no-untyped-def]
        seen.append(key[1:])
        return original(self, key, timeout)

    monkeypatch.setattr(http1.RegistryTransport, "_connect", recording)
    return seen


def _read_until_error(stream, into: bytearray) -> None:  # type: ignore[no-untyped-def]
    """Read ``stream`` into ``into`` until it ends or raises (what a consumer received stays in ``into``)."""
    with stream as s:
        buf = bytearray(MiB)
        while n := s.readinto(buf):
            into += memoryview(buf)[:n]


@attrs.frozen(kw_only=True)
class Blob:
    repo: str
    desc: Descriptor
    data: bytes


@pytest.fixture(scope="module")
def big(registry: Registry) -> Blob:
    data = random.Random(8).randbytes(8 * MiB)
    return Blob(repo="t/direct-big", desc=push_blob(registry, "t/direct-big", data), data=data)


@pytest.fixture(scope="module")
def mix(registry: Registry) -> list[Blob]:
    """3 blobs of 8 MiB and 20 of 64 KiB in one repository, large ones spread among the small ones."""
    repo = "t/direct-mix"
    rng = random.Random(23)
    large = [rng.randbytes(8 * MiB) for _ in range(3)]
    small = [rng.randbytes(64 * 1024) for _ in range(20)]
    order = [large[0], *small[:7], large[1], *small[7:14], large[2], *small[14:]]
    with ThreadPoolExecutor(4) as pool:
        descs = list(pool.map(lambda d: push_blob(registry, repo, d), order))
    return [Blob(repo=repo, desc=desc, data=data) for desc, data in zip(descs, order)]


# -- 1. TLS --------------------------------------------------------------------------------------------


def test_tls_blob_arrives_exact_and_verified(registry_tls: Registry, make, tmp_path: Path,
                                             direct_reads: list[int]) -> None:
    data = random.Random(1).randbytes(8 * MiB + 12345)
    desc = push_blob(registry_tls, "t/direct-tls", data)
    r = make(ResolverOptions(hosts_dir=hosts_dir(tmp_path, registry_tls.host, registry_tls.ca_cert)))
    out = bytearray()
    with r.fetcher(registry_tls.ref("t/direct-tls")).fetch(desc) as stream:
        buf = bytearray(3 * MiB + 7)  # a reader buffer unaligned with TLS records and socket reads
        while n := stream.readinto(buf):
            out += memoryview(buf)[:n]
        assert stream.verified and stream.offset == desc.size
    assert bytes(out) == data
    # Everything after the parser's first chunk came through the socket into the reader's buffer.
    assert sum(direct_reads) >= desc.size - 2 * MiB


@pytest.mark.parametrize("fault", [reset_after(5 * MiB), truncate(5 * MiB), stall(5, after_bytes=5 * MiB)], ids=str)
def test_tls_cut_in_the_direct_part_resumes(registry: Registry, fault_proxy, make, big: Blob, pki: TestPKI,
                                            tmp_path: Path, direct_reads: list[int], fault: Fault) -> None:
    proxy = fault_proxy(registry, tls=pki.server)
    rule = proxy.inject(fault, path="/blobs/", method="GET", times=1)
    r = make(ResolverOptions(hosts_dir=hosts_dir(tmp_path, proxy.host, pki.ca_cert)), stall_timeout=0.5)
    assert read_all(r.fetcher(f"{proxy.host}/{big.repo}").fetch(big.desc)) == big.data
    assert rule.hits == 1
    gets = [q for q in proxy.requests if q.method == "GET"]
    assert len(gets) == 2 and gets[0].range is None and gets[1].status == 206
    assert 0 < int(gets[1].range.removeprefix("bytes=").rstrip("-")) <= 5 * MiB
    assert sum(direct_reads) >= big.desc.size - 2 * 2 * MiB


# -- 2. stall on the direct part -----------------------------------------------------------------------


def test_stall_in_the_direct_part_resumes_with_range(registry: Registry, fault_proxy, make, big: Blob,
                                                     direct_reads: list[int]) -> None:
    proxy = fault_proxy(registry)
    rule = proxy.inject(stall(5, after_bytes=3 * MiB), path="/blobs/", method="GET", times=1)
    with make(stall_timeout=0.5).fetcher(f"{proxy.host}/{big.repo}").fetch(big.desc) as stream:
        out = bytearray()
        buf = bytearray(MiB)
        while n := stream.readinto(buf):
            out += memoryview(buf)[:n]
        assert stream.verified and stream.offset == big.desc.size
    assert bytes(out) == big.data
    assert rule.hits == 1
    gets = [q for q in proxy.requests if q.method == "GET"]
    # The proxy sent the first 3 MiB before pausing: the client took all of them, then resumed right there.
    assert [(q.range, q.status) for q in gets] == [(None, 200), (f"bytes={3 * MiB}-", 206)]
    assert sum(direct_reads) >= big.desc.size - 3 * MiB


def test_stall_in_the_direct_part_is_logged_like_the_parser_path(registry: Registry, fault_proxy, make, big: Blob,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hoist.resolver.v1.docker")
    proxy = fault_proxy(registry)
    proxy.inject(stall(5, after_bytes=3 * MiB), path="/blobs/", method="GET", times=1)
    assert read_all(make(stall_timeout=0.5).fetcher(f"{proxy.host}/{big.repo}").fetch(big.desc)) == big.data
    assert [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()] == [
        f"{proxy.host}/{big.repo}@{big.desc.digest}: resuming at byte {3 * MiB} of {big.desc.size} "
        "(timed out no data received)"]


# -- 3. corruption on the direct part ------------------------------------------------------------------


def test_flipped_byte_in_the_direct_part_is_a_digest_mismatch(registry: Registry, fault_proxy, make,
                                                              big: Blob) -> None:
    proxy = fault_proxy(registry)
    proxy.inject(flip_byte(6 * MiB), path="/blobs/", method="GET", times=1)
    got = bytearray()
    with pytest.raises(FailedPreconditionError,
                       match=f"^content {proxy.host}/{big.repo}@{big.desc.digest}: digest mismatch: got sha256:"):
        _read_until_error(make().fetcher(f"{proxy.host}/{big.repo}").fetch(big.desc), got)
    # The read that would have completed the object failed instead of handing out its bytes.
    assert len(got) < big.desc.size
    assert got[:6 * MiB] == big.data[:6 * MiB] and got[6 * MiB] != big.data[6 * MiB]
    assert [(q.method, q.status) for q in proxy.requests if "/blobs/" in q.path] == [("GET", 200)]


# -- 4. registry and descriptor disagree on the size ---------------------------------------------------


def test_body_longer_than_the_descriptor_is_a_size_mismatch(registry: Registry, fault_proxy, make,
                                                            big: Blob) -> None:
    proxy = fault_proxy(registry)
    short = attrs.evolve(big.desc, size=big.desc.size - MiB)  # what a registry lying about the size looks like
    assert short.size >= 4 * MiB
    got = bytearray()
    with pytest.raises(FailedPreconditionError,
                       match=f"^content {proxy.host}/{big.repo}@{big.desc.digest}: size mismatch: stream is longer "
                             f"than the expected {short.size} bytes"):
        _read_until_error(make().fetcher(f"{proxy.host}/{big.repo}").fetch(short), got)
    assert len(got) < short.size and got == big.data[:len(got)]
    assert [(q.method, q.range, q.status) for q in proxy.requests if "/blobs/" in q.path] == [("GET", None, 200)]


def test_body_shorter_than_the_descriptor_is_a_size_mismatch(registry: Registry, fault_proxy, make,
                                                             big: Blob) -> None:
    proxy = fault_proxy(registry)
    long = attrs.evolve(big.desc, size=big.desc.size + MiB)
    got = bytearray()
    with pytest.raises(FailedPreconditionError,
                       match=f"^content {proxy.host}/{big.repo}@{big.desc.digest}: size mismatch: "
                             f"http://{proxy.host}/v2 has {big.desc.size} bytes, expected {long.size}$"):
        _read_until_error(make().fetcher(f"{proxy.host}/{big.repo}").fetch(long), got)
    assert got == big.data[:len(got)]
    # The body, then (if it was read to its end) one resume there, which the registry refuses with the real length.
    blob_gets = [(q.range, q.status) for q in proxy.requests if "/blobs/" in q.path]
    assert blob_gets in ([(None, 200)], [(None, 200), (f"bytes={big.desc.size}-", 416)])


# -- 5. connections after direct bodies ----------------------------------------------------------------


def test_mixed_sizes_after_direct_bodies_stay_exact(registry: Registry, fault_proxy, make, mix: list[Blob],
                                                    big: Blob, connects: list[tuple[str, int]],
                                                    direct_reads: list[int]) -> None:
    proxy = fault_proxy(registry)
    fetcher = make().fetcher(f"{proxy.host}/{mix[0].repo}")
    large = [b for b in mix if b.desc.size >= 4 * MiB]
    assert len(large) == 3 and len(mix) == 23

    # A body dropped half-way costs its connection and nothing else.
    partial = make().fetcher(f"{proxy.host}/{big.repo}")
    with partial.fetch(big.desc) as stream:
        half = bytearray(5 * MiB)
        view, pos = memoryview(half), 0
        while pos < len(half):
            pos += stream.readinto(view[pos:])
        assert half == big.data[:len(half)]
    assert read_all(partial.fetch(big.desc)) == big.data
    proxy.clear()
    connects.clear()
    direct_reads.clear()

    for b in mix:
        assert read_all(fetcher.fetch(b.desc)) == b.data
    # One after another, every blob, large or small, goes over the same pooled connection.
    assert len(connects) == 1
    sequential_connects = len(connects)

    jobs = [*mix, *mix]
    random.Random(8).shuffle(jobs)
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda b: read_all(fetcher.fetch(b.desc)) == b.data, jobs))
    assert len(connects) - sequential_connects <= 8

    blob_requests = [q for q in proxy.requests if "/blobs/" in q.path]
    assert [q.method for q in blob_requests] == ["GET"] * (len(mix) * 3)
    sizes = {b.desc.digest: b.desc.size for b in mix}
    for q in blob_requests:
        size = sizes[Digest.parse(q.path.rpartition("/")[2])]
        assert (q.range, q.status, q.bytes_sent) == (None, 200, size), q
    assert all(q.status == 200 for q in proxy.requests), [(q.method, q.path, q.status) for q in proxy.requests]
    assert sum(direct_reads) >= len(large) * 3 * (8 * MiB - 2 * MiB)


# -- 6. read() on a direct body ------------------------------------------------------------------------


def test_read_on_the_verifying_stream(registry: Registry, make, big: Blob) -> None:
    with make().fetcher(registry.ref(big.repo)).fetch(big.desc) as stream:
        parts = []
        for n in (1, 4095, 65536, MiB + 3, 3 * MiB):
            part = stream.read(n)
            assert 0 < len(part) <= n
            parts.append(part)
        parts.append(stream.read())
        assert stream.read(10) == b"" and stream.read() == b""
        assert stream.verified and stream.offset == big.desc.size
    assert b"".join(parts) == big.data


def _resuming_body(client: RegistryClient, url: str, size: int) -> ResumingBody:
    def open_at(offset: int) -> httpx.Response:
        response = client.send("GET", url, {"Range": f"bytes={offset}-"} if offset else {})
        assert response.status_code in (200, 206, 416)
        return response

    return ResumingBody(open_at, open_at(0), size=size, name=url.rpartition("/")[2],
                        policy=RetryPolicy(backoff=0.01, resume_attempts=2))


@pytest.fixture
def raw_client() -> Iterator[RegistryClient]:
    """A client on the resolver's own transport (direct bodies)."""
    client = RegistryClient(RegistryTransport(verify=httpx.create_ssl_context(), limits=httpx.Limits(max_connections=4)),
                            httpx.Timeout(30.0, read=5.0))
    yield client
    client.close()


@pytest.mark.parametrize("fault", ["none", "reset", "reset-then-ignore-range"])
def test_read_on_the_resuming_body(registry: Registry, fault_proxy, raw_client: RegistryClient, big: Blob,
                                   direct_reads: list[int], fault: str) -> None:
    proxy = fault_proxy(registry)
    if fault != "none":
        proxy.inject(reset_after(5 * MiB), path="/blobs/", method="GET", times=1)
    if fault == "reset-then-ignore-range":
        proxy.inject(ignore_range(), path="/blobs/", method="GET")
    url = f"{proxy.url}/v2/{big.repo}/blobs/{big.desc.digest}"
    body = _resuming_body(raw_client, url, big.desc.size)
    try:
        parts = []
        for n in (1, 4095, 65536, MiB + 3, 3 * MiB, 2 * MiB):  # these reach past the reset at 5 MiB
            part = body.read(n)
            assert 0 < len(part) <= n  # a raw read: after a resume without a direct body, one chunk at most
            parts.append(part)
        parts.append(body.read())
        assert body.read() == b"" and body.read(10) == b""
        assert body.offset == big.desc.size
    finally:
        body.close()
    assert b"".join(parts) == big.data
    # the resumed 200 brings the whole object again, of which the reader skips what it had
    assert direct_reads and sum(direct_reads) <= big.desc.size * (2 if fault == "reset-then-ignore-range" else 1)
    gets = [q for q in proxy.requests if q.method == "GET"]
    if fault == "none":
        assert [(q.range, q.status) for q in gets] == [(None, 200)]
    elif fault == "reset":
        assert len(gets) == 2 and gets[1].status == 206 and gets[1].range is not None
        assert int(gets[1].range.removeprefix("bytes=").rstrip("-")) <= 5 * MiB
    else:
        assert [q.status for q in gets] == [200, 200] and gets[1].range is not None
