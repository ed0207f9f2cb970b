"""The execution service in-process: a container's life from a real image, restarts, bad input, runtime choice."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hoist.containers import ContainerEvent, CreateOptions
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    UnavailableError,
)
from hoist.runtime import Status
from hoist.snapshots import list_snapshots, namespaced
from hoist.unpack import chain_ids


def service(client):
    return client.plugins_of("hoist.service.v1")["execution"]


def collect(sub, into: list[ContainerEvent]) -> threading.Thread:
    t = threading.Thread(target=lambda: into.extend(sub), daemon=True)
    t.start()
    return t


def test_a_containers_life(open_client, pull, registry) -> None:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    events: list[ContainerEvent] = []
    sub = svc.events(namespace="default")
    reader = collect(sub, events)

    ctr = svc.create("life", CreateOptions(image=ref, labels={"team": "a"}))
    assert (ctr.status, ctr.image, ctr.runtime, ctr.snapshot_key) == (Status.CREATED, ref, "hoist.runtime.v1.builtin", "life")
    assert ctr.args == ["/bin/sh", "-c", "echo hello from busybox"]
    sn = namespaced(c.plugins_of("hoist.snapshotter.v1")[ctr.snapshotter], "default")
    assert sn.stat("life").parent == str(chain_ids(registry.pushed["test/busybox:1"].layout.image.diff_ids)[-1])
    with pytest.raises(AlreadyExistsError, match="container life: already exists in namespace default"):
        svc.create("life", CreateOptions(image=ref))

    started = svc.start("life")
    assert started.status is Status.RUNNING and started.pid > 0
    with pytest.raises(FailedPreconditionError):
        svc.start("life")
    ex = svc.wait("life", 30)
    assert ex.status == 0
    got = svc.get("life")
    assert (got.status, got.exit_status, got.pid) == (Status.STOPPED, 0, started.pid)
    assert b"".join(svc.logs("life")) == b"hello from busybox\n"
    assert [x.id for x in svc.list("labels.team==a")] == ["life"]
    assert svc.list("status==running") == []

    log = Path(got.log_path)
    assert log.is_file()
    gone = svc.delete("life")
    assert gone.exit_status == 0
    assert not log.exists()
    assert "life" not in [i.name for i in list_snapshots(sn)]
    with pytest.raises(NotFoundError, match="container life: not found in namespace default"):
        svc.get("life")
    sub.close()
    reader.join(5)
    assert [(e.type, e.id) for e in events] == [("create", "life"), ("start", "life"), ("exit", "life"), ("delete", "life")]
    assert events[2].exit_status == 0 and events[2].pid == started.pid


def test_kill_wait_and_delete(open_client, pull, tmp_path) -> None:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    out = tmp_path / "out.txt"
    svc.create("k", CreateOptions(image=ref, args=["sh", "-c", "echo up; exec sleep 600"], stdout=str(out)))
    assert svc.get("k").log_path == ""
    svc.start("k")
    with pytest.raises(UnavailableError, match="still running after 0.2s"):
        svc.wait("k", 0.2)
    with pytest.raises(FailedPreconditionError, match="container k: is running; kill it first, or delete it with force"):
        svc.delete("k")
    svc.kill("k", signal.SIGTERM)  # PID 1 without a handler ignores it
    time.sleep(0.2)
    assert svc.get("k").status is Status.RUNNING
    svc.kill("k", signal.SIGKILL)
    assert svc.wait("k", 30).status == 128 + signal.SIGKILL
    with pytest.raises(NotFoundError, match="container k: process already finished"):
        svc.kill("k", signal.SIGTERM)
    with pytest.raises(NotFoundError, match="has no log: its output goes to"):
        svc.logs("k")
    assert out.read_text() == "up\n"
    svc.delete("k")

    # a running container goes with force; a created one simply goes
    svc.create("f", CreateOptions(image=ref, args=["sleep", "600"]))
    svc.start("f")
    assert svc.delete("f", force=True).exit_status == 128 + signal.SIGKILL
    svc.create("never", CreateOptions(image=ref))
    assert svc.delete("never").status is not Status.RUNNING
    assert svc.list() == []


def test_a_running_container_is_found_again_by_a_new_service(open_client, pull) -> None:
    first = open_client()
    ref = pull(first, "test/busybox:1")
    svc = service(first)
    svc.create("long", CreateOptions(image=ref, args=["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done"]))
    pid = svc.start("long").pid
    svc.create("brief", CreateOptions(image=ref, args=["sh", "-c", "exit 4"]))
    svc.start("brief")
    first.close()  # the service is gone; its containers are not
    os.kill(pid, 0)
    time.sleep(0.3)

    second = open_client()
    svc2 = service(second)
    ctr = svc2.get("long")
    assert (ctr.status, ctr.pid) == (Status.RUNNING, pid)
    assert svc2.get("brief").exit_status == 4  # exited while no service watched
    events: list[ContainerEvent] = []
    sub = svc2.events()
    reader = collect(sub, events)
    svc2.kill("long", signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    reader.join(5)
    assert [(e.type, e.id, e.exit_status) for e in events] == [("exit", "long", 3)]
    assert svc2.get("long").exit_status == 3


@pytest.mark.parametrize("bad", ["../../tmp/x", "a/b", "nul\x00id", "x" * 4096, ""])
def test_bad_container_ids_touch_nothing(open_client, pull, tmp_path, bad: str) -> None:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidArgumentError, match="invalid container id"):
        svc.create(bad, CreateOptions(image=ref))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_bad_overrides_and_missing_things(open_client, pull) -> None:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    with pytest.raises(NotFoundError, match=r"image nothere:1: not found in namespace default; pull it first \(dist pull nothere:1\)"):
        svc.create("x", CreateOptions(image="nothere:1"))
    for user in ("2147483648", "4294967296", "-1"):
        with pytest.raises(InvalidArgumentError, match=f"uid {user}: out of range"):
            svc.create("x", CreateOptions(image=ref, user=user))
    with pytest.raises(InvalidArgumentError, match="inside /proc, refused"):
        svc.create("x", CreateOptions(image=ref, cwd="/proc/self/fd/3"))
    with pytest.raises(InvalidArgumentError, match="give exactly one of an image or a snapshot"):
        CreateOptions(image=ref, snapshot="s")
    with pytest.raises(NotFoundError, match="snapshotter zfs: not loaded"):
        svc.create("x", CreateOptions(image=ref, snapshotter="zfs"))
    # nothing of the failed attempts is left: no record, no snapshot
    assert svc.list() == []
    for sid, sn in c.plugins_of("hoist.snapshotter.v1").items():
        assert "x" not in [i.name for i in list_snapshots(namespaced(sn, "default"))], sid


def test_create_from_a_snapshot_and_in_another_namespace(open_client, pull, registry) -> None:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    svc.create("first", CreateOptions(image=ref, snapshotter="native"))  # unpacks into native
    svc.delete("first")
    chain = str(chain_ids(registry.pushed["test/busybox:1"].layout.image.diff_ids)[-1])
    with pytest.raises(InvalidArgumentError, match="no command to run"):
        svc.create("bare", CreateOptions(snapshot=chain, snapshotter="native"))
    svc.create("bare", CreateOptions(snapshot=chain, snapshotter="native", args=["echo", "from a snapshot"]))
    svc.start("bare")
    assert svc.wait("bare", 30).status == 0
    assert b"".join(svc.logs("bare")) == b"from a snapshot\n"
    # namespaces are apart: the same id elsewhere, and the image must be there too
    with pytest.raises(NotFoundError, match="not found in namespace other"):
        svc.create("bare", CreateOptions(image=ref), namespace="other")
    assert [x.id for x in svc.list(namespace="other")] == []


def test_the_configured_runtime_runs_the_containers(open_client, pull, monkeypatch) -> None:
    import hoist.builtins
    import recording_runtime

    monkeypatch.setitem(hoist.builtins.BUILTINS, "hoist.runtime.v1.recording", "recording_runtime")
    plugins = ("hoist.content.v1.local", "hoist.resolver.v1.docker", "hoist.metadata.v1.sqlite",
               "hoist.snapshotter.v1.native", "hoist.runtime.v1.builtin", "hoist.runtime.v1.recording",
               "hoist.service.v1.execution")
    c = open_client(extra='[plugins."hoist.service.v1.execution"]\nruntime = "recording"\n', plugins=plugins)
    ref = pull(c, "test/busybox:1")
    svc = service(c)
    assert svc.runtime_id == "recording"
    ctr = svc.create("third", CreateOptions(image=ref))
    assert ctr.runtime == "hoist.runtime.v1.recording"
    assert recording_runtime.CREATED[-1] == "default/third"
    svc.start("third")
    assert svc.wait("third", 30).status == 0
    assert c.plugins_of("hoist.runtime.v1")["builtin"].tasks() == []
    assert [t.id for t in c.plugins_of("hoist.runtime.v1")["recording"].tasks()] == ["third"]
    svc.delete("third")

    # a runtime that is not loaded is the plugin's error, by name
    with pytest.raises(PluginError, match="runtime hoist.runtime.v1.runc: configured, but not loaded"):
        open_client(extra='[plugins."hoist.service.v1.execution"]\nruntime = "runc"\n', plugins=plugins)
