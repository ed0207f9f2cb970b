"""Hoist's gRPC API: protos wire-compatible with containerd's v1 API, their bindings, errors and server.

Generated modules live under ``hoist.api.containerd`` (mirroring containerd's proto packages);
regenerate them with ``python -m hoist.api.generate``.
"""
