"""A real Docker Distribution registry (``docker-registry serve``, distribution 2.8) on 127.0.0.1.

:class:`Registry` writes a config, starts the registry as a child process on a free loopback
port with storage in a temp dir, waits until ``/v2/`` answers, and stops it by PID. Modes:
plain HTTP, TLS (certificate from a :class:`~support.pki.TestPKI`), htpasswd Basic auth and
Bearer token auth (a :class:`~support.tokenserver.TokenServer`). Helpers push OCI layouts with
skopeo, read manifests, find blob files, and parse the access log.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Generator, Iterable
from pathlib import Path

import attrs
import httpx

from hoist.content import Digest
from support.images import (
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    Image,
    ImageLayout,
)
from support.pki import TestPKI
from support.tokenserver import TokenServer

REGISTRY_BIN = "docker-registry"
MANIFEST_ACCEPT = ", ".join((MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST))
TOKEN_SERVICE = "hoist-test-registry"
TOKEN_ISSUER = "hoist-test-token-server"
DEFAULT_USER = "hoist"
DEFAULT_PASSWORD = "hoist-secret"
MODES = ("http", "tls", "basic", "token")

_ACCESS_RE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<target>\S+) (?P<proto>[^"]+)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"'
)


class RegistryError(RuntimeError):
    """The test registry could not be set up (start, push, config)."""


@attrs.frozen(kw_only=True)
class AccessEntry:
    """One line of the registry's access log (Apache combined format)."""

    method: str
    path: str
    query: str
    status: int
    size: int
    user_agent: str
    remote: str

    @property
    def params(self) -> dict[str, list[str]]:
        """The decoded query parameters (e.g. ``mount`` and ``from`` of a cross-repository mount)."""
        return urllib.parse.parse_qs(self.query)

    def __str__(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} {self.status}"


@attrs.frozen(kw_only=True)
class PushedImage:
    """An image pushed to a registry: its reference parts and the digest the registry stores."""

    repository: str
    tag: str
    digest: str
    media_type: str
    layout: ImageLayout

    def ref(self, host: str) -> str:
        return f"{host}/{self.repository}:{self.tag}"


class RegistryAuth(httpx.Auth):
    """httpx auth that answers registry challenges: Basic, or Bearer through the realm (GET)."""

    def __init__(self, username: str | None, password: str | None, *, verify: ssl.SSLContext | bool = True) -> None:
        self.username = username
        self.password = password
        self.verify = verify
        self._tokens: dict[str, str] = {}

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic" and self.username is not None:
            request.headers["Authorization"] = self._basic()
            yield request
        elif scheme.lower() == "bearer":
            params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
            query = {"service": params.get("service", "")}
            if params.get("scope"):
                query["scope"] = params["scope"]
            headers = {}
            if self.username is not None:
                headers["Authorization"] = self._basic()
                query["account"] = self.username
            with httpx.Client(verify=self.verify, timeout=10) as c:
                r = c.get(params["realm"], params=query, headers=headers)
            r.raise_for_status()
            body = r.json()
            request.headers["Authorization"] = f"Bearer {body.get('token') or body['access_token']}"
            yield request


_LIVE: set[Registry] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A session cut short (KeyboardInterrupt, a crash in a fixture) must not leave registries behind.
    for reg in list(_LIVE):
        reg.stop()


def make_token_server(pki: TestPKI, username: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD) -> TokenServer:
    """Start a token server whose tokens a ``token`` registry built on ``pki`` accepts."""
    return TokenServer(signer=pki.token_signer, users={username: password}, service=TOKEN_SERVICE,
                       issuer=TOKEN_ISSUER).start()


def free_port() -> int:
    """A port free on 127.0.0.1 right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """One ``docker-registry serve`` child process on 127.0.0.1.

    :param workdir: an empty directory for config, storage and logs (kept after stop for debugging).
    :param mode: ``http``, ``tls``, ``basic`` (htpasswd) or ``token`` (Bearer tokens).
    :param tls: serve HTTPS (default: every mode but ``http``; ``basic``/``token`` may set False).
    :param pki: required for TLS and for ``token`` (the token signing certificate).
    :param token_server: for ``token``; one is created from ``pki`` when not given (see
        :func:`make_token_server` to start one first, e.g. to put a fault proxy in front of it).
    :param token_realm: the realm URL the registry announces (default: the token server's).
    """

    def __init__(self, workdir: Path, *, mode: str = "http", pki: TestPKI | None = None,
                 username: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD,
                 token_server: TokenServer | None = None, token_realm: str | None = None,
                 tls: bool | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown registry mode {mode!r} ({', '.join(MODES)})")
        self.tls = mode != "http" if tls is None else tls
        if (mode == "http" and self.tls) or (mode == "tls" and not self.tls):
            raise ValueError(f"registry mode {mode!r} with tls={tls}: use mode 'http' or 'tls'")
        if (self.tls or mode == "token") and pki is None:
            raise ValueError(f"registry mode {mode!r} needs a TestPKI")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.pki = pki
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.access_log = self.workdir / "access.log"
        self.error_log = self.workdir / "registry.log"
        self.username: str | None = username if mode in ("basic", "token") else None
        self.password: str | None = password if mode in ("basic", "token") else None
        self.token_server = token_server
        self.token_realm = token_realm
        self._own_token_server = False
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.pushed: dict[str, PushedImage] = {}

    # ---- addresses

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` — the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self.host}"

    @property
    def ca_cert(self) -> Path | None:
        """The CA certificate that verifies this registry (None for plain HTTP)."""
        return self.pki.ca_cert if self.tls and self.pki else None

    @property
    def other_ca_cert(self) -> Path | None:
        """An unrelated CA certificate that must NOT verify this registry."""
        return self.pki.other_ca_cert if self.tls and self.pki else None

    @property
    def cert_dir(self) -> Path | None:
        """A directory holding ``ca.crt`` for this registry (skopeo ``--cert-dir``)."""
        return self.pki.cert_dir() if self.tls and self.pki else None

    def ref(self, name: str) -> str:
        """``127.0.0.1:PORT/<name>`` for a ``repo:tag`` or ``repo@digest``."""
        return f"{self.host}/{name}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify=`` needs for this registry: a context trusting the test CA (TLS), else False.

        False for plain HTTP keeps httpx from loading the system CA bundle (slow) for nothing.
        """
        if not self.tls:
            return False
        if self._ssl is None:
            assert self.pki is not None
            self._ssl = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        return self._ssl

    # ---- lifecycle

    def start(self, timeout: float = 15.0) -> Registry:
        """Write the config, start the registry and wait until ``/v2/`` answers; a running one is left as is."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        if shutil.which(REGISTRY_BIN) is None:
            raise RegistryError(f"{REGISTRY_BIN} not found on PATH (Debian package docker-registry)")
        self.storage.mkdir(exist_ok=True)
        if self.mode == "basic":
            self._write_htpasswd()
        if self.mode == "token" and self.token_server is None:
            assert self.pki is not None
            assert self.username is not None and self.password is not None
            self.token_server = make_token_server(self.pki, self.username, self.password)
            self._own_token_server = True
        last = ""
        for _ in range(3):  # the free port can be taken between probing and binding
            self.port = free_port()
            self.config_path.write_text(self._config())
            with open(self.access_log, "ab") as out, open(self.error_log, "ab") as err:
                self._proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config_path)], stdout=out,
                                              stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
            self.pid = self._proc.pid
            _LIVE.add(self)
            if self._wait_ready(timeout):
                return self
            last = self.error_log.read_text(errors="replace")[-2000:]
            self._terminate()
            if "address already in use" not in last:
                break
        self.stop()
        raise RegistryError(f"registry ({self.mode}) did not start on {self.host}; log:\n{last}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=self.ssl_context(), timeout=2) as client:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    return False
                try:
                    r = client.get(f"{self.url}/v2/")
                    if r.status_code in (200, 401):
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the registry process (and the token server it started)."""
        self._terminate()
        _LIVE.discard(self)
        if self._own_token_server and self.token_server is not None:
            self.token_server.stop()
            self._own_token_server = False

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_htpasswd(self) -> None:
        out = subprocess.run(["htpasswd", "-Bbn", self.username, self.password], capture_output=True, check=True)
        (self.workdir / "htpasswd").write_bytes(out.stdout.strip() + b"\n")

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "validation:",
            "  manifests:",
            "    urls:",
            "      allow:",
            "        - '^https?://'",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: hoist-test-secret",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.tls:
            assert self.pki is not None
            lines += ["  tls:", f"    certificate: {self.pki.server.cert_path}", f"    key: {self.pki.server.key_path}"]
        if self.mode == "basic":
            lines += ["auth:", "  htpasswd:", "    realm: hoist-test-registry", f"    path: {self.workdir / 'htpasswd'}"]
        elif self.mode == "token":
            assert self.pki is not None and self.token_server is not None
            realm = self.token_realm or self.token_server.realm
            lines += ["auth:", "  token:", f"    realm: {realm}", f"    service: {TOKEN_SERVICE}",
                      f"    issuer: {TOKEN_ISSUER}", f"    rootcertbundle: {self.pki.token_ca.cert_path}"]
        return "\n".join(lines) + "\n"

    # ---- HTTP helpers

    def client(self, *, auth: bool = True) -> httpx.Client:
        """An httpx client for this registry (CA trusted; credentials answered when ``auth``)."""
        verify = self.ssl_context()
        handler = RegistryAuth(self.username, self.password, verify=verify) if auth and self.username else None
        return httpx.Client(base_url=self.url, verify=verify, auth=handler, timeout=30)

    def manifest(self, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> tuple[bytes, str]:
        """The raw manifest bytes and Content-Type for ``repository`` at a tag or digest."""
        with self.client() as c:
            r = c.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
        if r.status_code != 200:
            raise RegistryError(f"manifest {repository}:{reference}: HTTP {r.status_code}: {r.text[:200]}")
        return r.content, r.headers.get("Content-Type", "")

    def manifest_bytes(self, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> bytes:
        """The raw manifest bytes for ``repository`` at a tag or digest."""
        return self.manifest(repository, reference, accept=accept)[0]

    def manifest_digest(self, repository: str, reference: str) -> str:
        """The sha256 digest of the manifest bytes the registry serves for a tag."""
        return str(Digest.from_bytes(self.manifest_bytes(repository, reference)))

    def upload_blob(self, repository: str, data: bytes) -> str:
        """Upload ``data`` as a blob of ``repository`` (POST then PUT ?digest=) and return its digest."""
        digest = str(Digest.from_bytes(data))
        self._upload(repository, digest, data, len(data))
        return digest

    def upload_blob_file(self, repository: str, path: Path, digest: str) -> None:
        """Stream the file ``path`` (whose digest the caller knows) as a blob of ``repository``, unless it is there."""
        if self.has_blob(repository, digest):
            return
        with open(path, "rb") as f:
            self._upload(repository, digest, iter(lambda: f.read(4 << 20), b""), path.stat().st_size)

    def _upload(self, repository: str, digest: str, content: bytes | Iterable[bytes], size: int) -> None:
        with self.client() as c:
            r = c.post(f"/v2/{repository}/blobs/uploads/")
            if r.status_code != 202:
                raise RegistryError(f"blob upload to {repository}: HTTP {r.status_code}: {r.text[:200]}")
            upload = httpx.URL(r.headers["Location"]).copy_merge_params({"digest": digest})
            r = c.put(upload, content=content, timeout=300,
                      headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if r.status_code != 201:
            raise RegistryError(f"blob {digest} to {repository}: HTTP {r.status_code}: {r.text[:200]}")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT raw manifest bytes (hand-made documents) and return their digest."""
        with self.client() as c:
            r = c.put(f"/v2/{repository}/manifests/{reference}", content=data, headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise RegistryError(f"manifest {repository}:{reference}: HTTP {r.status_code}: {r.text[:300]}")
        return str(Digest.from_bytes(data))

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry allows deletes)."""
        with self.client() as c:
            r = c.delete(f"/v2/{repository}/manifests/{digest}")
        if r.status_code != 202:
            raise RegistryError(f"delete {repository}@{digest}: HTTP {r.status_code}: {r.text[:200]}")

    def blob_path(self, digest: str | Digest) -> Path:
        """The registry's data file for a blob (exists once any repository holds it)."""
        d = Digest.parse(digest)
        return self.storage / "docker" / "registry" / "v2" / "blobs" / d.algorithm / d.hex[:2] / d.hex / "data"

    def has_blob(self, repository: str, digest: str | Digest) -> bool:
        """Whether ``HEAD /v2/<repo>/blobs/<digest>`` answers 200."""
        with self.client() as c:
            return c.head(f"/v2/{repository}/blobs/{digest}").status_code == 200

    def tags(self, repository: str) -> list[str]:
        with self.client() as c:
            r = c.get(f"/v2/{repository}/tags/list")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return sorted(r.json().get("tags") or [])

    # ---- pushing

    def skopeo_dest_args(self) -> list[str]:
        """skopeo flags for writing to this registry (TLS trust and credentials)."""
        args = ["--dest-tls-verify=false"] if not self.tls else ["--dest-cert-dir", str(self.cert_dir)]
        if self.username:
            args += ["--dest-creds", f"{self.username}:{self.password}"]
        else:
            args += ["--dest-no-creds"]
        return args

    def skopeo_src_args(self) -> list[str]:
        """skopeo flags for reading from this registry (for ``skopeo inspect``: use ``--tls-verify``/``--creds``)."""
        args = ["--src-tls-verify=false"] if not self.tls else ["--src-cert-dir", str(self.cert_dir)]
        if self.username:
            args += ["--src-creds", f"{self.username}:{self.password}"]
        else:
            args += ["--src-no-creds"]
        return args

    def skopeo_inspect_args(self) -> list[str]:
        """skopeo flags for ``skopeo inspect`` against this registry."""
        args = ["--tls-verify=false"] if not self.tls else ["--cert-dir", str(self.cert_dir)]
        if self.username:
            args += ["--creds", f"{self.username}:{self.password}"]
        else:
            args += ["--no-creds"]
        return args

    def push_layout(self, layout: ImageLayout, repository: str, tag: str, *, format: str | None = None,
                    all: bool | None = None, preserve_digests: bool | None = None,
                    extra: Iterable[str] = ()) -> PushedImage:
        """Push ``layout`` with ``skopeo copy`` to ``repository:tag`` and return what the registry stores.

        :param format: None keeps the layout's media types; ``v2s2`` converts to Docker schema2,
            ``oci`` to OCI (skopeo ``--format``).
        :param all: copy every image of an index (default: when the layout is an index).
        :param preserve_digests: fail rather than change the digest (default: when ``format`` is None).
        """
        if all is None:
            all = layout.is_index
        if preserve_digests is None:
            preserve_digests = format is None
        cmd = ["skopeo", "copy", "--quiet", "--retry-times", "0", *self.skopeo_dest_args()]
        if format:
            cmd += ["--format", format]
        if all:
            cmd += ["--all"]
        if preserve_digests:
            cmd += ["--preserve-digests"]
        cmd += [*extra, layout.oci_ref, f"docker://{self.ref(f'{repository}:{tag}')}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_skopeo_env(self.workdir))
        if out.returncode != 0:
            raise RegistryError(f"skopeo copy {layout.name} -> {repository}:{tag} failed: {out.stderr.strip()}")
        data, content_type = self.manifest(repository, tag)
        pushed = PushedImage(repository=repository, tag=tag, digest=str(Digest.from_bytes(data)),
                             media_type=content_type, layout=layout)
        self.pushed[f"{repository}:{tag}"] = pushed
        return pushed

    def push_http(self, layout: ImageLayout, repository: str, tag: str, *, format: str | None = None) -> PushedImage:
        """Push ``layout`` from this process over HTTP (no skopeo; fast for fixtures).

        Blobs the repository lacks are uploaded, child manifests go by digest, the target by tag.
        ``format="v2s2"`` rewrites the manifests as Docker schema2 / manifest list (same blobs).
        """
        if format not in (None, "oci", "v2s2"):
            raise ValueError(f"push format {format!r}: expected None, 'oci' or 'v2s2'")
        with self.client() as c:
            for desc in layout.all_blobs():
                if desc.media_type in (MT_OCI_MANIFEST, MT_OCI_INDEX):
                    continue
                if c.head(f"/v2/{repository}/blobs/{desc.digest}").status_code != 200:
                    self.upload_blob(repository, layout.blob(desc.digest))
        children: list[dict] = []
        for img in layout.images:
            if format == "v2s2":
                data, media_type = _docker_manifest(img), MT_DOCKER_MANIFEST
            else:
                data, media_type = img.manifest_bytes, img.manifest.media_type
            digest = str(Digest.from_bytes(data))
            if layout.is_index:
                self.put_manifest(repository, digest, data, media_type)
                entry = {"mediaType": media_type, "digest": digest, "size": len(data)}
                if img.platform is not None:
                    entry["platform"] = img.platform.to_json()
                children.append(entry)
        if layout.is_index:
            if format == "v2s2":
                data = json.dumps({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": children},
                                  indent=3).encode()
                media_type = MT_DOCKER_LIST
            else:
                data, media_type = layout.target_bytes, layout.target.media_type
        digest = self.put_manifest(repository, tag, data, media_type)
        pushed = PushedImage(repository=repository, tag=tag, digest=digest, media_type=media_type, layout=layout)
        self.pushed[f"{repository}:{tag}"] = pushed
        return pushed

    # ---- access log

    def access_mark(self) -> int:
        """A position in the access log; pass it as ``since=`` to see only later requests."""
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def access_entries(self, since: int = 0, *, min_count: int = 0, timeout: float = 2.0) -> list[AccessEntry]:
        """Requests the registry logged after ``since``, oldest first.

        The registry writes a line just after it answers, so a client can be a little ahead of
        the log: ``min_count`` waits (up to ``timeout``) until at least that many lines are there.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = self._read_access(since)
            if len(entries) >= min_count or time.monotonic() >= deadline:
                return entries
            time.sleep(0.02)

    def _read_access(self, since: int) -> list[AccessEntry]:
        with open(self.access_log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        entries = []
        for line in text.splitlines():
            m = _ACCESS_RE.match(line)
            if not m:
                continue
            path, _, query = m["target"].partition("?")
            entries.append(AccessEntry(method=m["method"], path=path, query=query, status=int(m["status"]),
                                       size=0 if m["size"] == "-" else int(m["size"]),
                                       user_agent=m["agent"], remote=m["remote"]))
        return entries


_DOCKER_LAYER_TYPES = {MT_OCI_LAYER_GZIP: MT_DOCKER_LAYER_GZIP, MT_OCI_LAYER: "application/vnd.docker.image.rootfs.diff.tar"}


def _docker_manifest(img: Image) -> bytes:
    layers = []
    for layer in img.layers:
        mt = _DOCKER_LAYER_TYPES.get(layer.descriptor.media_type)
        if mt is None:
            raise RegistryError(f"layer {layer.digest}: {layer.descriptor.media_type} has no Docker schema2 media type")
        layers.append({"mediaType": mt, "size": layer.descriptor.size, "digest": layer.digest})
    doc = {"schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
           "config": {"mediaType": MT_DOCKER_CONFIG, "size": img.config.size, "digest": str(img.config.digest)},
           "layers": layers}
    return json.dumps(doc, indent=3).encode()


def _skopeo_env(workdir: Path) -> dict[str, str]:
    # Keep skopeo away from the user's auth files and shared blob-info cache.
    home = workdir / "skopeo-home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["HOME"] = str(home)
    env["REGISTRY_AUTH_FILE"] = str(home / "auth.json")
    env.pop("XDG_RUNTIME_DIR", None)
    return env
