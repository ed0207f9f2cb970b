"""``[plugins."hoist.resolver.v1.docker"]``: the docker resolver's configuration."""

from __future__ import annotations

import os

import attrs


def default_max_concurrent_downloads() -> int:
    """Parallel blob downloads: four per CPU, between 4 and 8 (8 on a 2-CPU machine).

    A download spends most of its time waiting: for the registry's answer, then for its blob's
    flush to disk.  More of them in flight keep the registry and the disk busy while the CPUs
    hash and copy (which release the GIL); on 2 CPUs, 64 blobs of 1 MiB came in 5 % sooner with 8
    than with 4, and a few large layers were the same.
    """
    return max(4, min(8, 4 * (os.cpu_count() or 1)))


def _positive(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{attr.name}: expected a positive number, got {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{attr.name}: expected a non-negative number, got {value!r}")


@attrs.frozen(kw_only=True)
class DockerResolverConfig:
    """Settings of ``hoist.resolver.v1.docker`` (every key is optional).

    :ivar config_path: directory of per-registry ``hosts.toml`` (containerd's format): mirrors, plain HTTP, CAs.
    :ivar max_concurrent_downloads: parallel blob downloads of one pull; also sizes the connection pool.
    :ivar max_concurrent_uploads: parallel blob uploads of one push.
    :ivar chunk_size: bytes per ``PATCH`` of a chunked upload.
    :ivar chunked_upload_threshold: blobs larger than this many bytes are uploaded in chunks.
    :ivar connect_timeout: seconds to establish a connection (TCP and TLS).
    :ivar stall_timeout: seconds without receiving a byte before a transfer counts as stalled.
    :ivar retries: attempts per request on connection errors, 408, 429 and 5xx.
    :ivar retry_backoff: first backoff in seconds, doubled per retry, with jitter.
    :ivar retry_max_backoff: longest single backoff in seconds.
    :ivar retry_after_max: longest ``Retry-After`` honoured, in seconds.
    :ivar resume_attempts: consecutive resumes of a cut-off download without new bytes before giving up.
    :ivar follow_foreign_urls: fetch foreign (non-distributable) layers from their ``urls``, without credentials.
    :ivar mirror_fallback: try the upstream registry when every mirror failed (hosts.toml may override).
    :ivar plain_http_hosts: registries (``host[:port]``) spoken to over plain HTTP besides localhost.
    :ivar docker_config: Docker ``config.json`` for credentials (default ``$DOCKER_CONFIG/config.json``
        or ``~/.docker/config.json``).
    :ivar user_agent: the ``User-Agent`` header (default ``hoist/<version>``).
    """

    config_path: str = "/etc/hoist/certs.d"
    max_concurrent_downloads: int = attrs.field(factory=default_max_concurrent_downloads, validator=_positive)
    max_concurrent_uploads: int = attrs.field(default=3, validator=_positive)
    chunk_size: int = attrs.field(default=16 << 20, validator=_positive)
    chunked_upload_threshold: int = attrs.field(default=128 << 20, validator=_non_negative)
    connect_timeout: float = attrs.field(default=30.0, validator=_positive)
    stall_timeout: float = attrs.field(default=60.0, validator=_positive)
    retries: int = attrs.field(default=5, validator=_positive)
    retry_backoff: float = attrs.field(default=0.25, validator=_non_negative)
    retry_max_backoff: float = attrs.field(default=10.0, validator=_non_negative)
    retry_after_max: float = attrs.field(default=60.0, validator=_non_negative)
    resume_attempts: int = attrs.field(default=3, validator=_positive)
    follow_foreign_urls: bool = False
    mirror_fallback: bool = True
    plain_http_hosts: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    docker_config: str = ""
    user_agent: str = ""
