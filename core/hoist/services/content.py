"""The Content service (``hoist.grpc.v1.content``): containerd.services.content.v1.Content over a content store.

Write follows containerd's protocol: the first request names the ref and takes its lock for the
stream's life; STAT reports, WRITE appends at the current offset (offset 0 on a non-empty ingest
starts it over, any other offset is OUT_OF_RANGE), COMMIT verifies and publishes, and a request that
names an expected digest already in the store ends the stream with ALREADY_EXISTS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
from google.protobuf import empty_pb2

from hoist.api import convert
from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.server import lease_of, namespace_of
from hoist.content import Descriptor, Digest, Info, Store
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
)
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.services.support import Plugins, add_lease_resource

log = logging.getLogger("hoist.grpc.v1.content")

READ_CHUNK = 1 << 20
"""Bytes per ReadContentResponse."""
LIST_BATCH = 100
"""Infos per ListContentResponse."""


def _digest(value: str, what: str = "digest") -> Digest:
    if not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    return Digest.parse(value)


@translate_errors
class ContentService(content_pb2_grpc.ContentServicer):
    """containerd.services.content.v1.Content backed by a :class:`~hoist.content.Store`."""

    def __init__(self, store: Store, plugins: Plugins | None = None) -> None:
        self._store = store
        self._plugins = plugins

    def register(self, server: grpc.Server) -> None:
        content_pb2_grpc.add_ContentServicer_to_server(self, server)

    def _store_for(self, context: grpc.ServicerContext) -> Store:
        namespace_of(context)
        return self._store

    def Info(self, request: content_pb2.InfoRequest, context: grpc.ServicerContext) -> content_pb2.InfoResponse:
        store = self._store_for(context)
        return content_pb2.InfoResponse(info=convert.info_to_pb(store.info(_digest(request.digest))))

    def Update(self, request: content_pb2.UpdateRequest, context: grpc.ServicerContext) -> content_pb2.UpdateResponse:
        store = self._store_for(context)
        digest = _digest(request.info.digest, "info.digest")
        info = Info(digest=digest, size=request.info.size, labels=dict(request.info.labels))
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        return content_pb2.UpdateResponse(info=convert.info_to_pb(store.update(info, paths)))

    def List(
        self, request: content_pb2.ListContentRequest, context: grpc.ServicerContext
    ) -> Iterator[content_pb2.ListContentResponse]:
        store = self._store_for(context)
        found: list[content_pb2.Info] = []
        store.walk(lambda info: found.append(convert.info_to_pb(info)), *request.filters)
        for start in range(0, len(found), LIST_BATCH):
            yield content_pb2.ListContentResponse(info=found[start : start + LIST_BATCH])

    def Delete(self, request: content_pb2.DeleteContentRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        store = self._store_for(context)
        store.delete(_digest(request.digest))
        return empty_pb2.Empty()

    def Read(
        self, request: content_pb2.ReadContentRequest, context: grpc.ServicerContext
    ) -> Iterator[content_pb2.ReadContentResponse]:
        store = self._store_for(context)
        digest = _digest(request.digest)
        # reader_at alone (no Info: no labels read): ctr reads in many small calls
        ra = store.reader_at(Descriptor(media_type="", digest=digest, size=0))
        try:
            total = ra.size
            offset = max(request.offset, 0)
            if offset > total:
                raise OutOfRangeError(f"content {digest}: read past object length {total} bytes")
            size = request.size
            if size <= 0 or offset + size > total:
                size = total - offset
            end = offset + size
            while offset < end:
                data = ra.read_at(offset, min(READ_CHUNK, end - offset))
                if not data:
                    raise FailedPreconditionError(f"content {digest}: short read at offset {offset} of {total}")
                yield content_pb2.ReadContentResponse(offset=offset, data=data)
                offset += len(data)
        finally:
            ra.close()

    def Status(self, request: content_pb2.StatusRequest, context: grpc.ServicerContext) -> content_pb2.StatusResponse:
        store = self._store_for(context)
        return content_pb2.StatusResponse(status=convert.status_to_pb(store.status(request.ref)))

    def ListStatuses(
        self, request: content_pb2.ListStatusesRequest, context: grpc.ServicerContext
    ) -> content_pb2.ListStatusesResponse:
        store = self._store_for(context)
        statuses = store.list_statuses(*request.filters)
        return content_pb2.ListStatusesResponse(statuses=[convert.status_to_pb(s) for s in statuses])

    def Abort(self, request: content_pb2.AbortRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        store = self._store_for(context)
        store.abort(request.ref)
        return empty_pb2.Empty()

    def Write(
        self, request_iterator: Iterator[content_pb2.WriteContentRequest], context: grpc.ServicerContext
    ) -> Iterator[content_pb2.WriteContentResponse]:
        store = self._store_for(context)
        ns, lease = namespace_of(context), lease_of(context)
        metadata = self._plugins.optional("hoist.metadata.v1") if lease and self._plugins is not None else None
        req = next(request_iterator, None)
        if req is None:
            return
        if not req.ref:
            raise InvalidArgumentError("first message must have a reference")
        add_lease_resource(metadata, ns, lease, "ingests", req.ref)
        expected = Digest.parse(req.expected) if req.expected else None
        try:
            session = _WriteSession(store, req.ref, req.total, expected)
        except AlreadyExistsError:
            if expected is not None:  # the lease holds the blob the caller wanted, as containerd does
                add_lease_resource(metadata, ns, lease, "content", str(expected))
            raise
        try:
            while req is not None:
                try:
                    resp = session.handle(req)
                except AlreadyExistsError:
                    if session.expected is not None:
                        add_lease_resource(metadata, ns, lease, "content", str(session.expected))
                    raise
                if req.action == content_pb2.COMMIT:
                    add_lease_resource(metadata, ns, lease, "content", resp.digest)
                yield resp
                if req.action == content_pb2.COMMIT:
                    return
                req = next(request_iterator, None)
        finally:
            session.close()


class _WriteSession:
    """One Write stream: the locked writer and what the client said to expect so far."""

    def __init__(self, store: Store, ref: str, total: int, expected: Digest | None) -> None:
        self.store = store
        self.ref = ref
        self.total = total
        self.expected = expected
        self.writer = store.writer(ref, total=total or None, expected=expected)

    def close(self) -> None:
        self.writer.close()

    def handle(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        writer = self.writer
        resp = content_pb2.WriteContentResponse(action=req.action)
        ws = writer.status()
        resp.offset = ws.offset
        if req.expected:
            self.expected = Digest.parse(req.expected)
            try:
                self.store.info(self.expected)
            except NotFoundError:
                pass
            else:
                writer.close()
                self.store.abort(self.ref)
                raise AlreadyExistsError(f"blob with expected digest {self.expected} exists")
        if req.total > 0:
            self.total = req.total
        if req.action == content_pb2.STAT:
            resp.digest = str(writer.digest())
            resp.started_at.CopyFrom(convert.timestamp(ws.started_at))
            resp.updated_at.CopyFrom(convert.timestamp(ws.updated_at))
            resp.total = self.total or ws.total
            return resp
        if req.action not in (content_pb2.WRITE, content_pb2.COMMIT):
            raise InvalidArgumentError(f"ref {self.ref!r}: unknown write action {req.action}")
        if req.offset < 0 or (req.offset > 0 and req.offset != ws.offset):
            raise OutOfRangeError(f"ref {self.ref!r}: write @{req.offset} must occur at current offset {ws.offset}")
        if req.offset == 0 and ws.offset > 0:
            writer.truncate(0)
            resp.offset = 0
        if req.data:
            n = writer.write(req.data)
            if n is not None and n != len(req.data):
                raise FailedPreconditionError(f"ref {self.ref!r}: wrote {n} of {len(req.data)} bytes")
            resp.offset += len(req.data)
        digest = writer.digest()
        if req.action == content_pb2.COMMIT:
            writer.commit(self.total, self.expected, dict(req.labels) or None)
        resp.digest = str(digest)
        return resp


def _init(ic: InitContext) -> ContentService:
    return ContentService(ic.get("hoist.content.v1"), Plugins(ic))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="content", requires=("hoist.content.v1",), init=_init))
