"""Core's own plugins, registered through the same hook as installed ones.

Maps each builtin plugin URI to the module that implements ``hoist_register_plugins`` for it.  The
modules are imported only when the configuration enables them.
"""

from __future__ import annotations

BUILTINS: dict[str, str] = {
    "hoist.metadata.v1.sqlite": "hoist.metadata.plugin",
    "hoist.grpc.v1.version": "hoist.services.version",
    "hoist.grpc.v1.introspection": "hoist.services.introspection",
    "hoist.grpc.v1.namespaces": "hoist.services.namespaces",
    "hoist.grpc.v1.content": "hoist.services.content",
    "hoist.grpc.v1.images": "hoist.services.images",
    "hoist.grpc.v1.leases": "hoist.services.leases",
    "hoist.grpc.v1.snapshots": "hoist.services.snapshots",
    "hoist.grpc.v1.diff": "hoist.services.diff",
    "hoist.snapshotter.v1.native": "hoist.snapshotters.native",
    "hoist.snapshotter.v1.overlayfs": "hoist.snapshotters.overlay",
}
