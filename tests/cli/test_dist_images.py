"""``dist fetch`` and ``dist images …`` as a user runs them, against the real registry, and the docs/images.md example."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from support import cli
from support.cli import local_env, run_dist

REPO = Path(__file__).resolve().parents[2]
DIST = [cli.DIST]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)


def dist(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_dist(env, *args)


def test_fetch_json_events_and_summary(registry, env) -> None:
    ref = registry.ref("test/busybox:1")
    pushed = registry.pushed["test/busybox:1"]
    r = dist(env, "fetch", "--plain-http", "--json", ref)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    states = {(e["ref"], e["state"]) for e in events if e["event"] == "state"}
    for d in pushed.layout.image.blobs():
        kind = "manifest" if d == pushed.layout.image.manifest else "config" if d == pushed.layout.image.config else "layer"
        assert (f"{kind}-{d.digest}", "downloading") in states and (f"{kind}-{d.digest}", "done") in states
    summary = [e for e in events if e["event"] == "summary"][0]
    assert summary["fetched"] == 3 and summary["present"] == 0
    assert summary["bytes"] == sum(d.size for d in pushed.layout.image.blobs())
    assert events[-1] == {"event": "image", "name": ref, "target": json.loads(json.dumps(events[-1]["target"]))}
    assert events[-1]["target"]["digest"] == pushed.digest

    r = dist(env, "fetch", "--plain-http", "--progress", "plain", ref)
    assert r.returncode == 0
    assert re.fullmatch(rf"{re.escape(ref)} {pushed.digest}: 0 blobs fetched, 3 already present, 0 B in \d+\.\ds \(0\.0 MB/s\)\n",
                        r.stdout)
    assert f"manifest-sha256:{pushed.digest[7:19]}: exists" in r.stderr


def test_images_ls_inspect_tag_rm_check(registry, env) -> None:
    ref = registry.ref("test/multi:1")
    pushed = registry.pushed["test/multi:1"]
    assert dist(env, "fetch", "--plain-http", "--progress", "none", "--label", "team=docs", ref).returncode == 0

    r = dist(env, "images", "ls")
    header, row = r.stdout.splitlines()
    assert header.split() == ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
    cols = row.split()
    assert cols[:3] == [ref, "application/vnd.oci.image.index.v1+json", pushed.digest]
    assert cols[-2:] == ["linux/amd64,linux/arm64/v8", "team=docs"]

    r = dist(env, "images", "inspect", ref)
    doc = json.loads(r.stdout)
    assert doc["name"] == ref and doc["target"]["digest"] == pushed.digest and doc["labels"] == {"team": "docs"}
    assert len(doc["document"]["manifests"]) == 2

    amd = pushed.layout.image_for("linux/amd64")
    n_amd = 1 + len(amd.blobs())
    r = dist(env, "images", "check")
    assert r.returncode == 0, r.stdout
    assert re.search(rf"^{re.escape(ref)}\s+{pushed.digest}\s+complete \({n_amd}/{n_amd}\)\s.*linux/amd64$", r.stdout, re.M)
    r = dist(env, "images", "check", "--all-platforms", ref)
    # The arm64 manifest is missing, so what it lists is unknown: it counts as one missing blob.
    assert r.returncode == 1 and f"incomplete ({n_amd}/{n_amd + 1})" in r.stdout

    assert dist(env, "images", "tag", ref, "copy:1").stdout == "copy:1\n"
    r = dist(env, "images", "tag", ref, "copy:1")
    assert r.returncode == 1 and r.stderr == "dist: image 'copy:1': already exists (use --force to replace it)\n"
    assert dist(env, "images", "tag", "--force", ref, "copy:1").returncode == 0
    assert dist(env, "images", "ls", "-q").stdout.split() == sorted(["copy:1", ref])
    assert dist(env, "images", "ls", "-q", "name~=^copy").stdout.split() == ["copy:1"]

    # A missing layer makes check say so.
    assert dist(env, "content", "rm", str(amd.layers[0].descriptor.digest)).returncode == 0
    r = dist(env, "images", "check", "--platform", "linux/amd64", "copy:1")
    assert r.returncode == 1 and f"incomplete ({n_amd - 1}/{n_amd})" in r.stdout

    r = dist(env, "images", "rm", "copy:1", "nope")
    assert r.returncode == 1 and r.stdout == "copy:1\n" and r.stderr == "dist: image 'nope': not found\n"
    assert dist(env, "images", "ls", "-q").stdout.split() == [ref]


def test_fetch_errors_are_one_line(registry, env) -> None:
    ref = registry.ref("test/none:1")
    r = dist(env, "fetch", "--plain-http", "--progress", "none", ref)
    assert r.returncode == 1 and r.stderr == f"dist: {ref}: not found\n"
    r = dist(env, "fetch", "--platform", "linux/s 390", registry.ref("test/busybox:1"))
    assert r.returncode == 1 and r.stderr == "dist: invalid platform 'linux/s 390': expected os[/arch[/variant]]\n"


def test_docs_example(registry, env, tmp_path: Path) -> None:
    text = (REPO / "docs" / "images.md").read_text()
    block = re.search(r"### Example\n\n```sh\n(.*?)```", text, re.S).group(1)
    script = block.replace("$REGISTRY", registry.host)
    wrapper = tmp_path / "dist"
    wrapper.write_text("#!/bin/sh\nexec " + shlex.join(DIST) + ' "$@"\n')
    wrapper.chmod(0o755)
    env = dict(env, PATH=f"{tmp_path}:{env['PATH']}")
    r = subprocess.run(["sh", "-e"], input=script, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ") and not line.startswith("# ->")]
    for line in expected:
        # In the docs, "…" stands for anything and two spaces for a column gap.
        pattern = re.escape(line.replace("$REGISTRY", registry.host)).replace("…", ".*").replace(r"\ \ ", r"\s+")
        assert re.search(pattern, r.stdout), (line, r.stdout)
