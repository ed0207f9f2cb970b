"""Importing the resolver leaves httpx's command-line client (and rich, pygments) unloaded; ``httpx.main`` still works."""

from __future__ import annotations

import subprocess
import sys


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_resolver_does_not_import_httpx_command_line_client() -> None:
    r = python("import sys, hoist_resolver_docker.resolver, hoist_resolver_docker.pusher\n"
               "print(sorted(m for m in ('rich', 'pygments', 'httpx._main') if m in sys.modules and "
               "getattr(sys.modules[m], '__file__', None)))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_httpx_command_line_client_still_runs() -> None:
    r = python("import sys, hoist_resolver_docker.resolver, httpx\nsys.argv = ['httpx', '--help']\nhttpx.main()")
    assert r.returncode == 0, r.stderr
    assert "Usage: httpx" in r.stdout
