"""Hoist's version string, as ``git describe`` of the source it runs from (containerd's scheme).

``v0.1.0-dev-3-g7953e96.m`` = 3 commits past tag ``v0.1.0-dev``, with local modifications.  Outside a
git checkout the string stamped at build time is used, else the package version.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PACKAGE = "hoist"
_SOURCE = Path(__file__).resolve().parent


def package_version() -> str:
    """The distribution's version (PEP 440), e.g. ``0.1.0.dev0``."""
    from hoist.entrypoints import version

    try:
        return version(PACKAGE)
    except LookupError:
        return "0.0.0"


def git_describe(path: Path) -> str | None:
    """``git describe --match 'v[0-9]*' --dirty='.m' --always`` run in ``path``; ``None`` if that is not a git checkout."""
    try:
        top = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0:
            return None
        out = subprocess.run(["git", "-C", top.stdout.strip(), "describe", "--match", "v[0-9]*", "--dirty=.m", "--always"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def describe() -> str:
    """The version Hoist reports (``hoist -v``, the Version gRPC service)."""
    found = git_describe(_SOURCE)
    if found:
        return found
    try:
        from hoist import _build_version  # type: ignore[attr-defined]

        return _build_version.VERSION
    except ImportError:
        return "v" + package_version()


def revision() -> str:
    """The commit hash of the source, or empty outside git."""
    try:
        out = subprocess.run(["git", "-C", str(_SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
