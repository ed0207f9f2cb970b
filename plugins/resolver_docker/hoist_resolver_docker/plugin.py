"""Registration of ``hoist.resolver.v1.docker``: the default resolver, for Docker Registry v2 / OCI registries."""

from __future__ import annotations

from pathlib import Path

from hoist.plugin import InitContext, Registration, hookimpl
from hoist.remotes import ResolverOptions
from hoist_resolver_docker.config import DockerResolverConfig
from hoist_resolver_docker.resolver import DockerResolver

_SCHEME = "docker://"


class DockerResolverPlugin:
    """The plugin instance: claims plain references (and ``docker://`` ones) and makes resolvers."""

    def __init__(self, config: DockerResolverConfig, upload_state_dir: Path | None = None) -> None:
        self.config = config
        #: Where pushes remember chunked upload sessions, to resume them in a later run.
        self.upload_state_dir = upload_state_dir

    @property
    def max_concurrent_downloads(self) -> int:
        return self.config.max_concurrent_downloads

    @property
    def max_concurrent_uploads(self) -> int:
        return self.config.max_concurrent_uploads

    def claims(self, ref: str) -> bool:
        """Every reference without a scheme, and ``docker://…``."""
        return "://" not in ref or ref.startswith(_SCHEME)

    def new_resolver(self, options: ResolverOptions | None = None) -> DockerResolver:
        """A resolver with its own connection pool and token cache."""
        return DockerResolver(self.config, options, upload_state_dir=self.upload_state_dir)


def _init(ic: InitContext) -> DockerResolverPlugin:
    return DockerResolverPlugin(ic.config if ic.config is not None else DockerResolverConfig(), ic.root / "uploads")


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    """Register the docker resolver."""
    register(Registration(type="hoist.resolver.v1", id="docker", requires=(), config=DockerResolverConfig,
                          init=_init))
