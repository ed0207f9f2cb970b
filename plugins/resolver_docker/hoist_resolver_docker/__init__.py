"""Hoist's resolver, fetcher and pusher for Docker Registry HTTP API v2 / OCI distribution registries."""

from __future__ import annotations

import sys
import types


def _defer_httpx_cli() -> None:
    """Keep ``import httpx`` from importing httpx's command-line client.

    httpx imports its ``httpx`` command (with click, rich and pygments, about a fifth of a fetch's
    start-up) whenever those are installed, and Hoist never runs it.  A stand-in ``httpx._main`` is put
    in its place before httpx is first imported; calling its ``main`` loads the real one and runs it.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main", "Stand-in for httpx's command-line client, loaded when first run.")

    def main(*args: object, **kwargs: object) -> object:
        import importlib

        if sys.modules.get("httpx._main") is stub:
            del sys.modules["httpx._main"]
        return importlib.import_module("httpx._main").main(*args, **kwargs)

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_defer_httpx_cli()
