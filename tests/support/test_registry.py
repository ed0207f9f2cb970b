"""The registry fixtures serve the standard images in every security mode, as real clients see them."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
from collections.abc import Callable

import httpx
import pytest

from support.images import MT_DOCKER_CONFIG, MT_DOCKER_LAYER_GZIP, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, ImageLayout, ImageSet
from support.registry import MANIFEST_ACCEPT, Registry


def _skopeo_inspect(reg: Registry, ref: str, *, raw: bool = False, config: bool = False) -> bytes:
    cmd = ["skopeo", "inspect", *reg.skopeo_inspect_args()]
    cmd += ["--raw"] if raw else []
    cmd += ["--config"] if config else []
    out = subprocess.run([*cmd, f"docker://{reg.ref(ref)}"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)


def test_standard_images_are_pushed_with_layout_digests(registry: Registry, images: ImageSet) -> None:
    expected = {
        "test/busybox:1": images.busybox(),
        "test/multi:1": images.multi(),
        "test/whiteout:1": images.whiteout(),
        "test/opaque:1": images.opaque(),
        "test/layers:1": images.random_layers(),
        "test/zstd:1": images.zstd(),
        "test/uncompressed:1": images.uncompressed(),
    }
    for ref, layout in expected.items():
        pushed = registry.pushed[ref]
        assert pushed.digest == layout.digest, ref
        assert _skopeo_inspect(registry, ref, raw=True) == layout.target_bytes
        assert registry.manifest_bytes(*ref.split(":")) == layout.target_bytes
    info = json.loads(_skopeo_inspect(registry, "test/whiteout:1"))
    assert info["Digest"] == images.whiteout().digest
    assert info["Layers"] == [layer.digest for layer in images.whiteout().image.layers]


def test_docker_schema2_push_keeps_blobs(registry: Registry, images: ImageSet) -> None:
    layout = images.busybox()
    pushed = registry.pushed["test/busybox:v2s2"]
    assert pushed.media_type == MT_DOCKER_MANIFEST
    manifest = json.loads(registry.manifest_bytes("test/busybox", "v2s2"))
    assert manifest["mediaType"] == MT_DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == MT_DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MT_DOCKER_LAYER_GZIP]
    assert [layer["digest"] for layer in manifest["layers"]] == [layout.image.layers[0].digest]
    assert pushed.digest == registry.manifest_digest("test/busybox", "v2s2") != layout.digest
    config = json.loads(_skopeo_inspect(registry, "test/busybox:v2s2", config=True))
    assert config["rootfs"]["diff_ids"] == list(layout.image.diff_ids)


def test_docker_manifest_list(registry: Registry, images: ImageSet) -> None:
    pushed = registry.pushed["test/multi:v2s2"]
    assert pushed.media_type == MT_DOCKER_LIST
    index = json.loads(registry.manifest_bytes("test/multi", "v2s2"))
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    for entry, img in zip(index["manifests"], images.multi().images):
        child = json.loads(registry.manifest_bytes("test/multi", entry["digest"]))
        assert entry["mediaType"] == child["mediaType"] == MT_DOCKER_MANIFEST
        assert [layer["digest"] for layer in child["layers"]] == [layer.digest for layer in img.layers]


def test_skopeo_push_formats(registry_factory: Callable[..., Registry], images: ImageSet) -> None:
    reg = registry_factory()
    v2s2 = reg.push_layout(images.busybox(), "test/busybox", "v2s2", format="v2s2")
    assert v2s2.media_type == MT_DOCKER_MANIFEST and v2s2.digest != images.busybox().digest
    manifest = json.loads(reg.manifest_bytes("test/busybox", "v2s2"))
    assert [layer["digest"] for layer in manifest["layers"]] == [images.busybox().image.layers[0].digest]
    multi = reg.push_layout(images.multi(), "test/multi", "1")  # an index: --all --preserve-digests
    assert multi.digest == images.multi().digest
    for img in images.multi().images:
        assert reg.manifest_bytes("test/multi", img.digest) == img.manifest_bytes


def test_multi_platform_children_by_digest(registry: Registry, images: ImageSet) -> None:
    layout = images.multi()
    for img in layout.images:
        data, content_type = registry.manifest("test/multi", img.digest)
        assert data == img.manifest_bytes and content_type == img.manifest.media_type


def test_blob_path_and_access_log(registry: Registry, images: ImageSet) -> None:
    layer = images.busybox().image.layers[0]
    assert registry.blob_path(layer.digest).read_bytes() == images.busybox().blob(layer.digest)
    mark = registry.access_mark()
    with registry.client() as c:
        r = c.get(f"/v2/test/busybox/blobs/{layer.digest}", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == images.busybox().blob(layer.digest)[10:20]
        head = c.head("/v2/test/busybox/manifests/1", headers={"Accept": MANIFEST_ACCEPT})
        assert head.status_code == 200
    entries = registry.access_entries(mark, min_count=2)
    assert [(e.method, e.path, e.status, e.size) for e in entries] == [
        ("GET", f"/v2/test/busybox/blobs/{layer.digest}", 206, 10),
        ("HEAD", "/v2/test/busybox/manifests/1", 200, len(images.busybox().target_bytes)),  # HEAD logs the length
    ]


def test_push_access_log_shows_uploads(registry: Registry, images: ImageSet, repo_name: str) -> None:
    mark = registry.access_mark()
    layout = images.busybox()
    pushed = registry.push_layout(layout, repo_name, "x")
    assert pushed.digest == layout.digest
    entries = registry.access_entries(mark, min_count=4)
    assert ("PUT", f"/v2/{repo_name}/manifests/x", 201) in [(e.method, e.path, e.status) for e in entries]
    for blob in (layout.image.config, layout.image.layers[0].descriptor):
        # each blob arrives by an upload that ends with PUT ?digest=, or by a cross-repository mount
        uploaded = [e for e in entries if e.method == "PUT" and e.params.get("digest") == [str(blob.digest)]]
        mounted = [e for e in entries if e.method == "POST" and e.params.get("mount") == [str(blob.digest)]]
        assert uploaded or mounted, [str(e) for e in entries]
    assert registry.tags(repo_name) == ["x"]


def test_fresh_registry_is_empty_and_deletes(registry_factory: Callable[..., Registry], images: ImageSet) -> None:
    reg = registry_factory()
    assert reg.tags("test/busybox") == []
    pushed = reg.push_layout(images.busybox(), "test/busybox", "1")
    reg.delete_manifest("test/busybox", pushed.digest)
    with reg.client() as c:
        assert c.get("/v2/test/busybox/manifests/1", headers={"Accept": MANIFEST_ACCEPT}).status_code == 404
    # hand-made documents: upload the blobs, then PUT the manifest bytes as they are
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    config_digest = reg.upload_blob("test/handmade", config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": []}, indent=3).encode()
    digest = reg.put_manifest("test/handmade", "v1", manifest, "application/vnd.oci.image.manifest.v1+json")
    assert reg.manifest_bytes("test/handmade", "v1") == manifest
    assert reg.manifest_digest("test/handmade", "v1") == digest
    assert reg.blob_path(config_digest).read_bytes() == config
    pid = reg.pid
    reg.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tls_registry_trusts_only_the_test_ca(registry_tls: Registry) -> None:
    assert registry_tls.url.startswith("https://127.0.0.1:")
    url = f"{registry_tls.url}/v2/"
    ok = _curl("--cacert", str(registry_tls.ca_cert), url)
    assert (ok.returncode, ok.stdout) == (0, "200")
    wrong = _curl("--cacert", str(registry_tls.other_ca_cert), url)
    assert wrong.returncode == 60, wrong  # curl: peer certificate cannot be authenticated
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, verify=ssl.create_default_context(cafile=str(registry_tls.other_ca_cert)))
    assert json.loads(_skopeo_inspect(registry_tls, "test/busybox:1"))["Layers"]


def test_basic_registry_needs_credentials(registry_basic: Registry) -> None:
    url = f"{registry_basic.url}/v2/test/busybox/manifests/1"
    with httpx.Client(verify=registry_basic.ssl_context()) as c:
        r = c.get(url)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Basic realm="hoist-test-registry"'
        assert c.get(url, auth=(registry_basic.username, "wrong")).status_code == 401
        r = c.get(url, auth=(registry_basic.username, registry_basic.password),
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200
    assert registry_basic.pushed["test/busybox:1"].digest == json.loads(_skopeo_inspect(registry_basic, "test/busybox:1"))["Digest"]


def test_token_registry_challenge_and_token(registry_token: Registry, images: ImageSet) -> None:
    ts = registry_token.token_server
    assert ts is not None
    ts.clear()
    url = f"{registry_token.url}/v2/test/busybox/manifests/1"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    with httpx.Client(verify=registry_token.ssl_context()) as c:
        r = c.get(url, headers=accept)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == (
            f'Bearer realm="{ts.realm}",service="hoist-test-registry",scope="repository:test/busybox:pull"'
        )
        q = {"service": "hoist-test-registry", "scope": "repository:test/busybox:pull", "account": registry_token.username}
        t = c.get(ts.realm, params=q, auth=(registry_token.username, registry_token.password))
        assert t.status_code == 200 and t.json()["expires_in"] == 300
        token = t.json()["token"]
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["access"] == [{"type": "repository", "name": "test/busybox", "actions": ["pull"]}]
        r = c.get(url, headers={**accept, "Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.content == images.busybox().target_bytes
        # a token for another repository does not open this one
        other = c.get(ts.realm, params={**q, "scope": "repository:test/multi:pull"},
                      auth=(registry_token.username, registry_token.password)).json()["token"]
        assert c.get(url, headers={**accept, "Authorization": f"Bearer {other}"}).status_code == 401
        # wrong password: the token server refuses
        assert c.get(ts.realm, params=q, auth=(registry_token.username, "nope")).status_code == 401
        # anonymous: a token without access, unless anonymous pull is on
        anon = c.get(ts.realm, params={"service": q["service"], "scope": q["scope"]}).json()["token"]
        assert c.get(url, headers={**accept, "Authorization": f"Bearer {anon}"}).status_code == 401
        with ts.configured(anonymous_pull=True):
            anon = c.get(ts.realm, params={"service": q["service"], "scope": q["scope"]}).json()["token"]
        assert c.get(url, headers={**accept, "Authorization": f"Bearer {anon}"}).status_code == 200
    recorded = [(r.method, r.account, r.scopes, r.status) for r in ts.requests]
    assert recorded == [
        ("GET", "hoist", ("repository:test/busybox:pull",), 200),
        ("GET", "hoist", ("repository:test/multi:pull",), 200),
        ("GET", "hoist", ("repository:test/busybox:pull",), 401),
        ("GET", "", ("repository:test/busybox:pull",), 200),
        ("GET", "", ("repository:test/busybox:pull",), 200),
    ]


def test_token_server_oauth2_post(registry_token: Registry) -> None:
    ts = registry_token.token_server
    assert ts is not None
    ts.clear()
    form = {"grant_type": "password", "username": registry_token.username, "password": registry_token.password,
            "service": "hoist-test-registry", "client_id": "hoist", "scope": "repository:test/busybox:pull,push"}
    with httpx.Client(verify=registry_token.ssl_context()) as c:
        r = c.post(ts.realm, data=form)
        assert r.status_code == 200
        body = r.json()
        assert {"access_token", "token", "expires_in", "refresh_token"} <= set(body)
        r2 = c.post(ts.realm, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                    "service": "hoist-test-registry", "client_id": "hoist",
                                    "scope": "repository:test/busybox:pull"})
        assert r2.status_code == 200
        r = c.get(f"{registry_token.url}/v2/test/busybox/tags/list",
                  headers={"Authorization": f"Bearer {r2.json()['access_token']}"})
        assert r.json() == {"name": "test/busybox", "tags": ["1"]}
        assert c.post(ts.realm, data={**form, "password": "bad"}).status_code == 401
        assert c.post(ts.realm, data={"grant_type": "refresh_token", "refresh_token": "forged"}).status_code == 401
        with ts.configured(support_post=False):
            assert c.post(ts.realm, data=form).status_code == 404
    assert [(r.method, r.grant_type, r.client_id, r.scopes, r.status) for r in ts.requests] == [
        ("POST", "password", "hoist", ("repository:test/busybox:pull,push",), 200),
        ("POST", "refresh_token", "hoist", ("repository:test/busybox:pull",), 200),
        ("POST", "password", "hoist", ("repository:test/busybox:pull,push",), 401),
        ("POST", "refresh_token", "", (), 401),
        ("POST", "password", "hoist", ("repository:test/busybox:pull,push",), 404),
    ]


def test_skopeo_pushes_through_token_auth(registry_token: Registry, images: ImageSet, repo_name: str) -> None:
    ts = registry_token.token_server
    assert ts is not None
    pushed = registry_token.push_layout(images.random_layers(1, 0.1), repo_name, "1")
    assert pushed.digest == images.random_layers(1, 0.1).digest
    assert any(f"repository:{repo_name}:" in s and "push" in s for r in ts.requests for s in r.scopes)


def test_docs_example_custom_image(registry_factory: Callable[..., Registry], images: ImageSet) -> None:
    from support.images import LayoutWriter, tar_dir, tar_file

    def build(w: LayoutWriter) -> ImageLayout:
        base = images.busybox_layer(w)
        top = w.add_layer([tar_dir("etc"), tar_file("etc/motd", "hi\n")], compression="zstd")
        return w.finish(w.add_image([base, top], cmd=["/bin/cat", "/etc/motd"]), tag="1")

    layout = images.build("motd", build)
    reg = registry_factory()
    pushed = reg.push_http(layout, "test/motd", "1")
    assert pushed.digest == layout.digest
    assert reg.manifest_bytes("test/motd", "1") == layout.target_bytes
    assert reg.blob_path(layout.image.layers[1].digest).read_bytes() == layout.blob(layout.image.layers[1].digest)
