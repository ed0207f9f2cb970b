"""A Hoist runtime plugin (``hoist.runtime.v1.runc``) that hands bundles to runc."""
