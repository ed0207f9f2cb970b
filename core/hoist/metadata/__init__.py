"""The metadata store: namespaces, images, content records and labels, leases and containers (SQLite, WAL).

The ``hoist.metadata.v1.sqlite`` builtin plugin (:mod:`hoist.metadata.plugin`) opens it under its root.
"""

from __future__ import annotations

from hoist.metadata.content import ContentBinding, NamespacedContentStore
from hoist.metadata.store import (
    DEFAULT_NAMESPACE,
    ContentLabelStore,
    ImageStore,
    Lease,
    LeaseResource,
    LeaseStore,
    SQLiteMetadataStore,
    validate_namespace,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "ContentBinding",
    "ContentLabelStore",
    "ImageStore",
    "Lease",
    "LeaseResource",
    "LeaseStore",
    "NamespacedContentStore",
    "SQLiteMetadataStore",
    "validate_namespace",
]
