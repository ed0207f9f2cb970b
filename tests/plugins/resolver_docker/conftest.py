"""Fixtures for the docker resolver's tests: the in-memory registry, recorded backoff delays, resolvers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from resolver_docker_fakes import REGISTRY, FakeRegistry

from hoist.remotes import ResolverOptions
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.resolver import DockerResolver


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays the resolver asked for (recorded instead of slept)."""
    slept: list[float] = []
    from hoist_resolver_docker import transport

    monkeypatch.setattr(transport, "sleep", slept.append)
    return slept


@pytest.fixture
def make_resolver(fake: FakeRegistry, tmp_path: Path) -> Iterator[Callable[..., DockerResolver]]:
    """``make_resolver(**config)`` → a DockerResolver whose network is ``fake`` (or ``transport=``)."""
    made: list[DockerResolver] = []

    def make(options: ResolverOptions | None = None, transport: httpx.BaseTransport | None = None,
             **config: object) -> DockerResolver:
        config.setdefault("config_path", "")
        config.setdefault("docker_config", str(tmp_path / "no-docker-config.json"))
        config.setdefault("plain_http_hosts", (REGISTRY,))
        r = DockerResolver(DockerResolverConfig(**config), options,  # type: ignore[arg-type]
                           transport=transport or httpx.MockTransport(fake))
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., DockerResolver]]:
    """``make(options, **config)`` → a DockerResolver on the real network (closed after the test)."""
    made: list[DockerResolver] = []

    def make_(options: ResolverOptions | None = None, **config: object) -> DockerResolver:
        config.setdefault("config_path", "")
        config.setdefault("docker_config", str(tmp_path / "absent-docker-config.json"))
        r = DockerResolver(DockerResolverConfig(**config), options)  # type: ignore[arg-type]
        made.append(r)
        return r

    yield make_
    for r in made:
        r.close()
