"""Temporary leases, as containerd's client takes around a pull: what every lease store (the metadata
store's, or a daemon's over gRPC) needs to hold content for the length of a block.

Kept free of the garbage collector and of gRPC, so that a fetch can take a lease without loading either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from typing import Any

from hoist.errors import NotFoundError

LABEL_EXPIRE = "containerd.io/gc.expire"
"""containerd's lease label: an RFC 3339 time after which garbage collection deletes the lease."""

DEFAULT_EXPIRY = dt.timedelta(hours=24)
"""How long a temporary lease lives if its holder dies without deleting it (containerd's default)."""


def new_lease_id() -> str:
    """A fresh lease id, as containerd's ``WithRandomID``."""
    return f"hoist-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}-{os.urandom(8).hex()}"


def expire_label(expiry: dt.timedelta) -> str:
    """The :data:`LABEL_EXPIRE` value for ``expiry`` from now."""
    return (dt.datetime.now(dt.timezone.utc) + expiry).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def temporary_lease(leases: Any, expiry: dt.timedelta = DEFAULT_EXPIRY,
                    labels: Mapping[str, str] | None = None) -> Iterator[str]:
    """Create a lease expiring after ``expiry`` for the block, yield its id, delete it afterwards.

    :param leases: a lease store (the metadata store's per-namespace view, or
        :class:`hoist.api.leases_client.RemoteLeaseStore`).
    """
    lease = leases.create(new_lease_id(), {**dict(labels or {}), LABEL_EXPIRE: expire_label(expiry)})
    try:
        yield lease.id
    finally:
        try:
            leases.delete(lease.id)
        except NotFoundError:
            pass


__all__ = ["DEFAULT_EXPIRY", "LABEL_EXPIRE", "expire_label", "new_lease_id", "temporary_lease"]
