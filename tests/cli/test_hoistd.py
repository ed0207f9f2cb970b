"""hoistd as a real process: start on a temp root, report plugins, stop on SIGTERM cleanly; failure modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def write_config(tmp: Path, extra: str = "", enabled: list[str] | None = None, required: list[str] | None = None) -> Path:
    enabled = enabled if enabled is not None else ["hoist.content.v1.local", "hoist.metadata.v1.sqlite",
                                                   "hoist.runtime.v1.builtin", "hoist.service.v1.execution",
                                                   "hoist.snapshotter.v1.native"]
    required = required if required is not None else ["hoist.content.v1.local"]
    p = tmp / "hoistd.toml"
    p.write_text(
        f'root = "{tmp / "root"}"\nstate = "{tmp / "state"}"\n'
        f"enabled_plugins = {enabled!r}\nrequired_plugins = {required!r}\n".replace("'", '"')
        + f'[grpc]\naddress = "{tmp / "hoistd.sock"}"\n' + extra)
    return p


def start(config: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([BIN / "hoistd", "--config", config, *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


DAEMON_PLUGINS = ["hoist.content.v1.local", "hoist.metadata.v1.sqlite", "hoist.runtime.v1.builtin",
                  "hoist.service.v1.execution", "hoist.snapshotter.v1.native", "hoist.grpc.v1.version", "hoist.grpc.v1.introspection",
                  "hoist.grpc.v1.content", "hoist.grpc.v1.namespaces"]


@pytest.fixture
def daemon(tmp_path):
    cfg = write_config(tmp_path, enabled=DAEMON_PLUGINS)
    log = tmp_path / "hoistd.log"
    proc = start(cfg, log=log)
    sock = tmp_path / "hoistd.sock"
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        yield proc, sock, log, cfg
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hoistd_serves_then_stops_on_sigterm(daemon):
    proc, sock, log, _ = daemon
    assert sock.is_socket()
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not sock.exists()
    text = log.read_text()
    assert "hoist.content.v1.local: ok" in text
    assert "hoist.runtime.v1.builtin: ok" in text
    assert f"hoistd serving on {sock}" in text
    assert "hoistd stopping" in text


def test_plugins_over_the_socket_with_hoist_and_ctr(daemon):
    proc, sock, _, _ = daemon
    r = subprocess.run([BIN / "hoist", "--address", sock, "plugins", "ls"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert ["hoist.content.v1", "local", "ok"] in rows
    assert ["hoist.grpc.v1", "introspection", "ok"] in rows
    assert len(rows) == len(DAEMON_PLUGINS)
    c = subprocess.run(["ctr", "--address", sock, "plugins", "ls"], capture_output=True, text=True, timeout=60)
    assert c.returncode == 0, c.stderr
    ctr_rows = [line.split() for line in c.stdout.splitlines()[1:]]
    assert ["hoist.runtime.v1", "builtin", "-", "ok"] in ctr_rows
    v = subprocess.run(["ctr", "--address", sock, "version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    from hoist.version import describe

    assert f"Version:  {describe()}" in v.stdout.split("Server:")[1]


def test_hoistd_stops_on_sigint_too(daemon):
    proc, sock, _, _ = daemon
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert not sock.exists()


def test_second_daemon_on_same_socket_is_refused(daemon, tmp_path):
    _, sock, _, cfg = daemon
    r = subprocess.run([BIN / "hoistd", "--config", cfg], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"hoistd: {sock}: another process is already serving on this socket"
    assert sock.exists()


def test_stale_socket_is_replaced(tmp_path):
    import socket as pysocket

    sock = tmp_path / "hoistd.sock"
    s = pysocket.socket(pysocket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # a socket file nobody listens on, as a crashed daemon leaves behind
    log = tmp_path / "log"
    proc = start(write_config(tmp_path), log=log)
    try:
        wait_for(lambda: "hoistd serving" in log.read_text() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_required_plugin_failure_stops_the_daemon_with_its_message(tmp_path):
    cfg = write_config(tmp_path, enabled=["hoist.runtime.v1.builtin", "hoist.nothing.v1.here"],
                       required=["hoist.nothing.v1.here"])
    r = subprocess.run([BIN / "hoistd", "--config", cfg], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "hoistd: hoist.nothing.v1.here: required plugin error: not installed "
        "(no builtin and no entry point named hoist.nothing.v1.here in group hoist.plugins)")
    assert not (tmp_path / "hoistd.sock").exists()


def test_broken_plugin_config_fails_that_plugin_only(tmp_path):
    cfg = write_config(tmp_path, extra='[plugins."hoist.runtime.v1.builtin"]\nkill_timeout = "soon"\n')
    env = dict(os.environ)
    r = subprocess.run([BIN / "hoist", "--config", cfg, "plugins", "ls"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    rows = {tuple(line.split()[:2]): line.split()[2] for line in r.stdout.splitlines()[1:]}
    assert rows[("hoist.content.v1", "local")] == "ok"
    assert rows[("hoist.runtime.v1", "builtin")] == "error"
    assert rows[("hoist.service.v1", "execution")] == "error"
    d = subprocess.run([BIN / "hoist", "--config", cfg, "plugins", "ls", "--detail"], capture_output=True, text=True, timeout=60)
    assert f'Error:         {cfg}: plugins."hoist.runtime.v1.builtin".kill_timeout: expected a number, got a string \'soon\'' in d.stdout
    assert "Error:         requires hoist.runtime.v1: hoist.runtime.v1.builtin failed:" in d.stdout


def test_plugins_ls_lists_type_id_status(tmp_path):
    cfg = write_config(tmp_path)
    r = subprocess.run([BIN / "hoist", "--config", cfg, "plugins", "ls"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "ID", "STATUS"]
    assert [line.split() for line in lines[1:]] == [
        ["hoist.content.v1", "local", "ok"],
        ["hoist.metadata.v1", "sqlite", "ok"],
        ["hoist.runtime.v1", "builtin", "ok"],
        ["hoist.snapshotter.v1", "native", "ok"],
        ["hoist.service.v1", "execution", "ok"],
    ]


def test_cli_errors_are_one_line_and_usage_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is not toml")
    r = subprocess.run([BIN / "hoist", "--config", bad, "plugins", "ls"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"hoist: {bad}: not valid TOML: ")
    u = subprocess.run([BIN / "dist", "no-such-command"], capture_output=True, text=True, timeout=60)
    assert u.returncode == 2
    assert "No such command 'no-such-command'" in u.stderr
    d = subprocess.run([BIN / "hoist", "--debug", "--config", bad, "plugins", "ls"], capture_output=True, text=True, timeout=60)
    assert d.returncode == 1 and "Traceback" in d.stderr


def test_client_mode_follows_flags_then_a_live_default_socket(daemon, tmp_path, monkeypatch):
    from hoist import config as hconfig
    from hoist.cli.common import Globals

    _, sock, _, _ = daemon
    monkeypatch.setattr(hconfig, "DEFAULT_ADDRESS", str(sock))
    assert Globals()._live_default_address() == str(sock)
    assert Globals(root=str(tmp_path / "r"))._live_default_address() is None
    assert Globals(config=str(tmp_path / "c.toml"))._live_default_address() is None
    monkeypatch.setattr(hconfig, "DEFAULT_ADDRESS", str(tmp_path / "nothing.sock"))
    assert Globals()._live_default_address() is None


def test_debug_says_which_mode_and_a_dead_socket_says_how_to_start_hoistd(tmp_path):
    r = subprocess.run([BIN / "dist", "--debug", "--root", tmp_path / "r", "--state", tmp_path / "s", "images", "ls"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"running plugins in-process on root {tmp_path / 'r'}, namespace default" in r.stderr
    dead = tmp_path / "dead.sock"
    d = subprocess.run([BIN / "dist", "--address", dead, "images", "ls"], capture_output=True, text=True, timeout=60)
    assert d.returncode == 1
    assert d.stderr == (f"dist: {dead}: nothing is serving on this socket; start it with "
                        f"`hoistd --address {dead}`, or drop --address to run in-process\n")
