"""Snapshots: containerd's snapshotter interface, its value types, and helpers to mount snapshots.

Pure types and helpers only; snapshotters are plugins (``hoist.snapshotter.v1``), e.g. the builtin
``hoist.snapshotter.v1.native`` and ``hoist.snapshotter.v1.overlayfs``.

A snapshot is a filesystem tree identified by a *key* while it is being written (``active``) or
looked at (``view``), and by a *name* once committed.  ``prepare(key, parent)`` makes an active
snapshot that starts as the parent's content; ``commit(name, key)`` freezes it; ``view(key, parent)``
gives a read-only look at a committed snapshot.  ``mounts(key)`` says how to see a snapshot as a
directory: a list of :class:`Mount` to apply in order at a target.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import errno
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from hoist import filters as filters_mod
from hoist import linux
from hoist.errors import FailedPreconditionError, InvalidArgumentError, UnsupportedError, hiding
from hoist.linux import MNT_DETACH, MOUNT_FLAGS, MS_BIND, MS_REC, MS_REMOUNT, mount_flags

PLUGIN_TYPE = "hoist.snapshotter.v1"

#: Label containerd sets on the temporary snapshot an unpack writes into: the chain ID it will become.
LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"


class Kind(str, enum.Enum):
    """What a snapshot is: a read-only ``view``, a writable ``active`` snapshot, or a ``committed`` one."""

    UNKNOWN = "unknown"
    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"

    def __str__(self) -> str:
        return self.value


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _labels(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Info:
    """What a snapshotter knows about one snapshot.

    :ivar name: the key (active, view) or the name (committed).
    :ivar parent: the committed parent's name, ``""`` for none.
    """

    kind: Kind = attrs.field(converter=Kind)
    name: str
    parent: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_labels, hash=False)
    created: _dt.datetime = attrs.field(factory=_now)
    updated: _dt.datetime = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class Usage:
    """Resources a snapshot uses on its own (not counting its parents)."""

    inodes: int = 0
    size: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(inodes=self.inodes + other.inodes, size=self.size + other.size)


@attrs.frozen(kw_only=True)
class Mount:
    """One mount to make, as ``mount -t TYPE -o OPTIONS SOURCE TARGET`` would.

    :ivar type: ``bind`` or ``overlay`` for Hoist's snapshotters.
    :ivar source: a directory (bind) or a label (``overlay``).
    :ivar options: flags (``ro``, ``rbind``, ``nosuid``, …) and data (``lowerdir=…``) in order.
    """

    type: str
    source: str
    options: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    target: str = ""

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    def option(self, key: str) -> str | None:
        """The value of data option ``key=`` (``upperdir``, ``lowerdir``, …), or ``None``."""
        prefix = key + "="
        for opt in self.options:
            if opt.startswith(prefix):
                return opt[len(prefix):]
        return None


WalkFunc = Callable[[Info], None]


@runtime_checkable
class Snapshotter(Protocol):
    """containerd's snapshotter interface, as a ``hoist.snapshotter.v1`` plugin instance provides.

    Keys and names share one space per snapshotter.  Parents must be committed; a snapshot with
    children cannot be removed; only active snapshots can be committed.
    """

    def stat(self, key: str) -> Info:
        """Info of snapshot ``key``.

        :raises NotFoundError: no such snapshot.
        """

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Replace the labels of ``info.name`` (all, or only the ``labels.<key>`` paths listed).

        :raises NotFoundError: no such snapshot.
        """

    def usage(self, key: str) -> Usage:
        """Disk usage of ``key`` alone (measured now for active snapshots, recorded at commit otherwise)."""

    def mounts(self, key: str) -> list[Mount]:
        """The mounts showing active or view snapshot ``key``.

        :raises NotFoundError: no such snapshot.
        :raises FailedPreconditionError: ``key`` is committed.
        """

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create the writable snapshot ``key`` starting from committed ``parent``; return its mounts.

        :raises AlreadyExistsError: ``key`` exists.
        :raises NotFoundError: ``parent`` does not exist.
        :raises InvalidArgumentError: ``parent`` is not committed.
        """

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create the read-only snapshot ``key`` of committed ``parent``; return its mounts (same errors as prepare)."""

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Freeze active snapshot ``key`` as committed snapshot ``name``; ``key`` is gone afterwards.

        :raises NotFoundError: no such snapshot.
        :raises FailedPreconditionError: ``key`` is not active.
        :raises AlreadyExistsError: ``name`` exists.
        """

    def remove(self, key: str) -> None:
        """Remove snapshot ``key`` and its data.

        :raises NotFoundError: no such snapshot.
        :raises FailedPreconditionError: ``key`` has children.
        """

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        """Call ``fn`` for every snapshot matching any of ``filters`` (all when none are given)."""

    def close(self) -> None: ...


# -- filters ---------------------------------------------------------------------------------------


def compile_filters(*filters: str) -> Callable[[Info], bool]:
    """A predicate for containerd snapshot filters over ``kind``, ``name``, ``parent`` and ``labels.<key>``
    (see :mod:`hoist.filters`: ``,`` ANDs selectors, separate filters OR).

    :raises InvalidArgumentError: a filter does not parse.
    """
    parsed = filters_mod.parse(*filters)

    def match(info: Info) -> bool:
        def adaptor(path: tuple[str, ...]) -> tuple[str, bool]:
            if not path:
                return "", False
            if path[0] == "labels":
                return filters_mod.map_field(path[1:], dict(info.labels))
            if len(path) == 1 and path[0] in ("kind", "name", "parent"):
                value = str(getattr(info, path[0]))
                return value, bool(value)
            return "", False

        return parsed.match(adaptor)

    return match


# -- namespaces -----------------------------------------------------------------------------------


class NamespacedSnapshotter:
    """One namespace's view of a snapshotter: keys are stored as ``<namespace>/<key>``.

    Parents, walk results and infos are translated both ways, so a caller only ever sees its own
    namespace's snapshots.
    """

    def __init__(self, backend: Snapshotter, namespace: str) -> None:
        if not namespace or "/" in namespace:
            raise InvalidArgumentError(f"namespace {namespace!r}: must be non-empty and without '/'")
        self.backend = backend
        self.namespace = namespace
        self._prefix = namespace + "/"
        self._hide = re.compile(rf"(?<![\w/.:-]){re.escape(self._prefix)}")

    def _k(self, key: str) -> str:
        if not key:
            raise InvalidArgumentError("snapshot key must not be empty")
        return self._prefix + key

    def _p(self, parent: str) -> str:
        return self._prefix + parent if parent else ""

    def _info_out(self, info: Info) -> Info:
        return attrs.evolve(
            info,
            name=info.name[len(self._prefix):],
            parent=info.parent[len(self._prefix):] if info.parent.startswith(self._prefix) else info.parent,
        )

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Show the caller's keys in error messages, without the namespace prefix."""
        return hiding(self._hide)

    def stat(self, key: str) -> Info:
        with self._errors():
            return self._info_out(self.backend.stat(self._k(key)))

    def update(self, info: Info, *fieldpaths: str) -> Info:
        with self._errors():
            return self._info_out(self.backend.update(attrs.evolve(info, name=self._k(info.name)), *fieldpaths))

    def usage(self, key: str) -> Usage:
        with self._errors():
            return self.backend.usage(self._k(key))

    def mounts(self, key: str) -> list[Mount]:
        with self._errors():
            return self.backend.mounts(self._k(key))

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        with self._errors():
            return self.backend.prepare(self._k(key), self._p(parent), labels)

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        with self._errors():
            return self.backend.view(self._k(key), self._p(parent), labels)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        with self._errors():
            self.backend.commit(self._k(name), self._k(key), labels)

    def remove(self, key: str) -> None:
        with self._errors():
            self.backend.remove(self._k(key))

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        match = compile_filters(*filters)

        def visit(info: Info) -> None:
            if info.name.startswith(self._prefix):
                out = self._info_out(info)
                if match(out):
                    fn(out)

        self.backend.walk(visit)

    def close(self) -> None:
        """Nothing to do: the backend belongs to its plugin."""


def namespaced(snapshotter: Snapshotter, namespace: str) -> NamespacedSnapshotter:
    """``snapshotter`` as seen from ``namespace``."""
    return NamespacedSnapshotter(snapshotter, namespace)


def list_snapshots(snapshotter: Snapshotter, *filters: str) -> list[Info]:
    """Every snapshot matching ``filters``, sorted by name."""
    out: list[Info] = []
    snapshotter.walk(out.append, *filters)
    return sorted(out, key=lambda i: i.name)


# -- mounting -------------------------------------------------------------------------------------

def _parse_options(options: Sequence[str]) -> tuple[int, list[str]]:
    flags, _propagation, data = mount_flags(list(options))
    return flags, data


def _sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    try:
        linux.mount(source, target, fstype, flags, data)
    except OSError as e:
        raise OSError(e.errno, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(e.errno)}") from None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _mount_overlay_long(target: str, flags: int, data: list[str]) -> None:
    """Overlay data longer than a page: mount from the lowers' common directory with relative paths."""
    lowers = next((d[len("lowerdir="):].split(":") for d in data if d.startswith("lowerdir=")), [])
    common = os.path.commonpath(lowers) if lowers else "/"
    rel = []
    for d in data:
        if d.startswith("lowerdir="):
            d = "lowerdir=" + ":".join(os.path.relpath(p, common) for p in lowers)
        rel.append(d)
    opts = [o for o, (clear, bit) in MOUNT_FLAGS.items() if not clear and bit and flags & bit == bit and o not in ("bind", "rbind", "remount")]
    cmd = ["mount", "-t", "overlay", "overlay", "-o", ",".join(opts + rel), target]
    proc = subprocess.run(cmd, cwd=common, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(errno.EINVAL, f"mount overlay on {target}: {proc.stderr.strip() or 'failed'}")


def mount(m: Mount, target: str | os.PathLike[str]) -> None:
    """Make mount ``m`` at directory ``target`` (bind or any filesystem type the kernel knows).

    :raises FailedPreconditionError: the kernel refused; the message says why.
    """
    target = os.fspath(target)
    flags, data = _parse_options(m.options)
    try:
        if m.type == "bind" or flags & MS_BIND:
            _sys_mount(m.source, target, None, flags & (MS_BIND | MS_REC) or MS_BIND, None)
            if flags & ~(MS_BIND | MS_REC):
                _sys_mount("", target, None, MS_REMOUNT | MS_BIND | (flags & ~(MS_BIND | MS_REC)), None)
            return
        text = ",".join(data)
        if m.type == "overlay" and len(text) >= _PAGE - 512:
            _mount_overlay_long(target, flags, data)
            return
        _sys_mount(m.source, target, m.type, flags, text or None)
    except OSError as e:
        raise FailedPreconditionError(f"mount {m.type} {m.source} on {target}: {e.strerror or e}") from e


def mount_all(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> None:
    """Apply ``mounts`` in order at ``target``; on failure, undo the ones already made."""
    done = 0
    try:
        for m in mounts:
            mount(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            unmount(target)
        raise


def unmount(target: str | os.PathLike[str], *, detach_on_busy: bool = True) -> None:
    """Unmount ``target`` once (lazily when it is busy and ``detach_on_busy``)."""
    t = os.fspath(target)
    try:
        linux.umount2(t, 0)
        return
    except OSError as e:
        err = e.errno
    if err == errno.EBUSY and detach_on_busy:
        try:
            linux.umount2(t, MNT_DETACH)
            return
        except OSError as e:
            err = e.errno
    raise FailedPreconditionError(f"unmount {t}: {os.strerror(err)}")


def unmount_all(target: str | os.PathLike[str]) -> None:
    """Unmount everything stacked at ``target``."""
    while True:
        try:
            unmount(target)
        except FailedPreconditionError as e:
            if "Invalid argument" in str(e) or "No such file" in str(e):
                return
            raise


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], *, prefix: str = "hoist-mount-") -> Iterator[Path]:
    """Mount ``mounts`` at a fresh temporary directory for the duration of the block."""
    if not mounts:
        raise UnsupportedError("no mounts to make")
    target = tempfile.mkdtemp(prefix=prefix)
    try:
        mount_all(mounts, target)
        try:
            yield Path(target)
        finally:
            unmount_all(target)
    finally:
        os.rmdir(target)


__all__ = [
    "PLUGIN_TYPE",
    "LABEL_SNAPSHOT_REF",
    "Kind",
    "Info",
    "Usage",
    "Mount",
    "Snapshotter",
    "WalkFunc",
    "NamespacedSnapshotter",
    "namespaced",
    "list_snapshots",
    "compile_filters",
    "mount",
    "mount_all",
    "unmount",
    "unmount_all",
    "mounted",
]
