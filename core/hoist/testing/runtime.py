"""The runtime conformance suite: real busybox containers that every ``hoist.runtime.v1`` runtime must run alike.

A runtime author runs it by subclassing and providing one fixture, ``runtime`` — a fresh runtime on
temp dirs (the suite's ``rootfs``, ``make_rootfs``, ``run`` and ``make_spec`` fixtures build on it)::

    import pytest
    from hoist.testing.runtime import RuntimeSuite
    from my_runtime import MyRuntime

    class TestMyRuntime(RuntimeSuite):
        @pytest.fixture
        def runtime(self, tmp_path):
            rt = MyRuntime(root=tmp_path / "root", state=tmp_path / "state", kill_timeout=0.5)
            yield rt
            for task in rt.tasks():
                task.delete()

The tests need root (namespaces, mounts) and Debian's static busybox at ``/bin/busybox``.  They
check output, exit codes and signals, stdio files and FIFOs, isolation (PID namespace, masked and
read-only paths, capabilities, user and groups, closed fds), bundle mounts, and the errors of bad
ids, missing executables and hostile images.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.runtime import IO, Bundle, Exit, Runtime, Status, Task
from hoist.snapshots import Mount

BUSYBOX = Path("/bin/busybox")
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
GROUP = "root:x:0:\nwheel:x:10:root\napp:x:1000:\nextra:x:2000:app,nobody\nnogroup:x:65534:\n"


def make_rootfs(root: Path) -> Path:
    """A root filesystem with Debian's static busybox, every applet, and a non-root user ``app``."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            os.symlink("busybox", root / "bin" / name)
    for d in ("proc", "sys", "dev", "etc", "root", "srv/data", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    os.chown(root / "home" / "app", 1000, 1000)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "srv" / "data" / "greeting.txt").write_text("hi from the image\n")
    return root


def mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


@attrs.frozen
class Ran:
    """What ``run`` returns: how the task exited and what it wrote to stdout and stderr."""

    exit: Exit
    output: str


def task_runner(runtime: Runtime, rootfs: Path, out_dir: Path) -> Callable[..., Ran]:
    """``run(args, image=ImageConfig(), *, stdin="", **spec_options) -> Ran(exit, output)``: each call creates a
    task on ``rootfs`` (stdout and stderr to a file in ``out_dir``), starts it, waits up to 30 s and deletes it."""
    counter = iter(range(1000))

    def _run(args: list[str] | None, image: ImageConfig = ImageConfig(), *, stdin: str = "", **options: Any) -> Ran:
        n = next(counter)
        out = out_dir / f"out-{n}.txt"
        spec = generate_spec(image, SpecOptions(args=args, **options), rootfs=rootfs)
        task = runtime.create(f"run-{n}", Bundle(spec=spec, rootfs=rootfs), IO(stdin=stdin, stdout=str(out), stderr=str(out)))
        task.start()
        ex = task.wait(30)
        task.delete()
        return Ran(ex, out.read_text() if out.exists() else "")

    return _run


class RuntimeSuite:
    """Conformance tests for a runtime; subclass and provide the ``runtime`` fixture."""

    @pytest.fixture
    def runtime(self) -> Runtime:
        raise NotImplementedError("subclass RuntimeSuite and provide a runtime fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def rootfs(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The busybox root filesystem shared by the class (tests must not write to it)."""
        return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")

    @pytest.fixture(name="make_rootfs")
    def make_rootfs_fixture(self) -> Callable[[Path], Path]:
        """``make_rootfs(dir) -> dir``: a private busybox root filesystem a test may change."""
        return make_rootfs

    @pytest.fixture
    def run(self, runtime: Runtime, rootfs: Path, tmp_path: Path) -> Callable[..., Ran]:
        """``run(args, image=ImageConfig(), **spec_options) -> Ran(exit, output)``: create, start, wait, delete."""
        return task_runner(runtime, rootfs, tmp_path)

    @pytest.fixture
    def make_spec(self, rootfs: Path) -> Callable[..., dict]:
        """``make_spec(args, **spec_options) -> dict``: a spec for the busybox root filesystem."""

        def _make(args: list[str], image: ImageConfig = ImageConfig(), **options: Any) -> dict:
            return generate_spec(image, SpecOptions(args=args, **options), rootfs=rootfs)

        return _make

    def test_echo_hello_goes_to_the_stdout_file(self, run):
        ran = run(["echo", "hello"])
        assert ran.exit.status == 0
        assert ran.output == "hello\n"

    @pytest.mark.parametrize("script, status", [("true", 0), ("exit 3", 3), ("false", 1)])
    def test_exit_status(self, run, script, status):
        assert run(["sh", "-c", script]).exit.status == status

    def test_stdout_and_stderr_to_separate_files_and_stdin_from_a_file(self, runtime, rootfs, make_spec, tmp_path):
        (tmp_path / "in.txt").write_text("line one\nline two\n")
        io = IO(stdin=str(tmp_path / "in.txt"), stdout=str(tmp_path / "o"), stderr=str(tmp_path / "e"))
        task = runtime.create("io", Bundle(spec=make_spec(["sh", "-c", "cat; echo oops >&2"]), rootfs=rootfs), io)
        task.start()
        assert task.wait(30).status == 0
        assert (tmp_path / "o").read_text() == "line one\nline two\n"
        assert (tmp_path / "e").read_text() == "oops\n"

    def test_fifos_for_stdin_and_stdout_opened_after_start(self, runtime, rootfs, make_spec, tmp_path):
        fin, fout = tmp_path / "in.fifo", tmp_path / "out.fifo"
        os.mkfifo(fin)
        os.mkfifo(fout)
        task = runtime.create("fifo", Bundle(spec=make_spec(["sh", "-c", "tr a-z A-Z"]), rootfs=rootfs),
                              IO(stdin=str(fin), stdout=str(fout), stderr=str(fout)))  # fmt: skip
        task.start()
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fout.read_bytes()))
        reader.start()
        fin.write_bytes(b"shout\n")
        reader.join(30)
        assert got == [b"SHOUT\n"]
        assert task.wait(30).status == 0

    def test_init_is_pid_1_and_proc_shows_only_the_container(self, run):
        assert run(["cat", "/proc/self/stat"]).output.split()[0] == "1"
        assert run(["sh", "-c", "echo $$"]).output == "1\n"
        pids = run(["sh", "-c", "cd /proc && echo [0-9]*"]).output.split()
        assert pids == ["1"]

    def test_hostname(self, run):
        assert run(["hostname"], hostname="box-1").output == "box-1\n"

    def test_masked_paths_read_empty(self, run):
        script = "for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && echo $p $(cat $p | wc -c); done; ls -A /sys/firmware | wc -l"
        lines = run(["sh", "-c", script]).output.splitlines()
        present = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
        assert present, "the host has none of the masked files"
        assert lines == [f"{p} 0" for p in present] + ["0"]

    def test_proc_sys_is_read_only(self, run):
        ran = run(["sh", "-c", "echo 1 > /proc/sys/kernel/domainname && echo wrote; echo 1 > /proc/sysrq-trigger && echo wrote"])
        assert "wrote" not in ran.output
        assert "Read-only file system" in ran.output

    def test_sys_is_read_only_and_dev_is_minimal(self, run):
        ran = run(["sh", "-c", "ls /dev; touch /sys/x 2>&1; head -c 4 /dev/zero | wc -c; echo hi > /dev/null && echo null-ok"])
        listing = ran.output.split()
        for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"):
            assert dev in listing
        assert "sda" not in listing and "vda" not in listing and "mem" not in listing
        assert "Read-only file system" in ran.output
        assert "4\nnull-ok" in ran.output

    def test_user_from_passwd_without_the_callers_groups(self, run):
        before = os.getgroups()
        os.setgroups([4242, 4343])
        try:
            app = run(["sh", "-c", "id -u; id -g; id -G; echo $HOME"], user="app").output.split("\n")
            root = run(["id", "-G"]).output
            numeric = run(["id", "-G"], user="1234:5678").output
        finally:
            os.setgroups(before)
        assert app[:4] == ["1000", "1000", "1000 2000", "/home/app"]
        assert root == "0 10\n"
        assert numeric == "5678\n"

    def test_non_root_user_has_no_capabilities_and_root_a_reduced_set(self, run):
        app = run(["grep", "CapEff", "/proc/self/status"], user="app").output.split()
        root = run(["grep", "-E", "CapEff|CapBnd", "/proc/self/status"]).output.split()
        assert app == ["CapEff:", "0000000000000000"]
        assert root[1] == root[3] and root[1] != "000001ffffffffff"
        assert int(root[1], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN

    def test_env_and_cwd_from_the_image_config(self, run):
        image = ImageConfig(env=["GREETING=hello", "PATH=/bin"], working_dir="/srv/data", cmd=["sh", "-c", "pwd; env | sort; cat greeting.txt"])
        out = run(None, image, env=["EXTRA=1", "GREETING=hi"]).output.splitlines()
        assert out[0] == "/srv/data"
        assert "GREETING=hi" in out and "EXTRA=1" in out and "PATH=/bin" in out and "HOME=/root" in out
        assert out[-1] == "hi from the image"

    def test_cwd_override(self, run):
        assert run(["pwd"], cwd="/tmp").output == "/tmp\n"

    def test_inherited_fds_are_closed(self, run):
        leaked = os.open("/etc/hostname", os.O_RDONLY)
        os.set_inheritable(leaked, True)
        try:
            out = run(["sh", "-c", "ls /proc/1/fd; ls -l /proc/1/fd"]).output
        finally:
            os.close(leaked)
        assert out.split("total")[0].split() == ["0", "1", "2"]
        assert "/etc/hostname" not in out

    def test_no_new_privileges(self, run):
        assert "NoNewPrivs:\t1" in run(["grep", "NoNewPrivs", "/proc/self/status"], no_new_privileges=True).output
        assert "NoNewPrivs:\t0" in run(["grep", "NoNewPrivs", "/proc/self/status"]).output

    def test_network_none_has_only_loopback_up(self, run):
        out = run(["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"], network="none").output.split()
        assert out[0] == "lo" and len(out) == 3
        assert int(out[2], 16) & 1 == 1  # IFF_UP

    def test_readonly_rootfs(self, run):
        out = run(["sh", "-c", "touch /srv/x 2>&1; touch /dev/shm/x && echo shm-ok"], readonly_rootfs=True).output
        assert "Read-only file system" in out and "shm-ok" in out

    def test_state_through_the_life_of_a_task(self, runtime, rootfs, make_spec, tmp_path):
        (tmp_path / "in").write_text("x\n")
        task = runtime.create("life", Bundle(spec=make_spec(["sh", "-c", "read line; exit 7"]), rootfs=rootfs), IO(stdin=str(tmp_path / "in")))
        assert isinstance(runtime, Runtime) and isinstance(task, Task)
        st = task.state()
        assert st.status is Status.CREATED and st.pid > 0 and st.exit_status is None
        assert task.pids() == [st.pid]
        assert task.start() == st.pid
        ex = task.wait(30)
        assert (ex.status, ex.pid) == (7, st.pid)
        st = task.state()
        assert st.status is Status.STOPPED and st.exit_status == 7 and st.exited_at == ex.exited_at
        assert task.pids() == []
        with pytest.raises(FailedPreconditionError, match="cannot start: it has exited"):
            task.start()
        with pytest.raises(NotFoundError, match="process already finished"):
            task.kill(signal.SIGTERM)
        assert task.delete().status == 7
        with pytest.raises(NotFoundError, match="task default/life: not found"):
            runtime.get("life")

    def test_kill_sigkill_is_137_and_a_trapped_sigterm_ends_the_process(self, runtime, rootfs, make_spec):
        sleeper = runtime.create("k9", Bundle(spec=make_spec(["sleep", "100"]), rootfs=rootfs))
        trapper = runtime.create("k15", Bundle(spec=make_spec(["sh", "-c", "trap 'exit 143' TERM; echo > /tmp/ready-k15; sleep 100 & wait"]), rootfs=rootfs))
        sleeper.start()
        trapper.start()
        sleeper.kill(signal.SIGKILL)
        assert sleeper.wait(30).status == 137
        deadline = time.monotonic() + 10
        while len(trapper.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        trapper.kill(signal.SIGTERM)
        assert trapper.wait(30).status == 143

    def test_sigterm_kills_a_process_that_is_not_a_pid_namespace_init(self, runtime, rootfs, make_spec):
        spec = make_spec(["sleep", "100"])
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
        task = runtime.create("nopidns", Bundle(spec=spec, rootfs=rootfs))
        task.start()
        task.kill(signal.SIGTERM)
        assert task.wait(30).status == 128 + signal.SIGTERM

    def test_kill_all_reaches_every_process(self, runtime, rootfs, make_spec, tmp_path):
        out = tmp_path / "out"
        task = runtime.create("all", Bundle(spec=make_spec(["sh", "-c", "sleep 100 & sleep 100 & wait; echo done"]), rootfs=rootfs), IO(stdout=str(out)))
        task.start()
        deadline = time.monotonic() + 10
        while len(task.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = task.pids()
        assert len(pids) == 3 and pids[0] == task.state().pid
        task.kill(signal.SIGTERM, all=True)  # the sleeps die; the shell (init, no handler) survives and ends its wait
        assert task.wait(30).status == 0
        assert out.read_text() == "done\n"
        assert task.pids() == []

    def test_wait_times_out_on_a_running_task(self, runtime, rootfs, make_spec):
        task = runtime.create("slow", Bundle(spec=make_spec(["sleep", "100"]), rootfs=rootfs))
        task.start()
        with pytest.raises(Exception, match="still running after 0.2s"):
            task.wait(0.2)
        assert task.state().status is Status.RUNNING

    def test_delete_of_a_running_task_kills_it(self, runtime, rootfs, make_spec):
        task = runtime.create("running", Bundle(spec=make_spec(["sleep", "100"]), rootfs=rootfs))
        pid = task.start()
        ex = task.delete()  # init ignores SIGTERM: SIGKILL after kill_timeout
        assert ex.status == 137
        assert not os.path.exists(f"/proc/{pid}")
        assert runtime.tasks() == []

    def test_delete_of_a_created_task(self, runtime, rootfs, make_spec):
        task = runtime.create("never", Bundle(spec=make_spec(["true"]), rootfs=rootfs))
        assert task.delete().status == 137
        assert not task.bundle.exists()

    def test_overlay_mounts_are_made_and_removed(self, runtime, rootfs, make_spec, tmp_path):
        upper, work = tmp_path / "upper", tmp_path / "work"
        upper.mkdir()
        work.mkdir()
        mounts = [Mount(type="overlay", source="overlay", options=[f"lowerdir={rootfs}", f"upperdir={upper}", f"workdir={work}"])]
        out = tmp_path / "out"
        task = runtime.create("ovl", Bundle(spec=make_spec(["sh", "-c", "echo written > /srv/new.txt; cat /srv/data/greeting.txt"]), mounts=mounts),
                              IO(stdout=str(out)))  # fmt: skip
        assert str(task.bundle / "rootfs") in mountinfo()
        task.start()
        assert task.wait(30).status == 0
        assert out.read_text() == "hi from the image\n"
        assert (upper / "srv" / "new.txt").read_text() == "written\n"
        assert not (rootfs / "srv" / "new.txt").exists()
        task.delete()
        assert str(task.bundle) not in mountinfo()
        assert not task.bundle.exists()

    def test_bind_mount_rootfs(self, runtime, rootfs, make_spec, tmp_path):
        mounts = [Mount(type="bind", source=str(rootfs), options=["rbind", "ro"])]
        out = tmp_path / "out"
        task = runtime.create("bind", Bundle(spec=make_spec(["sh", "-c", "cat /srv/data/greeting.txt; touch /x"]), mounts=mounts), IO(stdout=str(out), stderr=str(out)))
        task.start()
        assert task.wait(30).status == 1
        assert out.read_text().startswith("hi from the image\n") and "Read-only file system" in out.read_text()
        task.delete()
        assert str(task.bundle) not in mountinfo()

    def test_no_mounts_leak_into_the_host(self, runtime, rootfs, make_spec):
        before = mountinfo()
        task = runtime.create("leak", Bundle(spec=make_spec(["sleep", "100"]), rootfs=rootfs))
        task.start()
        during = mountinfo()
        task.delete()
        assert during == before == mountinfo()

    def test_tasks_lists_namespaces(self, runtime, rootfs, make_spec):
        runtime.create("a", Bundle(spec=make_spec(["true"]), rootfs=rootfs))
        runtime.create("a", Bundle(spec=make_spec(["true"]), rootfs=rootfs), namespace="other")
        runtime.create("b", Bundle(spec=make_spec(["true"]), rootfs=rootfs))
        assert [(t.namespace, t.id) for t in runtime.tasks()] == [("default", "a"), ("default", "b"), ("other", "a")]
        assert [t.id for t in runtime.tasks(namespace="other")] == ["a"]
        with pytest.raises(AlreadyExistsError, match="task default/a: already exists"):
            runtime.create("a", Bundle(spec=make_spec(["true"]), rootfs=rootfs))

    @pytest.mark.parametrize("bad", ["../../tmp/x", "a/b", "a\x00b", "x" * 4096, "", ".", "-a"])
    def test_bad_ids_are_rejected_and_touch_nothing(self, runtime, rootfs, make_spec, tmp_path, bad):
        before = sorted(tmp_path.rglob("*"))
        with pytest.raises(InvalidArgumentError, match="invalid container id"):
            runtime.create(bad, Bundle(spec=make_spec(["true"]), rootfs=rootfs))
        with pytest.raises(InvalidArgumentError, match="invalid container id"):
            runtime.get(bad)
        with pytest.raises(InvalidArgumentError, match="invalid namespace"):
            runtime.create("ok", Bundle(spec=make_spec(["true"]), rootfs=rootfs), namespace=bad)
        assert sorted(tmp_path.rglob("*")) == before

    def test_missing_executable_fails_at_create(self, runtime, rootfs, make_spec):
        with pytest.raises(InvalidArgumentError, match="no-such-tool"):
            runtime.create("nox", Bundle(spec=make_spec(["no-such-tool"]), rootfs=rootfs))
        assert runtime.tasks() == []

    def test_proc_symlink_in_the_image_is_refused(self, runtime, make_rootfs, make_spec, tmp_path):
        evil = make_rootfs(tmp_path / "evil")
        (evil / "proc").rmdir()
        os.symlink("/tmp", evil / "proc")
        with pytest.raises((InvalidArgumentError, FailedPreconditionError), match="/proc"):
            runtime.create("evil", Bundle(spec=make_spec(["true"]), rootfs=evil))
        assert runtime.tasks() == []
        assert str(tmp_path) not in mountinfo()

    def test_missing_working_directory_fails_at_create(self, runtime, rootfs, make_spec):
        with pytest.raises((InvalidArgumentError, FailedPreconditionError), match="/nowhere"):
            runtime.create("nocwd", Bundle(spec=make_spec(["true"], cwd="/nowhere"), rootfs=rootfs))

    def test_get_of_unknown_task(self, runtime):
        with pytest.raises(NotFoundError, match="task default/ghost: not found"):
            runtime.get("ghost")

__all__ = ["RuntimeSuite", "Ran", "make_rootfs", "mountinfo"]
