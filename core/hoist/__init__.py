"""Hoist: containerd's image distribution and execution core, as a Python plugin framework.

``hoist.Client`` gives programs the same operations as the ``dist`` and ``hoist`` commands.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported: supervisors import hoist.taskstate and must start fast

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from hoist.client import Client

        return Client
    if name == "__version__":
        from hoist.version import package_version

        return package_version()
    raise AttributeError(name)


if TYPE_CHECKING:
    from typing import Any

    from hoist.client import Client
