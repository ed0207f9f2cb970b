"""Image references: decompose ``host[:port]/path[:tag][@digest]`` into a locator and an object.

Parsing follows the distribution spec's grammar and limits and never touches the network.
Normalization (``redis`` → ``docker.io/library/redis:latest``) is a separate, explicit step:
:func:`normalize`.
"""

from __future__ import annotations

import re

import attrs

from hoist.content import Digest
from hoist.errors import InvalidArgumentError

#: Longest name (``host[:port]/path``) the distribution spec allows.
NAME_TOTAL_LENGTH_MAX = 255

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*")
_IPV6 = re.compile(r"\[[a-fA-F0-9:]+\]")
_PORT = re.compile(r"[0-9]+")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_LOCALHOST = "localhost"


def _err(ref: str, rule: str) -> InvalidArgumentError:
    shown = ref if len(ref) <= 120 else ref[:117] + "..."
    return InvalidArgumentError(f"invalid reference {shown!r}: {rule}")


@attrs.frozen(kw_only=True)
class Reference:
    """A parsed reference: ``domain`` (``host[:port]``, may be empty), ``path``, optional ``tag`` and ``digest``.

    ``locator`` is ``domain/path``; ``object`` is ``tag``, ``@digest`` or ``tag@digest``.
    ``str()`` gives the reference back in canonical form.
    """

    domain: str
    path: str
    tag: str = ""
    digest: Digest | None = None

    @property
    def locator(self) -> str:
        """``host[:port]/path`` (just ``path`` when there is no domain)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    name = locator

    @property
    def object(self) -> str:
        """``tag``, ``@digest``, ``tag@digest`` or ``""``."""
        out = self.tag
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def hostname(self) -> str:
        """The domain without its port; IPv6 addresses keep their brackets."""
        return split_host_port(self.domain)[0]

    @property
    def port(self) -> int | None:
        """The domain's port, if it names one."""
        return split_host_port(self.domain)[1]

    def with_object(self, obj: str) -> Reference:
        """This locator with another object: a tag, ``@digest``, a bare ``sha256:…`` digest, or ``tag@digest``.

        :raises InvalidArgumentError: the object is malformed.
        """
        if not obj:
            return parse(self.locator)
        if obj.startswith("@"):
            return parse(self.locator + obj)
        if obj.split(":", 1)[0] in ("sha256", "sha512"):
            return parse(f"{self.locator}@{obj}")
        return parse(f"{self.locator}:{obj}")

    def __str__(self) -> str:
        out = self.locator
        if self.tag:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def split_host_port(domain: str) -> tuple[str, int | None]:
    """``("host", port)`` from ``host[:port]`` (``[::1]:5000`` → ``("[::1]", 5000)``)."""
    if domain.startswith("["):
        end = domain.find("]")
        host, rest = domain[: end + 1], domain[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = domain.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return domain, None


def _is_domain(component: str) -> bool:
    # Docker's rule: the first component is a registry host when it has a dot or a colon, is
    # ``localhost``, or is a bracketed IPv6 address; otherwise it is part of a Docker Hub path.
    return "." in component or ":" in component or component == _LOCALHOST or component.startswith("[")


def _check_domain(ref: str, domain: str) -> None:
    if domain.startswith("["):
        end = domain.find("]")
        if end < 0 or not _IPV6.fullmatch(domain[: end + 1]):
            raise _err(ref, f"registry host {domain!r} is not a valid bracketed IPv6 address")
        rest = domain[end + 1 :]
        if rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:])):
            raise _err(ref, f"registry host {domain!r}: port must be decimal digits")
        return
    host, sep, port = domain.partition(":")
    if sep and not _PORT.fullmatch(port):
        raise _err(ref, f"registry host {domain!r}: port must be decimal digits")
    if not _DOMAIN_NAME.fullmatch(host):
        raise _err(ref, f"registry host {host!r} is not a valid domain name or IP address")


def _check_path(ref: str, path: str) -> None:
    if not path:
        raise _err(ref, "repository name is empty")
    for comp in path.split("/"):
        if not comp:
            raise _err(ref, "repository name has an empty path component")
        if not _PATH_COMPONENT.fullmatch(comp):
            if comp.lower() != comp and _PATH_COMPONENT.fullmatch(comp.lower()):
                raise _err(ref, "repository name must be lower-case")
            raise _err(
                ref,
                f"path component {comp!r} must be lower-case letters and digits separated by '.', '_', '__' or '-'",
            )


def parse(ref: str) -> Reference:
    """Decompose ``ref`` into a :class:`Reference`, checking the distribution grammar and limits.

    The first path component is the registry host when it contains ``.`` or ``:``, is ``localhost`` or a
    bracketed IPv6 address (``[::1]:5000/repo``); otherwise the reference has no domain (see
    :func:`normalize`).  Nothing is contacted.

    :raises InvalidArgumentError: naming the reference and the rule it breaks.
    """
    if not isinstance(ref, str):
        raise InvalidArgumentError(f"invalid reference {ref!r}: not a string")
    if ref == "":
        raise _err(ref, "empty reference")
    if "://" in ref:
        raise _err(ref, "a scheme (like https://) is not part of a reference")
    if any(c.isspace() for c in ref):
        raise _err(ref, "contains whitespace")
    rest, at, digest_text = ref.partition("@")
    digest: Digest | None = None
    if at:
        if not digest_text:
            raise _err(ref, "empty digest after '@'")
        if "@" in digest_text:
            raise _err(ref, "more than one '@'")
        try:
            digest = Digest.parse(digest_text)
        except InvalidArgumentError as e:
            reason = str(e).split(": ", 1)[-1]
            raise _err(ref, f"digest {digest_text!r}: {reason}") from None
    if not rest:
        raise _err(ref, "repository name is missing before '@'")
    tag = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not tag:
            raise _err(ref, "empty tag after ':'")
        if not _TAG.fullmatch(tag):
            raise _err(ref, f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")
    if not rest:
        raise _err(ref, "repository name is missing before ':'")
    first, sep, remainder = rest.partition("/")
    if sep and _is_domain(first):
        domain, path = first, remainder
        _check_domain(ref, domain)
    elif not sep and first.startswith("["):
        raise _err(ref, "repository name is missing after the registry host")
    else:
        domain, path = "", rest
    _check_path(ref, path)
    name = f"{domain}/{path}" if domain else path
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _err(ref, f"repository name is {len(name)} characters, longer than {NAME_TOTAL_LENGTH_MAX}")
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(ref: str | Reference) -> Reference:
    """Expand a short reference the way Docker does, explicitly.

    ``redis`` → ``docker.io/library/redis:latest``; ``user/app`` → ``docker.io/user/app:latest``;
    ``index.docker.io/x`` → ``docker.io/library/x:latest``; a reference with neither tag nor digest
    gets ``:latest``.  Already normalized references come back unchanged.

    :raises InvalidArgumentError: the reference is malformed, or too long once expanded.
    """
    parsed = ref if isinstance(ref, Reference) else parse(ref)
    domain, path = parsed.domain, parsed.path
    if not domain or domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    tag = parsed.tag
    if not tag and parsed.digest is None:
        tag = DEFAULT_TAG
    text = f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{parsed.digest}" if parsed.digest else "")
    if len(f"{domain}/{path}") > NAME_TOTAL_LENGTH_MAX:
        raise _err(str(ref), f"repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters once normalized")
    return parse(text)


def familiar(ref: str | Reference) -> str:
    """The short form Docker shows (``docker.io/library/redis:latest`` → ``redis:latest``)."""
    parsed = ref if isinstance(ref, Reference) else parse(ref)
    if parsed.domain not in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN):
        return str(parsed)
    path = parsed.path.removeprefix(OFFICIAL_REPO_PREFIX) if parsed.path.count("/") == 1 else parsed.path
    return str(attrs.evolve(parsed, domain="", path=path))


__all__ = [
    "Reference",
    "parse",
    "normalize",
    "familiar",
    "split_host_port",
    "NAME_TOTAL_LENGTH_MAX",
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
]
