"""Hoist's builtin snapshotters (``hoist.snapshotter.v1.native``, ``hoist.snapshotter.v1.overlayfs``) and their metastore."""
