"""The Images service (``hoist.grpc.v1.images``): containerd.services.images.v1.Images over the metadata store.

Images live per namespace (``containerd-namespace``).  List takes containerd's filters over ``name``,
``target.digest``, ``target.mediatype`` and ``labels.<key>``; Update takes a field mask (``labels``,
``labels.<key>``, ``target``); Delete with ``sync`` runs a garbage collection before it returns, so the
blobs (and snapshots) only that image used are gone when the call ends.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import grpc
from google.protobuf import empty_pb2

from hoist.api import convert
from hoist.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from hoist.api.errors import translate_errors
from hoist.api.server import namespace_of
from hoist.errors import InvalidArgumentError
from hoist.images.image import Image
from hoist.plugin import InitContext, Registration, hookimpl
from hoist.services.support import Plugins, compile_filters

log = logging.getLogger("hoist.grpc.v1.images")

_UPDATABLE = ("labels", "target")


def _fields(img: Image) -> dict[str, str]:
    return {"name": img.name, "target.digest": str(img.target.digest), "target.mediatype": img.target.media_type}


def _check_name(name: str) -> str:
    if not name:
        raise InvalidArgumentError("image name must not be empty")
    if "\x00" in name:
        raise InvalidArgumentError(f"image name {name!r}: must not contain NUL")
    return name


@translate_errors
class ImagesService(images_pb2_grpc.ImagesServicer):
    """containerd.services.images.v1.Images backed by the metadata store's per-namespace image tables."""

    def __init__(self, metadata: Any, plugins: Plugins | None = None) -> None:
        self._db = metadata
        self._plugins = plugins

    def register(self, server: grpc.Server) -> None:
        images_pb2_grpc.add_ImagesServicer_to_server(self, server)

    def _store(self, context: grpc.ServicerContext) -> Any:
        return self._db.images(namespace_of(context))

    def Get(self, request: images_pb2.GetImageRequest, context: grpc.ServicerContext) -> images_pb2.GetImageResponse:
        store = self._store(context)
        return images_pb2.GetImageResponse(image=convert.image_to_pb(store.get(_check_name(request.name))))

    def List(self, request: images_pb2.ListImagesRequest, context: grpc.ServicerContext) -> images_pb2.ListImagesResponse:
        store = self._store(context)
        match = compile_filters(_fields, *request.filters)
        return images_pb2.ListImagesResponse(images=[convert.image_to_pb(i) for i in store.list() if match(i)])

    def Create(
        self, request: images_pb2.CreateImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.CreateImageResponse:
        store = self._store(context)
        _check_name(request.image.name)
        image = convert.image_from_pb(request.image)
        return images_pb2.CreateImageResponse(image=convert.image_to_pb(store.create(image)))

    def Update(
        self, request: images_pb2.UpdateImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.UpdateImageResponse:
        store = self._store(context)
        name = _check_name(request.image.name)
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        for p in paths:
            if p not in _UPDATABLE and not (p.startswith("labels.") and len(p) > len("labels.")):
                raise InvalidArgumentError(f"image {name!r}: cannot update field {p!r}")
        labels = {k: v for k, v in request.image.labels.items() if v}  # an empty value removes the label
        if request.image.HasField("target") and request.image.target.digest:
            image = attrs.evolve(convert.image_from_pb(request.image), labels=labels)
        else:
            if not paths or "target" in paths:
                raise InvalidArgumentError(f"image {name!r}: target digest must not be empty")
            image = Image(name=name, target=store.get(name).target, labels=labels)
        return images_pb2.UpdateImageResponse(image=convert.image_to_pb(store.update(image, *paths)))

    def Delete(self, request: images_pb2.DeleteImageRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        store = self._store(context)
        store.delete(_check_name(request.name))
        if request.sync and self._plugins is not None:
            self._plugins.collect()
        return empty_pb2.Empty()


def _init(ic: InitContext) -> ImagesService:
    return ImagesService(ic.get("hoist.metadata.v1"), Plugins(ic))


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    register(Registration(type="hoist.grpc.v1", id="images", requires=("hoist.metadata.v1",), init=_init))
