"""Entry points and versions read from metadata directories: importlib.metadata's answers, found faster."""

from __future__ import annotations

import importlib.metadata as md
import sys
import zipfile

import pytest

from hoist import entrypoints


def _dist(root, dirname, *, name, version, entry_points=None, meta="METADATA"):
    d = root / dirname
    d.mkdir(parents=True)
    (d / meta).write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nName: not-this\n")
    if entry_points is not None:
        (d / "entry_points.txt").write_text(entry_points)
    return d


@pytest.mark.parametrize("group", ["hoist.plugins", "console_scripts"])
def test_same_entry_points_as_importlib_metadata_on_this_install(group):
    ours = sorted((e.name, e.value, e.dist) for e in entrypoints.entry_points(group))
    theirs = sorted((e.name, e.value, e.dist.name) for e in md.entry_points(group=group))
    assert ours == theirs
    assert ours  # the installed plugins and commands are found


@pytest.mark.parametrize("dist", ["hoist", "hoist-resolver-docker", "hoist_content_local", "httpx", "attrs"])
def test_same_versions_as_importlib_metadata(dist):
    assert entrypoints.version(dist) == md.version(dist)


def test_first_distribution_of_a_name_on_sys_path_wins(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    _dist(first, "demo_pkg-2.0.dist-info", name="Demo-Pkg", version="2.0",
          entry_points="[hoist.test]\nwho = first.mod\n")
    _dist(second, "demo.pkg-1.0.dist-info", name="demo.pkg", version="1.0",
          entry_points="[hoist.test]\nwho = second.mod\nother = second.other\n")
    _dist(second, "legacy-3.1.egg-info", name="legacy", version="3.1", meta="PKG-INFO",
          entry_points="# a comment\n\n[hoist.test]\n  legacy = legacy.plugin:obj.attr [extra]\n[other]\nx = y\n")
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(second)])
    found = sorted((e.name, e.value, e.dist) for e in entrypoints.entry_points("hoist.test"))
    assert found == [("legacy", "legacy.plugin:obj.attr [extra]", "legacy"), ("who", "first.mod", "Demo-Pkg")]
    assert sorted((e.name, e.value, e.dist.name) for e in md.entry_points(group="hoist.test")) == found
    assert entrypoints.version("demo-pkg") == "2.0" == md.version("demo-pkg")
    assert entrypoints.version("LEGACY") == "3.1" == md.version("LEGACY")
    with pytest.raises(LookupError, match="distribution nothing-here: not installed"):
        entrypoints.version("nothing-here")


def test_load_imports_the_module_and_follows_the_attribute_path(tmp_path, monkeypatch):
    (tmp_path / "ep_target_mod.py").write_text("class Obj:\n    attr = 'found'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert entrypoints.EntryPoint("x", "ep_target_mod", "g", "d").load().__name__ == "ep_target_mod"
    assert entrypoints.EntryPoint("x", "ep_target_mod:Obj.attr [extra]", "g", "d").load() == "found"
    assert entrypoints.EntryPoint("x", "ep_target_mod : Obj", "g", "d").load().attr == "found"
    with pytest.raises(ValueError, match="expected module or module:attribute"):
        entrypoints.EntryPoint("x", "not a module", "g", "d").load()


def test_an_archive_on_sys_path_is_read_by_importlib_metadata(tmp_path, monkeypatch):
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_dist-0.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped-dist\nVersion: 0.3\n\n")
        z.writestr("zipped_dist-0.3.dist-info/entry_points.txt", "[hoist.test]\nzipped = zipped.plugin\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert [(e.name, e.value, e.dist) for e in entrypoints.entry_points("hoist.test")] == [
        ("zipped", "zipped.plugin", "zipped-dist")]
    assert entrypoints.version("zipped_dist") == "0.3"
    with pytest.raises(LookupError):
        entrypoints.version("absent")
