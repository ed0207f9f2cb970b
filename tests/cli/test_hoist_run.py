"""``hoist run`` and ``hoist containers …`` as a user runs them: in-process on a root, and against hoistd.

Real parts: the test registry's busybox images, the builtin runtime, the overlay or native
snapshotter, a real ``hoistd`` process restarted under a running container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist.builtins import BUILTINS
from support.cli import HOIST, config_env, run_dist, run_hoist, write_config
from support.hoistd import HoistdProcess

PLUGINS = ("hoist.content.v1.local", "hoist.resolver.v1.docker", "hoist.runtime.v1.builtin",
           "hoist.service.v1.execution", *BUILTINS)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = write_config(tmp_path / "config.toml", tmp_path, PLUGINS, required=["hoist.service.v1.execution"],
                          grpc_address=tmp_path / "hoistd.sock",
                          plugin_config={"hoist.content.v1.local": "fsync = false",
                                         "hoist.runtime.v1.builtin": "kill_timeout = 1.0"})
    return config_env(config)


def hoist(env: dict[str, str], *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_hoist(env, *args, timeout=timeout, input=input)


@pytest.fixture
def cleanup(env: dict[str, str]) -> Iterator[list[str]]:
    """Containers named here are force-deleted after the test (in-process) when they are still there."""
    ids: list[str] = []
    yield ids
    left = set(hoist(env, "containers", "ls", "-q").stdout.split()) & set(ids)
    if left:
        hoist(env, "containers", "rm", "-f", *sorted(left))


def test_run_prints_the_images_output_and_exits_with_its_status(registry, env, cleanup) -> None:
    ref = registry.ref("test/busybox:1")
    r = hoist(env, "run", "--plain-http", "--progress", "plain", ref, "hello")
    cleanup.append("hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from busybox\n"
    assert f"pulling {ref}" in r.stderr

    # the unpacked layers are referenced from the image config's record in the namespace, so GC keeps them
    doc = json.loads(run_dist(env, "images", "inspect", ref).stdout)
    info = json.loads(run_dist(env, "content", "info", doc["document"]["config"]["digest"]).stdout)
    assert [k for k in info.get("Labels") or {} if k.startswith("containerd.io/gc.ref.snapshot.")], info

    r = hoist(env, "containers", "ls")
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows == [["ID", "IMAGE", "STATUS", "PID", "EXIT", "RUNTIME"],
                    ["hello", ref, "stopped", rows[1][3], "0", "hoist.runtime.v1.builtin"]]

    # the image is local now: no second pull; stderr and the exit code come through; --rm removes it
    r = hoist(env, "run", "--rm", ref, "fails", "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "to-out\n", "to-err\n")
    r = hoist(env, "containers", "get", "fails")
    assert r.returncode == 1 and r.stderr == "hoist: container fails: not found in namespace default\n"


def test_run_with_overrides(registry, env) -> None:
    ref = registry.ref("test/busybox:1")
    script = 'echo "$GREETING"; pwd; id; hostname; echo $HOME'
    r = hoist(env, "run", "--rm", "--plain-http", "--progress", "none", "-e", "GREETING=hi there", "--cwd", "/etc",
              "--user", "nobody", "--hostname", "box1", ref, "ov", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hi there", "/etc", "uid=65534(nobody) gid=65534(nogroup)",
                                     "box1", "/"]
    # defaults: the image's user and command, the container id as hostname, pid 1, only fds 0-2
    r = hoist(env, "run", "--rm", ref, "defaults", "sh", "-c", "id -u; hostname; echo $$; ls /proc/self/fd")
    assert r.stdout.split() == ["0", "defaults", "1", "0", "1", "2", "3"], r.stderr  # 3: ls's own directory fd
    # read-only root filesystem and no network
    r = hoist(env, "run", "--rm", "--read-only", "--net", "none", ref, "ro", "sh", "-c",
              "touch /x 2>/dev/null && echo writable || echo read-only; ls /sys/class/net")
    assert r.stdout.split() == ["read-only", "lo"], r.stderr


def test_run_errors_are_one_line(registry, env) -> None:
    ref = registry.ref("test/busybox:1")
    r = hoist(env, "run", "--plain-http", "--progress", "none", ref, "../../tmp/x")
    assert r.returncode == 1
    assert r.stderr.startswith("hoist: invalid container id '../../tmp/x': ") and r.stderr.count("\n") == 1
    r = hoist(env, "run", "--rm", "--user", "4294967296", ref, "baduser")
    assert (r.returncode, r.stderr) == (1, "hoist: uid 4294967296: out of range (0 to 2147483647)\n")
    r = hoist(env, "run", "--rm", "--cwd", "/proc/self/fd/3", ref, "badcwd")
    assert (r.returncode, r.stderr) == (1, "hoist: working directory /proc/self/fd/3: inside /proc, refused\n")
    r = hoist(env, "containers", "ls", "-q")
    assert r.stdout == ""


def test_whiteouts_are_honoured_in_the_containers_root(registry, env) -> None:
    for name, script, expected in [
        ("test/whiteout:1", "ls /etc", "group\nkept.txt\npasswd\n"),
        ("test/opaque:1", "find /data | sort", "/data\n/data/new\n"),
    ]:
        r = hoist(env, "run", "--rm", "--plain-http", "--progress", "none", registry.ref(name), "w", "sh", "-c", script)
        assert (r.returncode, r.stdout) == (0, expected), r.stderr


@pytest.fixture
def hoistd(env: dict[str, str], tmp_path: Path) -> Iterator[HoistdProcess]:
    d = HoistdProcess(tmp_path, config=Path(env["HOIST_CONFIG"]), address=tmp_path / "hoistd.sock", env=env)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_against_hoistd_a_container_survives_a_restart(registry, env, hoistd, cleanup) -> None:
    ref = registry.ref("test/busybox:1")
    remote = dict(env, HOIST_ADDRESS=str(hoistd.address))
    r = hoist(remote, "run", "--plain-http", "--progress", "none", ref, "hello")
    cleanup.append("hello")
    assert (r.returncode, r.stdout) == (0, "hello from busybox\n"), r.stderr

    r = hoist(remote, "run", "-d", ref, "long", "sh", "-c", "echo started; trap 'echo bye; exit 3' TERM; "
              "while true; do sleep 0.1; done")
    cleanup.append("long")
    assert (r.returncode, r.stdout) == (0, "long\n"), r.stderr
    before = json.loads(hoist(remote, "containers", "get", "long").stdout)
    assert before["status"] == "running" and before["pid"] > 0
    os.kill(before["pid"], 0)

    hoistd.stop()
    hoistd.start()
    after = json.loads(hoist(remote, "containers", "get", "long").stdout)
    assert (after["status"], after["pid"], after["exit_status"]) == ("running", before["pid"], None)

    r = hoist(remote, "containers", "rm", "long")
    assert (r.returncode, r.stderr) == (1, "hoist: container long: is running; kill it first, or delete it with force\n")
    assert hoist(remote, "containers", "kill", "long").returncode == 0
    r = hoist(remote, "containers", "wait", "long")
    assert (r.returncode, r.stdout) == (0, "3\n"), r.stderr
    r = hoist(remote, "containers", "logs", "long")
    assert r.stdout == "started\nbye\n"
    r = hoist(remote, "containers", "kill", "long")
    assert (r.returncode, r.stderr) == (1, "hoist: container long: process already finished\n")
    assert hoist(remote, "containers", "rm", "long").stdout == "long\n"
    assert hoist(remote, "containers", "ls", "-q").stdout == "hello\n"


def test_events_stream_shows_a_containers_life(registry, env, hoistd) -> None:
    ref = registry.ref("test/busybox:1")
    remote = dict(env, HOIST_ADDRESS=str(hoistd.address))
    assert hoist(remote, "run", "--plain-http", "--progress", "none", "--rm", ref, "warm", "true").returncode == 0
    events = subprocess.Popen([HOIST, "--debug", "containers", "events", "--count", "4"], env=remote,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert events.stderr is not None
        for line in events.stderr:  # --debug says when the daemon has subscribed the stream
            if "containers events: subscribed" in line:
                break
        r = hoist(remote, "run", "--rm", ref, "ev", "sh", "-c", "exit 5")
        assert r.returncode == 5, r.stderr
        out, err = events.communicate(timeout=30)
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()
    lines = out.splitlines()
    assert [line.split()[1:3] for line in lines] == [["create", "default/ev"], ["start", "default/ev"],
                                                     ["exit", "default/ev"], ["delete", "default/ev"]], err
    assert re.search(r" pid=\d+ exit_status=5$", lines[2]) and lines[3].endswith("exit_status=5")


def test_events_in_process_say_to_use_the_daemon(env) -> None:
    r = hoist(env, "containers", "events")
    assert (r.returncode, r.stderr) == (1, "hoist: events: only hoistd sees every container's events; use --address\n")


DOC = Path(__file__).resolve().parents[2] / "docs" / "containers.md"


def test_the_docs_example_prints_what_the_page_says(registry, env, cleanup) -> None:
    import shlex

    text = DOC.read_text()
    block = re.search(r"## Example\n\n```console\n(.*?)```", text, re.S).group(1)
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    cleanup.extend(["hello", "web", "greet", "fails", "swap"])
    last = 0
    for step, (command, expected) in enumerate(steps):
        if command == "echo $?":
            assert [str(last)] == expected
            continue
        command = command.replace("127.0.0.1:5000", registry.host)
        feed = None
        if " | hoist " in command:  # `printf '…' | hoist …`: the shell makes the input, hoist runs as usual
            producer, command = command.split(" | ", 1)
            feed = subprocess.run(producer, shell=True, capture_output=True, text=True, check=True).stdout
        argv = shlex.split(command)
        assert argv[0] == "hoist"
        r = hoist(env, *argv[1:], input=feed)
        last = r.returncode
        if last != 0:
            nxt = steps[step + 1][0]
            assert nxt == "echo $?", f"{command}: exit {last}: {r.stderr}"
        assert r.stdout.splitlines() == expected, f"{command}: {r.stderr}"


@pytest.mark.parametrize("mode", ["in-process", "hoistd"])
def test_interactive_run_feeds_our_stdin_to_the_container(registry, env, request, mode) -> None:
    ref = registry.ref("test/busybox:1")
    if mode == "hoistd":
        env = dict(env, HOIST_ADDRESS=str(request.getfixturevalue("hoistd").address))
    data = "".join(f"line {i}\n" for i in range(20000))  # 208 kB: more than a pipe holds
    r = hoist(env, "run", "--rm", "-i", "--plain-http", "--progress", "none", ref, "cat1", "sh", "-c",
              "wc -l; echo done", input=data)
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["20000", "done"], "")
    # without -i the container's stdin is empty, whatever ours holds
    r = hoist(env, "run", "--rm", ref, "cat2", "wc", "-c", input=data)
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    r = hoist(env, "run", "-i", "-d", ref, "cat3", "cat")
    assert (r.returncode, r.stderr) == (1, "hoist: --interactive and --detach cannot be used together\n")


@pytest.mark.parametrize("mode", ["in-process", "hoistd"])
def test_logs_follow_streams_until_the_container_exits(registry, env, request, cleanup, mode) -> None:
    ref = registry.ref("test/busybox:1")
    if mode == "hoistd":
        env = dict(env, HOIST_ADDRESS=str(request.getfixturevalue("hoistd").address))
    r = hoist(env, "run", "-d", "--plain-http", "--progress", "none", ref, "ticker", "sh", "-c",
              "for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done; echo bye >&2; exit 4")
    cleanup.append("ticker")
    assert (r.returncode, r.stdout) == (0, "ticker\n"), r.stderr
    proc = subprocess.Popen([HOIST, "containers", "logs", "-f", "ticker"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # arrives while the container is still running
    assert first == "tick 1\n"
    assert json.loads(hoist(env, "containers", "get", "ticker").stdout)["status"] == "running"
    rest, err = proc.stdout.read(), proc.stderr.read()  # (communicate() would skip what readline buffered)
    proc.wait(60)
    assert (proc.returncode, first + rest, err) == (0, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\nbye\n", "")
    # once it has exited, -f prints the whole log and returns at once
    r = hoist(env, "containers", "logs", "--follow", "ticker")
    assert (r.returncode, r.stdout) == (0, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\nbye\n")
