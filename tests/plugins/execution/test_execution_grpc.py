"""The execution service over gRPC (``hoist.services.execution.v1``): the client gives what the service gives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from hoist.api.execution_client import RemoteExecution
from hoist.api.hoist.services.execution.v1 import execution_pb2, execution_pb2_grpc
from hoist.api.server import serve
from hoist.containers import ContainerEvent, CreateOptions
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.runtime import Status


@pytest.fixture
def remote(open_client, pull, tmp_path) -> Iterator[tuple[RemoteExecution, str, grpc.Channel]]:
    c = open_client()
    ref = pull(c, "test/busybox:1")
    svc = c.plugins_of("hoist.service.v1")["execution"]
    sock = tmp_path / "run" / "hoistd.sock"
    server = serve(str(sock), {"execution": svc})
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        yield RemoteExecution(channel), ref, channel
    finally:
        channel.close()
        server.stop(grace=1).wait(5)


def test_a_container_over_grpc(remote) -> None:
    exe, ref, _channel = remote
    events: list[ContainerEvent] = []
    stream = exe.events(namespace="default")
    reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    reader.start()

    ctr = exe.create("g", CreateOptions(image=ref, env=["WHO=grpc"], args=["sh", "-c", "echo hi $WHO; exit 2"],
                                        labels={"k": "v"}))
    assert (ctr.id, ctr.status, ctr.labels, ctr.runtime) == ("g", Status.CREATED, {"k": "v"}, "hoist.runtime.v1.builtin")
    assert ctr.spec["process"]["args"] == ["sh", "-c", "echo hi $WHO; exit 2"]
    assert exe.start("g").status is Status.RUNNING
    ex = exe.wait("g", 30)
    assert ex.status == 2 and ex.pid > 0
    assert b"".join(exe.logs("g")) == b"hi grpc\n"
    got = exe.get("g")
    assert (got.status, got.exit_status, got.exited_at) == (Status.STOPPED, 2, ex.exited_at)
    assert [x.id for x in exe.list("status==stopped")] == ["g"]
    assert exe.list("status==running") == []
    assert exe.list(namespace="elsewhere") == []
    assert exe.delete("g").exit_status == 2
    deadline = time.monotonic() + 10
    while len(events) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    stream.close()
    reader.join(5)
    assert [(e.type, e.exit_status) for e in events] == [("create", None), ("start", None), ("exit", 2), ("delete", 2)]


def test_errors_keep_their_class_and_message(remote) -> None:
    exe, ref, channel = remote
    with pytest.raises(NotFoundError, match="^container nope: not found in namespace default$"):
        exe.get("nope")
    with pytest.raises(InvalidArgumentError, match="^invalid container id 'a/b': "):
        exe.create("a/b", CreateOptions(image=ref))
    with pytest.raises(NotFoundError, match=r"pull it first \(dist pull missing:1\)$"):
        exe.create("m", CreateOptions(image="missing:1"))
    exe.create("dup", CreateOptions(image=ref, args=["true"]))
    with pytest.raises(AlreadyExistsError):
        exe.create("dup", CreateOptions(image=ref))
    with pytest.raises(FailedPreconditionError, match="not started"):
        exe.wait("dup", 1)
    exe.delete("dup")
    # every call needs a namespace, as containerd's services do
    stub = execution_pb2_grpc.ExecutionStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.List(execution_pb2.ListRequest())
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "namespace is required")
