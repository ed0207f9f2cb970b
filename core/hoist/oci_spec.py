"""OCI runtime specs: build a container's ``config.json`` from an image config plus the caller's overrides.

Pure helpers: the only files read are the image's ``/etc/passwd`` and ``/etc/group``, resolved
inside the root filesystem so that a symlink in the image cannot point at the host's files.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from hoist.errors import InvalidArgumentError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ID = 2**31 - 1

#: Filesystems every container gets, in mount order.
DEFAULT_MOUNTS: tuple[Mapping[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
)  # fmt: skip

#: Device nodes created in the container's ``/dev``: (path, major, minor).
DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
)

#: Paths hidden from the container (a read-only empty tmpfs over directories, /dev/null over files).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip

#: Paths the container sees read-only.
READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

#: Capabilities a container's root user keeps (the set Docker and containerd grant by default).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip

#: Directories a working directory may not be in: they hold the kernel's view of processes, not files.
_FORBIDDEN_CWD = ("/proc", "/sys")
_MAX_FILE = 4 << 20
_MAX_LINKS = 40
_NUMERIC = re.compile(r"[+-]?\d+")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")


def _strs(value: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


def _optional_strs(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class ImageConfig:
    """The parts of an OCI image config that say how to run it (``config`` in the config blob)."""

    entrypoint: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    cmd: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ImageConfig:
        """From an image config blob (``{"config": {...}, "rootfs": ...}``) or its ``config`` object."""
        if not isinstance(obj, Mapping):
            raise InvalidArgumentError("image config: expected a JSON object")
        cfg = obj["config"] if "config" in obj else ({} if "rootfs" in obj else obj)
        cfg = cfg or {}
        if not isinstance(cfg, Mapping):
            raise InvalidArgumentError("image config: config: expected a JSON object")

        def strings(key: str) -> tuple[str, ...]:
            v = cfg.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise InvalidArgumentError(f"image config: {key}: expected a list of strings")
            return tuple(v)

        def string(key: str) -> str:
            v = cfg.get(key) or ""
            if not isinstance(v, str):
                raise InvalidArgumentError(f"image config: {key}: expected a string")
            return v

        return cls(
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            env=strings("Env"),
            working_dir=string("WorkingDir"),
            user=string("User"),
        )


@attrs.frozen(kw_only=True)
class SpecOptions:
    """What the caller changes about the image's defaults.

    :ivar args: replaces the image's Cmd (the Entrypoint stays), like ``docker run IMAGE ARGS…``.
    :ivar entrypoint: replaces the image's Entrypoint and drops its Cmd.
    :ivar env: ``KEY=VALUE`` entries added to the image's Env, replacing the same keys.
    :ivar cwd: the working directory (absolute), instead of the image's WorkingDir.
    :ivar user: ``user``, ``uid``, ``user:group`` or ``uid:gid``, instead of the image's User.
    :ivar network: ``host`` shares the host's network; ``none`` gives a new network namespace
        with only loopback.
    """

    args: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strs)
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    cwd: str | None = None
    user: str | None = None
    hostname: str = ""
    readonly_rootfs: bool = False
    no_new_privileges: bool = False
    network: Literal["host", "none"] = "host"
    terminal: bool = False


@attrs.frozen(kw_only=True)
class User:
    """A resolved user: numeric ids plus what ``/etc/passwd`` says about it."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    name: str = ""
    home: str = "/"


def scoped_path(root: Path, path: str) -> Path:
    """``path`` inside ``root`` with symlinks resolved as if ``root`` were ``/``; never leaves ``root``.

    Missing components are kept as they are.

    :raises InvalidArgumentError: too many levels of symlinks.
    """
    root = Path(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise InvalidArgumentError(f"{path}: too many levels of symbolic links in the image")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return root.joinpath(*resolved)


def _read_image_file(rootfs: Path | None, path: str) -> str | None:
    """The text of a regular file of the image, or ``None`` when it is missing or not a regular file."""
    if rootfs is None:
        return None
    full = scoped_path(rootfs, path)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_FILE)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def _parse_id(kind: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgumentError(f"{kind} {text!r}: not a number") from None
    if not 0 <= value <= MAX_ID:
        raise InvalidArgumentError(f"{kind} {text}: out of range (0 to {MAX_ID})")
    return value


def _table(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        cols = line.split(":")
        if len(cols) < fields:
            continue
        rows.append(cols)
    return rows


def _id_or_none(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value <= MAX_ID else None


def resolve_user(user: str, rootfs: Path | None) -> User:
    """Resolve ``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``, ``""`` for root) against the image.

    Names must exist in the image's ``/etc/passwd`` (``/etc/group`` for groups); numbers work
    without those files.  Supplementary groups come only from ``/etc/group`` membership, never from
    the caller.

    :raises InvalidArgumentError: an unknown name, or an id outside 0..2147483647.
    """
    if "\x00" in user:
        raise InvalidArgumentError(f"user {user!r}: contains NUL")
    spec = user or "0"
    user_part, sep, group_part = spec.partition(":")
    if sep and not group_part:
        raise InvalidArgumentError(f"user {user!r}: empty group after ':'")
    if not user_part:
        raise InvalidArgumentError(f"user {user!r}: empty user name")
    passwd = _table(_read_image_file(rootfs, "/etc/passwd"), 7)
    groups = _table(_read_image_file(rootfs, "/etc/group"), 4)

    entry = None
    if _NUMERIC.fullmatch(user_part):
        uid = _parse_id("uid", user_part)
        entry = next((row for row in passwd if _id_or_none(row[2]) == uid), None)
    else:
        entry = next((row for row in passwd if row[0] == user_part), None)
        if entry is None:
            where = "/etc/passwd" if rootfs is not None and passwd else "/etc/passwd (the image has none)"
            raise InvalidArgumentError(f"user {user_part!r}: no such user in the image's {where}")
        parsed = _id_or_none(entry[2])
        if parsed is None:
            raise InvalidArgumentError(f"user {user_part!r}: the image's /etc/passwd has an invalid uid {entry[2]!r}")
        uid = parsed

    name = entry[0] if entry else ""
    home = (entry[5] or "/") if entry else "/"
    gid = 0
    if entry is not None:
        parsed_gid = _id_or_none(entry[3])
        if parsed_gid is None:
            raise InvalidArgumentError(f"user {name!r}: the image's /etc/passwd has an invalid gid {entry[3]!r}")
        gid = parsed_gid
    if group_part:
        if _NUMERIC.fullmatch(group_part):
            gid = _parse_id("gid", group_part)
        else:
            grow = next((row for row in groups if row[0] == group_part), None)
            if grow is None:
                raise InvalidArgumentError(f"group {group_part!r}: no such group in the image's /etc/group")
            parsed_gid = _id_or_none(grow[2])
            if parsed_gid is None:
                raise InvalidArgumentError(f"group {group_part!r}: the image's /etc/group has an invalid gid {grow[2]!r}")
            gid = parsed_gid

    extra: set[int] = set()
    if name:
        for row in groups:
            members = [m.strip() for m in row[3].split(",") if m.strip()]
            g = _id_or_none(row[2])
            if name in members and g is not None and g != gid:
                extra.add(g)
    return User(uid=uid, gid=gid, additional_gids=tuple(sorted(extra)), name=name, home=home)


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """``base`` with each ``KEY=VALUE`` of ``overrides`` replacing the same key or appended.

    :raises InvalidArgumentError: an override without ``=`` or with NUL.
    """
    out: dict[str, str] = {}
    for item in base:
        key, sep, _ = item.partition("=")
        if sep and key and "\x00" not in item:
            out[key] = item
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"environment variable {item!r}: expected KEY=VALUE")
        if "\x00" in item:
            raise InvalidArgumentError(f"environment variable {key!r}: contains NUL")
        out[key] = item
    return list(out.values())


def check_cwd(cwd: str) -> str:
    """The normalised working directory ``cwd``.

    :raises InvalidArgumentError: not absolute, NUL, or inside ``/proc`` or ``/sys``.
    """
    if not cwd.startswith("/"):
        raise InvalidArgumentError(f"working directory {cwd!r}: must be an absolute path")
    if "\x00" in cwd:
        raise InvalidArgumentError(f"working directory {cwd!r}: contains NUL")
    norm = posixpath.normpath(cwd)
    norm = "/" + norm.lstrip("/")
    for bad in _FORBIDDEN_CWD:
        if norm == bad or norm.startswith(bad + "/"):
            raise InvalidArgumentError(f"working directory {cwd}: inside {bad}, refused")
    return norm


def _args(image: ImageConfig, options: SpecOptions) -> list[str]:
    if options.entrypoint is not None:
        args = list(options.entrypoint) + list(options.args or ())
    else:
        args = list(image.entrypoint) + list(options.args if options.args is not None else image.cmd)
    if not args or not args[0]:
        raise InvalidArgumentError("no command to run: the image has no Entrypoint or Cmd and none was given")
    for a in args:
        if "\x00" in a:
            raise InvalidArgumentError(f"argument {a!r}: contains NUL")
    return args


def generate_spec(image: ImageConfig, options: SpecOptions = SpecOptions(), *, rootfs: Path | None = None) -> dict[str, Any]:
    """The OCI runtime spec (``config.json``) to run ``image`` with ``options``.

    :param rootfs: the image's root filesystem, read for ``/etc/passwd`` and ``/etc/group``; with
        ``None`` only numeric users work.
    :raises InvalidArgumentError: no command, a bad user, working directory, environment entry,
        hostname or network mode.
    """
    args = _args(image, options)
    user = resolve_user(options.user if options.user is not None else image.user, rootfs)
    env = merge_env(image.env, options.env)
    keys = {e.partition("=")[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in keys:
        env.append(f"HOME={user.home}")
    if options.terminal and "TERM" not in keys:
        env.append("TERM=xterm")
    if options.cwd is not None:
        cwd = check_cwd(options.cwd)
    else:
        cwd = check_cwd(posixpath.join("/", image.working_dir or "/"))
    if options.hostname and not _HOSTNAME.fullmatch(options.hostname):
        raise InvalidArgumentError(f"hostname {options.hostname!r}: use at most 64 letters, digits, '.' and '-'")
    if options.network not in ("host", "none"):
        raise InvalidArgumentError(f"network {options.network!r}: expected host or none")

    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if options.network == "none":
        namespaces.append({"type": "network"})
    caps = list(DEFAULT_CAPABILITIES)
    granted = caps if user.uid == 0 else []
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": options.terminal,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": list(granted),
                "permitted": list(granted),
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": options.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": options.readonly_rootfs},
        "mounts": [dict(m, options=list(m["options"])) for m in DEFAULT_MOUNTS],
        "linux": {
            "namespaces": namespaces,
            "devices": [
                {"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
                for p, ma, mi in DEFAULT_DEVICES
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if options.hostname:
        spec["hostname"] = options.hostname
    return spec


__all__ = [
    "OCI_VERSION",
    "DEFAULT_PATH",
    "DEFAULT_MOUNTS",
    "DEFAULT_DEVICES",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "DEFAULT_CAPABILITIES",
    "ImageConfig",
    "SpecOptions",
    "User",
    "scoped_path",
    "resolve_user",
    "merge_env",
    "check_cwd",
    "generate_spec",
]
