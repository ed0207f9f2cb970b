"""The Content service (``hoist.grpc.v1.content``): containerd.services.content.v1.Content over a content store.

Every call works on the content of its namespace (``containerd-namespace``): the metadata store's records
of the blobs in the ``hoist.content.v1`` store (:mod:`hoist.metadata.content`), so a blob another
namespace has is NOT_FOUND here, labels are per namespace, and Delete removes this namespace's record
(the bytes go with the last one).  A call under a lease (``containerd-lease``) adds what it writes, or is
told already exists, to that lease.

Write follows containerd's protocol: the first request names the ref and takes its lock for the
stream's life; STAT reports, WRITE appends at the current offset (offset 0 on a non-empty ingest
starts it over, any other offset is OUT_OF_RANGE), COMMIT verifies and publishes, and a request that
names an expected digest already in the store ends the stream with ALREADY_EXISTS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from hoist.api import convert
from hoist.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.transport import prompt
from hoist.api.server import lease_of, namespace_of
from hoist.content import Descriptor, Digest, Info, ReaderAt, Store
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


def _read_small(ra: ReaderAt, digest: Digest, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (at most one message), fewer only at the end of the blob.

    :raises OutOfRangeError: ``offset`` is past the end of the blob.
    """
    try:
        data = ra.read_at(offset, size)
    except OutOfRangeError:
        data = None
    if data is not None and len(data) == size:
        return data
    total = ra.size
    if offset > total:
        raise OutOfRangeError(f"content {digest}: read past object length {total} bytes")
    if data is None or offset + len(data) < min(total, offset + size):
        raise FailedPreconditionError(f"content {digest}: short read at offset {offset} of {total}")
    return data


@translate_errors
class ContentService(content_pb2_grpc.ContentServicer):
    """containerd.services.content.v1.Content backed by a :class:`~hoist.content.Store`.

    :param store: the ``hoist.content.v1`` store.
    :param plugins: where the metadata store is found; without one (or without ``metadata``) every
        namespace sees ``store`` whole, as a bare content store has no namespaces.
    :param metadata: the metadata store, when not looked up through ``plugins``.
    """

    def __init__(self, store: Store, plugins: Plugins | None = None, *, metadata: Any = None) -> None:
        self._store = store
        self._plugins = plugins
        self._metadata = metadata
        self._binding: Any = None

    def register(self, server: grpc.Server) -> None:
        content_pb2_grpc.add_ContentServicer_to_server(self, server)

    def _bound(self) -> Any:
        if self._binding is None:
            metadata = self._metadata
            if metadata is None and self._plugins is not None:
                metadata = self._plugins.optional("hoist.metadata.v1")
            bind = getattr(metadata, "content_binding", None)
            if bind is None:
                return None
            self._binding = bind(self._store)
        return self._binding

    def _store_for(self, context: grpc.ServicerContext) -> Store:
        """The content of the call's namespace, under its lease (a bare store without a metadata store)."""
        ns = namespace_of(context)
        binding = self._bound()
        if binding is None:
            return self._store
        return binding.namespace(ns, lease=lease_of(context))

    @prompt
    def Info(self, request: content_pb2.InfoRequest, context: grpc.ServicerContext) -> content_pb2.InfoResponse:
        store = self._store_for(context)
        return content_pb2.InfoResponse(info=convert.info_to_pb(store.info(_digest(request.digest))))

    def Update(self, request: content_pb2.UpdateRequest, context: grpc.ServicerContext) -> content_pb2.UpdateResponse:
        store = self._store_for(context)
        digest = _digest(request.info.digest, "info.digest")
        info = Info(digest=digest, size=request.info.size, labels=dict(request.info.labels))
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        return content_pb2.UpdateResponse(info=convert.info_to_pb(store.update(info, paths)))

    @prompt
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

    @prompt
    def Read(
        self, request: content_pb2.ReadContentRequest, context: grpc.ServicerContext
    ) -> Iterator[content_pb2.ReadContentResponse]:
        store = self._store_for(context)
        digest = _digest(request.digest)
        # reader_at alone (no Info: no labels read): ctr reads in many small calls
        ra = store.reader_at(Descriptor(media_type="", digest=digest, size=0))
        try:
            offset = max(request.offset, 0)
            if 0 < request.size <= READ_CHUNK:
                # ctr's ReadAt (32 KiB at a time): one read, one message; the size only at the end
                data = _read_small(ra, digest, offset, request.size)
                if data:
                    yield content_pb2.ReadContentResponse(offset=offset, data=data)
                return
            total = ra.size
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
        # a namespaced view adds what it commits (or finds already there) to the lease itself
        leased_by_store = getattr(store, "lease", None) is not None
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
            if expected is not None and not leased_by_store:  # the lease holds the blob the caller wanted
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
                if req.action == content_pb2.COMMIT and not leased_by_store:
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
                try:
                    self.store.abort(self.ref)
                except NotFoundError:
                    pass  # a writer of a blob shared from another namespace has no ingest to discard
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
