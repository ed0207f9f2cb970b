"""Version strings: ``git describe --match 'v[0-9]*' --dirty='.m' --always`` of the source, and the -v flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from hoist import version

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_describe_format_with_and_without_modifications(tmp_path):
    git(tmp_path, "init", "-q")
    f = tmp_path / "f.txt"
    f.write_text("0")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-qm", "base")
    git(tmp_path, "tag", "-a", "-m", "v0.1.0-dev", "v0.1.0-dev")
    for i in range(1, 4):
        f.write_text(str(i))
        git(tmp_path, "commit", "-qam", f"c{i}")
    head = git(tmp_path, "rev-parse", "--short=7", "HEAD")
    clean = version.git_describe(tmp_path)
    assert clean is not None and re.fullmatch(r"v0\.1\.0-dev-3-g[0-9a-f]{7,}", clean)
    assert clean.split("-g")[1].startswith(head)
    f.write_text("dirty")
    assert version.git_describe(tmp_path) == clean + ".m"


def test_untagged_checkout_falls_back_to_the_hash(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a").write_text("a")
    git(tmp_path, "add", "a")
    git(tmp_path, "commit", "-qm", "a")
    assert re.fullmatch(r"[0-9a-f]{7,}", version.git_describe(tmp_path) or "")


def test_outside_git_there_is_no_describe_and_the_package_version_is_used(tmp_path, monkeypatch):
    assert version.git_describe(tmp_path) is None
    monkeypatch.setattr(version, "_SOURCE", tmp_path)
    version.describe.cache_clear()
    try:
        assert version.describe() == "v" + version.package_version()
    finally:
        version.describe.cache_clear()


@pytest.mark.parametrize("prog", ["dist", "hoist", "hoistd"])
def test_v_flag_prints_prog_package_and_describe(prog):
    expected = subprocess.run(["git", "describe", "--match", "v[0-9]*", "--dirty=.m", "--always"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run([BIN / prog, "-v"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout == f"{prog} hoist {expected}\n"
