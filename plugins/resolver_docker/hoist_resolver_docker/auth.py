"""Registry authentication: ``WWW-Authenticate`` challenges, Bearer tokens cached per scope, Basic, credentials.

Credentials come from the resolver options (``--user``), a credentials callback, then the Docker
config file (``auths``, ``credHelpers``, ``credsStore`` through ``docker-credential-<name>``).
They are never sent over plain HTTP to a host other than the registry's.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from hoist.errors import ConfigError, UnavailableError
from hoist.remotes import Credentials, CredentialsFunc, UnauthorizedError
from hoist_resolver_docker.transport import MAX_SMALL_BODY, error_for_status, read_limited

log = logging.getLogger("hoist.resolver.v1.docker")

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_MIN_TOKEN_LIFETIME = 60.0
_TOKEN_MARGIN = 5.0
_HELPER_TIMEOUT = 30.0
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(,?)')
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@attrs.frozen(kw_only=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme (lower-case) and parameters."""

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s in self.params.get("scope", "").split(" ") if s)


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` header values (RFC 7235; several per value allowed)."""
    out: list[Challenge] = []
    for value in values:
        pos = 0
        text = value.strip()
        while pos < len(text):
            m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)").match(text, pos)
            if not m:
                break
            scheme = m.group(1).lower()
            pos = m.end()
            params: dict[str, str] = {}
            while pos < len(text):
                pm = _CHALLENGE_PARAM.match(text, pos)
                if not pm:
                    t68 = _TOKEN68.match(text, pos + (len(text[pos:]) - len(text[pos:].lstrip())))
                    if t68 and not params:
                        pos = t68.end()
                    break
                value_text = pm.group(2) if pm.group(2) is not None else pm.group(3)
                params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value_text)
                pos = pm.end()
                if not pm.group(4):
                    break
            out.append(Challenge(scheme=scheme, params=params))
    return out


def auth_key(registry: str) -> str:
    """The key of ``registry`` in Docker's config (``https://index.docker.io/v1/`` for Docker Hub)."""
    return DOCKER_HUB_AUTH_KEY if registry in _DOCKER_HUB_NAMES else registry


def _strip_key(key: str) -> str:
    if "://" in key:
        key = urlsplit(key).netloc or key
    return key.split("/", 1)[0].lower()


def default_docker_config() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


class DockerConfigCredentials:
    """Credentials from a Docker ``config.json``: ``auths``, ``credHelpers`` and ``credsStore``.

    :param path: the file (missing is fine: no credentials).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_docker_config()
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] | None = None
        self._cache: dict[str, Credentials | None] = {}

    def _doc(self) -> dict[str, Any]:
        if self._loaded is None:
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                self._loaded = {}
                return self._loaded
            except OSError as e:
                raise ConfigError(f"{self.path}: cannot read: {e}") from e
            try:
                doc = json.loads(text) if text.strip() else {}
            except ValueError as e:
                raise ConfigError(f"{self.path}: not valid JSON: {e}") from e
            if not isinstance(doc, dict):
                raise ConfigError(f"{self.path}: expected a JSON object")
            self._loaded = doc
        return self._loaded

    def get(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (``host[:port]``), or ``None``."""
        with self._lock:
            if registry in self._cache:
                return self._cache[registry]
            creds = self._lookup(registry)
            self._cache[registry] = creds
            return creds

    def _lookup(self, registry: str) -> Credentials | None:
        doc = self._doc()
        key = auth_key(registry)
        helpers = doc.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for k, helper in helpers.items():
                if _strip_key(k) == _strip_key(key) and isinstance(helper, str) and helper:
                    return run_credential_helper(helper, key)
        auths = doc.get("auths") or {}
        entry = None
        if isinstance(auths, dict):
            for k, v in auths.items():
                if _strip_key(k) == _strip_key(key) and isinstance(v, dict):
                    entry = v
                    break
        store = doc.get("credsStore")
        if isinstance(store, str) and store:
            creds = run_credential_helper(store, key)
            if creds is not None:
                return creds
        if entry is None:
            return None
        return _entry_credentials(self.path, key, entry)


def _entry_credentials(path: Path, key: str, entry: Mapping[str, Any]) -> Credentials | None:
    username, secret = str(entry.get("username") or ""), str(entry.get("password") or "")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: auths.{key}.auth: not base64 of user:password") from e
        username, sep, secret = decoded.partition(":")
        if not sep:
            raise ConfigError(f"{path}: auths.{key}.auth: expected base64 of user:password")
    token = str(entry.get("identitytoken") or "")
    if not (username or secret or token):
        return None
    return Credentials(username=username, secret=secret, refresh_token=token)


def run_credential_helper(name: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``server``; ``None`` when it has nothing for it.

    :raises UnavailableError: the helper is missing or fails otherwise.
    """
    import subprocess  # only here: most runs never start a helper, and the module costs a millisecond to load

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except FileNotFoundError as e:
        raise UnavailableError(f"credential helper {program}: not found on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise UnavailableError(f"credential helper {program}: no answer within {_HELPER_TIMEOUT:.0f}s") from e
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        text = (out or proc.stderr.decode("utf-8", "replace")).strip()
        if "not found" in text.lower():
            return None
        raise UnavailableError(f"credential helper {program}: {text.splitlines()[0] if text else 'failed'}")
    try:
        doc = json.loads(out)
    except ValueError as e:
        raise UnavailableError(f"credential helper {program}: output is not JSON") from e
    username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    if username == "<token>":
        return Credentials(refresh_token=secret)
    if not (username or secret):
        return None
    return Credentials(username=username, secret=secret)


def may_send_credentials(url: str, registry_hostname: str) -> bool:
    """Credentials go over HTTPS, or over plain HTTP only to the registry's own host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return (parts.hostname or "").lower() == registry_hostname.lower()


@attrs.frozen
class _Token:
    value: str
    expires: float


class Authorizer:
    """Per-resolver authentication state: the challenges seen per endpoint and a token cache per scope.

    Thread-safe; concurrent requests needing the same token wait for one token request.

    :param credentials: ``registry -> Credentials | None``.
    :param send: ``send(request) -> streamed response`` for token requests (no redirects to other hosts with credentials).
    """

    def __init__(self, credentials: CredentialsFunc, send: Callable[[httpx.Request, str, Any], httpx.Response],
                 *, client_id: str = "hoist") -> None:
        self._credentials = credentials
        self._send = send
        self._client_id = client_id
        self._lock = threading.Lock()
        self._challenges: dict[str, list[Challenge]] = {}
        self._tokens: dict[tuple, _Token] = {}
        self._key_locks: dict[tuple, threading.Lock] = {}

    def known(self, origin: str) -> bool:
        with self._lock:
            return origin in self._challenges

    def header(self, origin: str, registry: str, registry_hostname: str, scopes: tuple[str, ...],
               extra_scopes: tuple[str, ...] = (), *, via: Any = None) -> str | None:
        """The ``Authorization`` value for a request to ``origin`` (``scheme://host:port``), or ``None``.

        Fetches a Bearer token when the endpoint asked for one before and none is cached for the scopes.

        :param via: the endpoint whose TLS setup token requests use (passed to ``send``).
        """
        with self._lock:
            challenges = self._challenges.get(origin)
        if not challenges:
            return None
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is not None:
            all_scopes = tuple(sorted(set(scopes) | set(extra_scopes)))
            return "Bearer " + self._token(bearer, registry, registry_hostname, all_scopes, via)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if basic is not None:
            creds = self._credentials(registry)
            if creds is None or not (creds.username or creds.secret):
                raise UnauthorizedError(f"{registry}: the registry requires a user and password (use --user)")
            raw = f"{creds.username}:{creds.secret}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise UnauthorizedError(f"{registry}: unsupported authentication scheme ({schemes})")

    def challenged(self, origin: str, response: httpx.Response, sent: str | None) -> tuple[str, ...] | None:
        """Record a 401's challenges and forget the token that was refused.

        :return: the scopes the challenges ask for, or ``None`` when the response carries no challenge.
        """
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        if not challenges:
            return None
        with self._lock:
            self._challenges[origin] = challenges
            if sent and sent.startswith("Bearer "):
                for k in [k for k, t in self._tokens.items() if t.value == sent[7:]]:
                    del self._tokens[k]
        scopes: tuple[str, ...] = ()
        for c in challenges:
            scopes += c.scopes
        return scopes

    def _token(self, ch: Challenge, registry: str, registry_hostname: str, scopes: tuple[str, ...],
               via: Any = None) -> str:
        key = (ch.realm, ch.service, scopes, registry)
        with self._lock:
            tok = self._tokens.get(key)
            if tok is not None and tok.expires > time.monotonic():
                return tok.value
            klock = self._key_locks.setdefault(key, threading.Lock())
        with klock:
            with self._lock:
                tok = self._tokens.get(key)
                if tok is not None and tok.expires > time.monotonic():
                    return tok.value
            tok = self._fetch_token(ch, registry, registry_hostname, scopes, via)
            with self._lock:
                self._tokens[key] = tok
            return tok.value

    def _fetch_token(self, ch: Challenge, registry: str, registry_hostname: str, scopes: tuple[str, ...],
                     via: Any = None) -> _Token:
        realm = ch.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UnauthorizedError(f"{registry}: token realm {realm!r} is not an http(s) URL")
        creds = self._credentials(registry)
        withheld = ""
        if creds is not None and not may_send_credentials(realm, registry_hostname):
            withheld = (f"; credentials for {registry} were not sent to {parts.scheme}://{parts.netloc} "
                        "because it is plain HTTP on another host")
            log.warning("%s: not sending credentials over plain HTTP to token server %s", registry, parts.netloc)
            creds = None
        try:
            request = self._token_request(ch, realm, creds, scopes)
        except httpx.InvalidURL as e:
            raise UnauthorizedError(f"{registry}: token realm {realm!r} is not a usable URL: {e}") from e
        what = f"{registry}: token from {parts.scheme}://{parts.netloc}{parts.path}"
        response = self._send(request, what, via)
        body = read_limited(response, MAX_SMALL_BODY, what)
        if response.status_code != 200:
            err = error_for_status(response, what, body)
            if isinstance(err, UnauthorizedError) or response.status_code in (401, 403):
                raise UnauthorizedError(f"{what}: credentials rejected (HTTP {response.status_code}){withheld}")
            raise err
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise UnauthorizedError(f"{what}: token response is not JSON") from e
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise UnauthorizedError(f"{what}: token response has no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime < _MIN_TOKEN_LIFETIME:
            lifetime = _MIN_TOKEN_LIFETIME
        return _Token(value=value, expires=time.monotonic() + float(lifetime) - _TOKEN_MARGIN)

    def _token_request(self, ch: Challenge, realm: str, creds: Credentials | None,
                       scopes: tuple[str, ...]) -> httpx.Request:
        if creds is not None and creds.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token,
                    "client_id": self._client_id, "access_type": "online"}
            if ch.service:
                form["service"] = ch.service
            if scopes:
                form["scope"] = " ".join(scopes)
            return httpx.Request("POST", realm, data=form)
        params: list[tuple[str, str]] = []
        if ch.service:
            params.append(("service", ch.service))
        params += [("scope", s) for s in scopes]
        headers = {}
        if creds is not None and (creds.username or creds.secret):
            raw = f"{creds.username}:{creds.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            params.append(("account", creds.username))
        return httpx.Request("GET", realm, params=params, headers=headers)

