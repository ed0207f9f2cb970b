"""A Bearer token server on 127.0.0.1 for the token-auth registry (Docker token spec + OAuth2 form).

``GET /token?service=..&scope=..&account=..`` (Basic credentials optional) and
``POST /token`` (``grant_type=password`` or ``refresh_token``) answer with a JWT signed by a key
whose CA the registry trusts (``auth.token.rootcertbundle``). Every request is recorded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from support.pki import IssuedCert

ALL_ACTIONS = ("pull", "push", "delete", "*")


@attrs.frozen(kw_only=True)
class Scope:
    """A parsed scope ``type:name:actions`` (``repository:test/busybox:pull,push``)."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        type_, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        return cls(type=type_, name=name, actions=tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@attrs.frozen(kw_only=True)
class TokenRequest:
    """One request the token server answered."""

    method: str
    path: str
    grant_type: str  # "" for GET
    account: str  # the authenticated user, "" when anonymous
    scopes: tuple[str, ...]
    service: str
    client_id: str
    offline: bool
    authorization: str
    status: int
    granted: tuple[Scope, ...] = ()


# (account or None, requested scope) -> actions granted
Policy = Callable[[str | None, Scope], Sequence[str]]


def default_policy(account: str | None, scope: Scope, *, anonymous_pull: bool = False) -> tuple[str, ...]:
    """Authenticated users get what they ask for; anonymous users get ``pull`` if allowed."""
    if account is not None:
        return tuple(a for a in scope.actions if a in ALL_ACTIONS)
    if anonymous_pull and scope.type == "repository":
        return tuple(a for a in scope.actions if a == "pull")
    return ()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens for ``users`` (name -> password); start with :meth:`start`.

    Knobs (change them with :meth:`configured`, which restores them): ``anonymous_pull``,
    ``expires_in``, ``support_post`` (False answers POST with 404, as registries without OAuth2 do),
    ``policy`` (overrides who gets which actions).
    """

    def __init__(self, *, signer: IssuedCert, users: dict[str, str], service: str, issuer: str) -> None:
        self.signer = signer
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.anonymous_pull = False
        self.expires_in = 300
        self.support_post = True
        self.policy: Policy | None = None
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._refresh: dict[str, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._x5c = [base64.b64encode(signer.cert_der).decode()]

    # ---- lifecycle

    def start(self) -> TokenServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hoist-test-token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "token server not started"
        return self._server.server_address[1]

    @property
    def realm(self) -> str:
        """The URL the registry sends clients to (``http://127.0.0.1:PORT/token``)."""
        return f"http://127.0.0.1:{self.port}/token"

    # ---- records and knobs

    @property
    def requests(self) -> list[TokenRequest]:
        """A copy of the requests answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    @contextlib.contextmanager
    def configured(self, **knobs: object) -> Iterator[TokenServer]:
        """Set knobs (``anonymous_pull``, ``expires_in``, ``support_post``, ``policy``) for a block."""
        old = {k: getattr(self, k) for k in knobs}
        for k, v in knobs.items():
            if k not in ("anonymous_pull", "expires_in", "support_post", "policy"):
                raise AttributeError(f"token server has no knob {k!r}")
            setattr(self, k, v)
        try:
            yield self
        finally:
            for k, v in old.items():
                setattr(self, k, v)

    # ---- tokens

    def issue(self, account: str | None, scopes: Sequence[str]) -> tuple[str, tuple[Scope, ...]]:
        """Sign a JWT granting ``account`` what the policy allows of ``scopes``."""
        granted: list[Scope] = []
        for text in scopes:
            scope = Scope.parse(text)
            if self.policy is not None:
                actions = tuple(self.policy(account, scope))
            else:
                actions = default_policy(account, scope, anonymous_pull=self.anonymous_pull)
            if actions:
                granted.append(Scope(type=scope.type, name=scope.name, actions=actions))
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in granted],
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        assert isinstance(self.signer.key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(self.signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}", tuple(granted)

    def _new_refresh_token(self, account: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = account
        return token

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self._requests.append(req)


def _make_handler(ts: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _basic(self) -> tuple[str | None, bool]:
            """(user, ok): user None when no Basic credentials were sent."""
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return None, True
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "", False
            return user, ts.users.get(user) == password and user != ""

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query)
            scopes = tuple(s for v in q.get("scope", []) for s in v.split(" ") if s)
            user, ok = self._basic()
            base = dict(method="GET", path=url.path, grant_type="", scopes=scopes,
                        service=q.get("service", [""])[0], client_id=q.get("client_id", [""])[0],
                        offline=q.get("offline_token", [""])[0] == "true",
                        authorization=self.headers.get("Authorization", ""))
            if url.path != "/token":
                ts._record(TokenRequest(account="", status=404, **base))
                return self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            if not ok:
                ts._record(TokenRequest(account=user or "", status=401, **base))
                return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                                  {"WWW-Authenticate": 'Basic realm="hoist-test-token"'})
            token, granted = ts.issue(user, scopes)
            body: dict = {"token": token, "access_token": token, "expires_in": ts.expires_in,
                          "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if base["offline"] and user:
                body["refresh_token"] = ts._new_refresh_token(user)
            ts._record(TokenRequest(account=user or "", status=200, granted=granted, **base))
            self._send(200, body)

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)

            def f(key: str) -> str:
                return form.get(key, [""])[0]

            scopes = tuple(s for v in form.get("scope", []) for s in v.split(" ") if s)
            grant = f("grant_type")
            base = dict(method="POST", path=url.path, grant_type=grant, scopes=scopes, service=f("service"),
                        client_id=f("client_id"), offline=f("access_type") == "offline",
                        authorization=self.headers.get("Authorization", ""))
            if url.path != "/token" or not ts.support_post:
                ts._record(TokenRequest(account="", status=404, **base))
                return self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            account: str | None
            if grant == "password":
                account = f("username")
                if not account or ts.users.get(account) != f("password"):
                    ts._record(TokenRequest(account=account, status=401, **base))
                    return self._send(401, {"error": "invalid_grant", "error_description": "invalid username or password"})
                refresh = ts._new_refresh_token(account)
            elif grant == "refresh_token":
                refresh = f("refresh_token")
                with ts._lock:
                    account = ts._refresh.get(refresh)
                if account is None:
                    ts._record(TokenRequest(account="", status=401, **base))
                    return self._send(401, {"error": "invalid_grant", "error_description": "unknown refresh token"})
            else:
                ts._record(TokenRequest(account="", status=400, **base))
                return self._send(400, {"error": "unsupported_grant_type"})
            token, granted = ts.issue(account, scopes)
            ts._record(TokenRequest(account=account, status=200, granted=granted, **base))
            self._send(200, {"access_token": token, "token": token, "token_type": "Bearer",
                             "expires_in": ts.expires_in, "refresh_token": refresh, "scope": " ".join(scopes),
                             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    return Handler
