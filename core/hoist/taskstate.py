"""Task directories of runtimes that run one supervisor process per task: the files and the process records.

A task directory holds ``config.json`` (the OCI spec), ``task.json`` (id, namespace, IO, what was mounted),
``shim.json`` and ``init.json`` (pid and start time of the supervisor and of the container's init),
``exit.json`` (once the init exited: status, time, pid) and ``shim.log``.  The supervisor writes the
records (:func:`write_json`, :func:`process_record`, :func:`record_exit`) and tells the runtime how the
start went with one JSON line (:func:`report`); the runtime reads them (:func:`read_json`, :func:`alive`,
:func:`pidfd`).  A pid together with its start time names one process, so a record never points at a
reused pid.

Stdlib only, and nothing imported at module level but ``datetime``, ``json`` and ``os``: supervisors import
this module and must start fast (see :mod:`hoist.supervised` for the runtime side).
"""

from __future__ import annotations

import datetime as _dt
import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time in the supervisor
    from collections.abc import Mapping
    from typing import Any

EXIT_FILE = "exit.json"
INIT_FILE = "init.json"
SHIM_FILE = "shim.json"
SPEC_FILE = "config.json"
TASK_FILE = "task.json"
SHIM_LOG = "shim.log"
#: The exit status reported when nobody saw how the process ended (as containerd).
UNKNOWN_EXIT_STATUS = 255


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


def proc_starttime(pid: int) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, or ``None`` if it does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``Z`` for a zombie), or ``None`` if it does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[0].decode()


def process_record(pid: int) -> dict[str, Any]:
    """What ``shim.json`` and ``init.json`` hold: the pid and its start time."""
    return {"pid": pid, "starttime": proc_starttime(pid)}


def now() -> str:
    """The current UTC time as the records write it (ISO 8601)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``obj`` atomically (a temporary file, fsync, rename)."""
    head, tail = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{tail}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record at ``path``, or ``None`` when it is missing or not (yet) readable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def exit_status_from_wait(status: int) -> int:
    """The exit status to report for a ``waitpid`` status: the exit code, or ``128 + N`` for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return UNKNOWN_EXIT_STATUS


def record_exit(task_dir: str, pid: int, status: int, error: str = "") -> None:
    """Write ``exit.json``: how the container's init ended (``error``: why it never ran, if so)."""
    record: dict[str, Any] = {"status": status, "exited_at": now(), "pid": pid}
    if error:
        record["error"] = error
    write_json(os.path.join(task_dir, EXIT_FILE), record)


def report(msg: Mapping[str, Any]) -> None:
    """The supervisor's one line to the runtime (``{"pid": N}`` or ``{"error": ..., "kind": ...}``).

    Then stdin and stdout become ``/dev/null``, so that the runtime's pipe closes.
    """
    try:
        os.write(1, (json.dumps(msg) + "\n").encode())
    except OSError:
        pass
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def alive(record: Mapping[str, Any] | None) -> bool:
    """Whether the process ``record`` describes still runs (same pid *and* start time, not a zombie)."""
    if not record or not record.get("pid"):
        return False
    pid = int(record["pid"])
    if proc_starttime(pid) != record.get("starttime"):
        return False
    return proc_state(pid) not in (None, "Z", "X")


def pidfd(record: Mapping[str, Any] | None) -> int | None:
    """A pidfd for the process ``record`` describes, or ``None`` if that process is gone."""
    if not record or not record.get("pid"):
        return None
    try:
        fd = os.pidfd_open(int(record["pid"]))
    except ProcessLookupError:
        return None
    if proc_starttime(int(record["pid"])) != record.get("starttime"):
        os.close(fd)
        return None
    return fd
