"""`dist content …` run as the real console script on a temporary root, and the docs/content.md example."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from hoist.content import Digest
from hoist.metadata import NamespacedContentStore, SQLiteMetadataStore
from hoist_content_local.store import LocalContentStore
from support.cli import DIST, example_steps, local_env, run_example_steps

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)


def dist_proc(env: dict[str, str], *args: str, input: bytes | None = None, stdin=None) -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    """The real console script, as a user runs it."""
    return subprocess.run([DIST, *args], env=env, input=input, stdin=stdin, capture_output=True, timeout=120)


def dist(env: dict[str, str], *args: str, input: bytes | None = None, stdin=None) -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    """The same ``dist`` group in this process (each console-script start costs about a second)."""
    from click.testing import CliRunner

    from hoist.cli.dist import dist as group
    from hoist.errors import HoistError

    r = CliRunner().invoke(group, list(args), input=stdin if stdin is not None else input, env=env)
    err = r.stderr_bytes or b""
    code = r.exit_code
    if isinstance(r.exception, HoistError):
        err += f"dist: {r.exception}\n".encode()
        code = 1
    elif r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(["dist", *args], code, r.stdout_bytes, err)


def store_of(env: dict[str, str], namespace: str = "default") -> NamespacedContentStore:
    """The content ``dist -n NAMESPACE`` sees on the test root (the local store's blobs, the namespace's records)."""
    root = Path(env["HOIST_ROOT"])
    db = SQLiteMetadataStore(root / "hoist.metadata.v1.sqlite" / "meta.db")
    return db.content(LocalContentStore(root / "hoist.content.v1.local"), namespace)


def ingest(env: dict[str, str], ref: str, data: bytes, *extra: str) -> Digest:
    d = Digest.from_bytes(data)
    r = dist(env, "content", "ingest", ref, "--expected-size", str(len(data)), "--expected-digest", str(d), *extra, input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    return d


def test_ingest_ls_info_get(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    d = ingest(env, "layer-1", data, "--label", "team=a", "--label", "gc=x")
    small = ingest(env, "small", b"tiny")

    r = dist(env, "content", "ls", "-q")
    assert r.returncode == 0
    assert r.stdout.decode().split() == sorted([str(d), str(small)])

    r = dist(env, "content", "ls")
    lines = r.stdout.decode().splitlines()
    assert re.fullmatch("DIGEST\t{9}SIZE\tAGE\t+LABELS", lines[0])
    row = {line.split("\t")[0]: line for line in lines[1:]}
    assert re.fullmatch(rf"{d}\t3\.146MB\t(Less than a second|\d seconds?)\t+gc=x,team=a", row[str(d)])
    assert re.fullmatch(rf"{small}\t4B\t(Less than a second|\d seconds?)\t+-", row[str(small)])

    r = dist(env, "content", "ls", "-q", 'labels."team"==a')
    assert r.stdout.decode().split() == [str(d)]
    r = dist(env, "content", "ls", "-q", "labels.team==zzz", f"digest=={small}")
    assert r.stdout.decode().split() == [str(small)]
    r = dist(env, "content", "ls", "labels.team=a")
    assert r.returncode == 1 and r.stderr.decode().startswith("dist: invalid filter 'labels.team=a'")

    r = dist(env, "content", "info", str(d))
    doc = json.loads(r.stdout)
    assert (doc["Digest"], doc["Size"], doc["Labels"]) == (str(d), len(data), {"gc": "x", "team": "a"})
    assert doc["CreatedAt"].endswith("Z")

    r = dist_proc(env, "content", "get", str(d))  # the real script, to a pipe
    assert r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == d.hex
    out = tmp_path / "out.bin"
    with open(out, "wb") as f:  # to a regular file
        subprocess.run([DIST, "content", "get", str(d)], env=env, stdout=f, check=True, timeout=60)
    assert out.read_bytes() == data


def test_errors_are_one_line(env: dict[str, str]) -> None:
    missing = Digest.from_bytes(b"missing")
    for args, msg in [
        (("info", str(missing)), f"dist: content {missing}: not found"),
        (("get", str(missing)), f"dist: content {missing}: not found"),
        (("info", "sha256:ABC"), "dist: invalid digest 'sha256:ABC': hex part must be lower-case hexadecimal"),
        (("label", "md5:00", "a=b"), "dist: invalid digest 'md5:00': unsupported algorithm 'md5' (sha256, sha512)"),
        (("abort", "never-started"), "dist: ingest 'never-started': not found"),
    ]:
        r = dist_proc(env, "content", *args)
        assert r.returncode == 1, args
        assert r.stderr.decode() == msg + "\n"
        assert r.stdout == b""


def test_ingest_verification_failures(env: dict[str, str]) -> None:
    data = b"0123456789"
    r = dist(env, "content", "ingest", "r1", "--expected-size", "20", input=data)
    assert (r.returncode, r.stderr.decode()) == (1, "dist: ref 'r1': unexpected end of data: expected 20 bytes, got 10\n")
    r = dist(env, "content", "ingest", "r2", "--expected-size", "5", input=data)
    assert r.returncode == 1
    assert r.stderr.decode() == "dist: ingest 'r2': write of 10 bytes at offset 0 exceeds total 5\n"
    wrong = Digest.from_bytes(b"other")
    r = dist(env, "content", "ingest", "r3", "--expected-digest", str(wrong), input=data)
    assert r.returncode == 1
    assert r.stderr.decode() == f"dist: ingest 'r3': digest mismatch: expected {wrong}, got {Digest.from_bytes(data)}\n"
    r = dist(env, "content", "ingest", "r4", "--expected-digest", "sha256:../../x", input=data)
    assert r.returncode == 1 and "invalid digest 'sha256:../../x'" in r.stderr.decode()
    assert dist(env, "content", "ls", "-q").stdout == b""
    assert store_of(env).status("r1").offset == 10


def test_ingest_resumes_from_a_file_and_already_exists_is_success(env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    d = Digest.from_bytes(data)
    part = tmp_path / "part"
    part.write_bytes(data[: 2 << 20])
    with open(part, "rb") as f:
        r = dist(env, "content", "ingest", "big", "--expected-size", str(len(data)), "--expected-digest", str(d), stdin=f)
    assert r.returncode == 1 and b"unexpected end of data" in r.stderr
    r = dist(env, "content", "active")
    assert r.stdout.decode().splitlines()[1].split("\t")[:2] == ["big", "2.097MB/5.243MB"]

    full = tmp_path / "full"
    full.write_bytes(data)
    with open(full, "rb") as f:
        r = dist(env, "content", "ingest", "big", "--expected-size", str(len(data)), "--expected-digest", str(d), stdin=f)
    assert r.returncode == 0, r.stderr
    assert dist(env, "content", "get", str(d)).stdout == data
    with open(full, "rb") as f:  # again: already there
        r = dist(env, "content", "ingest", "big-again", "--expected-size", str(len(data)), "--expected-digest", str(d), stdin=f)
    assert r.returncode == 0 and r.stderr == b""
    assert dist(env, "content", "active").stdout.decode() == "REF\tSIZE\tAGE\t\n"


def test_active_abort_and_locked_ref(env: dict[str, str]) -> None:
    for ref in ("layer-a", "layer-b", "manifest-c"):
        dist(env, "content", "ingest", ref, "--expected-size", "100", input=b"x" * 10)
    r = dist(env, "content", "active")
    assert [ln.split("\t")[0] for ln in r.stdout.decode().splitlines()] == ["REF", "layer-a", "layer-b", "manifest-c"]
    r = dist(env, "content", "active", "^layer-")
    assert [ln.split("\t")[0] for ln in r.stdout.decode().splitlines()[1:]] == ["layer-a", "layer-b"]

    w = store_of(env).writer("layer-a")  # held by this process
    try:
        r = dist_proc(env, "content", "abort", "layer-a")
        assert r.returncode == 1 and r.stderr.decode() == "dist: ref 'layer-a' locked by another process\n"
        r = dist(env, "content", "abort", "layer-a")
        assert r.returncode == 1 and r.stderr.decode().startswith("dist: ref 'layer-a' locked: in use since ")
    finally:
        w.close()
    assert dist(env, "content", "abort", "layer-a", "layer-b").returncode == 0
    r = dist(env, "content", "active")
    assert [ln.split("\t")[0] for ln in r.stdout.decode().splitlines()] == ["REF", "manifest-c"]


def test_label_and_rm(env: dict[str, str]) -> None:
    d1 = ingest(env, "one", b"one")
    d2 = ingest(env, "two", b"two")
    r = dist(env, "content", "label", str(d1), "a=1", "b=2")
    assert r.stdout.decode() == "a=1,b=2\n"
    r = dist(env, "content", "label", str(d1), "a=", "c=3")
    assert r.stdout.decode() == "b=2,c=3\n"
    r = dist(env, "content", "label", str(d1), "b")
    assert r.stdout.decode() == "c=3\n"
    r = dist(env, "content", "label", str(d1))
    assert r.stdout.decode() == "c=3\n"

    missing = Digest.from_bytes(b"missing")
    r = dist(env, "content", "rm", str(d1), str(missing), "not-a-digest", str(d2))
    assert r.returncode == 1
    assert r.stdout.decode().split() == [str(d1), str(d2)]
    assert r.stderr.decode() == "dist: could not delete not-a-digest: invalid digest 'not-a-digest': expected <algorithm>:<hex>\n"
    assert dist(env, "content", "ls", "-q").stdout == b""
    r = dist(env, "content", "rm", str(missing))
    assert (r.returncode, r.stdout) == (0, b"")


def test_docs_example(tmp_path: Path, env: dict[str, str]) -> None:
    steps = example_steps(REPO / "docs" / "content.md")
    assert len(steps) > 8
    for cmd, expect, out in run_example_steps(steps, tmp_path, env):
        if expect:
            assert [_norm(ln) for ln in out.splitlines()] == [_norm(ln) for ln in expect], cmd


def _norm(line: str) -> list[str]:
    return re.sub(r"Less than a second|\d+ seconds?", "AGE", line).split()
