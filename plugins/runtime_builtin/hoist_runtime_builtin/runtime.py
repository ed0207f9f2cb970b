"""The builtin runtime: runs OCI bundles in Linux namespaces with pivot_root.

Task operations arrive with the containers work; today the plugin checks the host and reports itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hoist.errors import PluginSkipped, UnsupportedError


def check_host() -> None:
    """Skip on hosts where namespaces cannot be created (not Linux, not root)."""
    if not sys.platform.startswith("linux"):
        raise PluginSkipped(f"the builtin runtime needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise PluginSkipped("the builtin runtime needs root to create namespaces")


class BuiltinRuntime:
    """``hoist.runtime.v1.builtin``: bundles under ``root``, task state under ``state``."""

    name = "builtin"

    def __init__(self, *, root: Path, state: Path, config: Any) -> None:
        self.root = root
        self.state = state
        self.config = config

    def create(self, *_args: Any, **_kwargs: Any) -> Any:
        raise UnsupportedError("hoist.runtime.v1.builtin: creating tasks is not available in this version")

    def close(self) -> None:
        return None
