"""Registration of ``hoist.runtime.v1.builtin``, the default runtime."""

from __future__ import annotations

import attrs

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_runtime_builtin.runtime import BuiltinRuntime, check_host


@attrs.frozen(kw_only=True)
class BuiltinRuntimeConfig:
    """``[plugins."hoist.runtime.v1.builtin"]``."""

    #: Seconds a killed task gets between SIGTERM and SIGKILL on delete.
    kill_timeout: float = 10.0


def _init(ic: InitContext) -> BuiltinRuntime:
    check_host()
    return BuiltinRuntime(root=ic.root, state=ic.state, config=ic.config)


@hookimpl
def hoist_register_plugins(register):
    register(Registration(type="hoist.runtime.v1", id="builtin", config=BuiltinRuntimeConfig, init=_init))
