"""hoistd's TOML config: top-level keys, errors that name the file and key, default/dump round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hoist import config as hconfig
from hoist.errors import ConfigError

BIN = Path(sys.executable).parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hoistd.toml"
    p.write_text(text)
    return p


def test_full_config_parses(tmp_path):
    p = write(tmp_path, """
version = 1
root = "/srv/hoist"
state = "/run/h"
enabled_plugins = ["hoist.content.v1.local"]
required_plugins = []
[grpc]
address = "/run/h/h.sock"
gid = 5
[plugins."hoist.content.v1.local"]
""")
    cfg = hconfig.load(p)
    assert (cfg.root, cfg.state, cfg.grpc.address, cfg.grpc.gid, cfg.grpc.uid) == ("/srv/hoist", "/run/h", "/run/h/h.sock", 5, 0)
    assert cfg.enabled_plugins == ("hoist.content.v1.local",)
    assert cfg.required_plugins == ()
    assert cfg.with_overrides(root="/x", address="/y").grpc.address == "/y"


@pytest.mark.parametrize("text, message", [
    ("version = [", "not valid TOML: "),
    ("colour = 1", "colour: unknown key (known keys: enabled_plugins, grpc, plugins, required_plugins, root, state, version)"),
    ("version = 2", "version: expected 1, got 2"),
    ("root = 5", "root: expected a string, got an integer 5"),
    ("enabled_plugins = \"hoist.content.v1.local\"", "enabled_plugins: expected an array of strings, got a string 'hoist.content.v1.local'"),
    ("enabled_plugins = [1]", "enabled_plugins[0]: expected a string, got an integer 1"),
    ("[grpc]\naddres = \"/x\"", "grpc.addres: unknown key (known keys: address, gid, transport, uid)"),
    ("[grpc]\ntransport = \"h2\"", "grpc: transport: expected one of 'hoist', 'grpcio', got 'h2'"),
    ("[grpc]\ngid = \"wheel\"", "grpc.gid: expected an integer, got a string 'wheel'"),
    ("plugins = [\"a.b.c\"]", "plugins: expected tables [plugins.\"<uri>\"], got an array (the list of plugins to load is enabled_plugins)"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        hconfig.load(p)
    assert str(e.value).startswith(f"{p}: {message}")
    assert "\n" not in str(e.value).strip()


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config: No such file or directory"):
        hconfig.load(tmp_path / "nope.toml")


def test_hoistd_rejects_bad_config_with_one_line(tmp_path):
    p = write(tmp_path, "root = 5\n")
    r = subprocess.run([BIN / "hoistd", "--config", p], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == f"hoistd: {p}: root: expected a string, got an integer 5\n"


def test_default_config_is_accepted_as_is_and_dump_reflects_overrides(tmp_path):
    r = subprocess.run([BIN / "hoistd", "config", "default"], capture_output=True, text=True, timeout=60, check=True)
    p = write(tmp_path, r.stdout)
    cfg = hconfig.load(p)
    assert cfg.root == "/var/lib/hoist" and cfg.grpc.address == "/run/hoist/hoistd.sock"
    assert "hoist.content.v1.local" in cfg.enabled_plugins
    assert '[plugins."hoist.content.v1.local"]' in r.stdout
    d = subprocess.run([BIN / "hoistd", "--config", p, "--root", str(tmp_path / "r"), "config", "dump"],
                       capture_output=True, text=True, timeout=60, check=True)
    dumped = hconfig.parse(d.stdout, "dump")
    assert dumped.root == str(tmp_path / "r")
    assert dumped.enabled_plugins == cfg.enabled_plugins
    assert dumped.plugin_tables == cfg.plugin_tables
