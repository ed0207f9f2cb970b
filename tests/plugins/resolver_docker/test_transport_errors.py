"""No httpx, httpcore, TLS or socket exception leaves the docker resolver, fetcher or pusher untranslated.

Through ``httpx.MockTransport``: every public method facing a network that raises (each kind of
exception the stack can produce), error bodies that cannot be read, distribution's 416 answer whose body
is shorter than its ``Content-Length``, a resume at the very end of an object, responses that fail while
closing, unreachable token servers and unusable URLs from the registry.  The messages name the object
and the endpoint.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

import httpcore
import httpx
import pytest

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, UnavailableError
from hoist.remotes import ResolverOptions, UnauthorizedError
from hoist_resolver_docker.pusher import DockerPusher

from resolver_docker_fakes import OCI_MANIFEST, REGISTRY, BytesReaderAt, FakeRegistry, FaultyStream

REF = f"{REGISTRY}/app:1"
ENDPOINT = f"http://{REGISTRY}"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: One of each kind of exception the network stack raises, as httpx maps it and as it can leak raw.
FAILURES: list = [
    pytest.param(lambda: httpx.ConnectError("connection refused"), id="httpx-connect"),
    pytest.param(lambda: httpx.ReadTimeout("timed out"), id="httpx-read-timeout"),
    pytest.param(lambda: httpx.RemoteProtocolError("peer closed connection without a response"), id="httpx-protocol"),
    pytest.param(lambda: httpcore.RemoteProtocolError("server disconnected"), id="httpcore-protocol"),
    pytest.param(lambda: httpcore.ReadError("connection reset"), id="httpcore-read"),
    pytest.param(lambda: ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] bad record mac"), id="ssl"),
    pytest.param(lambda: ConnectionResetError(104, "Connection reset by peer"), id="socket"),
]


def _read(stream) -> bytes:  # type: ignore[no-untyped-def]
    with stream as s:
        return s.read()


def _blob(data: bytes) -> Descriptor:
    return Descriptor(media_type=LAYER, digest=Digest.from_bytes(data), size=len(data))


def _names_object_and_endpoint(err: BaseException, obj: str) -> None:
    text = str(err)
    assert obj in text, text
    assert ENDPOINT in text, text


# -- every public method, every kind of network failure ---------------------------------------------------


@pytest.mark.parametrize("failure", FAILURES)
def test_resolve_and_fetch_translate_network_failures(fake: FakeRegistry, make_resolver, sleeps: list[float],
                                                      failure: Callable[[], BaseException]) -> None:
    manifest, layer = fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        raise failure()

    fake.hook = hook
    r = make_resolver(retries=2)
    with pytest.raises(UnavailableError) as e:
        r.resolve(REF)
    _names_object_and_endpoint(e.value, REF)
    with pytest.raises(UnavailableError) as e:
        r.fetcher(REF).fetch(layer)
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{layer.digest}")
    with pytest.raises(UnavailableError) as e:
        r.fetcher(REF).fetch(manifest)
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{manifest.digest}")


@pytest.mark.parametrize("failure", FAILURES)
def test_pusher_translates_network_failures(fake: FakeRegistry, make_resolver, sleeps: list[float],
                                            failure: Callable[[], BaseException]) -> None:
    data = b"layer to push" * 100
    desc = _blob(data)
    manifest = b'{"schemaVersion":2}'
    mdesc = Descriptor(media_type=OCI_MANIFEST, digest=Digest.from_bytes(manifest), size=len(manifest))

    def hook(req: httpx.Request) -> httpx.Response | None:
        raise failure()

    fake.hook = hook
    pusher = DockerPusher(make_resolver(retries=2), REF)
    with pytest.raises(UnavailableError) as e:
        pusher.exists(desc)
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{desc.digest}")
    with pytest.raises(UnavailableError) as e:
        pusher.push_blob(desc, BytesReaderAt(data))
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{desc.digest}")
    with pytest.raises(UnavailableError) as e:
        pusher.push_manifest(mdesc, manifest, tag="1", check_exists=False)
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app:1")
    with pytest.raises(UnavailableError) as e:
        pusher.push(desc)
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{desc.digest}")


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_upload_is_translated(fake: FakeRegistry, make_resolver, sleeps: list[float],
                                        failure: Callable[[], BaseException]) -> None:
    data = os.urandom(200_000)
    desc = _blob(data)
    puts: list[httpx.Request] = []

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/u1"})
        if req.method == "PUT":
            puts.append(req)
            raise failure()
        return None  # HEAD: 404 from the fake

    fake.hook = hook
    pusher = DockerPusher(make_resolver(retries=2), REF)
    with pytest.raises(UnavailableError, match=r"upload failed 3 times") as e:
        pusher.push_blob(desc, BytesReaderAt(data))
    _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{desc.digest}")
    assert len(puts) == 3


# -- bodies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", FAILURES[1:])
def test_a_cut_body_resumes_whatever_the_exception(fake: FakeRegistry, make_resolver, sleeps: list[float],
                                                   failure: Callable[[], BaseException]) -> None:
    data = os.urandom(300_000)
    blob = fake.add_blob(data)
    fake.first_get(httpx.Response(200, headers={"Content-Length": str(len(data))},
                                  stream=FaultyStream(data[:100_000], failure())))
    exc = failure()
    if isinstance(exc, ssl.SSLError):
        # A TLS failure is not retried: one error naming the object and the endpoint.
        with pytest.raises(UnavailableError) as e:
            _read(make_resolver().fetcher(REF).fetch(blob))
        _names_object_and_endpoint(e.value, f"{REGISTRY}/app@{blob.digest}")
        return
    assert _read(make_resolver().fetcher(REF).fetch(blob)) == data
    assert fake.requests[-1].headers["range"] == "bytes=100000-"


def test_an_unreadable_error_body_is_retried_then_reported_by_status(fake: FakeRegistry, make_resolver,
                                                                      sleeps: list[float]) -> None:
    fake.hook = lambda req: httpx.Response(
        503, headers={"Content-Length": "1000"}, stream=FaultyStream(b'{"errors": [', httpx.RemoteProtocolError("cut")))
    with pytest.raises(UnavailableError, match=rf"^{REF}: registry unavailable \(HTTP 503\)$"):
        make_resolver(retries=3).resolve(REF)
    assert len(fake.requests) == 3 and len(sleeps) == 2


def test_distributions_416_with_a_short_body_is_a_size_mismatch(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(200_000)
    blob = fake.add_blob(data)
    longer = Descriptor(media_type=LAYER, digest=blob.digest, size=len(data) + 1)

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "GET" and req.headers.get("range"):
            # distribution 2.8: Content-Length of the whole blob, a 33-byte body, then the connection ends.
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}",
                                                "Content-Length": str(len(data))},
                                  stream=FaultyStream(b"requested range not satisfiable\n",
                                                httpx.RemoteProtocolError("peer closed connection")))
        return None

    fake.hook = hook
    received = bytearray()
    with pytest.raises(FailedPreconditionError,
                       match=rf"content {REGISTRY}/app@{blob.digest}: size mismatch: {ENDPOINT}/v2 has "
                             rf"{len(data)} bytes, expected {len(data) + 1}"):
        with make_resolver().fetcher(REF).fetch(longer) as s:
            while b := s.read(1 << 16):
                received += b
    assert data.startswith(bytes(received))
    assert [q.headers.get("range") for q in fake.requests] == [None, f"bytes={len(data)}-"]


def test_a_416_without_a_total_is_refused_naming_the_range(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(100_000)
    blob = fake.add_blob(data)
    fake.first_get(httpx.Response(200, headers={"Content-Length": str(len(data))},
                                  stream=FaultyStream(data[:40_000], httpx.ReadError("reset"))),
                   lambda req: httpx.Response(416))
    with pytest.raises(FailedPreconditionError, match=rf"{ENDPOINT}/v2 refused 'Range: bytes=40000-' \(HTTP 416\)"):
        _read(make_resolver().fetcher(REF).fetch(blob))


def test_resuming_at_the_end_makes_no_request(fake: FakeRegistry, make_resolver) -> None:
    data = os.urandom(50_000)
    blob = fake.add_blob(data)
    stream = make_resolver().fetcher(REF).fetch(blob)
    with stream:
        assert stream.seek(len(data)) == len(data)
        assert stream.read(1 << 16) == b""
    assert [q.headers.get("range") for q in fake.requests] == [None]


def test_responses_failing_while_closing_are_dropped(fake: FakeRegistry, make_resolver) -> None:
    manifest, layer = fake.image(layer=os.urandom(70_000))

    def hook(req: httpx.Request) -> httpx.Response | None:
        answer = fake.serve(req)
        body = b"" if req.method == "HEAD" else answer.content
        return httpx.Response(answer.status_code, headers=answer.headers,
                              stream=FaultyStream(body, close_exc=httpcore.ReadError("reset while closing")))

    fake.hook = hook
    r = make_resolver()
    assert r.resolve(REF).descriptor.digest == manifest.digest
    assert _read(r.fetcher(REF).fetch(layer)) == fake.blobs[str(layer.digest)]


# -- auth and URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", FAILURES)
def test_an_unreachable_token_server_names_it(fake: FakeRegistry, make_resolver, sleeps: list[float],
                                              failure: Callable[[], BaseException]) -> None:
    fake.image()

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == "auth.test":
            raise failure()
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/token",'
                                                                'service="reg.test",scope="repository:app:pull"'})

    fake.hook = hook
    with pytest.raises(UnavailableError, match=f"{REGISTRY}: token from https://auth.test/token"):
        make_resolver(options=ResolverOptions(username="alice", secret="pw"), retries=2).resolve(REF)


def test_an_unusable_token_realm_is_refused(fake: FakeRegistry, make_resolver) -> None:
    fake.image()
    fake.hook = lambda req: httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/\x01",'
                                                                             'service="reg.test"'})
    with pytest.raises(UnauthorizedError, match=f"{REGISTRY}: token realm .* is not a usable URL"):
        make_resolver(options=ResolverOptions(username="alice", secret="pw")).resolve(REF)


def test_an_unusable_upload_location_is_refused(fake: FakeRegistry, make_resolver) -> None:
    data = b"x" * 1000
    desc = _blob(data)

    def hook(req: httpx.Request) -> httpx.Response | None:
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/\x01bad"})
        return None

    fake.hook = hook
    with pytest.raises(FailedPreconditionError, match=rf"{REGISTRY}/app: registry gave an unusable upload Location"):
        DockerPusher(make_resolver(), REF).push_blob(desc, BytesReaderAt(data))


def test_a_redirect_to_an_unusable_url_is_reported(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.image()
    fake.hook = lambda req: httpx.Response(307, headers={"Location": "/v2/app/manifests/\x01bad"})
    where = f"{ENDPOINT}/v2/app/manifests/1"
    with pytest.raises(FailedPreconditionError, match=rf"^{REF}: {where}: redirect to unusable URL '/v2/app/manifests/\\x01bad'"):
        make_resolver(retries=2).resolve(REF)
    assert sleeps == [], "a Location no request can go to is not retried"


def test_a_redirect_to_a_malformed_url_is_refused(fake: FakeRegistry, make_resolver, sleeps: list[float]) -> None:
    fake.image()
    fake.hook = lambda req: httpx.Response(307, headers={"Location": "http://[bad/v2/app/manifests/1"})
    with pytest.raises(FailedPreconditionError,
                       match=rf"^{REF}: {ENDPOINT}/v2/app/manifests/1: redirect to unusable URL"):
        make_resolver().resolve(REF)
    assert sleeps == []
