"""Hoist's execution service: containers over gRPC on hoistd's socket."""
