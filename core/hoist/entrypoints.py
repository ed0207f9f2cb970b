"""Installed distributions' entry points and versions, read from their metadata directories on ``sys.path``.

Every command asks two things of the installed distributions as it starts: which plugins are
installed (the entry points of group ``hoist.plugins``) and, for a registry's ``User-Agent``, a
distribution's version.  The answers are :mod:`importlib.metadata`'s, found the way it finds them
(each ``*.dist-info`` or ``*.egg-info`` directory on ``sys.path``, the first of a name winning), but
only the few files they need are read: importing that module and building every installed
distribution costs about 6 ms of each command's start.  A path entry that is an archive rather
than a directory is left to :mod:`importlib.metadata`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[[^\]]*\]\s*)?")


class EntryPoint:
    """One entry point: ``name = value`` in ``group``, declared by distribution ``dist`` (its ``Name``)."""

    __slots__ = ("name", "value", "group", "dist")

    def __init__(self, name: str, value: str, group: str, dist: str) -> None:
        self.name = name
        self.value = value
        self.group = group
        self.dist = dist

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r}, dist={self.dist!r})"

    def load(self) -> Any:
        """Import the module the value names and return it, or the attribute after its ``:``.

        :raises ValueError: the value is not ``module[:attr]``.
        """
        m = _VALUE.fullmatch(self.value)
        if m is None:
            raise ValueError(f"entry point {self.name} = {self.value!r}: expected module or module:attribute")
        obj = importlib.import_module(m["module"])
        for part in m["attr"].split(".") if m["attr"] else ():
            obj = getattr(obj, part)
        return obj


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_dirs() -> list[tuple[str, str]] | None:
    """``(normalized name, directory)`` of each installed distribution, the first of each name only.

    ``None`` when a ``sys.path`` entry is an archive: :mod:`importlib.metadata` reads those.
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in sys.path:
        root = entry or "."
        try:
            names = os.listdir(root)
        except NotADirectoryError:
            return None
        except OSError:
            continue
        for child in names:
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            key = _normalize(low.rpartition(".")[0].partition("-")[0])
            if key in seen:
                continue
            seen.add(key)
            found.append((key, os.path.join(root, child)))
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _headers(info_dir: str) -> dict[str, str]:
    """The first ``Name`` and ``Version`` of a distribution's core metadata (``METADATA``, or ``PKG-INFO``)."""
    out: dict[str, str] = {}
    for fname in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info_dir, fname), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version") and key not in out:
                        out[key] = value.strip()
            return out
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def _parse(text: str, group: str, dist: str) -> list[EntryPoint]:
    out: list[EntryPoint] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == group:
            name, sep, value = line.partition("=")
            if sep:
                out.append(EntryPoint(name.strip(), value.strip(), group, dist))
    return out


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` of every installed distribution, in ``sys.path`` order."""
    dirs = _metadata_dirs()
    if dirs is None:
        import importlib.metadata as md

        return [EntryPoint(ep.name, ep.value, group, ep.dist.name if ep.dist is not None else "?")
                for ep in md.entry_points(group=group)]
    out: list[EntryPoint] = []
    for _key, info_dir in dirs:
        text = _read(os.path.join(info_dir, "entry_points.txt"))
        if text is None or f"[{group}]" not in text.replace(" ", ""):
            continue
        out.extend(_parse(text, group, _headers(info_dir).get("Name", "?")))
    return out


def version(dist: str) -> str:
    """The version of installed distribution ``dist`` (any spelling of its name).

    :raises LookupError: no such distribution is installed.
    """
    dirs = _metadata_dirs()
    if dirs is None:
        import importlib.metadata as md

        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            raise LookupError(f"distribution {dist}: not installed") from None
    want = _normalize(dist)
    for key, info_dir in dirs:
        if key == want:
            found = _headers(info_dir).get("Version")
            if found is not None:
                return found
    raise LookupError(f"distribution {dist}: not installed")
