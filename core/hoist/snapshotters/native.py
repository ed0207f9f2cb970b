"""The ``native`` snapshotter: every snapshot is a plain directory; a child starts as a full copy of its parent.

Builtin plugin ``hoist.snapshotter.v1.native``.  Works on any filesystem; copies use reflinks where
the filesystem has them (``cp -a --reflink=auto`` keeps owners, modes, times, xattrs, devices and
hardlinks).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hoist.errors import FailedPreconditionError
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.snapshots import PLUGIN_TYPE, Kind, Mount
from hoist.snapshotters.storage import DirectorySnapshotter, Snapshot


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents and metadata of directory ``src`` onto existing directory ``dst``.

    :raises FailedPreconditionError: the copy failed (the message carries ``cp``'s complaint).
    """
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--no-target-directory", f"{src}/.", str(dst)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise FailedPreconditionError(f"copy {src} to {dst}: {proc.stderr.strip() or 'cp failed'}")


class NativeSnapshotter(DirectorySnapshotter):
    """Snapshots as directories ``<root>/snapshots/<id>``, mounted by bind mounts."""

    def _fs(self, sid: int) -> Path:
        return self._dir(sid)

    def _populate(self, tmp: Path, kind: Kind, parent_ids: tuple[int, ...]) -> None:
        tmp.chmod(0o755)
        if kind is Kind.ACTIVE and parent_ids:
            copy_tree(self._fs(parent_ids[0]), tmp)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        if snap.kind is Kind.VIEW and snap.parent_ids:
            return [Mount(type="bind", source=str(self._fs(snap.parent_ids[0])), options=("ro", "rbind"))]
        access = "ro" if snap.kind is Kind.VIEW else "rw"
        return [Mount(type="bind", source=str(self._fs(snap.id)), options=(access, "rbind"))]


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type=PLUGIN_TYPE, id="native", init=_init))


def _init(ic: InitContext) -> NativeSnapshotter:
    return NativeSnapshotter(ic.root)
