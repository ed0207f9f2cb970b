"""The container's init: namespaces, mounts, pivot_root, then (on start) user, fds and execve.

Runs in the child the supervisor forks, which is already PID 1 of a new PID namespace.  Stdlib
only, and no threads: this code runs between fork and exec.  Problems are reported to the
supervisor as one JSON line on the sync pipe: ``{"ready": true}`` once the container waits for
start, or ``{"error": "...", "kind": "..."}``.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import resource  # at the top on purpose: after pivot_root the stdlib is out of reach
import signal
import stat
import struct

from hoist_runtime_builtin import linux

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time in the supervisor
    from collections.abc import Mapping, Sequence
    from typing import Any, NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Symlinks a fresh /dev gets, as other runtimes make them.
DEV_SYMLINKS = (
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/core", "/proc/kcore"),
)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_STATVFS_KEPT = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME


class ContainerError(Exception):
    """A setup step failed; ``kind`` says whether the spec (``invalid``) or the host (``precondition``) is at fault."""

    def __init__(self, message: str, kind: str = "precondition") -> None:
        super().__init__(message)
        self.kind = kind


#: One of the container's standard streams: an open fd, and the flags to reopen it with at start
#: (FIFOs are held as O_PATH until then, so that creating a task never waits for the other end).
Stdio = tuple[int, "int | None"]


def _send(sync: int, msg: Mapping[str, Any]) -> None:
    data = (json.dumps(msg) + "\n").encode()
    try:
        os.write(sync, data)
    except OSError:
        pass


def describe(e: OSError) -> str:
    """``path: reason`` for an OSError, without Python's ``[Errno N]`` decoration."""
    if e.filename is not None:
        return f"{os.fsdecode(e.filename)}: {e.strerror}"
    if len(e.args) == 2 and isinstance(e.args[1], str):
        return e.args[1]
    return str(e)


def run(spec: Mapping[str, Any], stdio: Sequence[Stdio], exec_fifo: int, sync: int) -> NoReturn:
    """Set the container up, wait for start, exec its process.  Never returns."""
    code = 1
    try:
        _reset_process()
        plan = _setup(spec)
        _send(sync, {"ready": True})
        _wait_for_start(exec_fifo)
        code = 127
        sync = _install_fds(stdio, sync)
        _exec(spec, plan, sync)
    except ContainerError as e:
        _send(sync, {"error": str(e), "kind": e.kind})
    except OSError as e:
        _send(sync, {"error": describe(e), "kind": "precondition"})
    except BaseException as e:  # noqa: BLE001 - anything here must reach the supervisor, not a traceback
        _send(sync, {"error": f"{type(e).__name__}: {e}", "kind": "precondition"})
    os._exit(code)


def _reset_process() -> None:
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.umask(0o022)
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


class _Plan:
    """What setup found out that exec needs."""

    def __init__(self, executable: str, cwd: str) -> None:
        self.executable = executable
        self.cwd = cwd


def _setup(spec: Mapping[str, Any]) -> _Plan:
    linux_spec = spec.get("linux") or {}
    namespaces = {ns.get("type") for ns in linux_spec.get("namespaces") or ()}
    if "mount" not in namespaces:
        raise ContainerError("spec: linux.namespaces must include a mount namespace", "invalid")
    flags = 0
    for name in namespaces - {"pid"}:
        if name not in linux.NAMESPACE_FLAGS:
            raise ContainerError(f"spec: namespace {name!r} is not supported", "invalid")
        flags |= linux.NAMESPACE_FLAGS[name]
    linux.unshare(flags)
    linux.mount("", "/", None, linux.MS_REC | linux.MS_PRIVATE)

    rootfs = spec["root"]["path"]
    linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
    has_dev = False
    for m in spec.get("mounts") or ():
        _mount(rootfs, m)
        has_dev = has_dev or posixpath.normpath(m.get("destination", "")) == "/dev"
    for dev in linux_spec.get("devices") or ():
        _make_device(rootfs, dev)
    if has_dev:
        for path, target in DEV_SYMLINKS:
            try:
                os.symlink(target, rootfs + path)
            except FileExistsError:
                pass
    if "network" in namespaces:
        _loopback_up()

    os.chdir(rootfs)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")

    for path in linux_spec.get("maskedPaths") or ():
        _mask(path)
    for path in linux_spec.get("readonlyPaths") or ():
        _readonly(path)
    if spec["root"].get("readonly"):
        _remount_readonly("/")
    if spec.get("hostname"):
        linux.sethostname(spec["hostname"])

    proc = spec["process"]
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise ContainerError(f"working directory {cwd}: {e.strerror}", "invalid") from None
    real = os.getcwd()
    if real == "/proc" or real.startswith("/proc/"):
        raise ContainerError(f"working directory {cwd}: resolves into /proc, refused", "invalid")
    return _Plan(_lookup(proc["args"][0], proc.get("env") or ()), cwd)


def _target(rootfs: str, dest: str, *, file: bool) -> str:
    """The host path of mount destination ``dest``, creating what is missing; no symlinks allowed."""
    if not dest.startswith("/"):
        raise ContainerError(f"mount destination {dest!r}: must be absolute", "invalid")
    parts = [p for p in dest.split("/") if p and p != "."]
    if ".." in parts:
        raise ContainerError(f"mount destination {dest!r}: must not contain '..'", "invalid")
    cur = rootfs
    for i, part in enumerate(parts):
        cur = cur + "/" + part
        last = i == len(parts) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if last and file:
                os.close(os.open(cur, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            else:
                os.mkdir(cur, 0o755)
            continue
        shown = "/" + "/".join(parts[: i + 1])
        if stat.S_ISLNK(st.st_mode):
            raise ContainerError(f"mount destination {dest}: {shown} is a symbolic link in the image, refused", "invalid")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise ContainerError(f"mount destination {dest}: {shown} is not a directory in the image", "invalid")
    return cur


def _mount(rootfs: str, m: Mapping[str, Any]) -> None:
    dest = m.get("destination") or ""
    options = list(m.get("options") or ())
    flags, propagation, data = linux.mount_flags(options)
    kind = m.get("type") or ""
    source = m.get("source") or ""
    bind = kind == "bind" or bool(flags & linux.MS_BIND)
    target = _target(rootfs, dest, file=bind and not os.path.isdir(source))
    if bind:
        linux.mount(source, target, None, linux.MS_BIND | (flags & linux.MS_REC))
        rest = flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
        if rest:
            linux.mount("", target, None, linux.MS_BIND | linux.MS_REMOUNT | rest)
    else:
        linux.mount(source or kind, target, kind, flags, ",".join(data) or None)
    if propagation:
        linux.mount("", target, None, propagation)


def _make_device(rootfs: str, dev: Mapping[str, Any]) -> None:
    path = dev.get("path") or ""
    parent, name = posixpath.split(posixpath.normpath(path))
    target = _target(rootfs, parent, file=False) + "/" + name
    if os.path.lexists(target):
        return
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    kind = kinds.get(dev.get("type", "c"))
    if kind is None:
        raise ContainerError(f"device {path}: unknown type {dev.get('type')!r}", "invalid")
    mode = int(dev.get("fileMode", 0o666)) & 0o7777
    try:
        os.mknod(target, kind | mode, os.makedev(int(dev.get("major", 0)), int(dev.get("minor", 0))))
    except PermissionError:
        # Without CAP_MKNOD (a user namespace): show the host's node instead.
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        linux.mount(path, target, None, linux.MS_BIND)
        return
    os.chmod(target, mode)
    os.chown(target, int(dev.get("uid", 0)), int(dev.get("gid", 0)))


def _loopback_up() -> None:
    import fcntl
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def _mask(path: str) -> None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
    else:
        linux.mount("/dev/null", path, None, linux.MS_BIND)


def _readonly(path: str) -> None:
    try:
        linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    _remount_readonly(path)


def _remount_readonly(path: str) -> None:
    kept = os.statvfs(path).f_flag & _STATVFS_KEPT
    linux.mount("", path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | kept)


def _lookup(arg0: str, env: Sequence[str]) -> str:
    if "/" in arg0:
        candidates = [arg0]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [posixpath.join(d or ".", arg0) for d in path.split(":")]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    where = "" if "/" in arg0 else " in $PATH"
    raise ContainerError(f"exec {arg0}: executable file not found{where}", "invalid")


def _wait_for_start(exec_fifo: int) -> None:
    # Blocks until the runtime's start() opens the other end; works after pivot_root because
    # /proc/self/fd links reach the file whatever the mount namespace.
    fd = os.open(f"/proc/self/fd/{exec_fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(exec_fifo)


def _install_fds(stdio: Sequence[Stdio], sync: int) -> int:
    """Make the standard streams fds 0-2 and the sync pipe fd 3 (close-on-exec); close every other fd."""
    fds = []
    for fd, reopen in stdio:
        fds.append(os.open(f"/proc/self/fd/{fd}", reopen | os.O_CLOEXEC) if reopen is not None else fd)
    for i, fd in enumerate(fds):
        os.dup2(fd, i, inheritable=True)
    if sync != 3:
        os.dup2(sync, 3, inheritable=False)
        sync = 3
    os.closerange(4, max(os.sysconf("SC_OPEN_MAX"), 1 << 20))
    return sync


def _exec(spec: Mapping[str, Any], plan: _Plan, sync: int) -> None:
    proc = spec["process"]
    for rl in proc.get("rlimits") or ():
        name = rl.get("type", "")
        res = getattr(resource, name, None)
        if not name.startswith("RLIMIT_") or res is None:
            raise ContainerError(f"rlimit {name!r}: unknown", "invalid")
        resource.setrlimit(res, (int(rl.get("soft", 0)), int(rl.get("hard", 0))))

    caps = proc.get("capabilities")
    if caps is not None:
        try:
            bounding = linux.cap_numbers(caps.get("bounding"))
            effective = linux.cap_numbers(caps.get("effective"))
            permitted = linux.cap_numbers(caps.get("permitted"))
            inheritable = linux.cap_numbers(caps.get("inheritable"))
            ambient = linux.cap_numbers(caps.get("ambient"))
        except ValueError as e:
            raise ContainerError(f"capabilities: {e}", "invalid") from None
        for cap in range(linux.last_cap() + 1):
            if cap not in bounding:
                linux.prctl(linux.PR_CAPBSET_DROP, cap)
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    if proc.get("noNewPrivileges"):
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)

    user = proc.get("user") or {}
    os.setgroups([int(g) for g in user.get("additionalGids") or ()])
    os.setgid(int(user.get("gid", 0)))
    os.setuid(int(user.get("uid", 0)))
    if caps is not None:
        linux.capset(effective, permitted, inheritable)
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in sorted(ambient):
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
        linux.prctl(linux.PR_SET_KEEPCAPS, 0)

    try:
        os.chdir(plan.cwd)
    except OSError as e:
        raise ContainerError(f"working directory {plan.cwd}: {e.strerror}") from None
    env: dict[str, str] = {}
    for item in proc.get("env") or ():
        key, _, value = item.partition("=")
        env[key] = value
    try:
        os.execve(plan.executable, list(proc["args"]), env)
    except OSError as e:
        _send(sync, {"error": f"exec {proc['args'][0]}: {e.strerror}", "kind": "precondition"})
        os._exit(127 if e.errno == errno.ENOENT else 126)
