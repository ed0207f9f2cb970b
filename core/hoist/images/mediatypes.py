"""Media types of image objects (Docker schema2, OCI) and what kind of object each one names."""

from __future__ import annotations

DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_MANIFEST_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA2_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA2_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA2_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_SCHEMA2_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA2_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_SCHEMA2_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_SCHEMA2_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_SCHEMA2_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_MANIFEST_SIGNED})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_SCHEMA2_CONFIG})
LAYER_TYPES = frozenset(
    {
        DOCKER_SCHEMA2_LAYER,
        DOCKER_SCHEMA2_LAYER_GZIP,
        DOCKER_SCHEMA2_LAYER_ZSTD,
        DOCKER_SCHEMA2_LAYER_FOREIGN,
        DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP,
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    }
)
NON_DISTRIBUTABLE_TYPES = frozenset(
    {
        DOCKER_SCHEMA2_LAYER_FOREIGN,
        DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    }
)

#: Accept header value for manifest requests, most specific first.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_SCHEMA2_MANIFEST_LIST, OCI_MANIFEST, DOCKER_SCHEMA2_MANIFEST)


def base(media_type: str) -> str:
    """``media_type`` without parameters (``; charset=...``), lower-cased."""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str) -> bool:
    """An OCI index or a Docker manifest list."""
    return base(media_type) in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """An OCI image manifest or a Docker schema2 manifest."""
    return base(media_type) in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    """An image config (OCI or Docker)."""
    return base(media_type) in CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    """A filesystem layer of any known compression, distributable or not."""
    return base(media_type) in LAYER_TYPES


def is_non_distributable(media_type: str) -> bool:
    """A layer that registries are not expected to serve (foreign / non-distributable)."""
    return base(media_type) in NON_DISTRIBUTABLE_TYPES


def compression(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``""`` (uncompressed or not a layer)."""
    mt = base(media_type)
    if mt.endswith((".gzip", "+gzip")):
        return "gzip"
    if mt.endswith((".zstd", "+zstd")):
        return "zstd"
    return ""


def kind(media_type: str) -> str:
    """``index``, ``manifest``, ``config``, ``layer`` or ``unknown`` — also the ingest ref prefix."""
    mt = base(media_type)
    if mt in INDEX_TYPES:
        return "index"
    if mt in MANIFEST_TYPES or mt in SCHEMA1_TYPES:
        return "manifest"
    if mt in CONFIG_TYPES:
        return "config"
    if mt in LAYER_TYPES:
        return "layer"
    return "unknown"
