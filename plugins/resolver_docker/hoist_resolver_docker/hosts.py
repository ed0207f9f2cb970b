"""Registry hosts: the default endpoint of a registry, and containerd's ``hosts.toml`` mirrors under ``config_path``.

For a registry ``host[:port]`` the directory ``<config_path>/<host>_<port>_``, ``<config_path>/<host:port>``
or ``<config_path>/_default`` (first that exists) holds ``hosts.toml``::

    server = "https://registry.example.com"       # the upstream; omitted: https://<host>
    capabilities = ["pull", "resolve", "push"]
    ca = "ca.crt"                                  # relative to the directory
    [host."https://mirror.example.com"]           # tried in file order, before the upstream
      capabilities = ["pull", "resolve"]
      skip_verify = false
      client = [["client.cert", "client.key"]]
      header = { x-custom = "1" }

Without ``hosts.toml``, ``*.crt`` files in the directory are CAs and ``*.cert``/``*.key`` pairs client
certificates for the upstream, as with Docker's ``certs.d``.  Hoist adds one top-level key:
``mirror_fallback = false`` stops falling back to the upstream once every mirror failed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from hoist.errors import ConfigError

CAPABILITIES = ("pull", "resolve", "push")
LOCALHOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_HOST_KEYS = frozenset({"capabilities", "ca", "client", "skip_verify", "header", "override_path"})
_TOP_KEYS = _HOST_KEYS | {"server", "host", "mirror_fallback"}


@attrs.frozen(kw_only=True)
class RegistryHost:
    """One endpoint serving a registry: the upstream or a mirror.

    :param scheme: ``http`` or ``https``.
    :param host: ``host[:port]`` as in a URL (IPv6 in brackets).
    :param path: API root, normally ``/v2``.
    :param capabilities: subset of ``pull``, ``resolve``, ``push``.
    :param ca: extra CA files trusted for this endpoint.
    :param client_certs: ``(cert, key)`` pairs (``key`` ``None`` when inside the cert file).
    :param skip_verify: do not verify the TLS certificate.
    :param headers: extra headers sent to this endpoint.
    :param mirror: whether this is a mirror (``False`` for the upstream).
    """

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: frozenset[str] = attrs.field(default=frozenset(CAPABILITIES), converter=frozenset)
    ca: tuple[Path, ...] = attrs.field(default=(), converter=tuple)
    client_certs: tuple[tuple[Path, Path | None], ...] = attrs.field(default=(), converter=tuple)
    skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    mirror: bool = False

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def hostname(self) -> str:
        """The host without port (IPv6 without brackets), lower-case."""
        return host_of(self.host)

    def tls_key(self) -> tuple:
        """What distinguishes this endpoint's TLS setup; endpoints with equal keys share one client."""
        return (self.skip_verify, self.ca, self.client_certs)

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


@attrs.frozen(kw_only=True)
class HostList:
    """The endpoints for one registry, in the order to try them, and where they came from."""

    registry: str
    hosts: tuple[RegistryHost, ...]
    source: Path | None = None
    mirror_fallback: bool = True

    def for_capability(self, capability: str) -> tuple[RegistryHost, ...]:
        """Endpoints able to ``capability``; the upstream is dropped when mirrors exist and fallback is off."""
        usable = [h for h in self.hosts if h.can(capability)]
        if not self.mirror_fallback and any(h.mirror for h in usable):
            usable = [h for h in usable if h.mirror]
        return tuple(usable)


def host_of(netloc: str) -> str:
    """``host`` of ``host[:port]`` lower-cased, IPv6 without brackets."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")].lower()
    return netloc.rsplit(":", 1)[0].lower() if netloc.count(":") == 1 else netloc.lower()


def is_localhost(registry: str) -> bool:
    """Whether ``registry`` (``host[:port]``) is the local machine by name (localhost, 127.0.0.1, ::1)."""
    return host_of(registry) in LOCALHOSTS


def host_directory(config_path: Path, registry: str) -> Path | None:
    """The directory configuring ``registry`` under ``config_path``, as containerd looks it up."""
    candidates: list[Path] = []
    idx = registry.rfind(":")
    if idx > 0 and not registry.endswith("]"):
        candidates.append(config_path / f"{registry[:idx]}_{registry[idx + 1:]}_")
    candidates += [config_path / registry, config_path / "_default"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def default_upstream(registry: str, *, plain_http: bool = False) -> RegistryHost:
    """The upstream endpoint of ``registry`` when nothing configures it."""
    if registry == "docker.io":
        return RegistryHost(scheme="https", host="registry-1.docker.io")
    scheme = "http" if plain_http or is_localhost(registry) else "https"
    return RegistryHost(scheme=scheme, host=registry)


def load_hosts(registry: str, config_path: Path | None, *, plain_http: bool = False,
               skip_verify: bool = False, mirror_fallback: bool = True) -> HostList:
    """The endpoints for ``registry``: configured mirrors in file order, then the upstream.

    :param plain_http: the upstream defaults to plain HTTP (``--plain-http``).
    :param skip_verify: do not verify any endpoint's certificate (``--skip-verify``).
    :raises ConfigError: ``hosts.toml`` is malformed (naming the file, the key and what was expected).
    """
    directory = host_directory(config_path, registry) if config_path is not None else None
    upstream = default_upstream(registry, plain_http=plain_http)
    hosts: list[RegistryHost] = []
    source: Path | None = None
    if directory is not None:
        hosts_file = directory / "hosts.toml"
        if hosts_file.is_file():
            source = hosts_file
            hosts, mirror_fallback = _parse_hosts_file(hosts_file, directory, upstream, mirror_fallback)
        else:
            source = directory
            hosts = [_cert_files(directory, upstream)]
    else:
        hosts = [upstream]
    if skip_verify:
        hosts = [attrs.evolve(h, skip_verify=True) for h in hosts]
    return HostList(registry=registry, hosts=tuple(hosts), source=source, mirror_fallback=mirror_fallback)


def _cert_files(directory: Path, upstream: RegistryHost) -> RegistryHost:
    ca = sorted(p for p in directory.glob("*.crt") if p.is_file())
    pairs = []
    for cert in sorted(directory.glob("*.cert")):
        key = cert.with_suffix(".key")
        pairs.append((cert, key if key.is_file() else None))
    return attrs.evolve(upstream, ca=tuple(ca), client_certs=tuple(pairs))


def _parse_hosts_file(path: Path, base: Path, upstream: RegistryHost,
                      mirror_fallback: bool) -> tuple[list[RegistryHost], bool]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    for key in doc:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
    fallback = doc.get("mirror_fallback", mirror_fallback)
    if not isinstance(fallback, bool):
        raise ConfigError(f"{path}: mirror_fallback: expected true or false")
    table = doc.get("host", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: host: expected tables [host.\"https://mirror\"]")
    hosts = []
    for url, cfg in table.items():
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{path}: host.{url!r}: expected a table")
        hosts.append(_parse_host(path, base, f"host.{url!r}", url, cfg, mirror=True, default=None))
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise ConfigError(f"{path}: server: expected a URL string")
    top = {k: v for k, v in doc.items() if k in _HOST_KEYS}
    hosts.append(_parse_host(path, base, "server", server, top, mirror=False, default=upstream))
    return hosts, fallback


def _parse_host(path: Path, base: Path, where: str, url: str, cfg: Mapping, *, mirror: bool,
                default: RegistryHost | None) -> RegistryHost:
    for key in cfg:
        if key not in _HOST_KEYS:
            raise ConfigError(f"{path}: {where}.{key}: unknown key (expected one of {', '.join(sorted(_HOST_KEYS))})")
    if url:
        text = url if url.startswith(("http://", "https://")) else "https://" + url
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{path}: {where}: {url!r} is not an http(s) URL")
        p = parts.path.rstrip("/")
        if p:
            p = "/" + "/".join(s for s in p.split("/") if s)
        override = cfg.get("override_path", False)
        if not isinstance(override, bool):
            raise ConfigError(f"{path}: {where}.override_path: expected true or false")
        if not override and not p.endswith("/v2"):
            p += "/v2"
        host = RegistryHost(scheme=parts.scheme, host=parts.netloc, path=p, mirror=mirror)
    else:
        assert default is not None
        host = default
    caps = cfg.get("capabilities")
    if caps is not None:
        if not isinstance(caps, list) or not all(isinstance(c, str) and c in CAPABILITIES for c in caps):
            raise ConfigError(f"{path}: {where}.capabilities: expected a list of {', '.join(CAPABILITIES)}")
        host = attrs.evolve(host, capabilities=frozenset(caps))
    ca = cfg.get("ca")
    if ca is not None:
        items = [ca] if isinstance(ca, str) else ca
        if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
            raise ConfigError(f"{path}: {where}.ca: expected a path or a list of paths")
        host = attrs.evolve(host, ca=tuple(base / c for c in items))
    client = cfg.get("client")
    if client is not None:
        host = attrs.evolve(host, client_certs=_client_pairs(path, base, where, client))
    sv = cfg.get("skip_verify")
    if sv is not None:
        if not isinstance(sv, bool):
            raise ConfigError(f"{path}: {where}.skip_verify: expected true or false")
        host = attrs.evolve(host, skip_verify=sv)
    header = cfg.get("header")
    if header is not None:
        if not isinstance(header, Mapping):
            raise ConfigError(f"{path}: {where}.header: expected a table of header names to values")
        pairs = []
        for k, v in header.items():
            values = [v] if isinstance(v, str) else v
            if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
                raise ConfigError(f"{path}: {where}.header.{k}: expected a string or a list of strings")
            pairs += [(k, x) for x in values]
        host = attrs.evolve(host, headers=tuple(pairs))
    return host


def _client_pairs(path: Path, base: Path, where: str, client: object) -> tuple[tuple[Path, Path | None], ...]:
    problem = f"{path}: {where}.client: expected a path, or a list of paths or [cert, key] pairs"
    if isinstance(client, str):
        return ((base / client, None),)
    if not isinstance(client, list):
        raise ConfigError(problem)
    out: list[tuple[Path, Path | None]] = []
    for item in client:
        if isinstance(item, str):
            out.append((base / item, None))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append((base / item[0], base / item[1]))
        else:
            raise ConfigError(problem)
    return tuple(out)
