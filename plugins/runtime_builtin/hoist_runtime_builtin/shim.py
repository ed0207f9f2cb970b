"""The per-container supervisor: ``python -m hoist_runtime_builtin.shim TASK_DIR``.

Started by the runtime in a new session, it forks once more (so that it is nobody's child but
init's and outlives the daemon), forks the container's init into a new PID namespace, reports one
JSON line on stdout (``{"pid": N}`` once the container waits for start, or ``{"error": ...}``),
then waits for the container to exit and records how in ``exit.json``.  Every file it writes is
in ``TASK_DIR`` (see :mod:`hoist.taskstate`), so a restarted daemon finds the task again.  Stdlib and
:mod:`hoist.taskstate` only, to start fast.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys

from hoist.taskstate import INIT_FILE, SHIM_FILE, SPEC_FILE, TASK_FILE, process_record, record_exit, report, write_json
from hoist_runtime_builtin import container, linux

EXEC_FIFO = "exec.fifo"


def _open_stdio(path: str, write: bool) -> container.Stdio:
    if not path:
        return os.open("/dev/null", os.O_WRONLY if write else os.O_RDONLY), None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not write:
            raise
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOCTTY, 0o644), None
    if stat.S_ISFIFO(st.st_mode):
        return os.open(path, os.O_PATH), (os.O_WRONLY if write else os.O_RDONLY)
    if write:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY, 0o644), None
    return os.open(path, os.O_RDONLY | os.O_NOCTTY), None


def supervise(task_dir: str) -> None:
    """Run the container of ``task_dir`` to its end (the supervisor's whole life)."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    write_json(os.path.join(task_dir, SHIM_FILE), process_record(os.getpid()))
    try:
        with open(os.path.join(task_dir, SPEC_FILE)) as f:
            spec = json.load(f)
        with open(os.path.join(task_dir, TASK_FILE)) as f:
            io = json.load(f).get("io") or {}
        stdin = _open_stdio(io.get("stdin", ""), False)
        stdout = _open_stdio(io.get("stdout", ""), True)
        if io.get("stderr") and io.get("stderr") == io.get("stdout"):
            stderr = (os.dup(stdout[0]), stdout[1])
        else:
            stderr = _open_stdio(io.get("stderr", ""), True)
        exec_fifo = os.open(os.path.join(task_dir, EXEC_FIFO), os.O_PATH)
        namespaces = {ns.get("type") for ns in (spec.get("linux") or {}).get("namespaces") or ()}
        if "pid" in namespaces:
            linux.unshare(linux.CLONE_NEWPID)
    except OSError as e:
        report({"error": container.describe(e), "kind": "precondition"})
        return
    except (ValueError, KeyError) as e:
        report({"error": f"bundle: {e}", "kind": "invalid"})
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        container.run(spec, [stdin, stdout, stderr], exec_fifo, w)
    os.close(w)
    for fd in {stdin[0], stdout[0], stderr[0], exec_fifo}:
        os.close(fd)
    sync = os.fdopen(r, "rb")
    line = sync.readline()
    msg = json.loads(line) if line.strip() else {"error": "the container's init exited during setup", "kind": "precondition"}
    if "error" in msg:
        os.waitpid(pid, 0)
        report(msg)
        return
    write_json(os.path.join(task_dir, INIT_FILE), process_record(pid))
    report({"pid": pid})

    line = sync.readline()  # EOF at a successful exec (the pipe is close-on-exec)
    error = json.loads(line).get("error", "") if line.strip() else ""
    sync.close()
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    status = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
    record_exit(task_dir, pid, status, error)
    os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    """Fork the supervisor for ``argv[1]`` (a task directory) and return at once; the exit code of the launcher."""
    if len(argv) != 2:
        print("usage: python -m hoist_runtime_builtin.shim TASK_DIR", file=sys.stderr)
        return 2
    task_dir = argv[1]
    if os.fork() != 0:
        return 0
    code = 0
    try:
        supervise(task_dir)
    except BaseException as e:  # noqa: BLE001 - the runtime must hear about it
        report({"error": f"supervisor: {type(e).__name__}: {e}", "kind": "precondition"})
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def run(argv: list[str]) -> None:
    """Entry point of the launcher the runtime starts: never returns."""
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run(sys.argv)
