"""Registration of ``hoist.runtime.v1.runc``: thin glue over :mod:`hoist_runtime_runc.runtime`."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_runtime_runc.runtime import RuncRuntime, RuncRuntimeConfig, check_host


def _init(ic: InitContext) -> RuncRuntime:
    config = ic.config if ic.config is not None else RuncRuntimeConfig()
    check_host(config)
    return RuncRuntime(root=ic.root, state=ic.state, config=config)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    """Register the runc runtime."""
    register(Registration(type="hoist.runtime.v1", id="runc", config=RuncRuntimeConfig, init=_init))
