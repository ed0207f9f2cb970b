"""The snapshotter conformance suite, modelled on containerd's ``snapshots/testsuite``.

A plugin author runs it against their snapshotter by subclassing::

    import functools, pytest
    from hoist.testing.snapshots import SnapshotterSuite
    from my_plugin.snapshotter import MySnapshotter

    class TestMySnapshotter(SnapshotterSuite):
        @pytest.fixture
        def snapshotter_factory(self, tmp_path):
            return functools.partial(MySnapshotter, tmp_path)   # each call opens the same (initially empty) root

The suite mounts snapshots (run it as root), writes files through the mounts, applies OCI layers
with whiteouts through :func:`hoist.archive.apply_to_mounts`, and checks what a user of the
mounted snapshots sees.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hoist.archive import apply_to_mounts
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.snapshots import Info, Kind, Snapshotter, list_snapshots, mounted, namespaced


def tar_layer(*members: tuple[str, str, bytes | str] | tarfile.TarInfo, data: dict[str, bytes] | None = None) -> bytes:
    """A PAX tar built from ``(kind, name, payload)`` tuples: ``("f", "a/b", b"data")``,
    ``("d", "a", "")``, ``("l", "link", "target")`` (symlink), ``("h", "hard", "a/b")``; or TarInfos."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m, io.BytesIO((data or {}).get(m.name, b"")) if m.isreg() else None)
                continue
            kind, name, payload = m
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "f":
                body = payload if isinstance(payload, bytes) else payload.encode()
                ti.size, ti.mode = len(body), 0o644
                tf.addfile(ti, io.BytesIO(body))
            elif kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, str(payload), 0o777
                tf.addfile(ti)
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(payload)
                tf.addfile(ti)
            else:
                raise ValueError(kind)
    return buf.getvalue()


def _files(root: Path) -> dict[str, str]:
    """``{relative path: content or '<dir>' or '-> target'}`` of a mounted tree."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "<dir>"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = p.read_text()
            else:
                out[rel] = f"<{stat.filemode(st.st_mode)[0]}>"
    return out


class SnapshotterSuite:
    """containerd's snapshotter contract, checked through real mounts.

    Provide ``snapshotter_factory``: a zero-argument callable opening the snapshotter on one root
    (empty at the start of each test); the suite calls it again to check that state persists.
    """

    @pytest.fixture
    def snapshotter_factory(self) -> Callable[[], Snapshotter]:
        raise NotImplementedError("subclass SnapshotterSuite and provide a snapshotter_factory fixture")

    @pytest.fixture
    def snapshotter(self, snapshotter_factory: Callable[[], Snapshotter]) -> Iterator[Snapshotter]:
        sn = snapshotter_factory()
        yield sn
        sn.close()

    # -- helpers --

    def write(self, sn: Snapshotter, key: str, files: dict[str, str], parent: str = "", remove: tuple[str, ...] = ()) -> None:
        with mounted(sn.prepare(key, parent)) as root:
            for name in remove:
                p = root / name
                if p.is_dir() and not p.is_symlink():
                    for sub in sorted(p.rglob("*"), reverse=True):
                        sub.rmdir() if sub.is_dir() and not sub.is_symlink() else sub.unlink()
                    p.rmdir()
                else:
                    p.unlink()
            for name, content in files.items():
                p = root / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(content)

    def look(self, sn: Snapshotter, name: str) -> dict[str, str]:
        key = f"look-{name}"
        with mounted(sn.view(key, name)) as root:
            files = _files(root)
        sn.remove(key)
        return files

    def apply(self, sn: Snapshotter, name: str, parent: str, layer: bytes) -> None:
        key = f"apply-{name}"
        mounts = sn.prepare(key, parent)
        try:
            apply_to_mounts(mounts, io.BytesIO(layer), layer=name)
            sn.commit(name, key)
        except BaseException:
            sn.remove(key)
            raise

    # -- basics --

    def test_prepare_write_commit_view(self, snapshotter: Snapshotter) -> None:
        self.write(snapshotter, "a", {"hello.txt": "hello", "dir/x": "x"})
        snapshotter.commit("base", "a")
        assert self.look(snapshotter, "base") == {"hello.txt": "hello", "dir": "<dir>", "dir/x": "x"}
        with pytest.raises(NotFoundError):
            snapshotter.stat("a")

    def test_stat_kinds_parents_and_labels(self, snapshotter: Snapshotter) -> None:
        snapshotter.prepare("a", labels={"l1": "v1"})
        info = snapshotter.stat("a")
        assert (info.kind, info.name, info.parent, dict(info.labels)) == (Kind.ACTIVE, "a", "", {"l1": "v1"})
        snapshotter.commit("base", "a", labels={"l2": "v2"})
        info = snapshotter.stat("base")
        assert (info.kind, info.parent) == (Kind.COMMITTED, "")
        assert info.labels.get("l2") == "v2"
        snapshotter.view("v", "base")
        snapshotter.prepare("b", "base")
        assert snapshotter.stat("v").kind is Kind.VIEW and snapshotter.stat("v").parent == "base"
        assert snapshotter.stat("b").kind is Kind.ACTIVE and snapshotter.stat("b").parent == "base"

    def test_errors(self, snapshotter: Snapshotter) -> None:
        snapshotter.prepare("a")
        with pytest.raises(AlreadyExistsError, match="a"):
            snapshotter.prepare("a")
        with pytest.raises(NotFoundError, match="missing"):
            snapshotter.prepare("b", "missing")
        with pytest.raises(InvalidArgumentError, match="not a committed"):
            snapshotter.prepare("b", "a")
        with pytest.raises(NotFoundError):
            snapshotter.stat("b")
        snapshotter.commit("base", "a")
        snapshotter.view("v", "base")
        with pytest.raises(FailedPreconditionError, match="v"):
            snapshotter.commit("x", "v")
        with pytest.raises(FailedPreconditionError):
            snapshotter.mounts("base")
        snapshotter.prepare("c", "base")
        with pytest.raises(AlreadyExistsError, match="base"):
            snapshotter.commit("base", "c")
        with pytest.raises(NotFoundError):
            snapshotter.commit("y", "nope")
        with pytest.raises(FailedPreconditionError, match="children"):
            snapshotter.remove("base")
        with pytest.raises(NotFoundError):
            snapshotter.remove("nope")
        with pytest.raises(NotFoundError):
            snapshotter.mounts("nope")
        assert snapshotter.stat("c").kind is Kind.ACTIVE  # failed commit left it as it was

    def test_remove_frees_key_and_parent(self, snapshotter: Snapshotter) -> None:
        self.write(snapshotter, "a", {"f": "1"})
        snapshotter.commit("base", "a")
        self.write(snapshotter, "b", {"g": "2"}, parent="base")
        snapshotter.remove("b")
        snapshotter.remove("base")
        assert list_snapshots(snapshotter) == []
        self.write(snapshotter, "b", {"h": "3"})
        snapshotter.commit("base", "b")
        assert self.look(snapshotter, "base") == {"h": "3"}

    # -- layering --

    def test_children_see_parent_and_do_not_change_it(self, snapshotter: Snapshotter) -> None:
        self.write(snapshotter, "a", {"keep": "k", "change": "old", "gone": "g", "d/inner": "i"})
        snapshotter.commit("l1", "a")
        self.write(snapshotter, "b", {"change": "new", "added": "a"}, parent="l1", remove=("gone", "d"))
        snapshotter.commit("l2", "b")
        assert self.look(snapshotter, "l1") == {"keep": "k", "change": "old", "gone": "g", "d": "<dir>", "d/inner": "i"}
        assert self.look(snapshotter, "l2") == {"keep": "k", "change": "new", "added": "a"}

    def test_long_chain(self, snapshotter: Snapshotter) -> None:
        parent = ""
        for i in range(8):
            self.write(snapshotter, f"k{i}", {f"f{i}": str(i), "top": str(i)}, parent=parent)
            snapshotter.commit(f"c{i}", f"k{i}")
            parent = f"c{i}"
        seen = self.look(snapshotter, "c7")
        assert seen == {**{f"f{i}": str(i) for i in range(8)}, "top": "7"}
        assert [i.name for i in list_snapshots(snapshotter)] == [f"c{i}" for i in range(8)]
        assert snapshotter.stat("c7").parent == "c6"

    def test_view_is_read_only(self, snapshotter: Snapshotter) -> None:
        self.write(snapshotter, "a", {"f": "1"})
        snapshotter.commit("base", "a")
        for parent in ("base", ""):
            key = f"v-{parent or 'empty'}"
            with mounted(snapshotter.view(key, parent)) as root:
                with pytest.raises(OSError) as err:
                    (root / "new").write_text("x")
                assert err.value.errno == errno.EROFS

    def test_special_files_survive_layering(self, snapshotter: Snapshotter) -> None:
        with mounted(snapshotter.prepare("a")) as root:
            (root / "suid").write_text("s")
            os.chown(root / "suid", 1234, 5678)
            os.chmod(root / "suid", 0o4755)
            os.symlink("/etc/passwd", root / "abs")
            os.link(root / "suid", root / "suid-link")
            os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            os.mkfifo(root / "fifo", 0o640)
            os.setxattr(root / "suid", "user.note", b"kept")
            os.utime(root / "suid", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
        snapshotter.commit("base", "a")
        self.write(snapshotter, "b", {"other": "o"}, parent="base")
        snapshotter.commit("child", "b")
        with mounted(snapshotter.view("v", "child")) as root:
            st = (root / "suid").lstat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1234, 5678)
            assert st.st_mtime_ns == 1_500_000_000_000_000_000
            assert st.st_ino == (root / "suid-link").lstat().st_ino and st.st_nlink == 2
            assert os.getxattr(root / "suid", "user.note") == b"kept"
            assert os.readlink(root / "abs") == "/etc/passwd"
            assert (root / "null").lstat().st_rdev == os.makedev(1, 3)
            assert stat.S_ISFIFO((root / "fifo").lstat().st_mode)

    # -- whiteouts through the layer applier --

    def test_layers_with_whiteouts_and_opaque_dirs(self, snapshotter: Snapshotter) -> None:
        self.apply(snapshotter, "l1", "", tar_layer(
            ("d", "etc", ""), ("f", "etc/gone.txt", "g"), ("f", "etc/kept.txt", "k"),
            ("d", "data", ""), ("f", "data/old1", "1"), ("d", "data/sub", ""), ("f", "data/sub/old2", "2"),
            ("d", "tree", ""), ("d", "tree/deep", ""), ("f", "tree/deep/x", "x"),
        ))
        self.apply(snapshotter, "l2", "l1", tar_layer(
            ("f", "etc/.wh.gone.txt", ""), ("f", "data/.wh..wh..opq", ""), ("f", "data/new", "n"),
            ("d", "data/sub", ""), ("f", "data/sub/new2", "n2"), ("f", ".wh.tree", ""),
        ))
        assert self.look(snapshotter, "l2") == {
            "etc": "<dir>", "etc/kept.txt": "k",
            "data": "<dir>", "data/new": "n", "data/sub": "<dir>", "data/sub/new2": "n2",
        }
        self.apply(snapshotter, "l3", "l2", tar_layer(("d", "tree", ""), ("f", "tree/again", "a")))
        assert self.look(snapshotter, "l3")["tree/again"] == "a"
        assert "tree/deep" not in self.look(snapshotter, "l3")
        assert self.look(snapshotter, "l1")["data/sub/old2"] == "2"

    def test_missing_directories_keep_lower_metadata(self, snapshotter: Snapshotter) -> None:
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode, tmp.mtime = tarfile.DIRTYPE, 0o1777, 1_600_000_000
        self.apply(snapshotter, "l1", "", tar_layer(tmp))
        self.apply(snapshotter, "l2", "l1", tar_layer(("f", "tmp/file", "f")))
        with mounted(snapshotter.view("v", "l2")) as root:
            assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
            assert (root / "tmp" / "file").read_text() == "f"

    # -- labels, walk, usage --

    def test_update_labels(self, snapshotter: Snapshotter) -> None:
        snapshotter.prepare("a", labels={"keep": "1", "drop": "2"})
        info = snapshotter.stat("a")
        new = snapshotter.update(Info(kind=info.kind, name="a", labels={"added": "3"}), "labels.added", "labels.drop")
        assert dict(new.labels) == {"keep": "1", "added": "3"}
        new = snapshotter.update(Info(kind=info.kind, name="a", labels={"only": "x"}))
        assert dict(new.labels) == {"only": "x"}
        assert dict(snapshotter.stat("a").labels) == {"only": "x"}
        with pytest.raises(NotFoundError):
            snapshotter.update(Info(kind=Kind.ACTIVE, name="nope"))
        with pytest.raises(InvalidArgumentError):
            snapshotter.update(Info(kind=Kind.ACTIVE, name="a"), "parent")

    def test_walk_with_filters(self, snapshotter: Snapshotter) -> None:
        snapshotter.prepare("a", labels={"team": "x"})
        snapshotter.commit("base", "a")
        snapshotter.prepare("b", "base", labels={"team": "y"})
        snapshotter.view("v", "base")
        names = lambda *f: sorted(i.name for i in list_snapshots(snapshotter, *f))  # noqa: E731
        assert names() == ["b", "base", "v"]
        assert names("kind==committed") == ["base"]
        assert names("parent==base") == ["b", "v"]
        assert names('labels.team==y') == ["b"]
        assert names("labels.team") == ["b", "base"]
        assert names("kind==view", "labels.team==y") == ["b", "v"]
        assert names("kind==active,labels.team==x") == []

    def test_usage(self, snapshotter: Snapshotter) -> None:
        with mounted(snapshotter.prepare("a")) as root:
            (root / "big").write_bytes(os.urandom(1 << 20))
            (root / "d").mkdir()
        active = snapshotter.usage("a")
        assert active.size >= 1 << 20 and active.inodes >= 2
        snapshotter.commit("base", "a")
        committed = snapshotter.usage("base")
        assert committed.size >= 1 << 20 and committed.inodes >= 2
        self.write(snapshotter, "b", {"small": "s"}, parent="base")
        snapshotter.commit("child", "b")
        assert snapshotter.usage("child").inodes >= 1

    # -- persistence, namespaces, races --

    def test_state_persists_across_reopen(self, snapshotter_factory: Callable[[], Snapshotter]) -> None:
        first = snapshotter_factory()
        self.write(first, "a", {"f": "persisted"})
        first.commit("base", "a", labels={"x": "1"})
        first.prepare("b", "base")
        first.close()
        again = snapshotter_factory()
        try:
            assert again.stat("base").labels.get("x") == "1"
            assert again.stat("b").parent == "base"
            assert self.look(again, "base") == {"f": "persisted"}
        finally:
            again.close()

    def test_namespaces_are_separate(self, snapshotter: Snapshotter) -> None:
        one, two = namespaced(snapshotter, "one"), namespaced(snapshotter, "two")
        self.write(one, "k", {"f": "one"})  # type: ignore[arg-type]
        one.commit("base", "k")
        self.write(two, "k", {"f": "two"})  # type: ignore[arg-type]
        two.commit("base", "k")
        assert self.look(one, "base") == {"f": "one"}  # type: ignore[arg-type]
        assert self.look(two, "base") == {"f": "two"}  # type: ignore[arg-type]
        one.prepare("child", "base")
        assert one.stat("child").parent == "base"
        assert [i.name for i in list_snapshots(one)] == ["base", "child"]  # type: ignore[arg-type]
        assert [i.name for i in list_snapshots(two)] == ["base"]  # type: ignore[arg-type]
        with pytest.raises(NotFoundError):
            two.stat("child")

    def test_concurrent_commits_to_one_name(self, snapshotter: Snapshotter) -> None:
        for i in range(4):
            self.write(snapshotter, f"k{i}", {"who": str(i)})
        outcomes: list[str] = []
        barrier = threading.Barrier(4)

        def commit(i: int) -> None:
            barrier.wait()
            try:
                snapshotter.commit("winner", f"k{i}")
                outcomes.append("ok")
            except AlreadyExistsError:
                outcomes.append("exists")

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["exists", "exists", "exists", "ok"]
        assert snapshotter.stat("winner").kind is Kind.COMMITTED


__all__ = ["SnapshotterSuite", "tar_layer"]
