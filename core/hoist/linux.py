"""Linux mount(2) for Hoist: the flags, the OCI mount options that are flags, and the calls Python lacks.

Stdlib only (ctypes): the snapshot mounts (:mod:`hoist.snapshots`) and runtimes' supervisors use it.
"""

from __future__ import annotations

import ctypes
import os

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

#: OCI mount options that are flags: option -> (clear instead of set, flag).
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID),
    "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV),
    "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC),
    "exec": (True, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "remount": (False, MS_REMOUNT),
    "defaults": (False, 0),
}

#: OCI mount options that set propagation.
PROPAGATION_FLAGS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


def mount_flags(options: list[str] | tuple[str, ...]) -> tuple[int, int, list[str]]:
    """Split OCI mount options into (flags, propagation flags, data options)."""
    flags, propagation, data = 0, 0, []
    for opt in options:
        if opt in MOUNT_FLAGS:
            clear, bit = MOUNT_FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        elif opt in PROPAGATION_FLAGS:
            propagation |= PROPAGATION_FLAGS[opt]
        else:
            data.append(opt)
    return flags, propagation, data


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """The C library, with ``errno`` kept and the argument types of ``mount``/``umount2`` set."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            from ctypes import util  # slow (it imports tempfile): only off glibc

            lib = ctypes.CDLL(util.find_library("c"), use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def check(res: int, what: str) -> None:
    """Raise ``OSError`` (errno and ``what: reason``) for a failed C call's result."""
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2); ``fstype`` ``None`` for binds and remounts."""
    res = libc().mount(
        os.fsencode(source), os.fsencode(target), fstype.encode() if fstype else None, flags, data.encode() if data else None
    )
    check(res, f"mount {fstype or 'bind'} {source} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    check(libc().umount2(os.fsencode(target), flags), f"unmount {target}")
