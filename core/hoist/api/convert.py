"""Hoist's value types to and from the API's messages (content Info/Status, descriptors, timestamps)."""

from __future__ import annotations

import datetime as _dt

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
