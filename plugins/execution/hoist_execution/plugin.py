"""Registration of ``hoist.service.v1.execution``, the containers service (in-process and on hoistd's socket)."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_execution.service import ExecutionConfig, ExecutionService

__all__ = ["ExecutionConfig", "hoist_register_plugins"]


def _init(ic: InitContext) -> ExecutionService:
    return ExecutionService(
        metadata=ic.get("hoist.metadata.v1"),
        content=ic.get("hoist.content.v1"),
        runtimes=lambda: ic.get_all("hoist.runtime.v1"),
        snapshotters=lambda: ic.get_all("hoist.snapshotter.v1"),
        state=ic.state,
        config=ic.config,
    )


@hookimpl
def hoist_register_plugins(register):
    register(Registration(
        type="hoist.service.v1", id="execution", config=ExecutionConfig, init=_init,
        requires=("hoist.runtime.v1", "hoist.metadata.v1", "hoist.content.v1", "hoist.snapshotter.v1"),
    ))  # fmt: skip
