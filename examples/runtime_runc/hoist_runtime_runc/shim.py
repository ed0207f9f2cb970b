"""The per-container supervisor: ``python -m hoist_runtime_runc.shim TASK_DIR``.

It detaches (a new session, forked twice so it outlives whoever created the task), becomes a child
subreaper, runs ``runc create`` with the container's standard streams, reports one JSON line on
stdout (``{"pid": N}`` or ``{"error": ...}``), then waits for the container's init — reparented to it
when ``runc create`` exits — and records how it ended in ``exit.json`` (the records are
:mod:`hoist.taskstate`'s).  FIFOs named for the streams are opened in threads and copied to and from
pipes, so either end may open first.  Stdlib and :mod:`hoist.taskstate` only, to start fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import subprocess
import sys
import threading

from hoist.taskstate import (
    INIT_FILE,
    SHIM_FILE,
    TASK_FILE,
    UNKNOWN_EXIT_STATUS,
    exit_status_from_wait,
    process_record,
    record_exit,
    report,
    write_json,
)

RUNC_LOG = "runc.log"
_PR_SET_CHILD_SUBREAPER = 36
_CHUNK = 1 << 16


def runc_error(task_dir: str) -> str:
    """The last error runc logged for this task (its JSON log), or ``""``."""
    try:
        with open(os.path.join(task_dir, RUNC_LOG), "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("level") in ("error", "fatal"):
            return str(rec.get("msg", "")).strip()
    return ""


def _pump(path: str, fd: int, to_fifo: bool) -> None:
    """Copy between the FIFO ``path`` and our end ``fd`` of a pipe, closing both at the end."""
    try:
        fifo = os.open(path, os.O_WRONLY if to_fifo else os.O_RDONLY)
    except OSError:
        os.close(fd)
        return
    src, dst = (fd, fifo) if to_fifo else (fifo, fd)
    try:
        while data := os.read(src, _CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
    except OSError:
        pass
    finally:
        os.close(fifo)
        os.close(fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, _CHUNK):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def _stdio(path: str, write: bool, pumps: list[threading.Thread]) -> int:
    """The fd runc create gets for one stream: /dev/null, the file itself, or a pipe pumped to a FIFO."""
    if not path:
        # Pipes rather than /dev/null, which runc would reopen inside the container (where the devices
        # cgroup may refuse it): stdin reads EOF at once, output is drained and dropped.
        r, w = os.pipe()
        if not write:
            os.close(w)
            return r
        pumps.append(threading.Thread(target=_drain, args=(r,), daemon=True))
        return w
    try:
        is_fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        is_fifo = False
    if is_fifo:
        r, w = os.pipe()
        ours, theirs = (r, w) if write else (w, r)
        pumps.append(threading.Thread(target=_pump, args=(path, ours, write), daemon=True))
        return theirs
    if write:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY, 0o644)
    return os.open(path, os.O_RDONLY | os.O_NOCTTY)


def supervise(task_dir: str) -> None:
    """Run the container of ``task_dir`` to its end (the supervisor's whole life)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me = os.getpid()
    write_json(os.path.join(task_dir, SHIM_FILE), process_record(me))
    with open(os.path.join(task_dir, TASK_FILE)) as f:
        task = json.load(f)
    io = task.get("io") or {}
    pumps: list[threading.Thread] = []
    try:
        fds = [_stdio(io.get("stdin", ""), False, pumps), _stdio(io.get("stdout", ""), True, pumps)]
        if io.get("stderr") and io.get("stderr") == io.get("stdout"):
            fds.append(os.dup(fds[1]))
        else:
            fds.append(_stdio(io.get("stderr", ""), True, pumps))
    except OSError as e:
        report({"error": f"{e.filename}: {e.strerror}", "kind": "invalid"})
        return
    pid_file = os.path.join(task_dir, "init.pid")
    proc = subprocess.run(
        [task["runc"], "--root", task["runc_root"], "--log", os.path.join(task_dir, RUNC_LOG), "--log-format", "json",
         "create", "--bundle", task_dir, "--pid-file", pid_file, task["id"]],
        stdin=fds[0], stdout=fds[1], stderr=fds[2], close_fds=True, cwd=task_dir)
    for fd in fds:
        os.close(fd)
    if proc.returncode != 0:
        report({"error": runc_error(task_dir) or f"runc create exited with status {proc.returncode}"})
        for t in pumps:
            t.start()
        return
    with open(pid_file) as f:
        pid = int(f.read().strip())
    write_json(os.path.join(task_dir, INIT_FILE), process_record(pid))
    for t in pumps:
        t.start()
    report({"pid": pid})
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            status = None
            break
        if got == pid:
            break
    record_exit(task_dir, pid, UNKNOWN_EXIT_STATUS if status is None else exit_status_from_wait(status))
    for t in pumps:
        t.join(2.0)


def main(argv: list[str]) -> None:
    """Fork the supervisor for ``argv[1]`` (a task directory); the launcher exits at once."""
    if os.fork() != 0:
        os._exit(0)
    code = 0
    try:
        supervise(argv[1])
    except BaseException as e:  # noqa: BLE001 - the runtime must hear about it
        report({"error": f"supervisor: {type(e).__name__}: {e}"})
        code = 1
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
