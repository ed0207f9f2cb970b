"""The docker resolver's protocol and fault handling, precisely, through ``httpx.MockTransport``."""

from __future__ import annotations

import email.utils
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hoist.content import Descriptor
from hoist.errors import (
    ConfigError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hoist.remotes import Credentials, ResolverOptions, UnauthorizedError
from hoist_resolver_docker.auth import parse_challenges
from hoist_resolver_docker.hosts import load_hosts
from hoist_resolver_docker.plugin import DockerResolverPlugin
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.resolver import MANIFEST_ACCEPT
from hoist_resolver_docker.transport import parse_retry_after

from resolver_docker_fakes import OCI_INDEX, OCI_MANIFEST, REGISTRY, CutStream, FakeRegistry, basic, sha

REF = f"{REGISTRY}/app:1"


def _read(stream) -> bytes:  # type: ignore[no-untyped-def]
    with stream as s:
        return s.read()


# -- resolving manifests ------------------------------------------------------------------------------


def test_resolve_heads_with_the_full_accept_list(fake: FakeRegistry, make_resolver) -> None:
    manifest, _ = fake.image()
    resolved = make_resolver().resolve(REF)
    assert resolved.name == REF
    assert resolved.descriptor == manifest
    head = fake.requests[0]
    assert (head.method, head.url.path) == ("HEAD", "/v2/app/manifests/1")
    assert str(head.url).startswith("http://reg.test:5000/")
    accept = [a.strip() for a in head.headers["accept"].split(",")]
    assert set(MANIFEST_ACCEPT) <= set(accept) and set(accept) >= {
        "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json"}
    assert head.headers["user-agent"].startswith("hoist/")
    assert _read(resolved.fetcher.fetch(manifest)) == fake.manifests[str(manifest.digest)][0]


def test_requests_carry_only_the_resolvers_headers_and_no_cookies(fake: FakeRegistry, make_resolver) -> None:
    """As containerd's client: a cookie a registry sets is not sent back."""
    manifest, layer = fake.image()

    def set_cookie(request: httpx.Request) -> httpx.Response | None:
        if request.method == "HEAD":
            answer = fake.serve(request)
            answer.headers["Set-Cookie"] = "session=abc; Path=/"
            return answer
        return None

    fake.hook = set_cookie
    resolved = make_resolver().resolve(REF)
    assert _read(resolved.fetcher.fetch(layer)) == b"layer-bytes"
    get = fake.requests[-1]
    assert (get.method, get.url.path) == ("GET", f"/v2/app/blobs/{layer.digest}")
    assert "cookie" not in get.headers
    assert get.headers["accept-encoding"] == "identity" and get.headers["user-agent"].startswith("hoist/")


def test_get_when_head_is_refused_and_digest_over_raw_bytes(fake: FakeRegistry, make_resolver) -> None:
    raw = b'{"schemaVersion": 2,  "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}\n'
    desc = fake.add_manifest("app", "1", raw, OCI_INDEX)
    fake.head_manifests = False
    r = make_resolver()
    resolved = r.resolve(REF)
    assert str(resolved.descriptor.digest) == str(desc.digest) == sha(raw)
    assert resolved.descriptor.media_type == OCI_INDEX
    assert [(q.method, q.url.path) for q in fake.requests] == [("HEAD", "/v2/app/manifests/1"),
                                                               ("GET", "/v2/app/manifests/1")]
    assert _read(resolved.fetcher.fetch(resolved.descriptor)) == raw
    assert len(fake.requests) == 2  # the body read while resolving is not fetched again


def test_get_when_head_lacks_the_digest_header(fake: FakeRegistry, make_resolver) -> None:
    desc, _ = fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "HEAD":
            return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(desc.size)})
        return None

    fake.hook = hook
    assert make_resolver().resolve(REF).descriptor == desc
    assert fake.paths("GET") == ["/v2/app/manifests/1"]


def test_media_type_sniffed_when_content_type_is_generic(fake: FakeRegistry, make_resolver) -> None:
    raw = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    fake.add_manifest("app", "1", raw, "application/json")
    assert make_resolver().resolve(REF).descriptor.media_type == OCI_INDEX


def test_digest_header_must_match_the_bytes(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    fake.head_manifests = False

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "GET":
            resp = fake.serve(req)
            headers = {k: v for k, v in resp.headers.items() if k.lower() != "docker-content-digest"}
            return httpx.Response(200, headers={**headers, "Docker-Content-Digest": sha(b"other")},
                                  content=resp.content)
        return None

    fake.hook = hook
    with pytest.raises(FailedPreconditionError, match=f"manifest {REF}: content digest sha256:.* differs from "
                                                       f"Docker-Content-Digest {sha(b'other')}"):
        make_resolver().resolve(REF)


def test_requested_digest_must_match(fake: FakeRegistry, make_resolver) -> None:
    desc, _ = fake.image()
    wanted = sha(b"something else")
    fake.manifests[wanted] = fake.manifests[str(desc.digest)]  # the registry serves the wrong bytes
    with pytest.raises(FailedPreconditionError, match="registry answered with manifest"):
        make_resolver().resolve(f"{REGISTRY}/app@{wanted}")
    fake.head_manifests = False
    with pytest.raises(FailedPreconditionError, match=f"content digest is {desc.digest}"):
        make_resolver().resolve(f"{REGISTRY}/app@{wanted}")


def test_resolve_by_digest_falls_back_to_blobs(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    blob = fake.add_blob(b"x" * 1000)
    resolved = make_resolver().resolve(f"{REGISTRY}/app@{blob.digest}")
    assert resolved.descriptor.size == 1000 and resolved.descriptor.digest == blob.digest
    assert fake.paths("HEAD") == [f"/v2/app/manifests/{blob.digest}", f"/v2/app/blobs/{blob.digest}"]
    assert _read(resolved.fetcher.fetch(resolved.descriptor)) == b"x" * 1000


def test_blob_digest_probe_that_errors_is_not_retried_and_manifests_are_recognised(
        fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    desc, _ = fake.image()
    fake.blobs[str(desc.digest)] = fake.manifests[str(desc.digest)][0]

    def hook(req: httpx.Request) -> httpx.Response | None:
        return httpx.Response(500) if "/manifests/" in req.url.path and len(fake.requests) == 1 else None

    fake.hook = hook
    resolved = make_resolver().resolve(f"{REGISTRY}/app@{desc.digest}")
    assert resolved.descriptor.media_type == OCI_MANIFEST  # recognised from the blob's JSON
    assert sleeps == []


def test_not_found_is_not_retried(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    with pytest.raises(NotFoundError, match=f"^{REF}: not found$"):
        make_resolver().resolve(REF)
    assert len(fake.requests) == 1 and sleeps == []


def test_invalid_reference_makes_no_request(fake: FakeRegistry, make_resolver) -> None:
    r = make_resolver()
    for bad, rule in [("", "empty reference"), (":tag", "missing"), (f"{REGISTRY}/Upper/case:1", "lower-case"),
                      (f"{REGISTRY}/x@sha256:short", "digest"), (f"{REGISTRY}/" + "a" * 300 + ":1", "255"),
                      ("redis", "no registry host; normalize it first (e.g. docker.io/library/redis:latest)"),
                      (f"{REGISTRY}/x", "no tag or digest")]:
        with pytest.raises(InvalidArgumentError, match="invalid reference") as e:
            r.resolve(bad)
        assert rule in str(e.value)
    assert fake.requests == []


def test_endless_manifest_stops_after_the_limit(fake: FakeRegistry, make_resolver) -> None:
    sent = [0]

    def endless() -> Iterator[bytes]:
        chunk = b"{" * 65536
        while True:
            sent[0] += len(chunk)
            yield chunk

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "HEAD":
            return httpx.Response(405)
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=endless())

    fake.hook = hook
    with pytest.raises(FailedPreconditionError, match="body exceeds the 4194304-byte limit"):
        make_resolver().resolve(REF)
    assert sent[0] <= (4 << 20) + 65536


def test_large_manifests_and_configs_are_refused_before_any_request(fake: FakeRegistry, make_resolver) -> None:
    f = make_resolver().fetcher(REF)
    for mt in (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json"):
        with pytest.raises(FailedPreconditionError, match="exceeds the 4194304-byte limit"):
            f.fetch(Descriptor(media_type=mt, digest=sha(b"x"), size=(4 << 20) + 1))
    assert fake.requests == []


def test_fetch_rejects_a_contradicting_media_type(fake: FakeRegistry, make_resolver) -> None:
    desc, _ = fake.image()
    wrong = Descriptor(media_type="application/vnd.docker.distribution.manifest.v2+json", digest=desc.digest,
                       size=desc.size)
    with pytest.raises(FailedPreconditionError, match="registry serves it as application/vnd.oci.image.manifest"):
        make_resolver().fetcher(REF).fetch(wrong)


def test_lying_registry_wrong_bytes_and_wrong_size(fake: FakeRegistry, make_resolver) -> None:
    blob = fake.add_blob(b"a" * 5000)
    fake.blobs[str(blob.digest)] = b"b" * 5000
    f = make_resolver().fetcher(REF)
    with pytest.raises(FailedPreconditionError, match=f"{REGISTRY}/app@{blob.digest}: digest mismatch"):
        _read(f.fetch(blob))
    fake.blobs[str(blob.digest)] = b"a" * 5001
    with pytest.raises(FailedPreconditionError, match="size mismatch: stream is longer"):
        _read(f.fetch(blob))


# -- retries --------------------------------------------------------------------------------------------


def test_500_then_success(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.image()
    fails = [2]

    def hook(req: httpx.Request) -> httpx.Response | None:
        if fails[0]:
            fails[0] -= 1
            return httpx.Response(500, json={"errors": [{"code": "UNKNOWN", "message": "boom"}]})
        return None

    fake.hook = hook
    assert make_resolver().resolve(REF).name == REF
    assert len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1] <= 10


def test_429_honours_retry_after(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.image()
    answers = [httpx.Response(429, headers={"Retry-After": "3"}),
               httpx.Response(503, headers={"Retry-After": "100000"})]
    fake.hook = lambda req: answers.pop(0) if answers else None
    assert make_resolver(retry_after_max=7).resolve(REF).name == REF
    assert sleeps == [3.0, 7.0]


def test_retry_after_parsing() -> None:
    now = time.time()
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_gives_up_after_the_configured_attempts(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.hook = lambda req: httpx.Response(503)
    with pytest.raises(UnavailableError, match=r"registry unavailable \(HTTP 503\)"):
        make_resolver(retries=3).resolve(REF)
    assert len(fake.requests) == 3 and len(sleeps) == 2


def test_connection_errors_are_retried(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.image()
    errors = [httpx.ConnectError("connection refused"), httpx.RemoteProtocolError("server disconnected")]

    def hook(req: httpx.Request) -> httpx.Response | None:
        if errors:
            raise errors.pop(0)
        return None

    fake.hook = hook
    assert make_resolver().resolve(REF).name == REF
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_are_not_retried(fake: FakeRegistry, make_resolver, sleeps: list[float], status: int) -> None:
    fake.hook = lambda req: httpx.Response(status, json={"errors": [{"code": "DENIED", "message": "no"}]})
    with pytest.raises((UnauthorizedError, NotFoundError)):
        make_resolver().resolve(REF)
    assert sleeps == [] and len(fake.requests) == 1


def test_name_unknown_is_final_even_on_a_retryable_status(fake: FakeRegistry, make_resolver,
                                                           sleeps: list[float]) -> None:
    fake.hook = lambda req: (httpx.Response(405) if req.method == "HEAD" else
                             httpx.Response(503, json={"errors": [{"code": "NAME_UNKNOWN", "message": "no repo"}]}))
    with pytest.raises(UnavailableError, match="NAME_UNKNOWN: no repo"):
        make_resolver().resolve(REF)
    assert sleeps == []


# -- resuming bodies ----------------------------------------------------------------------------------


def test_cut_body_resumes_with_range(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(1 << 20)
    blob = fake.add_blob(data)
    cuts = [300_000, 700_000]

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "GET" and cuts:
            resp = fake.serve(req)
            start = len(data) - len(resp.content)
            return httpx.Response(resp.status_code, headers=resp.headers,
                                  stream=CutStream(resp.content, cuts.pop(0) - start))
        return None

    fake.hook = hook
    assert _read(make_resolver().fetcher(REF).fetch(blob)) == data
    assert [q.headers.get("range") for q in fake.requests] == [None, "bytes=300000-", "bytes=700000-"]


def test_server_ignoring_range_discards_the_prefix(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(500_000)
    blob = fake.add_blob(data)
    fake.first_get(httpx.Response(200, stream=CutStream(data, 200_000)),
                   lambda req: httpx.Response(200, content=data))  # Range ignored
    assert _read(make_resolver().fetcher(REF).fetch(blob)) == data


def test_truncated_body_resumes(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(300_000)
    blob = fake.add_blob(data)
    fake.first_get(httpx.Response(200, content=data[:100_000]))  # a clean but short body
    assert _read(make_resolver().fetcher(REF).fetch(blob)) == data
    assert fake.requests[-1].headers["range"] == "bytes=100000-"


def test_mismatched_content_range_is_an_error(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(300_000)
    blob = fake.add_blob(data)
    fake.first_get(httpx.Response(200, stream=CutStream(data, 100_000)),
                   lambda req: httpx.Response(206, headers={"Content-Range": "bytes 0-299999/300000"}, content=data))
    with pytest.raises(UnavailableError, match=r"answered 'Range: bytes=100000-' with Content-Range 'bytes 0-"):
        _read(make_resolver().fetcher(REF).fetch(blob))


def test_gives_up_after_three_attempts_without_progress(fake: FakeRegistry, make_resolver,
                                                        sleeps: list[float]) -> None:
    data = os.urandom(200_000)
    blob = fake.add_blob(data)
    fake.hook = lambda req: (httpx.Response(200, stream=CutStream(data, 50_000)) if not req.headers.get("range")
                             else httpx.Response(206, headers={"Content-Range": f"bytes 50000-199999/200000"},
                                                 stream=CutStream(b"", 0)))
    with pytest.raises(UnavailableError, match="download stopped at byte 50000 of 200000 after 3 attempts without "
                                               "progress"):
        _read(make_resolver().fetcher(REF).fetch(blob))
    assert len([q for q in fake.requests if q.headers.get("range")]) == 3


def test_stall_is_an_error(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    data = os.urandom(100_000)
    blob = fake.add_blob(data)
    fake.hook = lambda req: httpx.Response(200, stream=CutStream(data, 10_000, httpx.ReadTimeout("timed out")))
    with pytest.raises(UnavailableError, match="download stopped at byte 10000 of 100000 .*no data received"):
        _read(make_resolver().fetcher(REF).fetch(blob))


# -- authentication -------------------------------------------------------------------------------------


class TokenRealm:
    """Answers registry 401 challenges and issues tokens on ``auth.test``; counts token requests."""

    def __init__(self, fake: FakeRegistry, realm: str = "https://auth.test/token", expires_in: int = 300) -> None:
        self.fake, self.realm, self.expires_in = fake, realm, expires_in
        self.token_requests: list[httpx.Request] = []
        self.issued = 0

    def __call__(self, req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "auth.test" or str(req.url).startswith(self.realm):
            self.token_requests.append(req)
            self.issued += 1
            return httpx.Response(200, json={"token": f"tok-{self.issued}", "expires_in": self.expires_in})
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer tok-"):
            repo = req.url.path.split("/")[2]
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{self.realm}",'
                                                                    f'service="reg.test",scope="repository:{repo}:pull"'})
        return None


def test_bearer_token_cached_per_scope(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    fake.image(repo="other")
    realm = TokenRealm(fake)
    fake.hook = realm
    r = make_resolver(options=ResolverOptions(username="alice", secret="pw"))
    desc = r.resolve(REF).descriptor
    _read(r.fetcher(REF).fetch(desc))
    r.resolve(REF)
    assert len(realm.token_requests) == 1
    tr = realm.token_requests[0]
    assert tr.method == "GET"
    assert tr.url.params.get_list("scope") == ["repository:app:pull"]
    assert tr.url.params["service"] == "reg.test"
    assert tr.headers["authorization"] == basic("alice", "pw")
    r.resolve(f"{REGISTRY}/other:1")
    assert len(realm.token_requests) == 2
    assert realm.token_requests[1].url.params.get_list("scope") == ["repository:other:pull"]
    registry_requests = [q for q in fake.requests if q.url.host == "reg.test"]
    assert all(q.headers.get("authorization", "").startswith("Bearer ") for q in registry_requests[1:])


def test_expired_token_is_refetched(fake: FakeRegistry, make_resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.image()
    realm = TokenRealm(fake, expires_in=60)
    fake.hook = realm
    r = make_resolver()
    r.resolve(REF)
    from hoist_resolver_docker import auth

    later = time.monotonic() + 61
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    r.resolve(REF)
    assert len(realm.token_requests) == 2


def test_rejected_token_is_replaced_once(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    realm = TokenRealm(fake)
    revoked = {"tok-1"}

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.headers.get("authorization", "").removeprefix("Bearer ") in revoked:
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm.realm}",service="reg.test",'
                                                                    'error="invalid_token"'})
        return realm(req)

    fake.hook = hook
    assert make_resolver().resolve(REF).name == REF
    assert realm.issued == 2


def test_oauth_post_with_a_refresh_token(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    realm = TokenRealm(fake)
    fake.hook = realm
    creds = {REGISTRY: Credentials(refresh_token="refresh-xyz")}
    r = make_resolver(options=ResolverOptions(credentials=creds.get))
    r.resolve(REF)
    (tr,) = realm.token_requests
    assert tr.method == "POST"
    form = dict(httpx.QueryParams(tr.content.decode()))
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-xyz"
    assert form["scope"] == "repository:app:pull" and form["service"] == "reg.test" and form["client_id"] == "hoist"


def test_basic_auth(fake: FakeRegistry, make_resolver) -> None:
    fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.headers.get("authorization") != basic("bob", "s3cret"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return None

    fake.hook = hook
    r = make_resolver(options=ResolverOptions(username="bob", secret="s3cret"))
    assert r.resolve(REF).name == REF
    r.resolve(REF)
    assert [q.headers.get("authorization") for q in fake.requests] == [None, basic("bob", "s3cret"),
                                                                       basic("bob", "s3cret")]
    with pytest.raises(UnauthorizedError, match="requires a user and password"):
        make_resolver().resolve(REF)
    with pytest.raises(UnauthorizedError, match="authentication required"):
        make_resolver(options=ResolverOptions(username="bob", secret="wrong")).resolve(REF)


def test_credentials_never_go_over_plain_http_to_another_host(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    realm = TokenRealm(fake, realm="http://auth.test/token")
    fake.hook = realm
    make_resolver(options=ResolverOptions(username="alice", secret="pw")).resolve(REF)
    (tr,) = realm.token_requests
    assert "authorization" not in tr.headers and "account" not in tr.url.params


def test_credentials_go_over_plain_http_to_the_registry_host(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    realm = TokenRealm(fake, realm="http://reg.test:5001/token")
    fake.hook = realm
    make_resolver(options=ResolverOptions(username="alice", secret="pw")).resolve(REF)
    assert realm.token_requests[0].headers["authorization"] == basic("alice", "pw")


def test_user_credentials_stay_with_the_reference_registry(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    realm = TokenRealm(fake)
    fake.hook = realm
    r = make_resolver(options=ResolverOptions(username="alice", secret="pw"))
    assert r.session.credentials_for("elsewhere.test") is None
    r.resolve(REF)
    assert r.session.credentials_for(REGISTRY) == Credentials(username="alice", secret="pw")


def test_authorization_is_not_forwarded_on_redirects_to_another_port(fake: FakeRegistry, make_resolver) -> None:
    _, layer = fake.image(layer=b"L" * 10_000)

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.url.port == 9000:
            return httpx.Response(200, content=fake.blobs[str(layer.digest)])
        if req.headers.get("authorization") != basic("bob", "pw"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        if "/blobs/" in req.url.path:
            return httpx.Response(307, headers={"Location": f"http://reg.test:9000/storage/{layer.digest.hex}"})
        return None

    fake.hook = hook
    r = make_resolver(options=ResolverOptions(username="bob", secret="pw"))
    assert _read(r.resolve(REF).fetcher.fetch(layer)) == b"L" * 10_000
    storage = [q for q in fake.requests if q.url.port == 9000]
    assert len(storage) == 1 and "authorization" not in storage[0].headers
    blob_gets = [q for q in fake.requests if "/blobs/" in q.url.path]
    assert blob_gets[-1].headers["authorization"] == basic("bob", "pw")


def test_same_origin_redirect_keeps_authorization(fake: FakeRegistry, make_resolver) -> None:
    _, layer = fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.headers.get("authorization") != basic("bob", "pw"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        if req.url.path.startswith("/v2/app/blobs/"):
            return httpx.Response(302, headers={"Location": req.url.path.replace("/v2/app/", "/v2/moved/")})
        return None

    fake.hook = hook
    r = make_resolver(options=ResolverOptions(username="bob", secret="pw"))
    assert _read(r.fetcher(REF).fetch(layer)) == b"layer-bytes"


def test_challenge_parsing() -> None:
    (c,) = parse_challenges(['Bearer realm="https://a/token",service="reg",scope="repository:x:pull push"'])
    assert (c.scheme, c.realm, c.service, c.scopes) == ("bearer", "https://a/token", "reg",
                                                        ("repository:x:pull", "push"))
    cs = parse_challenges(['Basic realm="x", Bearer realm="https://t", error="invalid_token"', 'Negotiate abc=='])
    assert [c.scheme for c in cs] == ["basic", "bearer", "negotiate"]
    assert cs[1].params["error"] == "invalid_token"


def test_token_bodies_are_limited(fake: FakeRegistry, make_resolver) -> None:
    fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "auth.test":
            return httpx.Response(200, content=b" " * ((1 << 20) + 10))
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t"'})

    fake.hook = hook
    with pytest.raises(FailedPreconditionError, match="1048576-byte limit"):
        make_resolver().resolve(REF)


def test_docker_config_auths_and_credential_helpers(fake: FakeRegistry, make_resolver, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake.image()
    seen: list[str | None] = []

    def hook(req: httpx.Request) -> httpx.Response | None:
        seen.append(req.headers.get("authorization"))
        if req.headers.get("authorization") is None:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return None

    fake.hook = hook
    cfg = tmp_path / "config.json"
    import base64

    cfg.write_text(json.dumps({"auths": {f"https://{REGISTRY}": {"auth": base64.b64encode(b"carol:pw1").decode()}}}))
    make_resolver(docker_config=str(cfg)).resolve(REF)
    assert seen[-1] == basic("carol", "pw1")

    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n[ "$server" = "reg.test:5000" ] || { echo "credentials not found in '
                      'native keychain"; exit 1; }\necho \'{"ServerURL":"reg.test:5000","Username":"dave",'
                      '"Secret":"pw2"}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cfg.write_text(json.dumps({"credHelpers": {REGISTRY: "fake"}}))
    make_resolver(docker_config=str(cfg)).resolve(REF)
    assert seen[-1] == basic("dave", "pw2")
    cfg.write_text(json.dumps({"credsStore": "fake"}))
    make_resolver(docker_config=str(cfg)).resolve(REF)
    assert seen[-1] == basic("dave", "pw2")
    cfg.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{cfg}: not valid JSON"):
        make_resolver(docker_config=str(cfg)).resolve(REF)


# -- foreign layers -------------------------------------------------------------------------------------


def test_foreign_urls_are_off_by_default_and_verified_when_on(fake: FakeRegistry, make_resolver) -> None:
    data = b"foreign layer"
    layer = Descriptor(media_type="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                       digest=sha(data), size=len(data), urls=("https://cdn.test/layer",))

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "cdn.test":
            return httpx.Response(200, content=data)
        if req.headers.get("authorization") is None:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return None

    fake.hook = hook
    opts = ResolverOptions(username="bob", secret="pw")
    with pytest.raises(NotFoundError, match="enable follow_foreign_urls"):
        make_resolver(options=opts).fetcher(REF).fetch(layer)
    assert not [q for q in fake.requests if q.url.host == "cdn.test"]
    assert _read(make_resolver(options=opts, follow_foreign_urls=True).fetcher(REF).fetch(layer)) == data
    cdn = [q for q in fake.requests if q.url.host == "cdn.test"]
    assert len(cdn) == 1 and "authorization" not in cdn[0].headers
    bad = Descriptor(media_type=layer.media_type, digest=sha(b"other"), size=len(data), urls=layer.urls)
    with pytest.raises(FailedPreconditionError, match="digest mismatch"):
        _read(make_resolver(options=opts, follow_foreign_urls=True).fetcher(REF).fetch(bad))


# -- hosts.toml -----------------------------------------------------------------------------------------


def _hosts(tmp_path: Path, registry: str, text: str) -> Path:
    d = tmp_path / "certs.d" / registry
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(text)
    return tmp_path / "certs.d"


def test_mirrors_are_tried_in_order_then_upstream(fake: FakeRegistry, make_resolver, tmp_path: Path) -> None:
    fake.image()
    root = _hosts(tmp_path, REGISTRY, f'''
server = "http://{REGISTRY}"
[host."http://mirror-a.test"]
  capabilities = ["pull", "resolve"]
[host."http://mirror-b.test:8080/prefix"]
  capabilities = ["pull"]
''')
    fake.hook = lambda req: (httpx.Response(503) if req.url.host == "mirror-a.test" else
                             httpx.Response(404) if req.url.host == "mirror-b.test" else None)
    r = make_resolver(options=ResolverOptions(hosts_dir=root), retries=1)
    resolved = r.resolve(REF)
    hosts = [str(q.url).split("/v2/")[0] for q in fake.requests]
    assert hosts == ["http://mirror-a.test", f"http://{REGISTRY}"]  # mirror-b may not resolve tags
    fake.requests.clear()
    with resolved.fetcher.fetch(resolved.descriptor) as s:
        s.read()
    assert [str(q.url).split("/app/")[0] for q in fake.requests] == [
        "http://mirror-a.test/v2", "http://mirror-b.test:8080/prefix/v2", f"http://{REGISTRY}/v2"]


def test_mirror_fallback_can_be_turned_off(fake: FakeRegistry, make_resolver, tmp_path: Path) -> None:
    fake.image()
    root = _hosts(tmp_path, REGISTRY, 'mirror_fallback = false\n[host."http://mirror-a.test"]\n')
    fake.hook = lambda req: httpx.Response(404) if req.url.host == "mirror-a.test" else None
    with pytest.raises(NotFoundError):
        make_resolver(options=ResolverOptions(hosts_dir=root)).resolve(REF)
    assert {q.url.host for q in fake.requests} == {"mirror-a.test"}


def test_hosts_toml_defaults_and_errors(tmp_path: Path) -> None:
    assert load_hosts("docker.io", None).hosts[0].base_url == "https://registry-1.docker.io/v2"
    for local in ("localhost:5000", "127.0.0.1:5000", "[::1]:5000", "localhost"):
        assert load_hosts(local, None).hosts[0].scheme == "http"
    assert load_hosts("example.com", None).hosts[0].scheme == "https"
    assert load_hosts("example.com", None, plain_http=True).hosts[0].scheme == "http"
    root = tmp_path / "d"
    (root / "example.com_5000_").mkdir(parents=True)
    (root / "example.com_5000_" / "ca.crt").write_text("x")
    hl = load_hosts("example.com:5000", root)
    assert hl.hosts[0].ca == (root / "example.com_5000_" / "ca.crt",)
    bad = _hosts(tmp_path, "bad.test", '[host."https://m"]\ncapabilitys = ["pull"]\n')
    with pytest.raises(ConfigError, match=r"hosts.toml: host.'https://m'.capabilitys: unknown key"):
        load_hosts("bad.test", bad)
    (bad / "bad.test" / "hosts.toml").write_text('capabilities = ["fly"]\n')
    with pytest.raises(ConfigError, match="capabilities: expected a list of pull, resolve, push"):
        load_hosts("bad.test", bad)
    (bad / "bad.test" / "hosts.toml").write_text('server = \n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_hosts("bad.test", bad)


def test_mirror_ca_client_and_headers(tmp_path: Path) -> None:
    root = _hosts(tmp_path, "reg.test", '''
server = "https://reg.test"
ca = "upstream.crt"
[host."https://m.test"]
  ca = ["/abs/ca.crt", "rel.crt"]
  client = [["c.cert", "c.key"], "both.pem"]
  skip_verify = true
  header = { x-one = "1", x-two = ["a", "b"] }
  override_path = true
''')
    hl = load_hosts("reg.test", root)
    m, up = hl.hosts
    base = root / "reg.test"
    assert m.mirror and m.path == "" and m.skip_verify and m.base_url == "https://m.test"
    assert m.ca == (Path("/abs/ca.crt"), base / "rel.crt")
    assert m.client_certs == ((base / "c.cert", base / "c.key"), (base / "both.pem", None))
    assert m.headers == (("x-one", "1"), ("x-two", "a"), ("x-two", "b"))
    assert not up.mirror and up.ca == (base / "upstream.crt",) and up.base_url == "https://reg.test/v2"


# -- plugin -----------------------------------------------------------------------------------------


def test_plugin_claims_and_makes_resolvers() -> None:
    plugin = DockerResolverPlugin(DockerResolverConfig(max_concurrent_downloads=5))
    assert plugin.claims("redis") and plugin.claims("docker://x/y:1") and not plugin.claims("oci-layout:///x")
    r = plugin.new_resolver(ResolverOptions(plain_http=True))
    try:
        assert r.max_concurrent_downloads == 5
        assert hasattr(r.pusher(REF), "push")
        with pytest.raises(InvalidArgumentError, match="no registry host"):
            r.pusher("redis")
    finally:
        r.close()
    assert 3 <= DockerResolverConfig().max_concurrent_downloads <= 8
