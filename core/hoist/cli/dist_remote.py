"""``dist resolve`` and ``dist fetch-object``, and the resolver flags every registry command shares."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from hoist import reference
from hoist.content import Descriptor
from hoist.errors import InvalidArgumentError
from hoist.remotes import CHUNK_SIZE, ResolverOptions

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h)?)+$")
# ``oci-archive:/path``: a scheme followed by a path, which no docker reference can look like, is a resolver plugin's.
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:/")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``2.5s``, ``500ms``, ``1m30s`` or ``1h``.

    :raises InvalidArgumentError: anything else, or zero.
    """
    value = text.strip()
    if not value or not _DURATION.match(value):
        raise InvalidArgumentError(f"invalid duration {text!r}: expected seconds or e.g. 30s, 500ms, 1m30s")
    total = sum(float(n) * _UNITS[u or None] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value))
    if total <= 0:
        raise InvalidArgumentError(f"invalid duration {text!r}: must be positive")
    return total


def build_resolver_options(*, plain_http: bool, skip_verify: bool, user: str | None, hosts_dir: str | None,
                           timeout: str | None, user_flag: str = "--user") -> ResolverOptions:
    """:class:`ResolverOptions` from the shared flags; prompts for a missing password on a terminal.

    :raises InvalidArgumentError: a bad ``--timeout``, or ``--user`` without a password off a terminal.
    """
    username, secret = "", ""
    if user is not None:
        username, sep, secret = user.partition(":")
        if not username:
            raise InvalidArgumentError(f"{user_flag}: expected user[:password]")
        if not sep:
            if not sys.stdin.isatty():
                raise InvalidArgumentError(f"{user_flag} {username}: no password given and stdin is not a terminal "
                                           f"(use {user_flag} user:password)")
            secret = click.prompt(f"Password for {username}", hide_input=True, err=True)
    return ResolverOptions(
        plain_http=plain_http or None,
        skip_verify=skip_verify or None,
        username=username,
        secret=secret,
        hosts_dir=hosts_dir,
        timeout=parse_duration(timeout) if timeout else None,
    )


def resolver_options(f: Callable[..., Any] | None = None, *,
                     user_flag: tuple[str, ...] = ("--user", "-u")) -> Any:
    """Add ``--plain-http``, ``--skip-verify/-k``, ``--user/-u``, ``--hosts-dir`` and ``--timeout``.

    The command receives them as one keyword argument, ``resolver_options`` (a :class:`ResolverOptions`).
    Every command that talks to a registry takes these flags, and only through this decorator.

    :param user_flag: the names of the credentials flag, for a command whose ``--user`` means something
        else (``hoist run --registry-user``); use as ``@resolver_options(user_flag=(...))``.
    """
    if f is None:
        return functools.partial(resolver_options, user_flag=user_flag)

    @functools.wraps(f)
    def wrapper(*args: Any, plain_http: bool, skip_verify: bool, registry_user: str | None, hosts_dir: str | None,
                timeout: str | None, **kwargs: Any) -> Any:
        kwargs["resolver_options"] = build_resolver_options(plain_http=plain_http, skip_verify=skip_verify,
                                                            user=registry_user, hosts_dir=hosts_dir, timeout=timeout,
                                                            user_flag=user_flag[0])
        return f(*args, **kwargs)

    opts = [
        click.option("--plain-http", is_flag=True, help="Talk plain HTTP to the registry (localhost always does)."),
        click.option("--skip-verify", "-k", is_flag=True, help="Do not verify the registry's TLS certificate."),
        click.option(*user_flag, "registry_user", metavar="USER[:PASSWORD]", default=None,
                     help="Registry credentials; the password is prompted for on a terminal when omitted."),
        click.option("--hosts-dir", metavar="DIR", default=None, type=click.Path(file_okay=False),
                     help="Directory of per-registry hosts.toml files (mirrors, CAs, plain HTTP)."),
        click.option("--timeout", metavar="DURATION", default=None,
                     help="Network timeout: connecting, and waiting for data (e.g. 30s, 2m)."),
    ]
    for o in reversed(opts):
        wrapper = o(wrapper)
    return wrapper


def _full_reference(ref: str) -> str:
    """Normalize a plain reference (``redis`` → ``docker.io/library/redis:latest``); others (with a scheme) as given."""
    if "://" in ref or _SCHEME.match(ref):
        return ref
    return str(reference.normalize(ref))


def _with_object(ref: str, obj: str) -> str:
    if "://" in ref:
        scheme, _, rest = ref.partition("://")
        base = rest.split("@", 1)[0]
        tail = base.rsplit("/", 1)
        if ":" in tail[-1]:
            base = base[: base.rfind(":")]
        if obj.startswith("@") or obj.split(":", 1)[0] in ("sha256", "sha512"):
            return f"{scheme}://{base}@{obj.lstrip('@')}"
        return f"{scheme}://{base}:{obj}"
    parsed = reference.parse(ref)
    return str(reference.normalize(reference.parse(parsed.locator).with_object(obj)))


@click.command("resolve")
@click.argument("ref")
@resolver_options
@click.option("--json", "as_json", is_flag=True, help="Print the name and descriptor as JSON.")
@click.pass_obj
def resolve(g: Any, ref: str, resolver_options: ResolverOptions, as_json: bool) -> None:
    """Resolve REF to the name and descriptor of the object it points at.

    REF is normalized first (``redis`` means ``docker.io/library/redis:latest``).
    """
    full = _full_reference(ref)
    with g.client() as client:
        resolver = client.resolver(full, resolver_options)
        try:
            resolved = resolver.resolve(full)
        finally:
            resolver.close()
    desc: Descriptor = resolved.descriptor
    if as_json:
        click.echo(json.dumps({"name": resolved.name, "descriptor": desc.to_json()}, indent=2))
        return
    rows = [("name", resolved.name), ("digest", str(desc.digest)), ("media type", desc.media_type),
            ("size", str(desc.size))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")


@click.command("fetch-object")
@click.argument("ref")
@click.argument("object", required=False, default="")
@resolver_options
@click.pass_obj
def fetch_object(g: Any, ref: str, object: str, resolver_options: ResolverOptions) -> None:
    """Stream one object of REF to stdout, verified against its digest.

    With no OBJECT (or a tag), the manifest or index REF names; with a digest (``sha256:…``), that
    blob or manifest.
    """
    full = _with_object(ref, object) if object else _full_reference(ref)
    out = click.get_binary_stream("stdout")
    with g.client() as client:
        resolver = client.resolver(full, resolver_options)
        try:
            resolved = resolver.resolve(full)
            buf = bytearray(CHUNK_SIZE)
            view = memoryview(buf)
            with resolved.fetcher.fetch(resolved.descriptor) as stream:
                while n := stream.readinto(view):
                    out.write(view[:n])
            out.flush()
        finally:
            resolver.close()
