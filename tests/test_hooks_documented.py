"""Meta-tests for docs/plugins.md: every hookspec is documented with its exact signature and has a test; the example runs."""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

from hoist import config as hconfig
from hoist import hookspecs
from hoist.host import PluginHost

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "plugins.md").read_text()
TESTS = REPO / "tests"


def hook_names() -> list[str]:
    return sorted(name for name, fn in vars(hookspecs).items()
                  if callable(fn) and hasattr(fn, "hoist_spec"))


def test_there_are_hooks():
    assert hook_names() == ["hoist_register_plugins"]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_signature(name):
    fn = getattr(hookspecs, name)
    params = ", ".join(inspect.signature(fn).parameters)
    assert f"### `{name}({params})`" in DOC, f"docs/plugins.md has no section for {name}({params})"
    section = DOC.split(f"### `{name}({params})`", 1)[1].split("\n## ", 1)[0]
    hints = inspect.get_annotations(fn)
    typed = ", ".join(f"{p}: {hints[p]}" for p in inspect.signature(fn).parameters)
    assert f"def {name}({typed}) -> {hints['return']}: ..." in section
    for part in ("**When it runs:**", "**Contract:**", "**Example:**"):
        assert part in section, f"{name}: section lacks {part}"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_test(name):
    here = Path(__file__).resolve()
    users = [p for p in TESTS.rglob("test_*.py") if p.resolve() != here and name in p.read_text()
             and re.search(r"^\s*def test_", p.read_text(), re.M)]
    assert users, f"no test under tests/ exercises {name}"


# -- the example plugin of docs/plugins.md, loaded by the real host ------------------------------------

URI = "hoist.example.v1.greeter"


def _example_code() -> str:
    return re.search(r"```python\n# hoist_greeter/plugin.py\n(.*?)```", DOC, re.S).group(1)


@pytest.fixture
def greeter_module(tmp_path, monkeypatch) -> str:
    pkg = tmp_path / "mods" / "hoist_greeter_doc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(_example_code())
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield "hoist_greeter_doc.plugin"
    for mod in [m for m in sys.modules if m.startswith("hoist_greeter_doc")]:
        del sys.modules[mod]


def _host(tmp_path: Path, module: str, table: str = "") -> PluginHost:
    text = textwrap.dedent(f"""
        root = "{tmp_path / 'root'}"
        state = "{tmp_path / 'state'}"
        enabled_plugins = ["hoist.content.v1.local", "{URI}"]
        required_plugins = []
    """) + table
    path = tmp_path / "config.toml"
    path.write_text(text)
    host = PluginHost(hconfig.load(path), builtins={URI: module})
    host.load()
    return host


def test_the_example_plugin_registers_reads_its_config_and_gets_its_dependency(greeter_module, tmp_path):
    with _host(tmp_path, greeter_module, f'[plugins."{URI}"]\ngreeting = "good morning"\n') as host:
        result = host.results[URI]
        assert result.status == "ok"
        assert [r.uri for r in host.ordered()] == ["hoist.content.v1.local", URI]  # requires: content first
        greeter = host.get("hoist.example.v1")
        assert greeter.content is host.get("hoist.content.v1")
    assert (tmp_path / "root" / URI / "greeting.txt").read_text() == "good morning\n"


def test_the_documented_config_errors_are_what_the_host_says(greeter_module, tmp_path):
    for table, shown in [('colour = "red"\n', "colour: unknown key (known keys: enabled, greeting)"),
                         ("greeting = 3\n", "greeting: expected a string, got an integer 3")]:
        with _host(tmp_path, greeter_module, f'[plugins."{URI}"]\n{table}') as host:
            r = host.results[URI]
            assert r.status == "error"
            line = f'{tmp_path / "config.toml"}: plugins."{URI}".{shown}'
            assert r.reason() == line
            assert f'/etc/hoist/config.toml: plugins."{URI}".{shown}' in DOC


def test_the_example_plugin_skips_when_its_config_says_so(greeter_module, tmp_path):
    with _host(tmp_path, greeter_module, f'[plugins."{URI}"]\nenabled = false\n') as host:
        r = host.results[URI]
        assert (r.status, r.reason()) == ("skip", "disabled by its config")
        assert host.results["hoist.content.v1.local"].ok


def test_registering_twice_is_an_error_of_that_plugin(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "hoist_twice_doc.py").write_text(textwrap.dedent(f"""
        from hoist.plugin import Registration, hookimpl
        @hookimpl
        def hoist_register_plugins(register):
            for _ in range(2):
                register(Registration(type="hoist.example.v1", id="greeter", init=lambda ic: None))
    """))
    monkeypatch.syspath_prepend(str(mods))
    with _host(tmp_path, "hoist_twice_doc") as host:
        r = host.results[URI]
        assert (r.status, r.reason()) == ("error", "must register exactly one plugin, registered 2")
        assert host.results["hoist.content.v1.local"].ok
