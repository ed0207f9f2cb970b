"""Thin ctypes wrappers for the Linux calls the runtime needs and Python 3.11 lacks.

Stdlib and :mod:`hoist.linux` (mount flags and calls, shared with the snapshot mounts) only: this module
is imported by the per-container supervisor, which must start fast.
"""

from __future__ import annotations

import ctypes
import os

from hoist.linux import (  # noqa: F401  (core's mount flags and calls, used by the container's init)
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    mount_flags,
    umount2,
)
from hoist.linux import check as _check
from hoist.linux import libc as _core_libc

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
}

PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

CAPABILITIES: dict[str, int] = {
    name: i
    for i, name in enumerate(
        (
            "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
            "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
            "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
            "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
            "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
            "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
        )  # fmt: skip
    )
}

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217, "armv7l": 218, "i686": 217}
_CAP_V3 = 0x20080522

_libc: ctypes.CDLL | None = None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def libc() -> ctypes.CDLL:
    """Core's C library (:func:`hoist.linux.libc`) with the argument types of the runtime's calls set too."""
    global _libc
    if _libc is None:
        lib = _core_libc()
        lib.unshare.argtypes = [ctypes.c_int]
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.syscall.restype = ctypes.c_long
        lib.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
        lib.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _libc = lib
    return _libc


def sethostname(name: str) -> None:
    data = name.encode()
    _check(libc().sethostname(data, len(data)), f"sethostname {name}")


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def pivot_root(new_root: str, put_old: str) -> None:
    machine = os.uname().machine
    nr = _SYS_PIVOT_ROOT.get(machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {machine}")
    _check(libc().syscall(nr, os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    _check(libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def cap_numbers(names: list[str] | None) -> set[int]:
    out = set()
    for name in names or ():
        short = name.upper().removeprefix("CAP_")
        if short not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}")
        out.add(CAPABILITIES[short])
    return out


def capset(effective: set[int], permitted: set[int], inheritable: set[int]) -> None:
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = sum(1 << (c - 32 * i) for c in effective if 32 * i <= c < 32 * (i + 1))
        data[i].permitted = sum(1 << (c - 32 * i) for c in permitted if 32 * i <= c < 32 * (i + 1))
        data[i].inheritable = sum(1 << (c - 32 * i) for c in inheritable if 32 * i <= c < 32 * (i + 1))
    _check(libc().capset(ctypes.byref(header), data), "capset")
