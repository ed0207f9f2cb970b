"""Shared test infrastructure for Hoist's end-to-end tests.

- :mod:`support.images`: deterministic OCI image layouts (busybox, multi-platform, whiteouts, ...).
- :mod:`support.registry`: a real Docker Distribution registry on 127.0.0.1 (HTTP, TLS, Basic, Bearer).
- :mod:`support.pki`: a per-session test CA and certificates.
- :mod:`support.tokenserver`: the Bearer token server used by the token-auth registry.
- :mod:`support.faultproxy`: a fault-injecting HTTP reverse proxy on loopback.
- :mod:`support.cli`: ``dist``/``hoist``/``hoistd`` run as their console scripts, environments and configs.
- :mod:`support.hoistd`: a ``hoistd`` process serving every core service, and the real ``ctr``.
- :mod:`support.containerd`: a private, real containerd (tests and benchmarks).

The fixtures that wrap them live in ``tests/conftest.py``; ``docs/testing.md`` explains them.
"""
