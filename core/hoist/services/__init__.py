"""Core's gRPC services (``hoist.grpc.v1`` plugins): version, introspection, namespaces, content, ..."""
