"""Packaging drift: every plugin distribution has the same shape, version and pin as core, one entry point, an install line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hoist.config import Config
from hoist.host import PluginHost

REPO = Path(__file__).resolve().parents[1]
CORE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PLUGIN_DIRS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").exists())


def test_layout_has_the_four_plugins():
    assert PLUGIN_DIRS == ["content_local", "execution", "resolver_docker", "runtime_builtin"]


@pytest.mark.parametrize("name", PLUGIN_DIRS)
def test_plugin_distribution_matches_core(name):
    d = REPO / "plugins" / name
    project = tomllib.loads((d / "pyproject.toml").read_text())["project"]
    assert project["name"] == "hoist-" + name.replace("_", "-")
    assert project["version"] == CORE["version"], "plugin version must move in lockstep with core"
    assert project["dependencies"] == [f"hoist=={CORE['version']}"]
    eps = project["entry-points"]["hoist.plugins"]
    assert len(eps) == 1
    (uri, target), = eps.items()
    assert target == f"hoist_{name}.plugin"
    assert (d / f"hoist_{name}" / "plugin.py").is_file()
    readme = (d / "README.md").read_text()
    assert uri in readme and "| key |" in readme, "README must name the URI and carry a table of config keys"
    # The entry point registers exactly the URI it is installed under.
    host = PluginHost(Config(enabled_plugins=(uri,), required_plugins=()), builtins={})
    host._register(uri, [s for s in __import__("hoist.host", fromlist=["x"]).available_plugins({})[uri]])
    assert host.results[uri].registration is not None, host.results[uri].reason()
    assert host.results[uri].registration.uri == uri


def test_one_install_line_covers_core_and_every_plugin():
    make = (REPO / "Makefile").read_text()
    plugins = re.search(r"^PLUGINS := (.+)$", make, re.M).group(1).split()
    assert sorted(plugins) == PLUGIN_DIRS
    assert re.search(r"^INSTALL_EDITABLE := -e '\.\[test\]' \$\(foreach p,\$\(PLUGINS\),-e plugins/\$\(p\)\)$", make, re.M)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "exec make test" in (REPO / ".ci" / "run").read_text()
