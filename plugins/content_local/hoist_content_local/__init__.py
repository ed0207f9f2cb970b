"""Hoist's local content store: blobs on disk under the plugin root."""
