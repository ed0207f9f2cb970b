"""Hoist errors ↔ gRPC status codes over a real server on a unix socket, and the socket's lifecycle."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from hoist import errors
from hoist.api import errors as api_errors
from hoist.api.content_client import connect
from hoist.api.server import serve
from hoist.services.version import VersionService

PAIRS = [
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.UnsupportedError, grpc.StatusCode.UNIMPLEMENTED),
    (errors.HoistError, grpc.StatusCode.UNKNOWN),
]
ERRORS = {cls.__name__: cls for cls, _ in PAIRS}


@pytest.mark.parametrize("cls, code", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_mapping_is_exact_both_ways(cls: type[errors.HoistError], code: grpc.StatusCode) -> None:
    assert api_errors.code_of(cls("x")) == code
    back = api_errors.from_status(code, "content sha256:ab: not here")
    assert type(back) is cls
    assert str(back) == "content sha256:ab: not here"


def test_errors_outside_the_table() -> None:
    assert api_errors.code_of(errors.ConfigError("x")) == grpc.StatusCode.UNKNOWN
    assert api_errors.code_of(ValueError("x")) == grpc.StatusCode.UNKNOWN
    assert type(api_errors.from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "late")) is errors.HoistError


class _Raiser:
    """A hand-made service whose methods raise the Hoist error named in the request."""

    def register(self, server: grpc.Server) -> None:
        def unary(request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> empty_pb2.Empty:
            raise ERRORS[request.value](f"unary {request.value}: because")

        def stream(request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> Iterator[wrappers_pb2.StringValue]:
            yield wrappers_pb2.StringValue(value="first")
            raise ERRORS[request.value](f"stream {request.value}: midway")

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=wrappers_pb2.StringValue.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("hoist.test.Raiser", handlers),))


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    sock = tmp_path_factory.mktemp("errors") / "s.sock"
    server = serve(str(sock), [_Raiser(), VersionService("v9.9.9", "abc")])
    ch = connect(str(sock))
    try:
        yield ch
    finally:
        ch.close()
        server.stop(None).wait(5)


@pytest.mark.parametrize("cls, code", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_servicer_errors_reach_the_client_with_code_and_message(channel: grpc.Channel, cls, code) -> None:
    unary = channel.unary_unary(
        "/hoist.test.Raiser/Unary",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    with pytest.raises(grpc.RpcError) as raw:
        unary(wrappers_pb2.StringValue(value=cls.__name__))
    assert raw.value.code() == code
    assert raw.value.details() == f"unary {cls.__name__}: because"
    with pytest.raises(cls, match=f"^unary {cls.__name__}: because$") as mapped:
        api_errors.call(unary, wrappers_pb2.StringValue(value=cls.__name__))
    assert type(mapped.value) is cls

    stream = channel.unary_stream(
        "/hoist.test.Raiser/Stream",
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    got = []
    with pytest.raises(cls, match=f"^stream {cls.__name__}: midway$"):
        for msg in api_errors.iterate(stream(wrappers_pb2.StringValue(value=cls.__name__))):
            got.append(msg.value)
    assert got == ["first"]


def test_unregistered_service_is_unimplemented(channel: grpc.Channel) -> None:
    from hoist.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc

    stub = leases_pb2_grpc.LeasesStub(channel)
    with pytest.raises(errors.UnsupportedError):
        api_errors.call(stub.List, leases_pb2.ListRequest())


def test_version_service(channel: grpc.Channel) -> None:
    from hoist.api.containerd.services.version.v1 import version_pb2_grpc

    resp = version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty())
    assert (resp.version, resp.revision) == ("v9.9.9", "abc")


def test_translate_errors_without_the_interceptor(tmp_path: Path) -> None:
    """A servicer decorated with translate_errors maps errors even on a plain grpc server."""
    from concurrent import futures

    from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
    from hoist.services.content import ContentService
    from hoist_content_local.store import LocalContentStore

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ContentService(LocalContentStore(tmp_path / "root", fsync=False)).register(server)
    server.add_insecure_port(f"unix://{tmp_path}/plain.sock")
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{tmp_path}/plain.sock") as ch:
            stub = content_pb2_grpc.ContentStub(ch)
            md = (("containerd-namespace", "default"),)
            with pytest.raises(grpc.RpcError) as err:
                stub.Info(content_pb2.InfoRequest(digest="sha256:" + "0" * 64), metadata=md)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "sha256:" + "0" * 64 in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Read(content_pb2.ReadContentRequest(digest="sha256:../../etc/passwd"), metadata=md))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "sha256:../../etc/passwd" in err.value.details()
    finally:
        server.stop(None).wait(5)


# -- the socket ----------------------------------------------------------------------------------


def test_socket_dir_created_and_mode_0660(tmp_path: Path) -> None:
    sock = tmp_path / "deep" / "er" / "hoistd.sock"
    server = serve(f"unix://{sock}", {})
    try:
        st = sock.lstat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    finally:
        server.stop(None).wait(5)


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    sock = tmp_path / "hoistd.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))
    s.close()  # bound but nobody listens: what a crashed daemon leaves
    server = serve(str(sock), [VersionService("v1", "")])
    try:
        from hoist.api.containerd.services.version.v1 import version_pb2_grpc

        with connect(str(sock)) as ch:
            assert version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty()).version == "v1"
    finally:
        server.stop(None).wait(5)


def test_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    sock = tmp_path / "hoistd.sock"
    first = serve(str(sock), [VersionService("first", "")])
    try:
        with pytest.raises(errors.UnavailableError, match="already serving"):
            serve(str(sock), [VersionService("second", "")])
        from hoist.api.containerd.services.version.v1 import version_pb2_grpc

        with connect(str(sock)) as ch:
            assert version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty()).version == "first"
    finally:
        first.stop(None).wait(5)


def test_a_regular_file_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "precious"
    path.write_text("data")
    with pytest.raises(errors.UnavailableError, match="not a socket"):
        serve(str(path), {})
    assert path.read_text() == "data"


@pytest.mark.parametrize("address", ["unix-abstract:hoist", "@hoist", "relative/hoistd.sock", "tcp://127.0.0.1:1", ""])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="address"):
        serve(address, {})


def test_dead_socket_is_unavailable_for_clients(tmp_path: Path) -> None:
    from hoist.api.content_client import open_store

    store = open_store(str(tmp_path / "nobody.sock"))
    try:
        with pytest.raises(errors.UnavailableError):
            store.list_statuses()
    finally:
        store.close()
