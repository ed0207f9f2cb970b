"""The execution service: containers (create, start, get, list, kill, delete, wait, events) over a runtime plugin.

The gRPC face arrives with the containers work; today the service binds to its runtime and reports itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ExecutionService:
    """Runs containers through ``runtime`` (the configured ``hoist.runtime.v1`` plugin)."""

    def __init__(self, *, runtime: Any, state: Path) -> None:
        self.runtime = runtime
        self.state = state

    def close(self) -> None:
        return None
