"""Hoist's value types to and from the API's messages (content Info/Status, descriptors, timestamps)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from google.protobuf import timestamp_pb2

from hoist.api.containerd.services.content.v1 import content_pb2
from hoist.api.containerd.types import descriptor_pb2
from hoist.content import Descriptor, Digest, Info, Status

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def timestamp(value: _dt.datetime | None) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of ``value`` (naive datetimes are taken as UTC)."""
    ts = timestamp_pb2.Timestamp()
    if value is not None:
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        ts.FromDatetime(value)
    return ts


def datetime(ts: timestamp_pb2.Timestamp) -> _dt.datetime:
    """The aware UTC datetime of a protobuf Timestamp."""
    return ts.ToDatetime(tzinfo=_dt.timezone.utc)


def info_to_pb(info: Info) -> content_pb2.Info:
    return content_pb2.Info(
        digest=str(info.digest),
        size=info.size,
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_pb(msg: content_pb2.Info) -> Info:
    """:raises InvalidArgumentError: a malformed digest."""
    return Info(
        digest=Digest.parse(msg.digest),
        size=msg.size,
        created_at=datetime(msg.created_at),
        updated_at=datetime(msg.updated_at),
        labels=dict(msg.labels),
    )


def status_to_pb(status: Status) -> content_pb2.Status:
    return content_pb2.Status(
        started_at=timestamp(status.started_at),
        updated_at=timestamp(status.updated_at),
        ref=status.ref,
        offset=status.offset,
        total=status.total,
        expected=str(status.expected) if status.expected else "",
    )


def status_from_pb(msg: content_pb2.Status) -> Status:
    return Status(
        ref=msg.ref,
        offset=msg.offset,
        total=msg.total,
        expected=msg.expected or None,
        started_at=datetime(msg.started_at),
        updated_at=datetime(msg.updated_at),
    )


def descriptor_to_pb(desc: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(
        media_type=desc.media_type, digest=str(desc.digest), size=desc.size, annotations=dict(desc.annotations)
    )


def descriptor_from_pb(msg: descriptor_pb2.Descriptor) -> Descriptor:
    """:raises InvalidArgumentError: a malformed digest or a negative size."""
    return Descriptor(media_type=msg.media_type, digest=msg.digest, size=msg.size, annotations=dict(msg.annotations))


# -- images, leases, snapshots ---------------------------------------------------------------------


def image_to_pb(image: Any) -> Any:
    """containerd.services.images.v1.Image of a :class:`hoist.images.Image`."""
    from hoist.api.containerd.services.images.v1 import images_pb2

    return images_pb2.Image(
        name=image.name,
        labels=dict(image.labels),
        target=descriptor_to_pb(image.target),
        created_at=timestamp(image.created_at),
        updated_at=timestamp(image.updated_at),
    )


def image_from_pb(msg: Any) -> Any:
    """The :class:`hoist.images.Image` of an Image message.

    :raises InvalidArgumentError: no target, a malformed target digest or a negative size.
    """
    from hoist.errors import InvalidArgumentError
    from hoist.images.image import Image

    if not msg.HasField("target") or not msg.target.digest:
        raise InvalidArgumentError(f"image {msg.name!r}: target digest must not be empty")
    return Image(
        name=msg.name,
        target=descriptor_from_pb(msg.target),
        labels=dict(msg.labels),
        created_at=datetime(msg.created_at) if msg.HasField("created_at") else _EPOCH,
        updated_at=datetime(msg.updated_at) if msg.HasField("updated_at") else _EPOCH,
    )


def mount_to_pb(m: Any) -> Any:
    from hoist.api.containerd.types import mount_pb2

    return mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))


def mount_from_pb(msg: Any) -> Any:
    from hoist.snapshots import Mount

    return Mount(type=msg.type, source=msg.source, target=msg.target, options=tuple(msg.options))


_KINDS = {"unknown": 0, "view": 1, "active": 2, "committed": 3}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}


def snapshot_info_to_pb(info: Any) -> Any:
    """containerd.services.snapshots.v1.Info of a :class:`hoist.snapshots.Info`."""
    from hoist.api.containerd.services.snapshots.v1 import snapshots_pb2

    return snapshots_pb2.Info(
        name=info.name,
        parent=info.parent,
        kind=_KINDS[str(info.kind)],
        created_at=timestamp(info.created),
        updated_at=timestamp(info.updated),
        labels=dict(info.labels),
    )


def snapshot_info_from_pb(msg: Any) -> Any:
    from hoist.snapshots import Info as SnapshotInfo

    return SnapshotInfo(
        kind=_KIND_NAMES.get(msg.kind, "unknown"),
        name=msg.name,
        parent=msg.parent,
        labels=dict(msg.labels),
        created=datetime(msg.created_at),
        updated=datetime(msg.updated_at),
    )
