"""A third-party Hoist plugin in one module: registration, config and init."""

from __future__ import annotations

import attrs

from hoist.plugin import InitContext, Registration, hookimpl


@attrs.frozen(kw_only=True)
class MinimalConfig:
    """``[plugins."hoist.example.v1.minimal"]``."""

    greeting: str = "hello"


class Minimal:
    """Holds the content store it was given, to show how dependencies arrive."""

    def __init__(self, greeting: str, content: object) -> None:
        self.greeting = greeting
        self.content = content


def _init(ic: InitContext) -> Minimal:
    (ic.root / "greeting.txt").write_text(ic.config.greeting + "\n")
    return Minimal(ic.config.greeting, ic.get("hoist.content.v1"))


@hookimpl
def hoist_register_plugins(register):
    register(Registration(type="hoist.example.v1", id="minimal", requires=("hoist.content.v1",),
                          config=MinimalConfig, init=_init))
