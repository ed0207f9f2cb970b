"""`dist resolve` and `dist fetch-object` as the real console script, against real registries; the docs examples;
the one set of registry flags every registry command takes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import click
import pytest
from support.cli import example_steps, local_env, run_dist
from support.faultproxy import flip_byte
from support.registry import Registry

from hoist_resolver_docker.hosts import load_hosts

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "remotes.md"
D = "sha256:" + "ab" * 32


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {k: v for k, v in local_env(tmp_path, HOME=str(home), DOCKER_CONFIG=str(home / ".docker")).items()
            if not k.startswith(("HOIST_", "DOCKER_")) or k in ("HOIST_ROOT", "HOIST_STATE", "DOCKER_CONFIG")}


def dist(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_dist(env, *args, cwd=cwd, text=False)


def _hosts_dir(tmp_path: Path, reg: Registry, ca: Path | None) -> Path:
    root = tmp_path / "certs.d"
    d = root / reg.host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(f'server = "https://{reg.host}"\nca = "{ca}"\n')
    return root


def test_resolve_prints_name_and_descriptor(registry: Registry, env: dict[str, str]) -> None:
    pushed = registry.pushed["test/busybox:1"]
    r = dist(env, "resolve", registry.ref("test/busybox:1"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines == [f"name        {registry.ref('test/busybox:1')}", f"digest      {pushed.digest}",
                     f"media type  {pushed.media_type}",
                     f"size        {len(registry.manifest_bytes('test/busybox', '1'))}"]
    j = dist(env, "resolve", "--json", registry.ref("test/multi:1"))
    doc = json.loads(j.stdout)
    assert doc["name"] == registry.ref("test/multi:1")
    assert doc["descriptor"]["digest"] == registry.pushed["test/multi:1"].digest
    assert doc["descriptor"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    plain = dist(env, "resolve", "--plain-http", "--timeout", "20s", registry.ref("test/busybox:v2s2"))
    assert registry.pushed["test/busybox:v2s2"].digest in plain.stdout.decode()


def test_fetch_object_streams_manifests_and_blobs(registry: Registry, env: dict[str, str]) -> None:
    manifest = registry.manifest_bytes("test/busybox", "1")
    r = dist(env, "fetch-object", registry.ref("test/busybox:1"))
    assert r.returncode == 0 and r.stdout == manifest
    assert dist(env, "fetch-object", registry.ref("test/busybox"), "1").stdout == manifest
    doc = json.loads(manifest)
    for child in [doc["config"], *doc["layers"]]:
        out = dist(env, "fetch-object", registry.ref("test/busybox:1"), child["digest"])
        assert out.returncode == 0, out.stderr
        assert out.stdout == registry.blob_path(child["digest"]).read_bytes()
        assert "sha256:" + hashlib.sha256(out.stdout).hexdigest() == child["digest"]
    index = registry.pushed["test/multi:1"].digest
    by_digest = dist(env, "fetch-object", f"{registry.ref('test/multi')}@{index}")
    assert by_digest.stdout == registry.manifest_bytes("test/multi", index)


@pytest.mark.parametrize(("ref", "why"), [
    ("", "empty reference"),
    (":tag", "repository name is missing before ':'"),
    (f"@{D}", "repository name is missing before '@'"),
    ("Upper/case", "repository name must be lower-case"),
    ("repo@sha256:short", "digest 'sha256:short'"),
    ("x" * 300, "repository name is 300 characters, longer than 255"),
    ("{registry}/Upper/case:1", "repository name must be lower-case"),
    ("{registry}/ok@sha256:short", "digest 'sha256:short'"),
])
def test_bad_references_fail_in_one_line_without_network(registry: Registry, env: dict[str, str], ref: str,
                                                         why: str) -> None:
    commands = ("resolve", "fetch-object") if "Upper" in ref else ("resolve",)
    ref = ref.replace("{registry}", registry.host)
    mark = registry.access_mark()
    for cmd in commands:
        r = dist(env, cmd, ref)
        err = r.stderr.decode()
        assert r.returncode == 1 and r.stdout == b""
        assert err.startswith("dist: invalid reference") and why in err and err.count("\n") == 1, err
    assert registry.access_entries(since=mark, timeout=0.2) == []


def test_not_found(registry: Registry, env: dict[str, str]) -> None:
    r = dist(env, "resolve", registry.ref("test/busybox:nope"))
    assert (r.returncode, r.stderr.decode()) == (1, f"dist: {registry.ref('test/busybox:nope')}: not found\n")
    r = dist(env, "fetch-object", registry.ref("test/busybox"), D)
    assert r.returncode == 1 and r.stderr.decode() == f"dist: {registry.ref('test/busybox')}@{D}: not found\n"


def test_tls_basic_auth_and_flags(registry_basic: Registry, env: dict[str, str], tmp_path: Path) -> None:
    ref = registry_basic.ref("test/busybox:1")
    good = _hosts_dir(tmp_path / "good", registry_basic, registry_basic.ca_cert)
    user = f"{registry_basic.username}:{registry_basic.password}"
    r = dist(env, "resolve", "--hosts-dir", str(good), "-u", user, ref)
    assert r.returncode == 0, r.stderr
    assert registry_basic.pushed["test/busybox:1"].digest in r.stdout.decode()
    r = dist(env, "resolve", "--hosts-dir", str(good), ref)
    assert r.returncode == 1 and "requires a user and password" in r.stderr.decode()
    r = dist(env, "resolve", "--hosts-dir", str(good), "--user", registry_basic.username or "", ref)
    assert r.returncode == 1 and "no password given and stdin is not a terminal" in r.stderr.decode()
    wrong = _hosts_dir(tmp_path / "wrong", registry_basic, registry_basic.other_ca_cert)
    r = dist(env, "resolve", "--hosts-dir", str(wrong), "-u", user, ref)
    assert r.returncode == 1 and "TLS certificate verification failed" in r.stderr.decode()
    r = dist(env, "resolve", "--hosts-dir", str(wrong), "-k", "-u", user, ref)
    assert r.returncode == 0, r.stderr
    r = dist(env, "resolve", "--timeout", "soon", ref)
    assert r.returncode == 1 and "invalid duration 'soon'" in r.stderr.decode()


#: The flags every command that talks to a registry takes, all from ``hoist.cli.dist_remote.resolver_options``.
REGISTRY_FLAGS = {"--plain-http", "--skip-verify", "-k", "--user", "-u", "--registry-user", "--hosts-dir", "--timeout"}


def _registry_flags(command) -> dict[tuple[str, ...], tuple]:  # type: ignore[no-untyped-def]
    return {tuple(p.opts): (p.name, p.help, p.metavar, p.is_flag) for p in command.params
            if set(p.opts) & REGISTRY_FLAGS}


def test_every_registry_command_takes_one_set_of_flags() -> None:
    from hoist.cli.dist import dist as dist_group
    from hoist.cli.hoist import hoist as hoist_group

    ctx = click.Context(dist_group)
    shared = _registry_flags(dist_group.get_command(ctx, "resolve"))
    assert sorted(shared) == [("--hosts-dir",), ("--plain-http",), ("--skip-verify", "-k"), ("--timeout",),
                              ("--user", "-u")]
    for name in ("fetch-object", "fetch", "push", "push-object", "pull"):
        assert _registry_flags(dist_group.get_command(ctx, name)) == shared, name
    # `hoist run --user` is the container's user: the credentials flag is --registry-user there.
    run_flags = _registry_flags(hoist_group.commands["run"])
    assert run_flags.pop(("--user",))[0] == "user"
    assert run_flags.pop(("--registry-user",)) == shared.pop(("--user", "-u"))
    assert run_flags == shared


def test_fetch_takes_the_shared_flags(registry: Registry, env: dict[str, str]) -> None:
    ref = registry.ref("test/busybox:1")
    r = dist(env, "fetch", "--timeout", "soon", ref)
    assert r.returncode == 1 and r.stderr.decode() == "dist: invalid duration 'soon': expected seconds or e.g. 30s, " \
                                                      "500ms, 1m30s\n"
    r = dist(env, "fetch", "--user", "alice", ref)
    assert r.returncode == 1 and r.stderr.decode() == "dist: --user alice: no password given and stdin is not a " \
                                                      "terminal (use --user user:password)\n"
    r = dist(env, "fetch", "--plain-http", "--progress", "none", "--timeout", "1m30s", "-u", "alice:pw", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith(f"{ref} {registry.pushed['test/busybox:1'].digest}: ")


def test_lying_registry_fails_naming_the_object(registry: Registry, fault_proxy, env: dict[str, str]) -> None:
    proxy = fault_proxy(registry)
    proxy.inject(flip_byte(100), path="/manifests/sha256:", method="GET")
    digest = registry.pushed["test/busybox:1"].digest
    r = dist(env, "fetch-object", f"{proxy.host}/test/busybox:1")
    assert r.returncode == 1
    assert r.stderr.decode() == f"dist: content {proxy.host}/test/busybox@{digest}: digest mismatch: got sha256:" + \
        r.stderr.decode().rsplit("sha256:", 1)[1]
    assert r.stdout == b""  # the manifest is one chunk: the bad bytes never reach stdout


# -- docs/remotes.md --------------------------------------------------------------------------------


def _example_steps() -> list[tuple[str, list[str]]]:
    return example_steps(DOCS, joined=False)


def _pattern(expected: str, host: str) -> re.Pattern[str]:
    parts = [re.escape(p.replace("127.0.0.1:5000", host)) for p in expected.split("…")]
    return re.compile(".*".join(parts) + r"\s*")


def test_docs_example(registry: Registry, env: dict[str, str], tmp_path: Path) -> None:
    setup: list[str] = []
    ran = 0
    for cmd, expected in _example_steps():
        cmd = cmd.replace("127.0.0.1:5000", registry.host)
        if re.match(r"^(export )?[A-Z_]+=", cmd):
            setup.append(cmd)
            if "$(" not in cmd:
                continue
        script = "set -o pipefail; " + "; ".join([*setup[:-1], cmd] if setup and setup[-1] == cmd else [*setup, cmd])
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=120)
        ran += 1
        if expected and expected[0].startswith("-> exit 1: "):
            assert r.returncode == 1, (cmd, r.stdout, r.stderr)
            assert _pattern(expected[0].removeprefix("-> exit 1: "), registry.host).fullmatch(r.stderr.decode()), \
                (cmd, r.stderr)
            continue
        assert r.returncode == 0, (cmd, r.stderr)
        out = r.stdout.decode().splitlines()
        assert len(out) >= len(expected), (cmd, out)
        for want, got in zip(expected, out):
            assert _pattern(want, registry.host).fullmatch(got), (cmd, want, got)
    assert ran >= 6


def test_docs_hosts_toml_and_python_example(registry: Registry, tmp_path: Path) -> None:
    text = DOCS.read_text()
    toml = text.split("## Registry hosts", 1)[1].split("```toml\n", 1)[1].split("\n```", 1)[0]
    d = tmp_path / "registry.example.com"
    d.mkdir()
    (d / "hosts.toml").write_text(toml)
    hl = load_hosts("registry.example.com", tmp_path)
    assert [h.base_url for h in hl.hosts] == ["https://mirror.example.net/v2", "http://cache.lan:5000/v2",
                                              "https://registry.example.com/v2"]
    assert [h.base_url for h in hl.for_capability("resolve")] == ["https://mirror.example.net/v2",
                                                                   "https://registry.example.com/v2"]
    code = text.split("## In Python", 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0]
    code = code.replace("127.0.0.1:5000", registry.host)
    scope: dict[str, object] = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    assert scope["manifest"] == registry.manifest_bytes("test/busybox", "1")
