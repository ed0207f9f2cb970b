"""The real ``ctr`` (Debian's containerd package) against Hoist's gRPC server.

The server is the plugin host loading the local content store, the SQLite metadata store and the
core gRPC services, served with :func:`hoist.api.server.serve` on a unix socket in a temp dir —
what ``hoistd`` runs.  Two extra plugins show how ctr reports a skipped and a failed plugin.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoist import version
from hoist.api.server import serve
from hoist.config import Config, GrpcConfig
from hoist.host import PluginHost

CTR = "/usr/bin/ctr"

SERVICES = {
    "hoist.metadata.v1.sqlite": "hoist.metadata.plugin",
    "hoist.grpc.v1.version": "hoist.services.version",
    "hoist.grpc.v1.introspection": "hoist.services.introspection",
    "hoist.grpc.v1.namespaces": "hoist.services.namespaces",
    "hoist.grpc.v1.content": "hoist.services.content",
}

EXTRA_PLUGINS = '''
"""Two plugins for the ctr tests: one skips itself, one fails."""
from hoist.errors import PluginSkipped, UnavailableError
from hoist.plugin import Registration, hookimpl


def _skip(ic):
    raise PluginSkipped("no such kernel feature")


def _fail(ic):
    raise UnavailableError("device /dev/nothing is busy")


class Skipper:
    @hookimpl
    def hoist_register_plugins(self, register):
        register(Registration(type="hoist.test.v1", id="skipper", init=_skip))


class Failer:
    @hookimpl
    def hoist_register_plugins(self, register):
        register(Registration(type="hoist.test.v1", id="failer", init=_fail))


import sys
sys.modules[__name__ + "_skipper"] = Skipper()
sys.modules[__name__ + "_failer"] = Failer()
'''


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The socket of a running Hoist gRPC server with the core services."""
    base = tmp_path_factory.mktemp("hoistd")
    (base / "extra").mkdir()
    (base / "extra" / "hoist_ctr_extra.py").write_text(EXTRA_PLUGINS)
    sys.path.insert(0, str(base / "extra"))
    import hoist_ctr_extra  # noqa: F401  (installs the two plugin objects as modules)

    builtins = {
        **SERVICES,
        "hoist.test.v1.skipper": "hoist_ctr_extra_skipper",
        "hoist.test.v1.failer": "hoist_ctr_extra_failer",
    }
    sock = base / "run" / "hoistd.sock"
    cfg = Config(
        root=str(base / "root"),
        state=str(base / "state"),
        enabled_plugins=("hoist.content.v1.local", *builtins),
        required_plugins=(),
        grpc=GrpcConfig(address=str(sock), uid=os.getuid(), gid=os.getgid()),
        plugin_tables={"hoist.content.v1.local": {"fsync": False}},
    )
    host = PluginHost(cfg, builtins=builtins)
    host.load()
    server = serve(f"unix://{sock}", host, uid=cfg.grpc.uid, gid=cfg.grpc.gid)
    try:
        yield sock
    finally:
        server.stop(None).wait(5)
        host.close()
        sys.path.remove(str(base / "extra"))
        for name in ("hoist_ctr_extra", "hoist_ctr_extra_skipper", "hoist_ctr_extra_failer"):
            sys.modules.pop(name, None)


def ctr(sock: Path, *args: str, namespace: str = "default", stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CTR, "--address", str(sock), "--namespace", namespace, *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_socket_is_a_private_filesystem_socket(daemon: Path) -> None:
    st = daemon.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_version(daemon: Path) -> None:
    out = ok(ctr(daemon, "version"))
    server = out.split("Server:\n", 1)[1]
    assert f"  Version:  {version.describe()}\n" in server
    assert f"  Revision: {version.revision()}\n" in server
    uuid = re.search(r"  UUID: ([0-9a-f-]{36})\n", server)
    assert uuid is not None, server
    assert ok(ctr(daemon, "version")).endswith(f"  UUID: {uuid.group(1)}\n"), "the UUID is stable"


def test_plugins_ls(daemon: Path) -> None:
    table = rows(ok(ctr(daemon, "plugins", "ls")))
    assert table[0] == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    got = {(r[0], r[1]): r[3] for r in table[1:]}
    assert got == {
        ("hoist.content.v1", "local"): "ok",
        ("hoist.metadata.v1", "sqlite"): "ok",
        ("hoist.grpc.v1", "version"): "ok",
        ("hoist.grpc.v1", "introspection"): "ok",
        ("hoist.grpc.v1", "namespaces"): "ok",
        ("hoist.grpc.v1", "content"): "ok",
        ("hoist.test.v1", "skipper"): "skip",
        ("hoist.test.v1", "failer"): "error",
    }
    only = rows(ok(ctr(daemon, "plugins", "ls", "type==hoist.test.v1")))
    assert sorted(r[1] for r in only[1:]) == ["failer", "skipper"]
    quiet = ok(ctr(daemon, "plugins", "ls", "-q", "id==content"))
    assert quiet == "content\n"


def test_plugins_ls_detailed_shows_requires_and_errors(daemon: Path) -> None:
    out = ok(ctr(daemon, "plugins", "ls", "--detailed", "type==hoist.test.v1"))
    assert re.search(r"ID:\s+failer\nError:\s*\n\s+Code:\s+Unavailable\n\s+Message:\s+init failed: device /dev/nothing is busy\n", out), out
    assert re.search(r"ID:\s+skipper\nError:\s*\n\s+Code:\s+Unknown\n\s+Message:\s+no such kernel feature: skip plugin\n", out), out
    content = ok(ctr(daemon, "plugins", "ls", "--detailed", "id==content", "type==hoist.grpc.v1"))
    assert re.search(r"Requires:\s*\n\s+hoist.content.v1\n", content), content


def test_bad_filter_is_invalid_argument(daemon: Path) -> None:
    proc = ctr(daemon, "plugins", "ls", "type==")
    assert proc.returncode == 1
    assert b"invalid argument" in proc.stderr


def test_namespaces(daemon: Path) -> None:
    ok(ctr(daemon, "namespaces", "create", "team-a", "owner=alice", "tier=gold"))
    table = rows(ok(ctr(daemon, "namespaces", "ls")))
    assert table[0] == ["NAME", "LABELS"]
    assert ["team-a", "owner=alice,tier=gold"] in table[1:]
    proc = ctr(daemon, "namespaces", "create", "team-a")
    assert proc.returncode == 1
    assert proc.stderr == b"ctr: namespace team-a: already exists\n"
    ok(ctr(daemon, "namespaces", "label", "team-a", "tier=", "region=eu"))
    table = rows(ok(ctr(daemon, "namespaces", "ls")))
    assert ["team-a", "owner=alice,region=eu"] in table[1:]
    assert ok(ctr(daemon, "namespaces", "ls", "-q")).splitlines().count("team-a") == 1
    assert ok(ctr(daemon, "namespaces", "rm", "team-a")) == "team-a\n"
    assert "team-a" not in ok(ctr(daemon, "namespaces", "ls", "-q")).splitlines()
    proc = ctr(daemon, "namespaces", "create", "bad/name")
    assert proc.returncode == 1 and b"invalid argument" in proc.stderr


def test_content_ingest_ls_get_label_rm(daemon: Path) -> None:
    data = os.urandom(3 << 20) + b"hoist"
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    ok(ctr(daemon, "content", "ingest", "--expected-size", str(len(data)), "--expected-digest", dgst, "upload-1", stdin=data))
    listed = {r[0]: r for r in rows(ok(ctr(daemon, "content", "ls")))[1:]}
    assert dgst in listed
    assert listed[dgst][1] == "3.146MB"  # ctr prints decimal units
    assert ok(ctr(daemon, "content", "ls", "-q")).splitlines().count(dgst) == 1

    got = ctr(daemon, "content", "get", dgst)
    assert got.returncode == 0 and got.stdout == data

    assert ok(ctr(daemon, "content", "label", dgst, "hoist.test/tag=one", "other=two")).strip() in (
        "hoist.test/tag=one,other=two",
        "other=two,hoist.test/tag=one",
    )
    assert ok(ctr(daemon, "content", "label", dgst, "other=")).strip() == "hoist.test/tag=one"
    assert rows(ok(ctr(daemon, "content", "ls", "labels.other")))[1:] == []
    filtered = rows(ok(ctr(daemon, "content", "ls", 'labels."hoist.test/tag"==one')))
    assert [r[0] for r in filtered[1:]] == [dgst]

    # ingesting the same bytes again succeeds without a second copy
    ok(ctr(daemon, "content", "ingest", "--expected-digest", dgst, "upload-2", stdin=data))
    assert ok(ctr(daemon, "content", "active")).strip() == "REF\tSIZE\tAGE"

    assert ok(ctr(daemon, "content", "rm", dgst)) == f"{dgst}\n"
    assert dgst not in ok(ctr(daemon, "content", "ls", "-q")).splitlines()
    missing = ctr(daemon, "content", "get", dgst)
    assert missing.returncode == 1
    assert f"{dgst}".encode() in missing.stderr and b"not found" in missing.stderr


def test_content_ingest_with_wrong_digest_fails_and_stays_resumable(daemon: Path) -> None:
    data = b"some bytes for a digest mismatch"
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    proc = ctr(daemon, "content", "ingest", "--expected-digest", wrong, "bad-upload", stdin=data)
    assert proc.returncode == 1
    assert b"failed precondition" in proc.stderr and wrong.encode() in proc.stderr
    active = rows(ok(ctr(daemon, "content", "active")))
    assert active[0] == ["REF", "SIZE", "AGE"]
    assert [r[0] for r in active[1:]] == ["bad-upload"]
    assert active[1][1] == f"{len(data)}B"
    assert rows(ok(ctr(daemon, "content", "active", "ref==nothing")))[1:] == []


def test_missing_namespace_header_is_containerds_error(daemon: Path) -> None:
    import grpc

    from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc

    with grpc.insecure_channel(f"unix://{daemon}") as channel:
        stub = content_pb2_grpc.ContentStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListStatuses(content_pb2.ListStatusesRequest())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "namespace is required"


def test_hoist_clients_read_the_same_daemon(daemon: Path) -> None:
    """Hoist's own Introspection/Version clients see what ctr sees."""
    from hoist.api.content_client import connect
    from hoist.api.introspection_client import plugin_results, server_uuid
    from hoist.api.version_client import server_version
    from hoist.errors import UnavailableError

    with connect(str(daemon)) as channel:
        results = {r.uri: r for r in plugin_results(channel)}
        assert server_version(channel) == (version.describe(), version.revision())
        uuid = server_uuid(channel)
    assert results["hoist.grpc.v1.content"].status == "ok"
    assert results["hoist.grpc.v1.content"].requires == ("hoist.content.v1",)
    skipped = results["hoist.test.v1.skipper"]
    assert (skipped.status, skipped.reason()) == ("skip", "no such kernel feature")
    failed = results["hoist.test.v1.failer"]
    assert failed.status == "error" and isinstance(failed.error, UnavailableError)
    assert failed.reason() == "init failed: device /dev/nothing is busy"
    assert f"  UUID: {uuid}\n" in ok(ctr(daemon, "version"))


def test_python_example_in_docs(daemon: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code.replace("/tmp/hoist-run/hoistd.sock", str(daemon)), "docs/api.md", "exec"), {})
    assert capsys.readouterr().out == "5\n"
