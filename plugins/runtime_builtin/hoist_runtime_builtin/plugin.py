"""Registration of ``hoist.runtime.v1.builtin``, the default runtime."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_runtime_builtin.runtime import BuiltinRuntime, BuiltinRuntimeConfig, check_host

__all__ = ["BuiltinRuntimeConfig", "hoist_register_plugins"]


def _init(ic: InitContext) -> BuiltinRuntime:
    check_host()
    return BuiltinRuntime(root=ic.root, state=ic.state, config=ic.config)


@hookimpl
def hoist_register_plugins(register):
    register(Registration(type="hoist.runtime.v1", id="builtin", config=BuiltinRuntimeConfig, init=_init))
