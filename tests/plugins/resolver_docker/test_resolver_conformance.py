"""The docker resolver passes ``hoist.testing.resolver.ResolverSuite`` against the real registry on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.content import Digest
from hoist.remotes import ResolverOptions
from hoist.testing.resolver import ResolverCase, ResolverSuite
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.resolver import DockerResolver
from support.registry import Registry


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory, images) -> Iterator[Registry]:  # noqa: ANN001
    """A registry of this module's own, since the suite corrupts (and then restores) blobs in it."""
    reg = Registry(tmp_path_factory.mktemp("registry-conformance"), mode="http").start()
    try:
        reg.push_http(images.multi(), "conformance/multi", "1")
        yield reg
    finally:
        reg.stop()


class TestDockerResolver(ResolverSuite):
    @pytest.fixture
    def resolver_case(self, private_registry: Registry, images, tmp_path: Path) -> Iterator[ResolverCase]:  # noqa: ANN001
        layout = images.multi()
        reg = private_registry
        saved: dict[Path, bytes] = {}

        def tamper(d: Digest, data: bytes) -> None:
            path = reg.blob_path(d)
            saved.setdefault(path, path.read_bytes())
            path.write_bytes(data)

        config = DockerResolverConfig(config_path="", docker_config=str(tmp_path / "no-docker-config.json"))
        resolver = DockerResolver(config, ResolverOptions(plain_http=True))
        ref = reg.ref("conformance/multi:1")
        try:
            yield ResolverCase(
                resolver=resolver, ref=ref, digest_ref=reg.ref(f"conformance/multi@{layout.digest}"),
                digest=layout.digest, blobs={d.digest: layout.blob(d.digest) for d in layout.all_blobs()}, name=ref,
                missing_ref=reg.ref("conformance/multi:absent"), invalid_ref=reg.ref("Conformance/UPPER:1"),
                tamper=tamper)
        finally:
            resolver.close()
            for path, data in saved.items():
                path.write_bytes(data)
