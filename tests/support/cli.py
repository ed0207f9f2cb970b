"""Hoist's commands as a user runs them: the installed console scripts, an environment on a temp root, configs.

Every test that runs ``dist``, ``hoist`` or ``hoistd`` as a process goes through these helpers, so each
command starts exactly as it does for a user (the console script of this interpreter's environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Where this interpreter's console scripts are.
BIN = Path(sys.executable).parent
DIST = str(BIN / "dist")
HOIST = str(BIN / "hoist")
HOISTD = str(BIN / "hoistd")

#: Core builtins a full in-process installation enables: metadata and both snapshotters.
LOCAL_BUILTINS = ("hoist.metadata.v1.sqlite", "hoist.snapshotter.v1.native", "hoist.snapshotter.v1.overlayfs")


def local_env(base: Path, **extra: str) -> dict[str, str]:
    """The environment for commands running their plugins in-process on ``base/root`` and ``base/state``.

    No daemon address or config file is inherited; ``BIN`` comes first on ``PATH`` (for docs examples that
    run ``dist`` by name).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HOIST_ADDRESS", "HOIST_CONFIG", "HOIST_NAMESPACE")}
    env.update(HOIST_ROOT=str(base / "root"), HOIST_STATE=str(base / "state"),
               PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    env.update(extra)
    return env


def config_env(config: Path) -> dict[str, str]:
    """The environment for commands configured by the TOML file ``config`` (its root and state)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOIST_ADDRESS", "HOIST_ROOT", "HOIST_STATE", "HOIST_NAMESPACE")}
    env.update(HOIST_CONFIG=str(config), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return env


def run_command(program: str, env: Mapping[str, str] | None, *args: str | Path, input: bytes | str | None = None,
                text: bool = True, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``program args…`` with stdin from ``input`` (``/dev/null`` without); output decoded when ``text``."""
    data = input.encode() if isinstance(input, str) else input
    r = subprocess.run([program, *map(str, args)], env=env, input=data, capture_output=True, timeout=timeout,
                       cwd=cwd, stdin=subprocess.DEVNULL if data is None else None)
    if not text:
        return r
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))


def run_dist(env: Mapping[str, str] | None, *args: str | Path, **kw: object) -> subprocess.CompletedProcess:
    """The ``dist`` console script (see :func:`run_command` for the keywords)."""
    return run_command(DIST, env, *args, **kw)  # type: ignore[arg-type]


def run_hoist(env: Mapping[str, str] | None, *args: str | Path, **kw: object) -> subprocess.CompletedProcess:
    """The ``hoist`` console script (see :func:`run_command` for the keywords)."""
    return run_command(HOIST, env, *args, **kw)  # type: ignore[arg-type]


def config_text(base: Path, plugins: Iterable[str], *, required: Iterable[str] = (), grpc_address: Path | None = None,
                plugin_config: Mapping[str, str] | None = None, transport: str | None = None) -> str:
    """A Hoist TOML config with root and state under ``base``, ``plugins`` enabled, and per-plugin tables.

    ``plugin_config`` maps a plugin URI to the body of its ``[plugins."<uri>"]`` table.
    """
    text = (
        "version = 1\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        f"enabled_plugins = {json.dumps(list(plugins))}\n"
        f"required_plugins = {json.dumps(list(required))}\n"
    )
    if grpc_address is not None:
        text += f'[grpc]\naddress = "{grpc_address}"\ngid = {os.getgid()}\n'
        if transport is not None:
            text += f'transport = "{transport}"\n'
    for uri, body in (plugin_config or {}).items():
        text += f'[plugins."{uri}"]\n{body.rstrip()}\n'
    return text


def write_config(path: Path, base: Path, plugins: Iterable[str], **kw: object) -> Path:
    """Write :func:`config_text` to ``path`` and return it."""
    path.write_text(config_text(base, plugins, **kw))  # type: ignore[arg-type]
    return path


def example_steps(doc: Path, *, joined: bool = True) -> list[tuple[str, list[str]]]:
    """The shell commands of the ``### Example`` block of ``doc``, each with the ``#`` lines after it.

    With ``joined``, lines ending in ``\\`` continue on the next one and a ``#`` line loses only its ``#``
    (then stripped); without, every non-blank line is a command and a ``# `` prefix is dropped.
    """
    text = doc.read_text()
    block = text.split("### Example", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    pending = ""
    for line in block.splitlines():
        if line.startswith("#"):
            steps[-1][1].append(line[1:].strip() if joined else line[2:] if line.startswith("# ") else line[1:])
            continue
        if not joined:
            if line.strip():
                steps.append((line, []))
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        steps.append((pending, []))
        pending = ""
    return steps


def run_example_steps(steps: list[tuple[str, list[str]]], cwd: Path,
                      env: Mapping[str, str]) -> Iterable[tuple[str, list[str], str]]:
    """Run each step of :func:`example_steps` with bash (the block's ``export`` lines before each one).

    A step whose first expected line is ``-> exit N: MESSAGE…`` must exit ``N`` with stderr starting with
    MESSAGE (up to ``…``); every other step must exit 0 and is yielded as ``(command, expected, stdout)``
    for the caller to compare.
    """
    exports = "; ".join(cmd for cmd, _ in steps if cmd.startswith("export "))
    for cmd, expect in steps:
        if cmd.startswith("export "):
            continue
        r = subprocess.run(["bash", "-c", f"{exports}; {cmd}"], cwd=cwd, env=dict(env), capture_output=True, timeout=120)
        out, err = r.stdout.decode(), r.stderr.decode()
        if expect and expect[0].startswith("-> exit "):
            code, _, msg = expect[0][len("-> exit "):].partition(": ")
            assert r.returncode == int(code), (cmd, err)
            assert err.startswith(msg.split("…")[0]), (cmd, err)
            continue
        assert r.returncode == 0, (cmd, err)
        yield cmd, expect, out
