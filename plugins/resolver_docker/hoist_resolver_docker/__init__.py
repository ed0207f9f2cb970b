"""Hoist's resolver, fetcher and pusher for Docker Registry HTTP API v2 / OCI distribution registries."""
