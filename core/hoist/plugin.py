"""The plugin model: registrations, init contexts, and the host that loads and initialises plugins.

Load order contract: plugins are initialised in topological order over ``Registration.requires``
(plugin types), ties broken by ``(type, id)``; install order never matters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pluggy

hookimpl = pluggy.HookimplMarker("hoist")

ENTRY_POINT_GROUP = "hoist.plugins"


@attrs.frozen(kw_only=True)
class Registration:
    """What a plugin declares: its type and id (together its URI), the types it needs, its config class, its init.

    :param type: plugin type, e.g. ``hoist.content.v1``.
    :param id: id within the type, e.g. ``local``.
    :param requires: plugin types that must be initialised (and ``ok``) first.
    :param config: an attrs class decoded from ``[plugins."<uri>"]``; ``None`` takes no configuration.
    :param init: ``init(ic: InitContext) -> instance``; raise :class:`~hoist.errors.PluginSkipped` to skip.
    """

    type: str
    id: str
    init: Callable[[InitContext], Any]
    requires: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    config: type | None = None

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"


@attrs.define(kw_only=True)
class InitContext:
    """What ``Registration.init`` receives.

    :ivar config: the decoded config instance (``None`` when the plugin takes none).
    :ivar root: ``<root>/<uri>``, created, for persistent data.
    :ivar state: ``<state>/<uri>``, created, for runtime state (sockets, pids).
    """

    registration: Registration
    config: Any
    root: Path
    state: Path
    address: str = ""
    _lookup: Callable[[str], list[tuple[str, Any]]] = attrs.field(alias="lookup")
    _results: Callable[[], list] = attrs.field(alias="results", default=list)

    def get(self, type: str) -> Any:
        """The instance of the first ``ok`` plugin of ``type`` (by id order).

        :raises NotFoundError: no plugin of that type is loaded and ``ok``.
        """
        from hoist.errors import NotFoundError

        found = self._lookup(type)
        if not found:
            raise NotFoundError(f"no plugin of type {type} is loaded")
        return found[0][1]

    def get_by_id(self, type: str, id: str) -> Any:
        """The instance of plugin ``<type>.<id>``.

        :raises NotFoundError: that plugin is not loaded and ``ok``.
        """
        from hoist.errors import NotFoundError

        for pid, inst in self._lookup(type):
            if pid == id:
                return inst
        raise NotFoundError(f"plugin {type}.{id} is not loaded")

    def get_all(self, type: str) -> dict[str, Any]:
        """``{id: instance}`` of every ``ok`` plugin of ``type``."""
        return dict(self._lookup(type))

    def plugin_results(self) -> list:
        """Every plugin's :class:`PluginResult` so far (all of them once the host has finished loading)."""
        return self._results()


@attrs.define(kw_only=True)
class PluginResult:
    """The outcome of loading one plugin: ``ok``, ``skip`` or ``error``, with the instance or the cause."""

    uri: str
    registration: Registration | None = None
    status: str = "error"
    instance: Any = None
    error: BaseException | None = None
    source: str = ""

    @property
    def type(self) -> str:
        if self.registration is not None:
            return self.registration.type
        return self.uri.rsplit(".", 1)[0] if "." in self.uri else self.uri

    @property
    def id(self) -> str:
        if self.registration is not None:
            return self.registration.id
        return self.uri.rsplit(".", 1)[-1]

    @property
    def requires(self) -> tuple[str, ...]:
        return self.registration.requires if self.registration is not None else ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def reason(self) -> str:
        """One line saying why the plugin is not ``ok`` (empty when it is)."""
        if self.error is None:
            return ""
        text = str(self.error).strip().splitlines()
        line = text[0] if text else type(self.error).__name__
        prefix = f"{self.uri}: "
        return line[len(prefix):] if line.startswith(prefix) else line


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh pluggy manager for the ``hoist`` project with Hoist's hookspecs added."""
    from hoist import hookspecs

    pm = pluggy.PluginManager("hoist")
    pm.add_hookspecs(hookspecs)
    return pm
