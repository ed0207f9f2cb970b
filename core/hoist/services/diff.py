"""The Diff service (``hoist.grpc.v1.diff``): containerd.services.diff.v1.Diff, applying layers with Hoist's applier.

Apply reads the layer blob from the content of the call's namespace and applies it onto the mounts the caller got from
Prepare (:func:`hoist.archive.apply_to_mounts`: gzip, zstd or plain tar, whiteouts, nothing written
outside the snapshot), answering the descriptor of the uncompressed layer (its digest is the diff ID).
Computing a diff between two trees is not offered: Diff answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from hoist.api import convert
from hoist.api.containerd.services.diff.v1 import diff_pb2, diff_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.server import namespace_of
from hoist.archive import apply_to_mounts
from hoist.content import Descriptor, ReaderAtFile
from hoist.errors import FailedPreconditionError, InvalidArgumentError, UnsupportedError
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.services.support import Plugins

log = logging.getLogger("hoist.grpc.v1.diff")

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
"""Media type of the uncompressed layer that Apply reports."""


@translate_errors
class DiffService(diff_pb2_grpc.DiffServicer):
    """containerd.services.diff.v1.Diff over a content store and Hoist's layer applier."""

    def __init__(self, plugins: Plugins) -> None:
        self._plugins = plugins

    def register(self, server: grpc.Server) -> None:
        diff_pb2_grpc.add_DiffServicer_to_server(self, server)

    def Apply(self, request: diff_pb2.ApplyRequest, context: grpc.ServicerContext) -> diff_pb2.ApplyResponse:
        if not request.HasField("diff") or not request.diff.digest:
            raise InvalidArgumentError("diff descriptor must have a digest")
        if not request.mounts:
            raise InvalidArgumentError("apply: no mounts given")
        if request.payloads:
            raise UnsupportedError("apply: stream processor payloads are not supported")
        desc = convert.descriptor_from_pb(request.diff)
        mounts = [convert.mount_from_pb(m) for m in request.mounts]
        # the layer must be content of the caller's namespace, as every other content read
        ra = self._plugins.content(namespace_of(context)).reader_at(desc)
        with ReaderAtFile(ra) as stream:
            if desc.size and ra.size != desc.size:
                raise FailedPreconditionError(
                    f"layer {desc.digest}: size mismatch: descriptor says {desc.size}, store has {ra.size}"
                )
            result = apply_to_mounts(mounts, stream, media_type=desc.media_type, layer=str(desc.digest))
        applied = Descriptor(media_type=MEDIA_TYPE_LAYER, digest=result.diff_id, size=result.size)
        log.debug("applied %s as %s (%d bytes)", desc.digest, result.diff_id, result.size)
        return diff_pb2.ApplyResponse(applied=convert.descriptor_to_pb(applied))

    def Diff(self, request: diff_pb2.DiffRequest, context: grpc.ServicerContext) -> diff_pb2.DiffResponse:
        raise UnsupportedError("diff: computing the difference between two mounts is not supported by Hoist's applier")


def _init(ic: InitContext) -> DiffService:
    ic.get("hoist.content.v1")
    return DiffService(Plugins(ic))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="diff", requires=("hoist.content.v1",), init=_init))
