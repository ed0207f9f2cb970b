"""Tasks outlive the process that created them: a new runtime instance on the same dirs finds them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hoist.runtime import Status
from hoist_runtime_builtin.runtime import BuiltinRuntime, BuiltinRuntimeConfig

CREATOR = r"""
import os, signal, sys
from pathlib import Path
from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.runtime import IO, Bundle
from hoist_runtime_builtin.runtime import BuiltinRuntime

root, state, rootfs, task_id, out, script = sys.argv[1:]
rt = BuiltinRuntime(root=Path(root), state=Path(state))
spec = generate_spec(ImageConfig(), SpecOptions(args=["sh", "-c", script]), rootfs=Path(rootfs))
task = rt.create(task_id, Bundle(spec=spec, rootfs=Path(rootfs)), IO(stdout=out))
print(task.start(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the way a daemon crashes: nothing cleaned up
"""


def create_in_a_process_that_dies(tmp_path: Path, rootfs: Path, task_id: str, script: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CREATOR, str(tmp_path / "root"), str(tmp_path / "state"), str(rootfs), task_id,
         str(tmp_path / f"{task_id}.out"), script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return int(proc.stdout)


def new_runtime(tmp_path: Path) -> BuiltinRuntime:
    return BuiltinRuntime(root=tmp_path / "root", state=tmp_path / "state", config=BuiltinRuntimeConfig(kill_timeout=0.5))


def test_a_running_task_survives_its_creator_and_is_found_again(tmp_path, rootfs):
    pid = create_in_a_process_that_dies(tmp_path, rootfs, "survivor", "echo started; exec sleep 100")
    assert Path(f"/proc/{pid}").exists()

    rt = new_runtime(tmp_path)
    [task] = rt.tasks()
    assert (task.namespace, task.id) == ("default", "survivor")
    st = rt.get("survivor").state()
    assert (st.status, st.pid, st.exit_status) == (Status.RUNNING, pid, None)
    assert task.pids() == [pid]
    # running is not the same as having written: let the shell reach its echo before it is killed
    out = tmp_path / "survivor.out"
    deadline = time.monotonic() + 30
    while not out.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    task.kill(signal.SIGKILL)
    assert task.wait(30).status == 137
    assert out.read_text() == "started\n"

    again = new_runtime(tmp_path).get("survivor")
    st = again.state()
    assert (st.status, st.exit_status) == (Status.STOPPED, 137)
    assert again.delete().status == 137
    assert new_runtime(tmp_path).tasks() == []
    assert not Path(f"/proc/{pid}").exists()


def test_a_task_that_finished_with_nobody_watching_keeps_its_exit_status(tmp_path, rootfs):
    create_in_a_process_that_dies(tmp_path, rootfs, "finisher", "sleep 0.2; echo bye; exit 5")
    task = new_runtime(tmp_path).get("finisher")
    ex = task.wait(30)
    assert ex.status == 5
    st = new_runtime(tmp_path).get("finisher").state()
    assert (st.status, st.exit_status, st.exited_at) == (Status.STOPPED, 5, ex.exited_at)
    assert (tmp_path / "finisher.out").read_text() == "bye\n"
    task.delete()


def test_a_task_whose_supervisor_was_killed_reports_an_unknown_status(tmp_path, rootfs):
    pid = create_in_a_process_that_dies(tmp_path, rootfs, "orphan", "exec sleep 100")
    rt = new_runtime(tmp_path)
    task = rt.get("orphan")
    shim = int(__import__("json").loads((task.bundle / "shim.json").read_text())["pid"])
    os.kill(shim, signal.SIGKILL)
    task.kill(signal.SIGKILL)
    ex = task.wait(30)
    assert ex.status == 255
    assert task.state().status is Status.STOPPED
    task.delete()
    assert not task.bundle.exists()
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
