"""Documentation meta-tests: every command and every plugin config key is documented."""

from __future__ import annotations

import importlib
from pathlib import Path

import attrs
import click
import pytest

from hoist.cli.dist import dist
from hoist.cli.hoist import hoist
from hoist.cli.hoistd import hoistd
from hoist.host import available_plugins
from hoist.plugin import Registration

REPO = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def command_paths(group: click.Command, prefix: str) -> list[str]:
    out = [prefix]
    if isinstance(group, click.Group):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            out += command_paths(group.get_command(ctx, name), f"{prefix} {name}")
    return out


ALL_COMMANDS = command_paths(dist, "dist") + command_paths(hoist, "hoist") + command_paths(hoistd, "hoistd")


@pytest.mark.parametrize("path", ALL_COMMANDS)
def test_every_command_is_documented(path):
    assert path in DOCS, f"`{path}` is not mentioned in README.md or docs/"


def registrations() -> list[tuple[Registration, Path | None]]:
    out = []
    for uri, sources in sorted(available_plugins().items()):
        src = sources[0]
        mod = importlib.import_module(src.target)
        found: list[Registration] = []
        mod.hoist_register_plugins(register=found.append)
        readme = None
        if src.dist:
            top = Path(mod.__file__).resolve().parents[1]
            readme = top / "README.md" if (top / "README.md").exists() else None
        out.append((found[0], readme))
    return out


@pytest.mark.parametrize("reg, readme", registrations(), ids=lambda x: getattr(x, "uri", ""))
def test_every_plugin_config_key_is_documented(reg, readme):
    if reg.config is None:
        return
    text = readme.read_text() if readme is not None else DOCS
    for f in attrs.fields(reg.config):
        assert f"`{f.name}`" in text, f"{reg.uri}: config key {f.name} is not in {readme or 'docs/'}"
