"""Hook specifications: the only hooks a Hoist plugin implements.

Plugins are modules (or objects) registered with the ``hoist`` pluggy project, one per entry point in
group ``hoist.plugins``; the entry point's name is the plugin URI.  Hooks are called in the documented
plugin load order (see :mod:`hoist.plugin`), never in install order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from hoist.plugin import Registration

hookspec = pluggy.HookspecMarker("hoist")


# -- registration: runs once, when the host loads its enabled plugins -----------------------------


@hookspec
def hoist_register_plugins(register: Callable[[Registration], None]) -> None:
    """Register the plugin this module provides.

    Called once per loaded plugin module, right after its entry point is imported and before any
    plugin is initialised.  The implementation calls ``register`` exactly once with a
    :class:`hoist.plugin.Registration` whose URI (``<type>.<id>``) equals the entry point's name.
    The host records which module registered what; registering nothing, twice, or under another URI
    is reported as an error of that plugin.

    :param register: callback taking one :class:`~hoist.plugin.Registration`.
    :return: ignored.

    Example::

        @hoist.plugin.hookimpl
        def hoist_register_plugins(register):
            register(Registration(type="hoist.content.v1", id="local", init=init))
    """
