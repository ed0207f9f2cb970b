"""An in-process command loads the required plugins and then only those it uses; ``hoist plugins ls`` still lists all.

With every installed plugin enabled (no config file), ``dist content ls`` needs no gRPC service,
snapshotter, runtime or resolver, and ``dist fetch`` needs the content store, the metadata store and a
resolver: ``--debug`` names each plugin as it comes up, and the ones left for first use.
"""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import local_env, run_dist, run_hoist


def loaded(stderr: str) -> list[str]:
    """The plugins ``--debug`` reports ``ok``, in the order they came up."""
    return re.findall(r" hoist\.host: (\S+): ok$", stderr, re.M)


def test_content_ls_loads_no_service_snapshotter_runtime_or_resolver(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    r = run_dist(env, "--debug", "content", "ls")
    assert r.returncode == 0, r.stderr
    up = loaded(r.stderr)
    assert up[0] == "hoist.content.v1.local"  # required: loaded before the command runs
    assert not [u for u in up if u.startswith(("hoist.grpc.v1.", "hoist.snapshotter.v1.", "hoist.runtime.v1.",
                                               "hoist.service.v1.", "hoist.resolver.v1."))], up
    deferred = re.search(r"plugins loaded on first use: (.*)$", r.stderr, re.M)
    assert deferred is not None and "hoist.grpc.v1.content" in deferred.group(1).split(", ")
    # the full list is unchanged: asking for every plugin's status loads the rest
    p = run_hoist(env, "plugins", "ls")
    assert p.returncode == 0, p.stderr
    rows = {tuple(line.split()[:3]) for line in p.stdout.splitlines()[1:]}
    for row in (("hoist.content.v1", "local", "ok"), ("hoist.grpc.v1", "content", "ok"),
                ("hoist.metadata.v1", "sqlite", "ok"), ("hoist.resolver.v1", "docker", "ok"),
                ("hoist.snapshotter.v1", "native", "ok")):
        assert row in rows, p.stdout


def test_fetch_loads_the_content_and_metadata_stores_and_a_resolver(tmp_path: Path, registry) -> None:  # noqa: ANN001
    env = local_env(tmp_path)
    ref = registry.ref("test/busybox:1")
    r = run_dist(env, "--debug", "fetch", "--plain-http", "--progress", "none", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{ref} sha256:")
    assert sorted(loaded(r.stderr)) == ["hoist.content.v1.local", "hoist.metadata.v1.sqlite", "hoist.resolver.v1.docker"]
    i = run_dist(env, "images", "check", ref)
    assert i.returncode == 0 and "complete" in i.stdout, i.stdout + i.stderr
