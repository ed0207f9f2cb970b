"""Root fixtures for Hoist's tests: test images, real registries on 127.0.0.1, the fault proxy.

Every session fixture is lazy: a test pays only for what it asks for. See docs/testing.md.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.faultproxy import FaultProxy  # noqa: E402
from support.images import ImageLayout, ImageSet  # noqa: E402
from support.pki import TestPKI  # noqa: E402
from support.registry import Registry  # noqa: E402

# What the session `registry` holds: "repository:tag" -> (image set method, skopeo --format).
STANDARD_IMAGES: dict[str, tuple[str, str | None]] = {
    "test/busybox:1": ("busybox", None),
    "test/busybox:v2s2": ("busybox", "v2s2"),
    "test/multi:1": ("multi", None),
    "test/multi:v2s2": ("multi", "v2s2"),
    "test/whiteout:1": ("whiteout", None),
    "test/opaque:1": ("opaque", None),
    "test/layers:1": ("random_layers", None),
    "test/zstd:1": ("zstd", None),
    "test/uncompressed:1": ("uncompressed", None),
}
# What the TLS/Basic/token registries hold.
AUTH_IMAGES: dict[str, tuple[str, str | None]] = {
    "test/busybox:1": ("busybox", None),
    "test/multi:1": ("multi", None),
}


def _push_all(reg: Registry, images: ImageSet, wanted: dict[str, tuple[str, str | None]]) -> None:
    # Pushed over HTTP from this process (push_http): much faster than one skopeo per image.
    # distribution 2.8 writes repository link files non-atomically: two pushes of the same blob
    # into one repository at once can read a half-written link (HTTP 500). So one repository's
    # pushes run in order, different repositories in parallel.
    groups: dict[str, list[tuple[str, str, str | None]]] = {}
    for name, (method, fmt) in wanted.items():
        repo, _, tag = name.partition(":")
        groups.setdefault(repo, []).append((tag, method, fmt))
        getattr(images, method)()  # build first: layouts are shared between pushes

    def push_repo(item: tuple[str, list[tuple[str, str, str | None]]]) -> None:
        repo, todo = item
        for tag, method, fmt in todo:
            layout: ImageLayout = getattr(images, method)()
            reg.push_http(layout, repo, tag, format=fmt)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(push_repo, groups.items()))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """The standard OCI layouts, each built on first use and kept for the session."""
    return ImageSet(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """The session's CAs and certificates (``ca_cert``, ``other_ca_cert``, ``server``, ``token_signer``)."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


def _session_registry(tmp_path_factory: pytest.TempPathFactory, images: ImageSet, mode: str,
                      pki: TestPKI | None, wanted: dict[str, tuple[str, str | None]]) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp(f"registry-{mode}"), mode=mode, pki=pki).start()
    try:
        _push_all(reg, images, wanted)
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, images: ImageSet) -> Iterator[Registry]:
    """Plain-HTTP registry holding ``STANDARD_IMAGES`` (see ``registry.pushed``). Don't delete from it."""
    yield from _session_registry(tmp_path_factory, images, "http", None, STANDARD_IMAGES)


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory, images: ImageSet, pki: TestPKI) -> Iterator[Registry]:
    """HTTPS registry (certificate from ``pki.ca``) holding ``AUTH_IMAGES``."""
    yield from _session_registry(tmp_path_factory, images, "tls", pki, AUTH_IMAGES)


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory, images: ImageSet, pki: TestPKI) -> Iterator[Registry]:
    """HTTPS registry with htpasswd Basic auth (``username``/``password``) holding ``AUTH_IMAGES``."""
    yield from _session_registry(tmp_path_factory, images, "basic", pki, AUTH_IMAGES)


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory, images: ImageSet, pki: TestPKI) -> Iterator[Registry]:
    """HTTPS registry with Bearer token auth (``token_server``, ``username``/``password``) holding ``AUTH_IMAGES``."""
    yield from _session_registry(tmp_path_factory, images, "token", pki, AUTH_IMAGES)


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Callable[..., Registry]]:
    """Start private, empty registries for one test: ``registry_factory(mode="http")``; stopped after it.

    Keyword arguments go to :class:`Registry` (``username``, ``password``, ``token_server``).
    """
    started: list[Registry] = []

    def make(mode: str = "http", **kwargs: object) -> Registry:
        pki = request.getfixturevalue("pki") if mode != "http" else None
        reg = Registry(tmp_path_factory.mktemp(f"registry-{mode}"), mode=mode, pki=pki, **kwargs).start()  # type: ignore[arg-type]
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Start fault proxies for one test: ``fault_proxy(registry)`` or ``fault_proxy("http://127.0.0.1:N")``."""
    started: list[FaultProxy] = []

    def make(upstream: Registry | str, **kwargs: object) -> FaultProxy:
        if isinstance(upstream, Registry):
            kwargs.setdefault("verify", upstream.ssl_context())
            upstream = upstream.url
        proxy = FaultProxy(upstream, **kwargs).start()  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


_counter = iter(range(1_000_000))


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test (``t/<test-name>-<n>``), for pushing to session registries."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "test"
    return f"t/{base}-{next(_counter)}"
