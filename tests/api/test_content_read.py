"""Content.Read as clients call it: many small ranged reads (as ctr's ReaderAt makes), reads to the end, edges.

Each call goes over the wire through the generated stub, as ctr's calls do: one Read per range, one
message back for a range of up to 1 MiB.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from hoist.api.server import NAMESPACE_HEADER, serve
from hoist.services.content import READ_CHUNK, ContentService
from hoist_content_local.store import LocalContentStore
from support.hoistd import HoistdProcess, run_ctr

MD = ((NAMESPACE_HEADER, "default"),)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LocalContentStore, content_pb2_grpc.ContentStub]]:
    local = LocalContentStore(tmp_path / "root", fsync=False)
    sock = tmp_path / "run" / "hoistd.sock"
    server = serve(f"unix://{sock}", [ContentService(local)])
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        yield local, content_pb2_grpc.ContentStub(channel)
    finally:
        channel.close()
        server.stop(None).wait(5)


def _put(local: LocalContentStore, data: bytes) -> str:
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    with local.writer("upload", total=len(data)) as w:
        w.write(data)
        w.commit(len(data), dgst)
    return dgst


def _read(stub: content_pb2_grpc.ContentStub, dgst: str, offset: int, size: int,
          metadata: tuple[tuple[str, str], ...] = MD) -> list[content_pb2.ReadContentResponse]:
    req = content_pb2.ReadContentRequest(digest=dgst, offset=offset, size=size)
    return list(stub.Read(req, metadata=metadata))


def test_small_ranged_reads_put_the_blob_back_together(served) -> None:  # type: ignore[no-untyped-def]
    local, stub = served
    data = os.urandom(5 * 32768 + 123)
    dgst = _put(local, data)
    got = bytearray()
    for offset in range(0, len(data), 32768):
        msgs = _read(stub, dgst, offset, 32768)
        assert len(msgs) == 1 and msgs[0].offset == offset
        got += msgs[0].data
    assert bytes(got) == data
    assert len(msgs[0].data) == 123  # the last range stops at the end of the blob


def test_reads_at_and_past_the_end(served) -> None:  # type: ignore[no-untyped-def]
    local, stub = served
    data = b"hoist" * 1000
    dgst = _put(local, data)
    assert _read(stub, dgst, len(data), 32768) == []  # at the end: nothing
    with pytest.raises(grpc.RpcError) as err:
        _read(stub, dgst, len(data) + 1, 10)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert err.value.details() == f"content {dgst}: read past object length {len(data)} bytes"


def test_read_to_the_end_comes_in_chunks(served) -> None:  # type: ignore[no-untyped-def]
    local, stub = served
    data = os.urandom(2 * READ_CHUNK + 7)
    dgst = _put(local, data)
    msgs = _read(stub, dgst, 5, 0)
    assert [m.offset for m in msgs] == [5, 5 + READ_CHUNK, 5 + 2 * READ_CHUNK]
    assert b"".join(m.data for m in msgs) == data[5:]
    big = _read(stub, dgst, 0, READ_CHUNK + 1)  # more than one message's worth: two messages
    assert [len(m.data) for m in big] == [READ_CHUNK, 1]


def test_a_blob_deleted_between_two_reads_is_not_found(served) -> None:  # type: ignore[no-untyped-def]
    local, stub = served
    data = os.urandom(100_000)
    dgst = _put(local, data)
    assert _read(stub, dgst, 0, 32768)[0].data == data[:32768]
    stub.Delete(content_pb2.DeleteContentRequest(digest=dgst), metadata=MD)
    with pytest.raises(grpc.RpcError) as err:
        _read(stub, dgst, 32768, 32768)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"content {dgst}: not found"


def test_hoistd_a_blob_removed_by_ctr_between_two_reads_is_not_found(hoistd: HoistdProcess) -> None:
    data = os.urandom(3 * 32768 + 5)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    ingest = run_ctr(hoistd.address, "content", "ingest", "--expected-digest", dgst, "read-then-rm", stdin=data)
    assert ingest.returncode == 0, ingest.stderr
    with grpc.insecure_channel(f"unix://{hoistd.address}") as channel:
        stub = content_pb2_grpc.ContentStub(channel)
        assert _read(stub, dgst, 32768, 32768)[0].data == data[32768:65536]
        rm = run_ctr(hoistd.address, "content", "rm", dgst)
        assert rm.returncode == 0 and rm.stdout == f"{dgst}\n".encode()
        with pytest.raises(grpc.RpcError) as err:
            _read(stub, dgst, 65536, 32768)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    got = run_ctr(hoistd.address, "content", "get", dgst)
    assert got.returncode == 1 and b"not found" in got.stderr
