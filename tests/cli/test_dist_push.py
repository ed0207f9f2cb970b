"""``dist push`` and ``dist push-object`` as a user runs them, against the real registry, and the docs/push.md example."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from support.faultproxy import respond
from support import cli
from support.cli import local_env, run_dist

REPO = Path(__file__).resolve().parents[2]
DIST = [cli.DIST]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)


def dist(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_dist(env, *args)


def test_push_json_events_and_summary(registry, env, repo_name: str) -> None:
    src = registry.ref("test/busybox:1")
    image = registry.pushed["test/busybox:1"].layout.image
    assert dist(env, "fetch", "--plain-http", "--progress", "none", src).returncode == 0
    dest = registry.ref(f"{repo_name}:j")
    r = dist(env, "push", "--plain-http", "--json", dest, src)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    states = {(e["ref"], e["state"]) for e in events if e["event"] == "state"}
    assert (f"config-{image.config.digest}", "mounted") in states
    assert (f"layer-{image.layers[0].digest}", "mounted") in states
    assert (f"manifest-{image.manifest.digest}", "uploading") in states
    assert (f"manifest-{image.manifest.digest}", "committed") in states
    summary = [e for e in events if e["event"] == "summary"][0]
    assert (summary["uploaded"], summary["mounted"], summary["present"], summary["errors"]) == (1, 2, 0, 0)
    assert summary["bytes"] == image.manifest.size
    assert events[-1]["event"] == "image" and events[-1]["name"] == dest
    assert events[-1]["target"]["digest"] == str(image.manifest.digest)
    assert registry.manifest_bytes(repo_name, "j") == image.manifest_bytes

    r = dist(env, "push", "--plain-http", "--progress", "plain", dest, src)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"{re.escape(dest)} {image.manifest.digest}: 0 blobs uploaded, 0 mounted, 3 already present, "
                        r"0 B in \d+\.\ds \(0\.0 MB/s\)\n", r.stdout)
    assert f"manifest-sha256:{image.manifest.digest.hex[:12]}: exists" in r.stderr


def test_push_uploads_with_plain_progress_and_push_object(registry, registry_factory, env) -> None:
    src = registry.ref("test/layers:1")
    image = registry.pushed["test/layers:1"].layout.image
    other = registry_factory()
    assert dist(env, "fetch", "--plain-http", "--progress", "none", src).returncode == 0
    r = dist(env, "push", "--plain-http", "--progress", "plain", "--max-concurrent-uploads", "1",
             other.ref("copy/layers:1"), src)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{other.ref('copy/layers:1')} {image.manifest.digest}: 5 blobs uploaded, 0 mounted, "
                               "0 already present, 3.0 MiB in ")
    for d in image.blobs():
        kind = "manifest" if d == image.manifest else "config" if d == image.config else "layer"
        assert f"{kind}-sha256:{d.digest.hex[:12]}: committed" in r.stderr
    assert other.manifest_bytes("copy/layers", "1") == image.manifest_bytes

    layer = image.layers[0].descriptor
    r = dist(env, "push-object", "--plain-http", other.ref("copy/one"), str(layer.digest), layer.media_type)
    assert r.returncode == 0 and r.stdout == f"{other.host}/copy/one@{layer.digest}: mounted\n"
    r = dist(env, "push-object", "--plain-http", "--json", other.ref("copy/one:m"), str(image.manifest.digest),
             image.manifest.media_type)
    assert r.returncode == 1 and "MANIFEST_BLOB_UNKNOWN" in r.stderr   # its config is not in copy/one
    r = dist(env, "push-object", "--plain-http", "--json", other.ref("copy/layers:m"), str(image.manifest.digest),
             image.manifest.media_type)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": f"{other.host}/copy/layers@{image.manifest.digest}", "state": "committed",
                                    "descriptor": {k: v for k, v in image.manifest.to_json().items() if k != "platform"}}
    assert other.manifest_bytes("copy/layers", "m") == image.manifest_bytes


def test_errors_are_one_line(registry, env, fault_proxy, repo_name: str) -> None:
    src = registry.ref("test/busybox:1")
    r = dist(env, "push", "--plain-http", registry.ref(f"{repo_name}:1"), "nope:1")
    assert r.returncode == 1 and r.stderr == "dist: image 'nope:1': not found in namespace 'default'\n"
    r = dist(env, "push", "--platform", "linux/amd64", "--all-platforms", registry.ref(f"{repo_name}:1"), src)
    assert r.returncode == 1 and r.stderr == "dist: --platform and --all-platforms cannot be used together\n"
    r = dist(env, "push-object", "--plain-http", registry.ref(repo_name), "sha256:" + "0" * 64, "application/octet-stream")
    assert r.returncode == 1 and r.stderr == f"dist: content sha256:{'0' * 64}: not found\n"

    assert dist(env, "fetch", "--plain-http", "--progress", "none", src).returncode == 0
    proxy = fault_proxy(registry)
    body = json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"}]})
    proxy.inject(respond(400, body=body.encode()), path=r"/blobs/uploads/.*digest=", method="PUT")
    r = dist(env, "push", "--plain-http", "--progress", "none", "--max-concurrent-uploads", "1",
             f"{proxy.host}/{repo_name}:1", src)
    assert r.returncode == 1
    assert re.fullmatch(rf"dist: {re.escape(proxy.host)}/{re.escape(repo_name)}@sha256:[0-9a-f]{{64}}: registry rejected "
                        r"the request \(DIGEST_INVALID: provided digest did not match uploaded content\)\n", r.stderr)


def test_docs_example(registry, env, tmp_path: Path, repo_name: str) -> None:
    text = (REPO / "docs" / "push.md").read_text()
    block = re.search(r"### Example\n\n```sh\n(.*?)```", text, re.S).group(1)
    script = block.replace("$REGISTRY", registry.host).replace("$REPO", repo_name)
    wrapper = tmp_path / "dist"
    wrapper.write_text("#!/bin/sh\nexec " + shlex.join(DIST) + ' "$@"\n')
    wrapper.chmod(0o755)
    env = dict(env, PATH=f"{tmp_path}:{env['PATH']}")
    r = subprocess.run(["sh", "-e"], input=script, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    for line in expected:
        # In the docs, "…" stands for anything.
        pattern = re.escape(line.replace("$REGISTRY", registry.host).replace("$REPO", repo_name)).replace("…", ".*")
        assert re.search(pattern, r.stdout), (line, r.stdout)
    assert registry.manifest_bytes(repo_name, "again") == registry.pushed["test/busybox:1"].layout.image.manifest_bytes
