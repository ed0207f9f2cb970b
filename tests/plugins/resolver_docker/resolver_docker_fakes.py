"""An in-memory registry behind ``httpx.MockTransport``, for the docker resolver's protocol tests."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator

import httpx

from hoist.content import Descriptor, Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REGISTRY = "reg.test:5000"


class FakeRegistry:
    """A registry in memory, answering like distribution; ``hook`` may answer a request first.

    ``requests`` records every request (method, URL, headers) in order.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest -> (bytes, media type)
        self.tags: dict[str, str] = {}  # "repo:tag" -> digest
        self.requests: list[httpx.Request] = []
        self.hook: Callable[[httpx.Request], httpx.Response | None] | None = None
        self.head_manifests = True
        self._lock = threading.Lock()

    def add_blob(self, data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
        d = str(Digest.from_bytes(data))
        self.blobs[d] = data
        return Descriptor(media_type=media_type, digest=d, size=len(data))

    def add_manifest(self, repo: str, tag: str, doc: dict | bytes, media_type: str = OCI_MANIFEST) -> Descriptor:
        raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        d = str(Digest.from_bytes(raw))
        self.manifests[d] = (raw, media_type)
        self.tags[f"{repo}:{tag}"] = d
        return Descriptor(media_type=media_type, digest=d, size=len(raw))

    def image(self, repo: str = "app", tag: str = "1", layer: bytes = b"layer-bytes") -> tuple[Descriptor, Descriptor]:
        config = self.add_blob(b'{"architecture":"amd64","os":"linux"}', "application/vnd.oci.image.config.v1+json")
        lay = self.add_blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip")
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(), "layers": [lay.to_json()]}
        return self.add_manifest(repo, tag, doc), lay

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        if self.hook is not None:
            answer = self.hook(request)
            if answer is not None:
                return answer
        return self.serve(request)

    def serve(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.startswith("/v2/"):
            return httpx.Response(404)
        rest = path[4:]
        if "/manifests/" in rest:
            repo, _, ref = rest.partition("/manifests/")
            digest = ref if ref.startswith("sha256:") else self.tags.get(f"{repo}:{ref}")
            if digest not in self.manifests:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            body, mt = self.manifests[digest]
            headers = {"Docker-Content-Digest": sha(body), "Content-Type": mt, "Content-Length": str(len(body))}
            if request.method == "HEAD":
                return httpx.Response(200, headers=headers) if self.head_manifests else httpx.Response(405)
            return httpx.Response(200, headers=headers, content=body)
        if "/blobs/" in rest:
            _repo, _, digest = rest.partition("/blobs/")
            if digest not in self.blobs:
                return _error(404, "BLOB_UNKNOWN", "blob unknown")
            data = self.blobs[digest]
            headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
            rng = request.headers.get("range")
            if rng and request.method == "GET":
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                part = data[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return httpx.Response(206, headers={**headers, "Content-Length": str(len(part))}, content=part)
            if request.method == "HEAD":
                return httpx.Response(200, headers={**headers, "Content-Length": str(len(data))})
            return httpx.Response(200, headers=headers, content=data)
        return httpx.Response(404)

    def first_get(self, first: httpx.Response,
                  then: Callable[[httpx.Request], httpx.Response | None] | None = None) -> None:
        """Answer the first ``GET`` with ``first``; later ones with ``then(request)`` (``None``: as usual)."""
        pending = [first]

        def hook(request: httpx.Request) -> httpx.Response | None:
            if request.method != "GET":
                return None
            if pending:
                return pending.pop()
            return then(request) if then is not None else None

        self.hook = hook

    def paths(self, method: str | None = None) -> list[str]:
        return [r.url.path for r in self.requests if method is None or r.method == method]


class FaultyStream(httpx.SyncByteStream):
    """A response body: ``data`` in 64 KiB pieces, then ``exc`` (if any); ``close`` raises ``close_exc`` (if any)."""

    def __init__(self, data: bytes, exc: BaseException | None = None, close_exc: BaseException | None = None) -> None:
        self.data, self.exc, self.close_exc = data, exc, close_exc

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 65536):
            yield self.data[i:i + 65536]
        if self.exc is not None:
            raise self.exc

    def close(self) -> None:
        if self.close_exc is not None:
            raise self.close_exc


def CutStream(data: bytes, cut: int, exc: Exception | None = None) -> FaultyStream:  # noqa: N802 - reads as a class
    """A body that raises a read error (``exc``, default a connection reset) after ``cut`` bytes."""
    return FaultyStream(data[:cut], exc or httpx.ReadError("connection reset by peer"))


class BytesReaderAt:
    """A :class:`hoist.content.ReaderAt` over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, n: int) -> bytes:
        self.reads += 1
        return self.data[offset:offset + n]

    def close(self) -> None:
        return None


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message}]})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
