"""Registration of ``hoist.service.v1.execution``, the containers service on hoistd's socket."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_execution.service import ExecutionService


def _init(ic: InitContext) -> ExecutionService:
    return ExecutionService(runtime=ic.get("hoist.runtime.v1"), state=ic.state)


@hookimpl
def hoist_register_plugins(register):
    register(Registration(type="hoist.service.v1", id="execution", requires=("hoist.runtime.v1",), init=_init))
