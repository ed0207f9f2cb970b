"""An image store over gRPC: the Images service of ``hoistd`` or of a real containerd.

:class:`RemoteImageStore` has the interface of the metadata store's per-namespace image view
(:class:`hoist.metadata.ImageStore`): ``get``, ``list``, ``create``, ``update``, ``put``, ``delete``,
``by_digest``; so ``hoist.fetch`` and ``dist images`` work unchanged against a daemon.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from hoist.api import convert
from hoist.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from hoist.api.errors import call
from hoist.api.server import NAMESPACE_HEADER
from hoist.content import Digest
from hoist.errors import AlreadyExistsError, HoistError, NotFoundError
from hoist.gc import label_children
from hoist.images.image import Image

log = logging.getLogger("hoist.api")

class RemoteImageStore:
    """The images of one namespace, through containerd.services.images.v1.Images.

    Before an image record is created or re-pointed, the indexes and manifests it reaches get
    containerd's ``containerd.io/gc.ref.content.*`` labels (:func:`hoist.gc.label_children`), as
    containerd's own client writes them: a real containerd collects by labels only, and would
    otherwise remove the layers of an image Hoist fetched once the fetch's lease is gone.

    :param channel: a channel to the daemon (see :func:`hoist.api.content_client.connect`).
    :param namespace: sent as ``containerd-namespace`` on every call.
    :param content: the daemon's content store, for those labels (none: no labels are written).
    """

    def __init__(self, channel: grpc.Channel, namespace: str = "default", content: Any = None) -> None:
        self._stub = images_pb2_grpc.ImagesStub(channel)
        self.namespace = namespace
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._content = content

    def _label_children(self, image: Image) -> None:
        if self._content is None:
            return
        try:
            label_children(self._content, image.target)
        except HoistError as e:  # a missing or unreadable blob: the record is still worth writing
            log.debug("image %s: children not labelled: %s", image.name, e)

    def get(self, name: str) -> Image:
        """:raises NotFoundError: no image of that name."""
        resp = call(self._stub.Get, images_pb2.GetImageRequest(name=name), metadata=self._metadata)
        return convert.image_from_pb(resp.image)

    def list(self, *filters: str) -> list[Image]:
        """Images sorted by name; ``filters`` in containerd's syntax (several filters: any matches)."""
        resp = call(self._stub.List, images_pb2.ListImagesRequest(filters=list(filters)), metadata=self._metadata)
        return sorted((convert.image_from_pb(i) for i in resp.images), key=lambda i: i.name)

    def create(self, image: Image) -> Image:
        """:raises AlreadyExistsError: the name is taken."""
        self._label_children(image)
        req = images_pb2.CreateImageRequest(image=convert.image_to_pb(image))
        return convert.image_from_pb(call(self._stub.Create, req, metadata=self._metadata).image)

    def update(self, image: Image, *fieldpaths: str) -> Image:
        """Replace target and labels (or only ``target``, ``labels``, ``labels.<key>``).

        :raises NotFoundError: no image of that name.
        """
        if not fieldpaths or "target" in fieldpaths:
            self._label_children(image)
        req = images_pb2.UpdateImageRequest(image=convert.image_to_pb(image))
        if fieldpaths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fieldpaths)))
        return convert.image_from_pb(call(self._stub.Update, req, metadata=self._metadata).image)

    def put(self, image: Image) -> Image:
        """Create ``image``, or point the existing name at its target and labels (as containerd's client does)."""
        while True:
            try:
                return self.create(image)
            except AlreadyExistsError:
                pass
            try:
                return self.update(image)
            except NotFoundError:
                continue  # removed in between: create again

    def delete(self, name: str, *, sync: bool = False) -> None:
        """Remove the image; with ``sync`` the daemon collects what only it used before answering.

        :raises NotFoundError: no image of that name.
        """
        call(self._stub.Delete, images_pb2.DeleteImageRequest(name=name, sync=sync), metadata=self._metadata)

    def by_digest(self, digest: Digest | str) -> list[Image]:
        """Images whose target is ``digest``."""
        return self.list(f"target.digest=={Digest.parse(digest)}")


__all__ = ["RemoteImageStore"]
