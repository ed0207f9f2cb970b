"""A third-party runtime for the tests: the builtin runtime under the id ``recording``, noting each task it creates."""

from __future__ import annotations

from hoist.plugin import InitContext, Registration, hookimpl
from hoist.runtime import DEFAULT_NAMESPACE, IO, Bundle
from hoist_runtime_builtin.runtime import BuiltinRuntime

#: ``namespace/id`` of every task a RecordingRuntime created in this process.
CREATED: list[str] = []


class RecordingRuntime(BuiltinRuntime):
    name = "recording"

    def create(self, id: str, bundle: Bundle, io: IO = IO(), *, namespace: str = DEFAULT_NAMESPACE):  # type: ignore[override]
        CREATED.append(f"{namespace}/{id}")
        return super().create(id, bundle, io, namespace=namespace)


def _init(ic: InitContext) -> RecordingRuntime:
    return RecordingRuntime(root=ic.root, state=ic.state)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.runtime.v1", id="recording", init=_init))
