"""The registry resolver and fetcher: Docker Registry HTTP API v2 / OCI distribution over one pooled httpx client.

``DockerResolver.resolve(ref)`` HEADs (or GETs) the manifest with the full Accept list and checks
digests over the raw bytes; ``DockerFetcher.fetch(desc)`` streams a blob or manifest through
:class:`hoist.remotes.VerifyingReader`, resuming cut-off bodies with ``Range``.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs
import certifi
import httpx

from hoist import reference
from hoist.content import Descriptor, Digest
from hoist.errors import (
    ConfigError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from hoist.images import mediatypes as mt
from hoist.remotes import (
    MAX_MANIFEST_SIZE,
    Credentials,
    Pusher,
    ReadStream,
    Resolved,
    ResolverOptions,
    VerifyingReader,
)
from hoist_resolver_docker import transport as _transport
from hoist_resolver_docker.auth import Authorizer, DockerConfigCredentials
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.hosts import HostList, RegistryHost, host_of, load_hosts
from hoist_resolver_docker.http1 import RegistryTransport
from hoist_resolver_docker.transport import (
    Body,
    ResumingBody,
    RetryPolicy,
    close_quietly,
    describe_transport_error,
    error_for_status,
    final_error_codes,
    network_error,
    network_errors,
    parse_error_body,
    read_error_body,
    read_limited,
    retryable_error,
    retryable_status,
)

log = logging.getLogger("hoist.resolver.v1.docker")

#: Manifest media types accepted when resolving, most specific first.
MANIFEST_ACCEPT = (mt.OCI_INDEX, mt.DOCKER_SCHEMA2_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_SCHEMA2_MANIFEST)
_MANIFEST_LIKE = frozenset(MANIFEST_ACCEPT) | mt.SCHEMA1_TYPES
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_MANIFEST_CACHE_BYTES = 16 << 20
_POOL_WAIT = 600.0
_SCHEME = "docker://"
#: The ``Accept`` of a request that names none.
_ACCEPT_ANY = {"Accept": "*/*"}

#: Makes the Hoist error for a refused request from the response, the object's name and the body.
ErrorFunc = Callable[[httpx.Response, str, bytes], HoistError]


@functools.cache
def _version() -> str:
    """This distribution's version, for the ``User-Agent`` (read once per process)."""
    from hoist.entrypoints import version

    try:
        return version("hoist-resolver-docker")
    except (LookupError, OSError, UnicodeDecodeError):  # metadata may be missing in odd installs
        return "dev"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def is_manifest_type(media_type: str) -> bool:
    """Manifests and indexes (fetched from ``/manifests/``)."""
    return mt.base(media_type) in _MANIFEST_LIKE


def sniff_media_type(body: bytes) -> str:
    """The media type of a manifest served without a usable ``Content-Type``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_MANIFEST_SIGNED if "signatures" in doc else mt.DOCKER_SCHEMA1_MANIFEST
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc or "layers" in doc:
        return mt.OCI_MANIFEST
    return ""


class RegistryClient:
    """One connection pool (an httpx transport) with the session's timeouts; sends each request as given.

    The session follows redirects, answers auth challenges and retries by itself, so it needs none of
    what an ``httpx.Client`` adds to every request (merged defaults, cookies, redirects, event hooks):
    that machinery cost about as much CPU as the HTTP exchange itself.  Registries keep no cookies
    (containerd's client has no cookie jar either).
    """

    def __init__(self, transport: httpx.BaseTransport, timeout: httpx.Timeout) -> None:
        self.transport = transport
        self._timeout = timeout.as_dict()

    def send(self, method: str, url: str, headers: Mapping[str, str], content: Any = None) -> httpx.Response:
        """The streamed response to one request (read or close it)."""
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": self._timeout})
        response = self.transport.handle_request(request)
        response.request = request
        return response

    def close(self) -> None:
        self.transport.close()


class RegistrySession:
    """What every request of one resolver shares: pooled clients, hosts, auth, retry policy.

    One client serves all endpoints with default TLS; endpoints with their own CA, client
    certificate or ``skip_verify`` get one client per distinct TLS setup.  Thread-safe.

    :param transport: replaces the network for every endpoint (tests: ``httpx.MockTransport``).
    """

    def __init__(self, config: DockerResolverConfig, options: ResolverOptions,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.options = options
        self.policy = RetryPolicy(attempts=config.retries, backoff=config.retry_backoff,
                                  max_backoff=config.retry_max_backoff, max_retry_after=config.retry_after_max,
                                  resume_attempts=config.resume_attempts)
        connect = options.timeout or config.connect_timeout
        stall = options.timeout or config.stall_timeout
        self.stall_timeout = stall
        self._timeout = httpx.Timeout(connect=connect, read=stall, write=stall, pool=_POOL_WAIT)
        size = max(options.max_concurrency or 0, config.max_concurrent_downloads, config.max_concurrent_uploads) + 4
        self._limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0)
        self._transport = transport
        # Foreign URLs get only the first two: the options' headers are for registries.
        self._plain_headers = {
            "User-Agent": options.user_agent or config.user_agent or f"hoist/{_version()}",
            "Accept-Encoding": "identity",
        }
        self._headers = {**self._plain_headers, **dict(options.headers)}
        hosts_dir = options.hosts_dir if options.hosts_dir is not None else (
            Path(config.config_path) if config.config_path else None)
        self.hosts_dir = hosts_dir
        self._lock = threading.Lock()
        self._clients: dict[tuple, RegistryClient] = {}
        self._hosts: dict[str, HostList] = {}
        self._user_registries: set[str] = set()
        self._docker_creds = DockerConfigCredentials(Path(config.docker_config) if config.docker_config else None)
        self.authorizer = Authorizer(self.credentials_for, self._send_token)
        self._closed = False

    # -- endpoints and clients ---------------------------------------------------------------------

    def hosts(self, registry: str) -> HostList:
        """The endpoints of ``registry`` (read from ``hosts.toml`` once per resolver)."""
        with self._lock:
            found = self._hosts.get(registry)
        if found is not None:
            return found
        plain = bool(self.options.plain_http) or registry in self.config.plain_http_hosts
        hl = load_hosts(registry, self.hosts_dir, plain_http=plain, skip_verify=bool(self.options.skip_verify),
                        mirror_fallback=self.config.mirror_fallback)
        with self._lock:
            return self._hosts.setdefault(registry, hl)

    def use_credentials_for(self, registry: str) -> None:
        """Let the options' ``username``/``secret`` go to ``registry`` (the registry of a reference in use)."""
        with self._lock:
            self._user_registries.add(registry)

    def credentials_for(self, registry: str) -> Credentials | None:
        """Credentials for ``registry``: callback, ``--user`` (its own registries only), then Docker's config."""
        if self.options.credentials is not None:
            creds = self.options.credentials(registry)
            if creds is not None:
                return creds
        if (self.options.username or self.options.secret) and registry in self._user_registries:
            return Credentials(username=self.options.username, secret=self.options.secret)
        return self._docker_creds.get(registry)

    def client_for(self, host: RegistryHost | None) -> RegistryClient:
        """The pooled client for ``host``'s TLS setup (the default client for ``None``)."""
        key = host.tls_key() if host is not None and self._transport is None else ()
        with self._lock:
            if self._closed:
                raise UnavailableError("resolver is closed")
            client = self._clients.get(key)
            if client is None:
                if self._transport is not None:
                    client = RegistryClient(self._transport, self._timeout)
                else:
                    verify = self._ssl_context(host) if key and key != _DEFAULT_TLS else DefaultTrustContext()
                    client = RegistryClient(RegistryTransport(verify=verify, limits=self._limits), self._timeout)
                self._clients[key] = client
            return client

    def _default_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=certifi.where())
        ctx.load_default_certs()
        return ctx

    def _ssl_context(self, host: RegistryHost) -> ssl.SSLContext:
        if host.skip_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = self._default_ssl_context()
            for ca in host.ca:
                try:
                    ctx.load_verify_locations(cafile=str(ca))
                except (OSError, ssl.SSLError) as e:
                    raise ConfigError(f"{host.host}: CA file {ca}: {e}") from e
        for cert, key in host.client_certs:
            try:
                ctx.load_cert_chain(str(cert), str(key) if key else None)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"{host.host}: client certificate {cert}: {e}") from e
        return ctx

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                c.close()
            except network_errors() as e:
                log.debug("closing a registry connection pool: %s", e)

    # -- requests ----------------------------------------------------------------------------------

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers every request carries: ``User-Agent``, ``Accept-Encoding`` and the options' ``headers``."""
        return dict(self._headers)

    def _exchange(self, client: RegistryClient, method: str, url: str, headers: Mapping[str, str], auth: str | None,
                  auth_origin: tuple | None, body: Body | None, length: int | None, what: str,
                  plain: bool = False) -> httpx.Response:
        """Send once, following redirects; ``Authorization`` only while the URL stays on ``auth_origin``.

        A body is sent again on a 307/308 (a factory makes a fresh one); a 303 turns the request into a
        ``GET`` without it.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            h = {**_ACCEPT_ANY, **(self._plain_headers if plain else self._headers), **headers}
            if auth and auth_origin is not None and _origin(url) == auth_origin:
                h["Authorization"] = auth
            content = body() if callable(body) else body
            if length is not None:
                h["Content-Length"] = str(length)
            elif content is None and method in ("POST", "PUT", "PATCH"):
                h["Content-Length"] = "0"
            response = client.send(method, url, h, content)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            close_quietly(response)
            try:
                target = urljoin(str(response.url), location)
                usable = urlsplit(target).scheme in ("http", "https")
                same_origin = _origin(target) == _origin(url)
                httpx.URL(target)  # one that httpx cannot request is refused here, with the others
            except (ValueError, httpx.InvalidURL) as e:
                raise FailedPreconditionError(f"{what}: {url}: redirect to unusable URL {location!r}: {e}") from e
            if not usable:
                raise FailedPreconditionError(f"{what}: {url}: redirect to unsupported URL {target!r}")
            if not same_origin:
                auth = None
            if response.status_code == 303 and method != "HEAD":
                method, body, length = "GET", None, None
            url = target
        raise UnavailableError(f"{what}: {url}: more than {_MAX_REDIRECTS} redirects")

    def _send(self, client: RegistryClient, method: str, url: str, *, what: str, where: str,
              headers: Mapping[str, str], ok: tuple[int, ...] | None, body: Body | None = None,
              length: int | None = None, attempts: int | None = None, retry: bool = True,
              error: ErrorFunc = error_for_status, auth_origin: tuple | None = None,
              authorize: Callable[[], str | None] | None = None,
              rechallenge: Callable[[httpx.Response, str | None], bool] | None = None,
              plain: bool = False) -> httpx.Response:
        """The one request loop: send, follow redirects, answer auth challenges, retry, translate errors.

        :param ok: statuses returned to the caller (``None``: any status that is not retried).
        :param attempts: tries on retryable statuses (default: the policy's).
        :param retry: ``False`` raises a connection error or a retryable status at once.
        :param error: makes the Hoist error for a refused request from the response and its body.
        :param authorize: the ``Authorization`` value to send (called before every try).
        :param rechallenge: after a 401, whether fresh credentials are worth one more try.
        :param plain: send none of the options' headers (a URL outside the registry).
        """
        tries = self.policy.attempts if retry else 1
        status_tries = (attempts or self.policy.attempts) if retry else 1
        attempt = 0
        auth_retries = 0
        while True:
            attempt += 1
            auth = authorize() if authorize is not None else None
            try:
                response = self._exchange(client, method, url, headers, auth, auth_origin, body, length, what, plain)
            except network_errors() as e:
                if retryable_error(e) and attempt < tries:
                    delay = self.policy.delay(attempt)
                    log.info("%s: %s; retrying in %.1fs", what, describe_transport_error(e, url), delay)
                    _transport.sleep(delay)
                    continue
                raise network_error(e, what, where) from e
            code = response.status_code
            if ok is not None and code in ok:
                return response
            if ok is None and not (retryable_status(code) and attempt < status_tries):
                return response
            text = read_error_body(response, what)
            if code == 401 and rechallenge is not None and auth_retries < 2 and rechallenge(response, auth):
                auth_retries += 1
                attempt -= 1
                continue
            if code != 401 and retryable_status(code) and attempt < status_tries \
                    and not final_error_codes(parse_error_body(text)):
                delay = self.policy.delay(attempt, response)
                log.info("%s: HTTP %d; retrying in %.1fs", what, code, delay)
                _transport.sleep(delay)
                continue
            raise error(response, what, text)

    def _send_token(self, request: httpx.Request, what: str, via: RegistryHost | None = None) -> httpx.Response:
        # The endpoint's client: a token server on the registry's host shares its CA (as containerd does).
        auth = request.headers.get("authorization")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "host",
                                                                                   "content-length")}
        body = request.content if request.method == "POST" else None
        return self._send(self.client_for(via), request.method, str(request.url), what=what, where="",
                          headers=headers, ok=None, body=body, auth_origin=_origin(str(request.url)),
                          authorize=lambda: auth)

    def open(self, host: RegistryHost, method: str, url: str, *, registry: str, scopes: tuple[str, ...],
             what: str, headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,),
             attempts: int | None = None, body: Body | None = None, length: int | None = None,
             retry: bool = True, error: ErrorFunc = error_for_status) -> httpx.Response:
        """Send a request to a registry endpoint with auth, redirects and retries; the streamed response.

        :param registry: the registry whose credentials apply (mirrors use their own host).
        :param what: names the object in errors.
        :param attempts: tries on retryable statuses (default: the policy's).
        :param body: the request body: bytes, or a factory of a fresh iterable of chunks (called again for
            each try, so a retry sends it whole); with ``length``, its ``Content-Length``.
        :param retry: ``False`` raises a connection error or a retryable status at once (the caller
            recovers itself, e.g. by asking an upload session where it stands).
        :param error: makes the error for a refused request (default: :func:`error_for_status`).
        :raises NotFoundError, UnauthorizedError, UnavailableError, ...: per ``error``; network failures
            as :func:`~hoist_resolver_docker.transport.network_error`.
        """
        creds_name = host.host if host.mirror else registry
        origin_key = f"{host.scheme}://{host.host}"
        registry_hostname = host_of(host.host)
        extra: list[str] = []

        def authorize() -> str | None:
            return self.authorizer.header(origin_key, creds_name, registry_hostname, scopes, tuple(extra), via=host)

        def rechallenge(response: httpx.Response, sent: str | None) -> bool:
            asked = self.authorizer.challenged(origin_key, response, sent)
            if asked is None:
                return False
            extra[:] = [s for s in asked if s not in scopes]
            fresh = authorize()
            return bool(fresh) and fresh != sent

        return self._send(self.client_for(host), method, url, what=what, where=host.base_url,
                          headers={**dict(host.headers), **(headers or {})}, ok=ok, body=body, length=length,
                          attempts=attempts, retry=retry, error=error, auth_origin=_origin(host.base_url),
                          authorize=authorize, rechallenge=rechallenge)

    def open_plain(self, url: str, *, what: str, headers: Mapping[str, str] | None = None,
                   ok: tuple[int, ...] = (200, 206)) -> httpx.Response:
        """GET a URL outside the registry (foreign layers), with retries and redirects.

        No credentials and none of the options' headers go there.
        """
        return self._send(self.client_for(None), "GET", url, what=what, where="", headers=dict(headers or {}), ok=ok,
                          plain=True)


class DefaultTrustContext(ssl.SSLContext):
    """A client TLS context trusting certifi's and the system's CAs, loaded on its first TLS connection.

    Loading the CA bundles takes about 0.1 s, which a command talking only to plain-HTTP registries
    never needs to pay; verification settings are the secure defaults of ``PROTOCOL_TLS_CLIENT``.
    """

    def __new__(cls) -> DefaultTrustContext:
        ctx = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        ctx._trust_lock = threading.Lock()
        ctx._trusted = False
        return ctx

    def _load_trust(self) -> None:
        with self._trust_lock:
            if not self._trusted:
                self.load_verify_locations(cafile=certifi.where())
                self.load_default_certs()
                self._trusted = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)


#: The TLS key of an endpoint with neither its own CA, client certificate nor ``skip_verify``.
_DEFAULT_TLS = (False, (), ())


def _parse_ref(ref: str, *, need_object: bool) -> reference.Reference:
    text = ref[len(_SCHEME):] if ref.startswith(_SCHEME) else ref
    parsed = reference.parse(text)
    if not parsed.domain:
        raise InvalidArgumentError(
            f"invalid reference {ref!r}: no registry host; normalize it first "
            f"(e.g. {reference.normalize(parsed)})"
        )
    if need_object and not parsed.tag and parsed.digest is None:
        raise InvalidArgumentError(f"invalid reference {ref!r}: no tag or digest (e.g. {parsed.locator}:latest)")
    return parsed


class DockerResolver:
    """A resolver for Docker Registry v2 / OCI distribution registries; safe to share between threads.

    :param config: the plugin configuration.
    :param options: per-use options (``--plain-http``, ``--user``, ...).
    :param transport: replaces the network (tests).
    :param upload_state_dir: where its pushers remember chunked upload sessions, so that a later run
        resumes them (``None``: not remembered).
    """

    def __init__(self, config: DockerResolverConfig | None = None, options: ResolverOptions | None = None, *,
                 transport: httpx.BaseTransport | None = None, upload_state_dir: Path | None = None) -> None:
        self.config = config or DockerResolverConfig()
        self.options = options or ResolverOptions()
        self.upload_state_dir = upload_state_dir
        self.session = RegistrySession(self.config, self.options, transport)
        self.follow_foreign_urls = (self.options.allow_foreign_urls if self.options.allow_foreign_urls is not None
                                    else self.config.follow_foreign_urls)
        self._cache_lock = threading.Lock()
        self._manifests: collections.OrderedDict[Digest, bytes] = collections.OrderedDict()
        self._cache_bytes = 0

    @property
    def max_concurrent_downloads(self) -> int:
        return self.config.max_concurrent_downloads

    @property
    def max_concurrent_uploads(self) -> int:
        return self.config.max_concurrent_uploads

    # -- manifest cache (bodies fetched while resolving are not fetched twice) ---------------------------

    def _remember(self, digest: Digest, body: bytes) -> None:
        with self._cache_lock:
            if digest in self._manifests:
                return
            self._manifests[digest] = body
            self._cache_bytes += len(body)
            while self._cache_bytes > _MANIFEST_CACHE_BYTES and self._manifests:
                _, old = self._manifests.popitem(last=False)
                self._cache_bytes -= len(old)

    def _recall(self, digest: Digest) -> bytes | None:
        with self._cache_lock:
            return self._manifests.get(digest)

    # -- Resolver ----------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> Resolved:
        """Resolve a tag or digest reference to its descriptor.

        By tag: endpoints with the ``resolve`` capability; by digest: ``pull``, trying ``/manifests/``
        then ``/blobs/``.

        :raises InvalidArgumentError: malformed reference, before any request.
        :raises NotFoundError: no endpoint knows it.
        :raises FailedPreconditionError: the registry's answer is inconsistent (digest, size, limits).
        """
        parsed = _parse_ref(ref, need_object=True)
        self.session.use_credentials_for(parsed.domain)
        name = str(parsed)
        capability = "pull" if parsed.digest is not None else "resolve"
        hosts = self.session.hosts(parsed.domain).for_capability(capability)
        if not hosts:
            raise NotFoundError(f"{name}: no endpoint of {parsed.domain} has the {capability!r} capability")
        errors: list[HoistError] = []
        if parsed.digest is None:
            plan = [("manifests", host, None) for host in hosts]
        else:
            # distribution answers HEAD /manifests/<blob digest> with 500: probe manifests without
            # retrying server errors, then blobs, then manifests again with retries.
            plan = [("manifests", host, 1) for host in hosts] + [("blobs", host, None) for host in hosts]
        ambiguous: list[RegistryHost] = []
        for kind, host, attempts in plan:
            try:
                desc = self._resolve_at(host, parsed, kind, attempts)
            except (NotFoundError, UnavailableError) as e:
                log.debug("%s: %s", host.base_url, e)
                errors.append(e)
                if isinstance(e, UnavailableError) and attempts == 1:
                    ambiguous.append(host)
                continue
            if kind == "blobs" and ambiguous and desc.size <= MAX_MANIFEST_SIZE:
                desc = self._sniff_blob(host, parsed, desc)
            return Resolved(name=name, descriptor=desc, fetcher=DockerFetcher(self, parsed))
        for host in ambiguous:
            try:
                desc = self._resolve_at(host, parsed, "manifests", None)
            except (NotFoundError, UnavailableError) as e:
                errors.append(e)
                continue
            return Resolved(name=name, descriptor=desc, fetcher=DockerFetcher(self, parsed))
        not_found = [e for e in errors if isinstance(e, NotFoundError)]
        if len(not_found) == len(errors):
            raise NotFoundError(f"{name}: not found") from errors[-1]
        raise next(e for e in reversed(errors) if not isinstance(e, NotFoundError))

    def _sniff_blob(self, host: RegistryHost, parsed: reference.Reference, desc: Descriptor) -> Descriptor:
        """A small blob found after an ambiguous manifest probe: a manifest when its JSON says so."""
        with DockerFetcher(self, parsed).fetch(desc) as stream:
            body = stream.read()
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return desc
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return desc
        found = doc.get("mediaType")
        if found is None and isinstance(doc.get("manifests"), list):
            found = mt.OCI_INDEX
        elif found is None and isinstance(doc.get("layers"), list) and isinstance(doc.get("config"), dict):
            found = mt.OCI_MANIFEST
        if found not in MANIFEST_ACCEPT:
            return desc
        self._remember(desc.digest, body)
        return attrs.evolve(desc, media_type=found)

    def _resolve_at(self, host: RegistryHost, parsed: reference.Reference, kind: str,
                    attempts: int | None = None) -> Descriptor:
        name = str(parsed)
        target = str(parsed.digest) if parsed.digest is not None else parsed.tag
        url = f"{host.base_url}/{parsed.path}/{kind}/{target}"
        scopes = (f"repository:{parsed.path}:pull",)
        accept = ", ".join(MANIFEST_ACCEPT) if kind == "manifests" else "*/*"
        try:
            response = self.session.open(host, "HEAD", url, registry=parsed.domain, scopes=scopes, what=name,
                                         headers={"Accept": accept}, attempts=attempts)
        except UnsupportedError:
            response = None
        if response is not None:
            close_quietly(response)
            desc = self._from_head(response, parsed, kind)
            if desc is not None:
                return desc
        if kind == "blobs":
            raise NotFoundError(f"{name}: registry gave no size for the blob")
        response = self.session.open(host, "GET", url, registry=parsed.domain, scopes=scopes, what=name,
                                     headers={"Accept": accept})
        body = read_limited(response, MAX_MANIFEST_SIZE, f"manifest {name}")
        return self._from_body(response, body, parsed)

    def _from_head(self, response: httpx.Response, parsed: reference.Reference, kind: str) -> Descriptor | None:
        name = str(parsed)
        header = response.headers.get("docker-content-digest")
        length = response.headers.get("content-length", "")
        ctype = mt.base(response.headers.get("content-type", ""))
        if kind == "blobs":
            if not length.isdigit():
                return None
            if header and _header_digest(header, name) != parsed.digest:
                raise FailedPreconditionError(f"{name}: registry answered for digest {header}")
            assert parsed.digest is not None
            return Descriptor(media_type=ctype or "application/octet-stream", digest=parsed.digest,
                              size=int(length))
        if not header or not length.isdigit() or ctype not in _MANIFEST_LIKE:
            return None
        digest = _header_digest(header, name)
        if parsed.digest is not None and digest != parsed.digest:
            raise FailedPreconditionError(f"{name}: registry answered with manifest {digest}")
        size = int(length)
        if size > MAX_MANIFEST_SIZE:
            raise FailedPreconditionError(f"manifest {name}: {size} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit")
        return Descriptor(media_type=ctype, digest=digest, size=size)

    def _from_body(self, response: httpx.Response, body: bytes, parsed: reference.Reference) -> Descriptor:
        name = str(parsed)
        header = response.headers.get("docker-content-digest")
        algorithm = parsed.digest.algorithm if parsed.digest is not None else "sha256"
        if header:
            claimed = _header_digest(header, name)
            actual_claimed = Digest.from_bytes(body, claimed.algorithm)
            if actual_claimed != claimed:
                raise FailedPreconditionError(
                    f"manifest {name}: content digest {actual_claimed} differs from Docker-Content-Digest {claimed}")
            if parsed.digest is None:
                algorithm = claimed.algorithm
        digest = Digest.from_bytes(body, algorithm)
        if parsed.digest is not None and digest != parsed.digest:
            raise FailedPreconditionError(f"manifest {name}: content digest is {digest}")
        ctype = mt.base(response.headers.get("content-type", ""))
        media_type = ctype if ctype in _MANIFEST_LIKE else sniff_media_type(body)
        if not media_type:
            raise FailedPreconditionError(f"manifest {name}: cannot tell its media type (Content-Type {ctype!r})")
        self._remember(digest, body)
        return Descriptor(media_type=media_type, digest=digest, size=len(body))

    def fetcher(self, ref: str) -> DockerFetcher:
        """A fetcher for the repository of ``ref``."""
        parsed = _parse_ref(ref, need_object=False)
        self.session.use_credentials_for(parsed.domain)
        return DockerFetcher(self, parsed)

    def pusher(self, ref: str) -> Pusher:
        """A pusher for the repository of ``ref``, sharing this resolver's connections and tokens.

        :raises UnsupportedError: no endpoint of the registry has the ``push`` capability.
        """
        from hoist_resolver_docker.pusher import DockerPusher

        return DockerPusher(self, _parse_ref(ref, need_object=False))

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> DockerResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _header_digest(value: str, name: str) -> Digest:
    try:
        return Digest.parse(value.strip())
    except InvalidArgumentError as e:
        raise FailedPreconditionError(f"{name}: registry sent an invalid Docker-Content-Digest {value!r}") from e


class DockerFetcher:
    """Fetches the objects of one repository; each stream yields exactly the descriptor's bytes (verified)."""

    def __init__(self, resolver: DockerResolver, ref: reference.Reference) -> None:
        self._resolver = resolver
        self._ref = ref
        self._scopes = (f"repository:{ref.path}:pull",)

    @property
    def locator(self) -> str:
        return self._ref.locator

    def fetch(self, desc: Descriptor) -> ReadStream:
        """Open ``desc``: a verifying stream of exactly ``desc.size`` bytes.

        :raises FailedPreconditionError: a manifest or config larger than 4 MiB, or a media type the registry contradicts.
        :raises NotFoundError: no endpoint has it.
        :raises UnavailableError: the registry cannot be reached after retries.
        """
        name = f"{self._ref.locator}@{desc.digest}"
        manifest = is_manifest_type(desc.media_type)
        if (manifest or mt.is_config(desc.media_type)) and desc.size > MAX_MANIFEST_SIZE:
            raise FailedPreconditionError(
                f"{name}: {desc.size} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit for manifests and configs")
        if manifest:
            cached = self._resolver._recall(desc.digest)
            if cached is not None and len(cached) == desc.size:
                return VerifyingReader(io.BytesIO(cached), desc, name=name)
        errors: list[HoistError] = []
        if desc.urls and self._resolver.follow_foreign_urls:
            for u in desc.urls:
                if urlsplit(u).scheme not in ("http", "https"):
                    continue
                try:
                    return self._open_foreign(u, desc, name)
                except HoistError as e:
                    log.info("%s: foreign URL %s failed: %s", name, u, e)
        session = self._resolver.session
        hosts = session.hosts(self._ref.domain).for_capability("pull")
        kind = "manifests" if manifest else "blobs"
        for host in hosts:
            url = f"{host.base_url}/{self._ref.path}/{kind}/{desc.digest}"
            accept = ", ".join(dict.fromkeys((desc.media_type, *MANIFEST_ACCEPT))) if manifest \
                else f"{desc.media_type}, */*" if desc.media_type else "*/*"
            headers = {"Accept": accept}
            try:
                response = session.open(host, "GET", url, registry=self._ref.domain, scopes=self._scopes,
                                        what=name, headers=headers)
            except (NotFoundError, UnavailableError) as e:
                errors.append(e)
                continue
            if manifest:
                self._check_media_type(response, desc, name)
            return self._stream(response, desc, name, host, url, headers)
        hint = "; it has foreign URLs (enable follow_foreign_urls to fetch them)" if desc.urls and \
            not self._resolver.follow_foreign_urls else ""
        if errors and all(isinstance(e, NotFoundError) for e in errors):
            raise NotFoundError(f"{name}: not found{hint}") from errors[-1]
        if errors:
            raise errors[-1]
        raise NotFoundError(f"{name}: no endpoint of {self._ref.domain} has the 'pull' capability{hint}")

    def _check_media_type(self, response: httpx.Response, desc: Descriptor, name: str) -> None:
        served = mt.base(response.headers.get("content-type", ""))
        wanted = mt.base(desc.media_type)
        if served in _MANIFEST_LIKE and wanted in _MANIFEST_LIKE and served != wanted:
            close_quietly(response)
            raise FailedPreconditionError(f"{name}: registry serves it as {served}, the descriptor says {wanted}")

    def _stream(self, response: httpx.Response, desc: Descriptor, name: str, host: RegistryHost, url: str,
                headers: Mapping[str, str]) -> ReadStream:
        session = self._resolver.session

        def open_at(offset: int) -> httpx.Response:
            return session.open(host, "GET", url, registry=self._ref.domain, scopes=self._scopes, what=name,
                                headers={**headers, "Range": f"bytes={offset}-"}, ok=(200, 206, 416))

        body = ResumingBody(open_at, response, size=desc.size, name=name, policy=session.policy,
                            where=host.base_url)
        try:
            return VerifyingReader(body, desc, name=name)
        except BaseException:
            body.close()
            raise

    def _open_foreign(self, url: str, desc: Descriptor, name: str) -> ReadStream:
        session = self._resolver.session
        response = session.open_plain(url, what=f"{name} from {url}")

        def open_at(offset: int) -> httpx.Response:
            return session.open_plain(url, what=f"{name} from {url}", headers={"Range": f"bytes={offset}-"},
                                      ok=(200, 206, 416))

        body = ResumingBody(open_at, response, size=desc.size, name=name, policy=session.policy)
        try:
            return VerifyingReader(body, desc, name=name)
        except BaseException:
            body.close()
            raise

