"""The ``overlayfs`` snapshotter: each snapshot is an overlay upper directory stacked on its parents.

Builtin plugin ``hoist.snapshotter.v1.overlayfs``.  It needs overlay mounts as root; when the kernel
or the filesystem under its root does not allow them, the plugin skips with the reason (and the
native snapshotter serves instead).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from hoist import linux
from hoist.errors import FailedPreconditionError, PluginSkipped
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.snapshots import PLUGIN_TYPE, Kind, Mount, mount
from hoist.snapshotters.storage import DirectorySnapshotter, Snapshot

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


class OverlaySnapshotter(DirectorySnapshotter):
    """Snapshots as ``<root>/snapshots/<id>/{fs,work}``; active ones mount as overlays of their parents' ``fs``."""

    def _fs(self, sid: int) -> Path:
        return self._dir(sid) / "fs"

    def _populate(self, tmp: Path, kind: Kind, parent_ids: tuple[int, ...]) -> None:
        tmp.chmod(0o700)
        (tmp / "fs").mkdir(0o755)
        (tmp / "fs").chmod(0o755)
        if kind is Kind.ACTIVE:
            (tmp / "work").mkdir(0o711)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        parents = snap.parent_ids
        if not parents:
            access = "ro" if snap.kind is Kind.VIEW else "rw"
            return [Mount(type="bind", source=str(self._fs(snap.id)), options=(access, "rbind"))]
        lower = "lowerdir=" + ":".join(str(self._fs(p)) for p in parents)
        if snap.kind is Kind.ACTIVE:
            return [
                Mount(
                    type="overlay",
                    source="overlay",
                    options=(f"workdir={self._dir(snap.id) / 'work'}", f"upperdir={self._fs(snap.id)}", lower),
                )
            ]
        if len(parents) == 1:
            return [Mount(type="bind", source=str(self._fs(parents[0])), options=("ro", "rbind"))]
        return [Mount(type="overlay", source="overlay", options=("ro", lower))]


def _merged_names_in_private_namespace(m: Mount, target: Path, root: Path) -> list[str]:
    """Mount ``m`` on ``target`` in a forked child's own mount namespace and return what the merged view lists.

    The check's mount lives only in that namespace, so a process killed during start-up (``kill -9``
    of a ``dist`` in its plugin init) can never leave it mounted on the host.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only syscalls, then _exit
        code = 0
        try:
            os.close(rfd)
            lib = linux.libc()
            linux.check(lib.unshare(CLONE_NEWNS), "unshare mount namespace")
            linux.mount("none", "/", None, MS_REC | MS_PRIVATE)
            try:
                mount(m, target)
            except FailedPreconditionError as e:
                os.write(wfd, b"E" + str(e).encode())
            else:
                os.write(wfd, b"N" + "\0".join(sorted(os.listdir(target))).encode())
        except BaseException as e:  # reported to the parent, which decides
            os.write(wfd, b"X" + f"{e}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    kind, text = out[:1], out[1:].decode(errors="replace")
    if kind == b"N":
        return text.split("\0") if text else []
    if kind == b"E":
        raise PluginSkipped(f"overlay mounts are not possible in {root}: {text}")
    raise PluginSkipped(f"overlay check in {root} failed: {text or 'no answer from the check process'}")


def check_overlay(root: Path) -> None:
    """Mount a real overlay under ``root`` with a whiteout in its upper layer and check that it hides the lower file.

    :raises PluginSkipped: overlay mounts (or whiteouts) do not work here; the message says why.
    """
    if os.geteuid() != 0:
        raise PluginSkipped("overlay mounts need root")
    base = Path(tempfile.mkdtemp(prefix="overlay-check-", dir=root))
    try:
        for d in ("lower1", "lower2", "upper", "work", "merged"):
            (base / d).mkdir()
        (base / "lower1" / "gone").write_bytes(b"x")
        (base / "lower2" / "kept").write_bytes(b"y")
        try:
            os.mknod(base / "upper" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
        except OSError as e:
            raise PluginSkipped(f"cannot create overlay whiteouts in {root}: {e.strerror}") from e
        m = Mount(
            type="overlay",
            source="overlay",
            options=(f"lowerdir={base / 'lower2'}:{base / 'lower1'}", f"upperdir={base / 'upper'}", f"workdir={base / 'work'}"),
        )
        names = _merged_names_in_private_namespace(m, base / "merged", root)
        if names != ["kept"]:
            raise PluginSkipped(f"overlay whiteouts do not work in {root}: merged view shows {names}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type=PLUGIN_TYPE, id="overlayfs", init=_init))


def _init(ic: InitContext) -> OverlaySnapshotter:
    check_overlay(ic.root)
    return OverlaySnapshotter(ic.root)
