"""The fault proxy forwards to a real registry and injects each fault it offers."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from collections.abc import Callable

import httpx
import pytest

from support.faultproxy import (
    FaultProxy,
    flip_byte,
    ignore_range,
    redirect,
    reset_after,
    server_error,
    stall,
    too_many_requests,
    truncate,
)
from support.images import ImageSet
from support.pki import TestPKI
from support.registry import Registry, make_token_server

ProxyFactory = Callable[..., FaultProxy]


@pytest.fixture
def layer(images: ImageSet) -> tuple[str, bytes]:
    """The busybox layer of ``test/busybox:1``: its blob path and bytes."""
    layout = images.busybox()
    digest = layout.image.layers[0].digest
    return f"/v2/test/busybox/blobs/{digest}", layout.blob(digest)


def test_passthrough_records_requests(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    with httpx.Client(base_url=proxy.url) as c:
        r = c.get(path, headers={"Range": "bytes=100-", "Authorization": "Bearer abc"})
        assert r.status_code == 206 and r.content == data[100:]
        assert c.head(path).headers["Content-Length"] == str(len(data))
    first, second = proxy.requests
    assert (first.method, first.path, first.range, first.authorization, first.status) == ("GET", path, "bytes=100-", "Bearer abc", 206)
    assert (second.method, second.status, second.bytes_sent) == ("HEAD", 200, 0)
    assert proxy.bytes_served == len(data) - 100


def test_reset_after_n_bytes(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    rule = proxy.inject(reset_after(300_000), path="/blobs/", method="GET", times=1)
    with httpx.Client(base_url=proxy.url) as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.get(path)
        r = c.get(path, headers={"Range": "bytes=300000-"})  # the rule is used up: a resume works
        assert r.status_code == 206 and hashlib.sha256(data[:300_000] + r.content).digest() == hashlib.sha256(data).digest()
    assert rule.hits == 1
    assert [q.bytes_sent for q in proxy.requests] == [300_000, len(data) - 300_000]
    assert proxy.requests[0].faults == ("reset",)


def test_truncate_body(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(truncate(1000), path="/blobs/")
    with httpx.Client(base_url=proxy.url) as c:
        with c.stream("GET", path) as r:
            assert r.headers["Content-Length"] == str(len(data))
            got = bytearray()
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete|closed"):
                for chunk in r.iter_raw():
                    got += chunk
    assert bytes(got) == data[:1000]
    assert proxy.bytes_served == 1000


def test_ignore_range_serves_whole_body(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(ignore_range(), path="/blobs/")
    r = httpx.get(proxy.url + path, headers={"Range": "bytes=500-"})
    assert r.status_code == 200 and r.content == data
    assert proxy.requests[0].range == "bytes=500-"  # what the client asked for is still recorded


def test_flip_byte(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(flip_byte(400_000), path="/blobs/")
    got = httpx.get(proxy.url + path).content
    assert len(got) == len(data) and got != data
    assert [i for i in (399_999, 400_000, 400_001) if got[i] != data[i]] == [400_000]
    assert got[400_000] == data[400_000] ^ 0xFF


def test_status_faults_for_first_requests(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(too_many_requests(retry_after=2), path="/blobs/", times=1)
    proxy.inject(server_error(), path="/blobs/", times=2)
    with httpx.Client(base_url=proxy.url) as c:
        r = c.get(path)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert [c.get(path).status_code for _ in range(3)] == [500, 500, 200]
        assert c.get("/v2/").status_code == 200
    assert [q.status for q in proxy.requests] == [429, 500, 500, 200, 200]


def test_stall_trips_client_timeout(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(stall(30, after_bytes=65536), path="/blobs/", times=1)
    with httpx.Client(base_url=proxy.url, timeout=httpx.Timeout(5, read=0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(path)
        assert c.get(path).content == data
    proxy.inject(stall(30), path="/manifests/")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(proxy.url + "/v2/test/busybox/manifests/1", timeout=httpx.Timeout(5, read=0.3))


def test_redirect_to_another_port(registry: Registry, fault_proxy: ProxyFactory, layer: tuple[str, bytes]) -> None:
    path, data = layer
    proxy = fault_proxy(registry)
    proxy.inject(redirect(registry.url), path="/blobs/")
    r = httpx.get(proxy.url + path, follow_redirects=True)
    assert r.content == data and r.history[0].status_code == 307
    assert r.history[0].headers["Location"] == registry.url + path
    assert proxy.bytes_served == 0


def test_skopeo_push_through_proxy(registry: Registry, fault_proxy: ProxyFactory, images: ImageSet, repo_name: str) -> None:
    proxy = fault_proxy(registry)
    layout = images.random_layers(2, 0.25)
    out = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-no-creds", "--preserve-digests",
                          layout.oci_ref, f"docker://{proxy.host}/{repo_name}:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert registry.manifest_digest(repo_name, "1") == layout.digest
    puts = [q for q in proxy.requests if q.method == "PUT"]
    assert len(puts) == 4  # two layers, the config, the manifest: uploads stayed on the proxy


def test_proxy_in_front_of_tls_registry(registry_tls: Registry, fault_proxy: ProxyFactory, images: ImageSet) -> None:
    proxy = fault_proxy(registry_tls)
    proxy.inject(server_error(503), times=1)
    with httpx.Client(base_url=proxy.url) as c:
        assert c.get("/v2/").status_code == 503
        r = c.get("/v2/test/busybox/manifests/1", headers={"Accept": images.busybox().target.media_type})
        assert r.content == images.busybox().target_bytes


def test_tls_proxy_and_bounded_requests(registry: Registry, fault_proxy: ProxyFactory, pki: TestPKI) -> None:
    proxy = fault_proxy(registry, tls=pki.server, max_requests=2)
    with httpx.Client(base_url=proxy.url, verify=ssl.create_default_context(cafile=str(pki.ca_cert))) as c:
        assert [c.get("/v2/").status_code for _ in range(3)] == [200, 200, 503]


def test_token_server_behind_proxy(registry_factory: Callable[..., Registry], fault_proxy: ProxyFactory,
                                   pki: TestPKI) -> None:
    ts = make_token_server(pki)
    try:
        proxy = fault_proxy(f"http://127.0.0.1:{ts.port}")
        proxy.inject(server_error(503), path="^/token", times=1)
        reg = registry_factory("token", token_server=ts, token_realm=f"{proxy.url}/token")
        with httpx.Client(verify=reg.ssl_context()) as c:
            challenge = c.get(f"{reg.url}/v2/").headers["WWW-Authenticate"]
            assert challenge.startswith(f'Bearer realm="{proxy.url}/token"')
            q = {"service": "hoist-test-registry", "scope": "registry:catalog:*"}
            assert c.get(f"{proxy.url}/token", params=q, auth=(reg.username, reg.password)).status_code == 503
            token = c.get(f"{proxy.url}/token", params=q, auth=(reg.username, reg.password)).json()["token"]
            assert c.get(f"{reg.url}/v2/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert [r.status for r in proxy.requests] == [503, 200]
        assert [r.scopes for r in ts.requests] == [("registry:catalog:*",)]
    finally:
        ts.stop()
