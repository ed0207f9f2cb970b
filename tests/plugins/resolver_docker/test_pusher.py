"""``DockerPusher`` against the real Docker Distribution registry, and protocol edge cases on an in-memory one.

Real registry: monolithic upload then HEAD hits, a 64 MiB blob in 5 MiB ``PATCH`` chunks, cross-repository
mounts (and the fallback when the source lacks the blob), a chunk cut off mid-way resumed from the
registry's offset, the registry's own error text when it rejects the digest, manifests by tag with
exact bytes, push scopes in token requests, 401 after auth and 413.
In memory: ``Location``/``Range`` the registry moves, sessions the registry forgets (restart), 413 on a
monolithic upload (falls back to chunks), ``OCI-Chunk-Min-Length``, the ``PushWriter`` protocol.
Sessions remembered across runs: an interrupted chunked upload resumes in a new pusher from the
registry's offset (real registry and in memory); a session the registry forgot, one too old to ask
about, and a registry claiming more bytes than the blob has all start a new upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from hoist.content import Descriptor, Digest
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from hoist.remotes import Pusher, PushWriter, ResolverOptions, UnauthorizedError
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.pusher import (
    COMMITTED,
    DISTRIBUTION_SOURCE_PREFIX,
    EXISTS,
    MOUNTED,
    DockerPusher,
    append_distribution_source,
    distribution_sources,
)
from hoist_resolver_docker.resolver import DockerResolver
from hoist_resolver_docker.uploads import UploadSessions
from resolver_docker_fakes import BytesReaderAt
from support.faultproxy import respond, stall

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MiB = 1 << 20


def blob(data: bytes, media_type: str = LAYER) -> Descriptor:
    return Descriptor(media_type=media_type, digest=Digest.from_bytes(data), size=len(data))


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def resolvers(tmp_path: Path):
    made: list[DockerResolver] = []

    def make(options: ResolverOptions | None = None, transport: httpx.BaseTransport | None = None,
             **config: object) -> DockerResolver:
        config.setdefault("config_path", "")
        config.setdefault("docker_config", str(tmp_path / "no-docker-config.json"))
        config.setdefault("retry_backoff", 0.0)
        r = DockerResolver(DockerResolverConfig(**config), options or ResolverOptions(plain_http=True),  # type: ignore[arg-type]
                           transport=transport)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def hosts_dir(tmp_path: Path, reg) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "certs.d" / reg.host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(f'server = "https://{reg.host}"\nca = "{reg.ca_cert}"\n')
    return tmp_path / "certs.d"


def uploads(entries: list) -> list:
    return [e for e in entries if e.method in ("POST", "PUT", "PATCH")]


# -- the real registry --------------------------------------------------------------------------------


def test_monolithic_upload_then_head_hits(registry, resolvers, repo_name: str) -> None:
    data = rand(300_000, 1)
    desc = blob(data)
    pusher = DockerPusher(resolvers(), registry.ref(repo_name))
    assert isinstance(pusher, Pusher)
    offsets: list[int] = []
    mark = registry.access_mark()
    assert pusher.push_blob(desc, BytesReaderAt(data), on_progress=offsets.append) == COMMITTED
    entries = registry.access_entries(mark, min_count=3)
    assert registry.has_blob(repo_name, desc.digest)
    assert registry.blob_path(desc.digest).read_bytes() == data
    assert [(e.method, e.status) for e in entries] == [("HEAD", 404), ("POST", 202), ("PUT", 201)]
    assert entries[2].params["digest"] == [str(desc.digest)]
    assert offsets[-1] == len(data)

    mark = registry.access_mark()
    assert pusher.push_blob(desc, BytesReaderAt(data)) == EXISTS
    assert [(e.method, e.status) for e in registry.access_entries(mark, min_count=1)] == [("HEAD", 200)]


def test_chunked_upload_of_64_mib_in_5_mib_chunks(registry, resolvers, repo_name: str) -> None:
    data = rand(64 * MiB, 2)
    desc = blob(data)
    pusher = DockerPusher(resolvers(), registry.ref(repo_name), chunk_size=5 * MiB, chunked_upload_threshold=8 * MiB)
    states: list[tuple[str, int]] = []
    offsets: list[int] = []
    mark = registry.access_mark()
    assert pusher.push_blob(desc, BytesReaderAt(data), on_state=lambda s, o: states.append((s, o)),
                            on_progress=offsets.append) == COMMITTED
    entries = registry.access_entries(mark, min_count=16)
    patches = [e for e in entries if e.method == "PATCH"]
    assert len(patches) == 13 and all(e.status == 202 for e in patches)  # 12 × 5 MiB + 4 MiB
    assert [e.method for e in entries] == ["HEAD", "POST", *["PATCH"] * 13, "PUT"]
    assert entries[-1].status == 201 and entries[-1].params["digest"] == [str(desc.digest)]
    assert hashlib.sha256(registry.blob_path(desc.digest).read_bytes()).hexdigest() == desc.digest.hex
    assert states == [("uploading", 0)] and offsets[-1] == len(data)


def test_chunked_upload_through_a_proxy_sends_content_range(registry, resolvers, repo_name: str, fault_proxy) -> None:
    proxy = fault_proxy(registry)
    data = rand(5 * MiB + 17, 3)
    pusher = DockerPusher(resolvers(), f"{proxy.host}/{repo_name}", chunk_size=2 * MiB, chunked_upload_threshold=0)
    assert pusher.push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    assert [r.headers["content-range"] for r in patches] == ["0-2097151", "2097152-4194303", "4194304-5242896"]
    assert [r.headers["content-length"] for r in patches] == [str(2 * MiB), str(2 * MiB), str(MiB + 17)]
    # Each PATCH goes to the Location the previous answer gave (distribution moves the _state token along).
    assert len({r.query for r in patches}) == 3


def test_cross_repository_mount(registry, resolvers, repo_name: str) -> None:
    data = rand(200_000, 4)
    desc = blob(data)
    resolver = resolvers()
    source = f"{repo_name}-src"
    assert DockerPusher(resolver, registry.ref(source)).push_blob(desc, BytesReaderAt(data)) == COMMITTED
    reader = BytesReaderAt(data)
    mark = registry.access_mark()
    labelled = Descriptor(media_type=LAYER, digest=desc.digest, size=desc.size,
                          annotations={DISTRIBUTION_SOURCE_PREFIX + registry.host: f"t/elsewhere,{source}"})
    assert DockerPusher(resolver, registry.ref(repo_name)).push_blob(labelled, reader) == MOUNTED
    assert reader.reads == 0
    entries = registry.access_entries(mark, min_count=3)
    posts = [e for e in entries if e.method == "POST"]
    # t/elsewhere lacks the blob: 202 (a session, cancelled later); the source mounts it: 201.
    assert [(e.params["mount"], e.params["from"], e.status) for e in posts] == [
        ([str(desc.digest)], ["t/elsewhere"], 202), ([str(desc.digest)], [source], 201)]
    assert not [e for e in entries if e.method in ("PUT", "PATCH")]
    assert registry.has_blob(repo_name, desc.digest)


def test_mount_refused_falls_back_to_the_offered_session(registry, resolvers, repo_name: str) -> None:
    data = rand(100_000, 5)
    desc = blob(data)
    mark = registry.access_mark()
    pusher = DockerPusher(resolvers(), registry.ref(repo_name))
    assert pusher.push_blob(desc, BytesReaderAt(data), sources=["t/nowhere"]) == COMMITTED
    entries = uploads(registry.access_entries(mark, min_count=3))
    assert [(e.method, e.status) for e in entries] == [("POST", 202), ("PUT", 201)]
    assert entries[0].params["from"] == ["t/nowhere"]
    assert registry.blob_path(desc.digest).read_bytes() == data


def test_interrupted_chunk_resumes_from_the_registry_offset(registry, resolvers, repo_name: str, fault_proxy) -> None:
    proxy = fault_proxy(registry)
    # The third chunk never reaches the registry: the proxy holds it until the client gives up on it.
    proxy.inject(path=r"/blobs/uploads/", method="PATCH", times=2)   # the first two pass untouched
    rule = proxy.inject(stall(60), path=r"/blobs/uploads/", method="PATCH", times=1)
    data = rand(5 * MiB, 6)
    desc = blob(data)
    states: list[tuple[str, int]] = []
    pusher = DockerPusher(resolvers(ResolverOptions(plain_http=True, timeout=1.0)), f"{proxy.host}/{repo_name}",
                          chunk_size=MiB, chunked_upload_threshold=0)
    assert pusher.push_blob(desc, BytesReaderAt(data), on_state=lambda s, o: states.append((s, o))) == COMMITTED
    assert rule.hits == 1
    methods = [(r.method, r.headers.get("content-range")) for r in proxy.requests if r.method != "HEAD"]
    assert methods == [
        ("POST", None), ("PATCH", f"0-{MiB - 1}"), ("PATCH", f"{MiB}-{2 * MiB - 1}"),
        ("PATCH", f"{2 * MiB}-{3 * MiB - 1}"),   # stalled, abandoned after the 1 s timeout
        ("GET", None),                           # where does the session stand? Range: 0-2097151
        ("PATCH", f"{2 * MiB}-{3 * MiB - 1}"), ("PATCH", f"{3 * MiB}-{4 * MiB - 1}"),
        ("PATCH", f"{4 * MiB}-{5 * MiB - 1}"), ("PUT", None)]
    assert states == [("uploading", 0), ("uploading", 2 * MiB)]
    assert registry.blob_path(desc.digest).read_bytes() == data


def test_registry_rejecting_the_digest_fails_with_its_error_text(registry, resolvers, repo_name: str) -> None:
    data = rand(50_000, 7)
    lie = Descriptor(media_type=LAYER, digest=Digest.from_bytes(b"something else"), size=len(data))
    pusher = DockerPusher(resolvers(), registry.ref(repo_name))
    with pytest.raises(InvalidArgumentError) as e:
        pusher.push_blob(lie, BytesReaderAt(data))
    assert str(e.value) == (f"{registry.host}/{repo_name}@{lie.digest}: registry rejected the request "
                            "(DIGEST_INVALID: provided digest did not match uploaded content)")
    assert not registry.has_blob(repo_name, lie.digest)


def test_manifest_by_tag_with_exact_bytes(registry, resolvers, repo_name: str) -> None:
    layer = rand(10_000, 8)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    pusher = DockerPusher(resolvers(), registry.ref(f"{repo_name}:v1"))
    for data, mtype in ((layer, LAYER), (config, CONFIG)):
        assert pusher.push_blob(blob(data, mtype), BytesReaderAt(data)) == COMMITTED
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob(config, CONFIG).to_json(),
           "layers": [blob(layer).to_json()]}
    data = json.dumps(doc, indent=3).encode() + b"\n"   # odd formatting must survive byte for byte
    desc = blob(data, OCI_MANIFEST)
    assert pusher.push_manifest(desc, data, tag="v1") == COMMITTED
    assert registry.manifest(repo_name, "v1") == (data, OCI_MANIFEST)
    assert registry.manifest_digest(repo_name, "v1") == str(desc.digest)
    assert pusher.push_manifest(desc, data, tag="v1") == EXISTS
    assert pusher.push_manifest(desc, data, tag="v2") == COMMITTED
    assert registry.tags(repo_name) == ["v1", "v2"]
    with pytest.raises(InvalidArgumentError, match="do not match the descriptor"):
        pusher.push_manifest(desc, data + b" ", tag="v3")


def test_push_writer_protocol(registry, resolvers, repo_name: str) -> None:
    data = rand(3 * MiB + 5, 9)
    desc = blob(data)
    pusher = DockerPusher(resolvers(), registry.ref(repo_name), chunk_size=MiB)
    writer = pusher.push(desc)
    assert isinstance(writer, PushWriter)
    for i in range(0, len(data), 700_000):
        writer.write(data[i:i + 700_000])
    writer.commit(len(data), desc.digest)
    writer.close()
    assert registry.blob_path(desc.digest).read_bytes() == data
    with pytest.raises(AlreadyExistsError, match="already exists"):
        pusher.push(desc)


def test_token_auth_asks_for_push_scopes(registry_token, resolvers, repo_name: str, tmp_path: Path) -> None:
    ts = registry_token.token_server
    ts.clear()
    opts = ResolverOptions(username=registry_token.username, secret=registry_token.password,
                           hosts_dir=hosts_dir(tmp_path, registry_token))
    resolver = resolvers(opts)
    data = rand(20_000, 10)
    desc = blob(data)
    src = f"{repo_name}-src"
    assert DockerPusher(resolver, registry_token.ref(src)).push_blob(desc, BytesReaderAt(data)) == COMMITTED
    assert DockerPusher(resolver, registry_token.ref(repo_name)).push_blob(desc, BytesReaderAt(data),
                                                                           sources=[src]) == MOUNTED
    scopes = [r.scopes for r in ts.requests]
    assert any(f"repository:{src}:pull,push" in s for s in scopes), scopes
    assert any(f"repository:{repo_name}:pull,push" in s and f"repository:{src}:pull" in s
               for s in scopes), scopes


def test_401_after_auth_is_one_clear_line(registry_basic, resolvers, repo_name: str, tmp_path: Path) -> None:
    opts = ResolverOptions(username=registry_basic.username, secret="wrong", hosts_dir=hosts_dir(tmp_path, registry_basic))
    data = b"x" * 100
    with pytest.raises(UnauthorizedError) as e:
        DockerPusher(resolvers(opts), registry_basic.ref(repo_name)).push_blob(blob(data), BytesReaderAt(data))
    assert "\n" not in str(e.value) and "authentication required" in str(e.value)
    assert str(e.value).startswith(f"{registry_basic.host}/{repo_name}@sha256:")


def test_413_is_one_clear_line(registry, resolvers, repo_name: str, fault_proxy) -> None:
    proxy = fault_proxy(registry)
    proxy.inject(respond(413, body=b""), path=r"/blobs/uploads/", method="PUT")
    proxy.inject(respond(413, body=b""), path=r"/blobs/uploads/", method="PATCH")
    data = rand(400_000, 11)
    desc = blob(data)
    pusher = DockerPusher(resolvers(), f"{proxy.host}/{repo_name}", chunk_size=MiB)
    with pytest.raises(FailedPreconditionError) as e:
        pusher.push_blob(desc, BytesReaderAt(data))
    assert str(e.value) == f"{proxy.host}/{repo_name}@{desc.digest}: registry refused the upload as too large (HTTP 413)"
    # The monolithic PUT was refused, then one chunk: no endless retrying.
    assert [r.method for r in proxy.requests if r.method != "HEAD"] == ["POST", "PUT", "DELETE", "POST", "PATCH"]


def test_distribution_source_labels() -> None:
    key = DISTRIBUTION_SOURCE_PREFIX + "reg:5000"
    assert distribution_sources({key: "a/b, c ,a/b"}, "reg:5000") == ("a/b", "c")
    assert distribution_sources({key: "a"}, "other") == ()
    assert append_distribution_source({key: "a"}, "reg:5000", "b") == "a,b"
    assert append_distribution_source({key: "a,b"}, "reg:5000", "a") == "a,b"


# -- protocol edge cases (in memory) ---------------------------------------------------------------------


class UploadRegistry:
    """Blob uploads answered like a registry, with knobs: move ``Location``, under-report ``Range``, forget sessions."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.forget_after_patches: int | None = None
        self.short_range_once = False
        self.monolithic_limit: int | None = None
        self.min_chunk = 0
        self.cut_patch: int | None = None
        self.forget_on_cut = False
        self.overclaim = 0
        self._patches = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        with self._lock:
            self.requests.append((request.method, str(request.url), dict(request.headers)))
            return self._serve(request, body)

    def _location(self, sid: str) -> dict[str, str]:
        # A fresh state token each time, as distribution does.
        return {"Location": f"/v2/app/blobs/uploads/{sid}?_state={uuid.uuid4().hex}",
                "Range": f"0-{max(len(self.sessions[sid]) - 1, 0)}"}

    def _serve(self, request: httpx.Request, body: bytes) -> httpx.Response:
        path, method = request.url.path, request.method
        if "/blobs/uploads/" not in path:
            digest = path.rsplit("/", 1)[-1]
            if digest in self.blobs:
                return httpx.Response(200, headers={"Content-Length": str(len(self.blobs[digest]))})
            return httpx.Response(404)
        sid = path.rsplit("/", 1)[-1]
        if method == "POST":
            sid = uuid.uuid4().hex
            self.sessions[sid] = bytearray()
            headers = self._location(sid)
            if self.min_chunk:
                headers["OCI-Chunk-Min-Length"] = str(self.min_chunk)
            return httpx.Response(202, headers=headers)
        if sid not in self.sessions:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "blob upload unknown"}]})
        data = self.sessions[sid]
        if method == "GET":
            headers = self._location(sid)
            if self.overclaim:
                headers["Range"] = f"0-{len(data) - 1 + self.overclaim}"
            return httpx.Response(204, headers=headers)
        if method == "PATCH":
            self._patches += 1
            if self.cut_patch == self._patches:
                data += body[: len(body) // 2]
                if self.forget_on_cut:
                    del self.sessions[sid]
                raise httpx.WriteError("connection reset by peer")
            start = int(request.headers["content-range"].split("-")[0])
            if start != len(data):
                return httpx.Response(416)
            data += body
            if self.short_range_once:
                self.short_range_once = False
                del data[len(data) - 1000:]
            answer = httpx.Response(202, headers=self._location(sid))
            if self.forget_after_patches == self._patches:
                del self.sessions[sid]
            return answer
        if method == "PUT":
            if self.monolithic_limit is not None and len(body) > self.monolithic_limit:
                return httpx.Response(413)
            data += body
            digest = request.url.params["digest"]
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "digest invalid"}]})
            self.blobs[digest] = bytes(data)
            del self.sessions[sid]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if method == "DELETE":
            del self.sessions[sid]
            return httpx.Response(204)
        return httpx.Response(405)

    def calls(self) -> list[str]:
        return [f"{m} {h.get('content-range', '')}".strip() for m, _u, h in self.requests if m != "HEAD"]


@pytest.fixture
def mem(resolvers):
    fake = UploadRegistry()

    def make(**kw: object) -> DockerPusher:
        return DockerPusher(resolvers(transport=httpx.MockTransport(fake)), "reg.test:5000/app", **kw)  # type: ignore[arg-type]

    return fake, make


def test_follows_location_and_the_range_the_registry_reports(mem) -> None:
    fake, make = mem
    fake.short_range_once = True     # the registry kept 1000 bytes less of the first chunk than was sent
    data = rand(3000 + 2048, 12)
    assert make(chunk_size=2048, chunked_upload_threshold=0).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PATCH 0-2047", "PATCH 1048-3095", "PATCH 3096-5047", "PUT"]
    urls = [u for m, u, _h in fake.requests if m in ("PATCH", "PUT")]
    assert len(set(urls)) == len(urls)
    assert fake.blobs[str(blob(data).digest)] == data


def test_a_session_the_registry_forgot_is_restarted(mem) -> None:
    fake, make = mem
    fake.forget_after_patches = 2
    data = rand(5000, 13)
    assert make(chunk_size=2000, chunked_upload_threshold=0).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PATCH 0-1999", "PATCH 2000-3999", "PATCH 4000-4999",
                            "POST", "PATCH 0-1999", "PATCH 2000-3999", "PATCH 4000-4999", "PUT"]


def test_a_cut_chunk_resumes_at_the_offset_the_registry_reports(mem) -> None:
    fake, make = mem
    fake.cut_patch = 2   # half of the second chunk lands, the connection drops
    data = rand(5000, 14)
    assert make(chunk_size=2000, chunked_upload_threshold=0).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    # GET says 0-2999 (the half chunk counts): continue from 3000.
    assert fake.calls() == ["POST", "PATCH 0-1999", "PATCH 2000-3999", "GET", "PATCH 3000-4999", "PUT"]


def test_a_cut_chunk_whose_session_is_gone_restarts(mem) -> None:
    fake, make = mem
    fake.cut_patch = 2
    fake.forget_on_cut = True
    data = rand(5000, 17)
    assert make(chunk_size=2000, chunked_upload_threshold=0).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PATCH 0-1999", "PATCH 2000-3999", "GET",
                            "POST", "PATCH 0-1999", "PATCH 2000-3999", "PATCH 4000-4999", "PUT"]


def test_413_on_a_monolithic_upload_falls_back_to_chunks(mem) -> None:
    fake, make = mem
    fake.monolithic_limit = 1000
    data = rand(2500, 15)
    assert make(chunk_size=1000).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PUT", "DELETE", "POST", "PATCH 0-999", "PATCH 1000-1999", "PATCH 2000-2499",
                            "PUT"]


def test_chunk_min_length_from_the_registry(mem) -> None:
    fake, make = mem
    fake.min_chunk = 3000
    data = rand(5000, 16)
    assert make(chunk_size=1000, chunked_upload_threshold=0).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PATCH 0-2999", "PATCH 3000-4999", "PUT"]


# -- sessions remembered across runs -------------------------------------------------------------------


class Stop(Exception):
    """Stands for the user interrupting a push (the push's progress callback raising)."""


def stop_at(offset: int):  # type: ignore[no-untyped-def]
    def progress(o: int) -> None:
        if o >= offset:
            raise Stop(f"stopped at {o}")
    return progress


def state_files(d: Path) -> list[Path]:
    return sorted(d.iterdir()) if d.exists() else []


def test_an_interrupted_upload_resumes_in_a_later_run(mem, tmp_path: Path) -> None:
    fake, make = mem
    state = tmp_path / "uploads"
    data = rand(5000, 20)
    desc = blob(data)
    with pytest.raises(Stop):
        # Stopped while the third chunk is on its way: that chunk still goes in whole.
        make(chunk_size=1000, chunked_upload_threshold=0, upload_state_dir=state).push_blob(
            desc, BytesReaderAt(data), on_progress=stop_at(2500))
    assert fake.calls() == ["POST", "PATCH 0-999", "PATCH 1000-1999", "PATCH 2000-2999"]
    [saved] = state_files(state)
    remembered = json.loads(saved.read_text())
    assert (remembered["registry"], remembered["repository"], remembered["digest"]) == ("reg.test:5000", "app",
                                                                                        str(desc.digest))
    # The newest Location (the third PATCH's answer) is remembered, not the first one.
    patch_urls = [u for m, u, _h in fake.requests if m == "PATCH"]
    assert remembered["location"].startswith("http://reg.test:5000/v2/app/blobs/uploads/")
    assert remembered["location"] not in patch_urls

    states: list[tuple[str, int]] = []
    offsets: list[int] = []
    again = make(chunk_size=1000, chunked_upload_threshold=0, upload_state_dir=state)
    assert again.push_blob(desc, BytesReaderAt(data), on_state=lambda s, o: states.append((s, o)),
                           on_progress=offsets.append) == COMMITTED
    assert fake.calls()[4:] == ["GET", "PATCH 3000-3999", "PATCH 4000-4999", "PUT"]
    assert [u for m, u, _h in fake.requests if m == "GET"] == [remembered["location"]]
    assert states == [("uploading", 3000)] and offsets[0] == 3000 and offsets[-1] == 5000
    assert fake.blobs[str(desc.digest)] == data
    assert state_files(state) == []


def test_a_remembered_session_the_registry_forgot_starts_over(mem, tmp_path: Path) -> None:
    fake, make = mem
    data = rand(3000, 21)
    desc = blob(data)
    UploadSessions(tmp_path).remember("reg.test:5000", "app", str(desc.digest),
                                      "http://reg.test:5000/v2/app/blobs/uploads/gone?_state=x")
    pusher = make(chunk_size=1000, chunked_upload_threshold=0, upload_state_dir=tmp_path)
    assert pusher.push_blob(desc, BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["GET", "POST", "PATCH 0-999", "PATCH 1000-1999", "PATCH 2000-2999", "PUT"]
    assert fake.blobs[str(desc.digest)] == data
    assert state_files(tmp_path) == []


def test_a_session_too_old_is_not_asked_about(mem, tmp_path: Path) -> None:
    fake, make = mem
    data = rand(3000, 22)
    desc = blob(data)
    UploadSessions(tmp_path).remember("reg.test:5000", "app", str(desc.digest),
                                      "http://reg.test:5000/v2/app/blobs/uploads/old?_state=x",
                                      started=time.time() - 8 * 24 * 3600)
    assert make(chunk_size=2000, chunked_upload_threshold=0, upload_state_dir=tmp_path).push_blob(
        desc, BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PATCH 0-1999", "PATCH 2000-2999", "PUT"]
    assert state_files(tmp_path) == []


def test_a_registry_claiming_more_than_the_blob_starts_over(mem, tmp_path: Path, caplog) -> None:
    fake, make = mem
    data = rand(3000, 23)
    desc = blob(data)
    with pytest.raises(Stop):
        make(chunk_size=1000, chunked_upload_threshold=0, upload_state_dir=tmp_path).push_blob(
            desc, BytesReaderAt(data), on_progress=stop_at(1000))
    assert fake.calls() == ["POST", "PATCH 0-999"]
    fake.overclaim = 5000
    with caplog.at_level(logging.WARNING, logger="hoist.resolver.v1.docker"):
        assert make(chunk_size=1000, chunked_upload_threshold=0, upload_state_dir=tmp_path).push_blob(
            desc, BytesReaderAt(data)) == COMMITTED
    assert fake.calls()[2:] == ["GET", "DELETE", "POST", "PATCH 0-999", "PATCH 1000-1999", "PATCH 2000-2999", "PUT"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"reg.test:5000/app@{desc.digest}: registry claims 6000 bytes in the upload session of an earlier run, "
        "more than the blob's 3000; starting a new upload"]
    assert fake.blobs[str(desc.digest)] == data
    assert state_files(tmp_path) == []


def test_small_blobs_leave_no_state(mem, tmp_path: Path) -> None:
    fake, make = mem
    data = rand(3000, 24)
    assert make(upload_state_dir=tmp_path).push_blob(blob(data), BytesReaderAt(data)) == COMMITTED
    assert fake.calls() == ["POST", "PUT"] and state_files(tmp_path) == []


def test_real_registry_resumes_a_remembered_session_and_drops_a_deleted_one(registry, resolvers, repo_name: str,
                                                                            tmp_path: Path) -> None:
    state = tmp_path / "uploads"
    data = rand(6 * MiB, 25)
    desc = blob(data)

    def pusher() -> DockerPusher:
        return DockerPusher(resolvers(), registry.ref(repo_name), chunk_size=MiB, chunked_upload_threshold=0,
                            upload_state_dir=state)

    with pytest.raises(Stop):
        pusher().push_blob(desc, BytesReaderAt(data), on_progress=stop_at(2 * MiB))
    mark = registry.access_mark()
    assert pusher().push_blob(desc, BytesReaderAt(data)) == COMMITTED
    entries = registry.access_entries(mark, min_count=7)
    # GET says 0-2097151: four more chunks, then the PUT.
    assert [(e.method, e.status) for e in entries] == [("HEAD", 404), ("GET", 204), *[("PATCH", 202)] * 4,
                                                       ("PUT", 201)]
    assert registry.blob_path(desc.digest).read_bytes() == data
    assert state_files(state) == []

    other = rand(3 * MiB, 26)
    odesc = blob(other)
    with pytest.raises(Stop):
        pusher().push_blob(odesc, BytesReaderAt(other), on_progress=stop_at(MiB))
    [saved] = state_files(state)
    with httpx.Client() as c:   # the registry drops the session (as when it purges old uploads)
        assert c.delete(json.loads(saved.read_text())["location"]).status_code == 204
    mark = registry.access_mark()
    assert pusher().push_blob(odesc, BytesReaderAt(other)) == COMMITTED
    entries = registry.access_entries(mark, min_count=7)
    assert [(e.method, e.status) for e in entries] == [("HEAD", 404), ("GET", 404), ("POST", 202),
                                                       *[("PATCH", 202)] * 3, ("PUT", 201)]
    assert registry.blob_path(odesc.digest).read_bytes() == other
    assert state_files(state) == []


def test_state_files_of_sessions_too_old_are_pruned(tmp_path: Path) -> None:
    sessions = UploadSessions(tmp_path)
    old = sessions.remember("reg.test:5000", "app", "sha256:" + "1" * 64, "http://reg.test:5000/v2/app/blobs/uploads/a")
    path = sessions.path(old.registry, old.repository, old.digest)
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(path, (week_ago, week_ago))
    fresh = UploadSessions(tmp_path).remember("reg.test:5000", "app", "sha256:" + "2" * 64,
                                              "http://reg.test:5000/v2/app/blobs/uploads/b")
    assert state_files(tmp_path) == [UploadSessions(tmp_path).path(fresh.registry, fresh.repository, fresh.digest)]
    (tmp_path / "junk.json").write_text("{not json")
    s = UploadSessions(tmp_path)
    assert s.get("reg.test:5000", "app", fresh.digest) == fresh
    assert s.get("reg.test:5000", "other", fresh.digest) is None
    assert s.get("reg.test:5000", "app", "sha256:" + "1" * 64) is None
