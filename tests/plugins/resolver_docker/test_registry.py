"""The docker resolver against the real Docker Distribution registry on 127.0.0.1, directly and through faults."""

from __future__ import annotations

import json
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.faultproxy import (
    flip_byte,
    ignore_range,
    redirect,
    reset_after,
    server_error,
    stall,
    too_many_requests,
    truncate,
)
from registry_blobs import hosts_dir, push_blob, read_all
from support.registry import Registry

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, UnavailableError
from hoist.remotes import Credentials, ResolverOptions, UnauthorizedError
from hoist_resolver_docker.resolver import DockerResolver

MiB = 1 << 20
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json"}








def _pull_all(resolver: DockerResolver, ref: str) -> dict[str, bytes]:
    """Resolve ``ref`` and fetch it and every child; digest -> bytes."""
    resolved = resolver.resolve(ref)
    got: dict[str, bytes] = {}
    todo = [resolved.descriptor]
    while todo:
        desc = todo.pop()
        data = read_all(resolved.fetcher.fetch(desc))
        got[str(desc.digest)] = data
        if desc.media_type in MANIFEST_TYPES:
            doc = json.loads(data)
            children = doc.get("manifests", []) + ([doc["config"]] if "config" in doc else []) + doc.get("layers", [])
            todo += [Descriptor.from_json(c) for c in children]
    return got




def _check_against_registry(reg: Registry, got: dict[str, bytes]) -> None:
    for digest, data in got.items():
        assert Digest.from_bytes(data) == Digest.parse(digest)
        assert reg.blob_path(digest).read_bytes() == data


# -- plain HTTP, TLS, Basic, Bearer --------------------------------------------------------------------


def test_plain_http_image_and_index(registry: Registry, make) -> None:
    r = make()
    for name in ("test/busybox:1", "test/busybox:v2s2", "test/multi:1"):
        got = _pull_all(r, registry.ref(name))
        assert registry.pushed[name].digest in got
        _check_against_registry(registry, got)
    multi = r.resolve(registry.ref("test/multi:1")).descriptor
    assert multi.media_type == "application/vnd.oci.image.index.v1+json"
    assert r.resolve(registry.ref("test/busybox:v2s2")).descriptor.media_type == \
        "application/vnd.docker.distribution.manifest.v2+json"
    by_digest = r.resolve(registry.ref(f"test/multi@{multi.digest}"))
    assert by_digest.descriptor == multi and by_digest.name == registry.ref(f"test/multi@{multi.digest}")


def test_tls_with_the_test_ca(registry_tls: Registry, make, tmp_path: Path) -> None:
    assert registry_tls.ca_cert is not None
    r = make(ResolverOptions(hosts_dir=hosts_dir(tmp_path, registry_tls.host, registry_tls.ca_cert)))
    _check_against_registry(registry_tls, _pull_all(r, registry_tls.ref("test/busybox:1")))


def test_tls_with_a_wrong_ca_fails_without_downgrading(registry_tls: Registry, make, tmp_path: Path) -> None:
    hosts = hosts_dir(tmp_path, registry_tls.host, registry_tls.other_ca_cert)
    mark = registry_tls.access_mark()
    with pytest.raises(UnavailableError, match=f"https://{registry_tls.host}/v2: TLS certificate verification "
                                               "failed .*CERTIFICATE_VERIFY_FAILED"):
        make(ResolverOptions(hosts_dir=hosts)).resolve(registry_tls.ref("test/busybox:1"))
    assert registry_tls.access_entries(since=mark) == []
    assert "HTTP request to an HTTPS server" not in registry_tls.error_log.read_text(errors="replace")
    skipping = make(ResolverOptions(hosts_dir=hosts, skip_verify=True))
    assert skipping.resolve(registry_tls.ref("test/busybox:1")).descriptor.digest == \
        Digest.parse(registry_tls.pushed["test/busybox:1"].digest)


def test_basic_auth(registry_basic: Registry, make, tmp_path: Path) -> None:
    hosts = hosts_dir(tmp_path, registry_basic.host, registry_basic.ca_cert)
    ref = registry_basic.ref("test/busybox:1")
    good = make(ResolverOptions(hosts_dir=hosts, username=registry_basic.username, secret=registry_basic.password))
    _check_against_registry(registry_basic, _pull_all(good, ref))
    with pytest.raises(UnauthorizedError, match="requires a user and password"):
        make(ResolverOptions(hosts_dir=hosts)).resolve(ref)
    with pytest.raises(UnauthorizedError, match=f"{ref}: authentication required"):
        make(ResolverOptions(hosts_dir=hosts, username="hoist", secret="wrong")).resolve(ref)


def test_bearer_token(registry_token: Registry, make, tmp_path: Path) -> None:
    ts = registry_token.token_server
    assert ts is not None
    hosts = hosts_dir(tmp_path, registry_token.host, registry_token.ca_cert)
    ref = registry_token.ref("test/busybox:1")
    r = make(ResolverOptions(hosts_dir=hosts, username=registry_token.username, secret=registry_token.password))
    ts.clear()
    got = _pull_all(r, ref)
    _check_against_registry(registry_token, got)
    r.resolve(ref)
    requests = ts.requests
    assert len(requests) == 1  # one token for the scope, cached for every later request
    assert requests[0].method == "GET" and requests[0].account == "hoist" and requests[0].status == 200
    assert requests[0].scopes == ("repository:test/busybox:pull",)
    with pytest.raises(UnauthorizedError):
        make(ResolverOptions(hosts_dir=hosts)).resolve(ref)
    with pytest.raises(UnauthorizedError, match="credentials rejected"):
        make(ResolverOptions(hosts_dir=hosts, username="hoist", secret="nope")).resolve(ref)


def test_bearer_token_with_oauth_refresh_token(registry_token: Registry, make, tmp_path: Path) -> None:
    ts = registry_token.token_server
    assert ts is not None
    with httpx.Client() as c:
        refresh = c.post(ts.realm, data={"grant_type": "password", "username": registry_token.username,
                                         "password": registry_token.password, "service": "x",
                                         "client_id": "test", "access_type": "offline"}).json()["refresh_token"]
    creds = {registry_token.host: Credentials(refresh_token=refresh)}
    hosts = hosts_dir(tmp_path, registry_token.host, registry_token.ca_cert)
    r = make(ResolverOptions(hosts_dir=hosts, credentials=creds.get))
    ts.clear()
    assert r.resolve(registry_token.ref("test/multi:1")).descriptor.media_type.endswith("index.v1+json")
    (req,) = ts.requests
    assert (req.method, req.grant_type, req.account, req.status) == ("POST", "refresh_token", "hoist", 200)


def test_docker_config_credentials(registry_basic: Registry, make, tmp_path: Path) -> None:
    import base64

    cfg = tmp_path / "config.json"
    auth = base64.b64encode(f"{registry_basic.username}:{registry_basic.password}".encode()).decode()
    cfg.write_text(json.dumps({"auths": {registry_basic.host: {"auth": auth}}}))
    hosts = hosts_dir(tmp_path, registry_basic.host, registry_basic.ca_cert)
    r = make(ResolverOptions(hosts_dir=hosts), docker_config=str(cfg))
    assert r.resolve(registry_basic.ref("test/busybox:1")).name == registry_basic.ref("test/busybox:1")


# -- faults through the loopback proxy -----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_blob(registry: Registry) -> tuple[str, Descriptor, bytes]:
    data = random.Random(64).randbytes(64 * MiB)
    return "t/big-blob", push_blob(registry, "t/big-blob", data), data


def test_reset_at_half_of_64_mib_resumes_with_range(registry: Registry, fault_proxy, make,
                                                    big_blob: tuple[str, Descriptor, bytes]) -> None:
    repo, desc, data = big_blob
    proxy = fault_proxy(registry)
    # The proxy counts bytes once they are in its socket buffer, and a reset discards whatever is still
    # in flight at both ends; pausing just before the cut lets the client receive exactly half first.
    half = desc.size // 2
    rule = proxy.inject(stall(0.5, after_bytes=half - 1), reset_after(half), path="/blobs/", method="GET", times=1)
    with make().fetcher(f"{proxy.host}/{repo}").fetch(desc) as stream:
        buf = bytearray(MiB)
        while stream.readinto(buf):
            pass
        assert stream.verified and stream.offset == len(data)
    assert rule.hits == 1
    gets = [q for q in proxy.requests if q.method == "GET"]
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range in (f"bytes={half - 1}-", f"bytes={half}-") and gets[1].status == 206
    assert proxy.bytes_served <= desc.size + MiB


def test_server_ignoring_range(registry: Registry, fault_proxy, make) -> None:
    data = os.urandom(8 * MiB)
    desc = push_blob(registry, "t/ignore-range", data)
    proxy = fault_proxy(registry)
    proxy.inject(reset_after(3 * MiB), path="/blobs/", method="GET", times=1)
    proxy.inject(ignore_range(), path="/blobs/", method="GET")
    assert read_all(make().fetcher(f"{proxy.host}/t/ignore-range").fetch(desc)) == data
    statuses = [q.status for q in proxy.requests if q.method == "GET"]
    assert statuses == [200, 200]


def test_truncated_body_resumes(registry: Registry, fault_proxy, make) -> None:
    data = os.urandom(4 * MiB)
    desc = push_blob(registry, "t/truncated", data)
    proxy = fault_proxy(registry)
    proxy.inject(truncate(MiB + 5), path="/blobs/", method="GET", times=1)
    assert read_all(make().fetcher(f"{proxy.host}/t/truncated").fetch(desc)) == data
    assert [q.range for q in proxy.requests] == [None, f"bytes={MiB + 5}-"]


def test_flipped_byte_is_a_digest_mismatch(registry: Registry, fault_proxy, make) -> None:
    data = os.urandom(2 * MiB)
    desc = push_blob(registry, "t/flipped", data)
    proxy = fault_proxy(registry)
    proxy.inject(flip_byte(12345), path="/blobs/", method="GET", times=1)
    with pytest.raises(FailedPreconditionError, match=f"content {proxy.host}/t/flipped@{desc.digest}: digest "
                                                       "mismatch: got sha256:"):
        read_all(make().fetcher(f"{proxy.host}/t/flipped").fetch(desc))


def test_429_with_retry_after_then_500s(registry: Registry, fault_proxy, make, sleeps: list[float]) -> None:
    proxy = fault_proxy(registry)
    proxy.inject(too_many_requests(2), path="/manifests/", times=1)
    proxy.inject(server_error(500), path="/manifests/", times=2)
    pushed = registry.pushed["test/busybox:1"]
    resolved = make().resolve(f"{proxy.host}/test/busybox:1")
    assert str(resolved.descriptor.digest) == pushed.digest
    assert sleeps[0] == 2.0 and len(sleeps) == 3
    assert [q.status for q in proxy.requests][:4] == [429, 500, 500, 200]


def test_stall_then_resume(registry: Registry, fault_proxy, make) -> None:
    data = os.urandom(2 * MiB)
    desc = push_blob(registry, "t/stall", data)
    proxy = fault_proxy(registry)
    proxy.inject(stall(5, after_bytes=100_000), path="/blobs/", method="GET", times=1)
    assert read_all(make(stall_timeout=0.5).fetcher(f"{proxy.host}/t/stall").fetch(desc)) == data
    assert proxy.requests[-1].range is not None


def test_redirect_to_another_port_carries_no_authorization(registry: Registry, registry_token: Registry,
                                                           fault_proxy, make) -> None:
    front = fault_proxy(registry_token)
    storage = fault_proxy(registry)  # plays blob storage: same blobs, no auth needed
    front.inject(redirect(storage.url), path="/blobs/", method="GET")
    r = make(ResolverOptions(username=registry_token.username, secret=registry_token.password))
    got = _pull_all(r, f"{front.host}/test/busybox:1")
    _check_against_registry(registry, got)
    blob_front = [q for q in front.requests if "/blobs/" in q.path]
    assert blob_front and all(q.authorization and q.authorization.startswith("Bearer ") for q in blob_front)
    assert storage.requests and all(q.authorization is None for q in storage.requests)


def test_two_hundred_concurrent_fetches_on_one_resolver(registry: Registry, make) -> None:
    rng = random.Random(200)
    blobs = [rng.randbytes(rng.randint(1, 64 * 1024)) for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        descs = list(pool.map(lambda b: push_blob(registry, "t/concurrent", b), blobs))
    fetcher = make().fetcher(registry.ref("t/concurrent"))
    start = threading.Barrier(200)

    def fetch(i: int) -> bytes:
        start.wait()
        return read_all(fetcher.fetch(descs[i]))

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(fetch, range(200)))
    assert results == blobs
