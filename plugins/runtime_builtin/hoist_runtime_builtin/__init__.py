"""Hoist's builtin container runtime: Linux namespaces and pivot_root."""
