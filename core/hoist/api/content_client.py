"""A content :class:`~hoist.content.Store` over gRPC: the Content service of ``hoistd`` or of a real containerd.

Every call carries the namespace (and the lease, when one is set) as containerd's clients do; status
codes come back as :mod:`hoist.errors` exceptions with the server's message.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from hoist.api import convert
from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from hoist.api.errors import call, from_rpc_error, iterate
from hoist.api.server import LEASE_HEADER, MAX_MESSAGE_SIZE, NAMESPACE_HEADER, socket_path
from hoist.content import Descriptor, Digest, Info, Status, WalkFunc
from hoist.errors import FailedPreconditionError, HoistError, InvalidArgumentError, OutOfRangeError

WRITE_CHUNK = 4 << 20
"""Largest data payload per WriteContentRequest (well under the 16 MiB message limit)."""

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
)


def connect(address: str) -> grpc.Channel:
    """An insecure channel to the unix socket ``address`` (``unix://<path>`` or a path), 16 MiB messages.

    :raises InvalidArgumentError: ``address`` is not a filesystem unix socket path.
    """
    return grpc.insecure_channel(f"unix://{socket_path(address)}", options=CHANNEL_OPTIONS)


class RemoteReaderAt:
    """Random access to one blob through Content.Read."""

    def __init__(self, store: RemoteContentStore, digest: Digest, size: int) -> None:
        self._store = store
        self._digest = digest
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0:
            raise InvalidArgumentError(f"content {self._digest}: negative read offset {offset}")
        if offset > self._size:
            raise OutOfRangeError(f"content {self._digest}: read past object length {self._size} bytes")
        n = min(n, self._size - offset)
        if n <= 0:
            return b""
        req = content_pb2.ReadContentRequest(digest=str(self._digest), offset=offset, size=n)
        parts = [r.data for r in iterate(self._store._stub.Read(req, metadata=self._store._metadata))]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        pass


_END = object()


class _WriteStream:
    """One Content.Write call driven request by response: each ``send`` gets exactly one answer."""

    def __init__(self, stub: content_pb2_grpc.ContentStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses = stub.Write(self._request_stream(), metadata=metadata)
        self._ended = False

    def _request_stream(self) -> Iterator[content_pb2.WriteContentRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def send(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        """Send ``req`` and return the answer; on any failure the stream is ended and the error raised."""
        self._requests.put(req)
        try:
            return next(self._responses)
        except grpc.RpcError as err:
            self.end()
            raise from_rpc_error(err) from err
        except StopIteration:
            self.end()
            raise HoistError("the server ended the write stream early") from None

    def end(self) -> None:
        """Half-close the stream and wait until the server has finished it (and so released the ref)."""
        if self._ended:
            return
        self._ended = True
        self._requests.put(_END)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass


class RemoteWriter:
    """An ingest driven over Content.Write; the server holds the ref's lock while the stream is open.

    An error from a write or a status ends that stream on the server; the next call opens a new one
    on the same ref (taking the lock again), so the writer stays usable as a local one does. A failed
    commit releases the ref for good, as a local commit does.
    """

    def __init__(self, store: RemoteContentStore, ref: str, total: int | None, expected: Digest | None) -> None:
        self._store = store
        self._ref = ref
        self._total = total or 0
        self._expected = expected
        self._stream: _WriteStream | None = None
        self._closed = False
        self._digest: Digest | None = None
        self._offset = 0
        self._open()

    def _open(self) -> _WriteStream:
        stream = _WriteStream(self._store._stub, self._store._metadata)
        resp = stream.send(
            content_pb2.WriteContentRequest(
                action=content_pb2.STAT,
                ref=self._ref,
                total=self._total,
                expected=str(self._expected) if self._expected else "",
            )
        )
        self._take(resp)
        self._stream = stream
        return stream

    def _take(self, resp: content_pb2.WriteContentResponse) -> content_pb2.WriteContentResponse:
        self._offset = resp.offset
        if resp.digest:
            self._digest = Digest.parse(resp.digest)
        return resp

    def _send(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        if self._closed:
            raise FailedPreconditionError(f"ref {self._ref!r}: writer is closed")
        stream = self._stream if self._stream is not None else self._open()
        return self._send_on(stream, req)

    def _send_on(self, stream: _WriteStream, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        try:
            return self._take(stream.send(req))
        except HoistError:
            self._stream = None
            raise

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), WRITE_CHUNK):
            chunk = view[start : start + WRITE_CHUNK]
            before = self._offset
            resp = self._send(content_pb2.WriteContentRequest(action=content_pb2.WRITE, offset=before, data=bytes(chunk)))
            if resp.offset - before != len(chunk):
                raise FailedPreconditionError(
                    f"ref {self._ref!r}: short write: {resp.offset - before} of {len(chunk)} bytes"
                )
        return len(view)

    def digest(self) -> Digest:
        if self._digest is None or self._stream is None:
            self.status()
        if self._digest is None:
            raise FailedPreconditionError(f"ref {self._ref!r}: the server did not report a digest")
        return self._digest

    def status(self) -> Status:
        resp = self._send(content_pb2.WriteContentRequest(action=content_pb2.STAT))
        return Status(
            ref=self._ref,
            offset=resp.offset,
            total=resp.total,
            expected=self._expected,
            started_at=convert.datetime(resp.started_at),
            updated_at=convert.datetime(resp.updated_at),
        )

    def truncate(self, size: int) -> None:
        if size != 0:
            raise InvalidArgumentError(f"ref {self._ref!r}: can only truncate to 0, not {size}")
        self._send(content_pb2.WriteContentRequest(action=content_pb2.WRITE, offset=0))

    def commit(self, size: int, expected: Digest | str | None, labels: Mapping[str, str] | None = None) -> None:
        want = Digest.parse(expected) if expected is not None and expected != "" else None
        try:
            resp = self._send(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    total=size or 0,
                    offset=self._offset,
                    expected=str(want) if want else "",
                    labels=dict(labels or {}),
                )
            )
            if size and resp.offset != size:
                raise FailedPreconditionError(f"ref {self._ref!r}: unexpected size {resp.offset}, expected {size}")
            if want and resp.digest != str(want):
                raise FailedPreconditionError(f"ref {self._ref!r}: unexpected digest {resp.digest}, expected {want}")
        finally:
            self.close()

    def close(self) -> None:
        """End the stream and wait until the server has released the ref; idempotent."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.end()


class RemoteContentStore:
    """A :class:`~hoist.content.Store` that forwards every operation to a Content service.

    :param channel: a channel to ``hoistd`` or containerd (see :func:`connect`).
    :param namespace: sent as ``containerd-namespace`` on every call.
    :param lease: sent as ``containerd-lease`` when set.
    :param owns_channel: :meth:`close` closes the channel too (else the caller keeps it).
    """

    def __init__(
        self, channel: grpc.Channel, namespace: str = "default", lease: str | None = None, *, owns_channel: bool = False
    ) -> None:
        self._channel = channel
        self._owns_channel = owns_channel
        self._stub = content_pb2_grpc.ContentStub(channel)
        self.namespace = namespace
        self.lease = lease
        md = [(NAMESPACE_HEADER, namespace)]
        if lease:
            md.append((LEASE_HEADER, lease))
        self._metadata = tuple(md)

    def close(self) -> None:
        """Close the channel when this store owns it."""
        if self._owns_channel:
            self._channel.close()

    # -- Provider --------------------------------------------------------------------------------

    def reader_at(self, desc: Descriptor) -> RemoteReaderAt:
        info = self.info(desc.digest)
        return RemoteReaderAt(self, info.digest, info.size)

    # -- Ingester --------------------------------------------------------------------------------

    def writer(self, ref: str, total: int | None = None, expected: Digest | str | None = None) -> RemoteWriter:
        if not ref:
            raise InvalidArgumentError("ingest ref must not be empty")
        if total is not None and (not isinstance(total, int) or total < 0):
            raise InvalidArgumentError(f"ref {ref!r}: invalid total {total!r}")
        return RemoteWriter(self, ref, total, Digest.parse(expected) if expected is not None else None)

    # -- Manager ---------------------------------------------------------------------------------

    def info(self, digest: Digest | str) -> Info:
        d = Digest.parse(digest)
        resp = call(self._stub.Info, content_pb2.InfoRequest(digest=str(d)), metadata=self._metadata)
        return convert.info_from_pb(resp.info)

    def update(self, info: Info, fieldpaths: tuple[str, ...] = ()) -> Info:
        req = content_pb2.UpdateRequest(info=convert.info_to_pb(info))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        resp = call(self._stub.Update, req, metadata=self._metadata)
        return convert.info_from_pb(resp.info)

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        req = content_pb2.ListContentRequest(filters=list(filters))
        for resp in iterate(self._stub.List(req, metadata=self._metadata)):
            for info in resp.info:
                fn(convert.info_from_pb(info))

    def delete(self, digest: Digest | str) -> None:
        d = Digest.parse(digest)
        call(self._stub.Delete, content_pb2.DeleteContentRequest(digest=str(d)), metadata=self._metadata)

    # -- IngestManager ---------------------------------------------------------------------------

    def status(self, ref: str) -> Status:
        resp = call(self._stub.Status, content_pb2.StatusRequest(ref=ref), metadata=self._metadata)
        return convert.status_from_pb(resp.status)

    def list_statuses(self, *filters: str) -> list[Status]:
        req = content_pb2.ListStatusesRequest(filters=list(filters))
        resp = call(self._stub.ListStatuses, req, metadata=self._metadata)
        return [convert.status_from_pb(s) for s in resp.statuses]

    def abort(self, ref: str) -> None:
        call(self._stub.Abort, content_pb2.AbortRequest(ref=ref), metadata=self._metadata)


def open_store(address: str, namespace: str = "default", lease: str | None = None) -> RemoteContentStore:
    """A :class:`RemoteContentStore` on a new channel to ``address`` (picklable as a ``functools.partial``)."""
    return RemoteContentStore(connect(address), namespace=namespace, lease=lease, owns_channel=True)


__all__ = ["RemoteContentStore", "RemoteReaderAt", "RemoteWriter", "connect", "open_store"]
