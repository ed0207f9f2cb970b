"""``dist push`` and ``dist push-object`` as a user runs them, against the real registry, and the docs/push.md example.

Also: a push killed (``kill -9``) or interrupted (Ctrl-C) in the middle of a chunked upload resumes on
the next run from the offset the registry holds, seen through a recording proxy.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.faultproxy import respond, stall
from support import cli
from support.cli import LOCAL_BUILTINS, config_env, local_env, run_dist, write_config
from support.registry import _skopeo_env

REPO = Path(__file__).resolve().parents[2]
DIST = [cli.DIST]
RESOLVER = "hoist.resolver.v1.docker"
MiB = 1 << 20


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


# -- an interrupted push resumes on the next run -----------------------------------------------------------


def chunked_env(tmp_path: Path) -> dict[str, str]:
    """Blobs above 1 MiB go up in 1 MiB chunks (the config and manifest stay monolithic)."""
    cfg = write_config(tmp_path / "config.toml", tmp_path, ("hoist.content.v1.local", RESOLVER, *LOCAL_BUILTINS),
                       plugin_config={RESOLVER: f"chunk_size = {MiB}\nchunked_upload_threshold = {MiB}"})
    return config_env(cfg)


def upload_states(tmp_path: Path) -> list[Path]:
    d = tmp_path / "root" / RESOLVER / "uploads"
    return sorted(d.iterdir()) if d.exists() else []


def wait_for_patches(proxy, proc: subprocess.Popen, count: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while len([r for r in proxy.requests if r.method == "PATCH"]) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the push never got that far"
        time.sleep(0.05)


def fetched_big_image(registry, images, env: dict[str, str], repo_name: str):  # type: ignore[no-untyped-def]
    layout = images.random_layers(count=1, mib=17, seed=7300)
    registry.push_http(layout, repo_name, "src")
    src = registry.ref(f"{repo_name}:src")
    r = dist(env, "fetch", "--plain-http", "--progress", "none", src)
    assert r.returncode == 0, r.stderr
    return layout, src


def check_resumed_run(proxy, other, layout, mark: int, stdout: str, resumed_at: int) -> None:  # type: ignore[no-untyped-def]
    """The second run asked where the session stands, then went on from ``resumed_at``, and the image reads back."""
    layer = layout.image.layers[0].descriptor
    second = [r for r in proxy.requests[mark:] if r.method != "HEAD"]
    patches = [r for r in second if r.method == "PATCH"]
    first = second.index(patches[0])
    assert (second[first - 1].method, second[first - 1].status) == ("GET", 204)
    assert second[first - 1].path.startswith("/v2/copy/big/blobs/uploads/")
    assert patches[0].headers["content-range"] == f"{resumed_at}-{resumed_at + MiB - 1}"
    assert sum(int(r.headers["content-length"]) for r in patches) == layer.size - resumed_at
    events = [json.loads(line) for line in stdout.splitlines()]
    uploading = [e for e in events if e["event"] == "state" and e["ref"] == f"layer-{layer.digest}"
                 and e["state"] == "uploading"]
    assert [e["offset"] for e in uploading] == [resumed_at]   # the bar starts where the registry stands
    assert events[-1]["event"] == "image" and events[-1]["target"]["digest"] == str(layout.image.manifest.digest)

    assert other.blob_path(layer.digest).read_bytes() == layout.blob(layer.digest)
    raw = subprocess.run(["skopeo", "inspect", "--raw", *other.skopeo_inspect_args(), "docker://" + other.ref("copy/big:1")],
                         capture_output=True, timeout=120, check=True, env=_skopeo_env(other.workdir)).stdout
    assert raw == layout.image.manifest_bytes


def test_a_killed_push_resumes_from_the_registry_offset(registry, registry_factory, fault_proxy, images,
                                                        tmp_path: Path, repo_name: str) -> None:
    env = chunked_env(tmp_path)
    layout, src = fetched_big_image(registry, images, env, repo_name)
    other = registry_factory()
    proxy = fault_proxy(other)
    # Three chunks go in; the fourth is held by the proxy (never reaching the registry) and the push is killed.
    proxy.inject(path=r"/blobs/uploads/", method="PATCH", times=3)
    proxy.inject(stall(600), path=r"/blobs/uploads/", method="PATCH", times=1)
    dest = f"{proxy.host}/copy/big:1"
    proc = subprocess.Popen([cli.DIST, "push", "--plain-http", "--progress", "none", dest, src], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_patches(proxy, proc, 4)
        [state] = upload_states(tmp_path)
        assert json.loads(state.read_text())["digest"] == str(layout.image.layers[0].descriptor.digest)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    mark = len(proxy.requests)
    r = dist(env, "push", "--plain-http", "--json", dest, src)
    assert r.returncode == 0, r.stderr
    check_resumed_run(proxy, other, layout, mark, r.stdout, 3 * MiB)
    assert upload_states(tmp_path) == []


def test_an_interrupted_push_finishes_its_chunk_and_resumes(registry, registry_factory, fault_proxy, images,
                                                            tmp_path: Path, repo_name: str) -> None:
    env = chunked_env(tmp_path)
    layout, src = fetched_big_image(registry, images, env, repo_name)
    other = registry_factory()
    proxy = fault_proxy(other)
    rule = proxy.inject(stall(0.2), path=r"/blobs/uploads/", method="PATCH")   # slow enough to interrupt
    dest = f"{proxy.host}/copy/big:1"
    proc = subprocess.Popen([cli.DIST, "push", "--plain-http", "--progress", "none", dest, src], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_patches(proxy, proc, 3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    [state] = upload_states(tmp_path)
    first_run = [r for r in proxy.requests if r.method == "PATCH"]
    # Every chunk that started went in whole: the session stands at a chunk boundary the state file knows.
    assert all(r.status == 202 for r in first_run)
    rule.times = rule.hits   # no more stalls

    mark = len(proxy.requests)
    r = dist(env, "push", "--plain-http", "--json", dest, src)
    assert r.returncode == 0, r.stderr
    check_resumed_run(proxy, other, layout, mark, r.stdout, len(first_run) * MiB)
    assert upload_states(tmp_path) == []
