"""Registration of ``hoist.resolver.v1.ocilayout``: thin glue over :mod:`hoist_resolver_ocilayout.resolver`."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_resolver_ocilayout.resolver import SCHEMES, OCILayoutConfig, OCILayoutResolver


class OCILayoutPlugin:
    """The plugin instance: claims ``oci-layout:`` and ``oci-archive:`` references and makes resolvers."""

    def __init__(self, config: OCILayoutConfig) -> None:
        self.config = config

    @property
    def max_concurrent_downloads(self) -> int:
        return self.config.max_concurrent_downloads

    def claims(self, ref: str) -> bool:
        return ref.startswith(SCHEMES)

    def new_resolver(self, options: object = None) -> OCILayoutResolver:
        """A resolver; the registry options (TLS, credentials) do not apply to files and are ignored."""
        return OCILayoutResolver(self.config)


def _init(ic: InitContext) -> OCILayoutPlugin:
    return OCILayoutPlugin(ic.config if ic.config is not None else OCILayoutConfig())


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    """Register the OCI layout resolver."""
    register(Registration(type="hoist.resolver.v1", id="ocilayout", config=OCILayoutConfig, init=_init))
