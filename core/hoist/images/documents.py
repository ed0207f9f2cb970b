"""Strict parsing of manifests, indexes and configs from exactly the bytes whose digest was checked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from hoist.content import Descriptor, Digest, Platform
from hoist.errors import InvalidArgumentError, UnsupportedError
from hoist.images import mediatypes as mt

#: Largest manifest or index Hoist parses (containerd's limit).
MAX_MANIFEST_SIZE = 4 << 20
#: Largest image config Hoist parses.
MAX_CONFIG_SIZE = 16 << 20


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(data: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object, rejecting duplicate keys, NaN/Infinity, bad UTF-8 and non-objects.

    :param what: names the object in error messages (``manifest sha256:…``).
    :raises InvalidArgumentError: the bytes are not one strict JSON object.
    """
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{what}: not valid UTF-8 JSON: {e}") from e
    try:
        obj = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_bad_constant)
    except _DuplicateKey as e:
        raise InvalidArgumentError(f"{what}: duplicate JSON key {e.key!r}") from e
    except (ValueError, RecursionError) as e:
        raise InvalidArgumentError(f"{what}: not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def verify_bytes(desc: Descriptor, data: bytes, what: str) -> None:
    """Check ``data`` is exactly ``desc.size`` bytes with digest ``desc.digest``.

    :raises InvalidArgumentError: size or digest mismatch.
    """
    if len(data) != desc.size:
        raise InvalidArgumentError(f"{what}: size mismatch: expected {desc.size}, got {len(data)}")
    got = Digest.from_bytes(bytes(data), desc.digest.algorithm)
    if got != desc.digest:
        raise InvalidArgumentError(f"{what}: digest mismatch: got {got}")


@attrs.frozen(kw_only=True)
class Manifest:
    """An image manifest (OCI or Docker schema2): one config and ordered layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...] = attrs.field(converter=tuple)
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    subject: Descriptor | None = None


@attrs.frozen(kw_only=True)
class Index:
    """An OCI index or Docker manifest list: manifests (or nested indexes) by platform."""

    media_type: str
    manifests: tuple[Descriptor, ...] = attrs.field(converter=tuple)
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)


def _descriptors(obj: dict, key: str, what: str) -> list[Descriptor]:
    raw = obj.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgumentError(f"{what}: {key!r} must be a list")
    out = []
    for i, d in enumerate(raw):
        try:
            out.append(Descriptor.from_json(d))
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{what}: {key}[{i}]: {e}") from e
    return out


def _annotations(obj: dict, what: str) -> dict[str, str]:
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
        raise InvalidArgumentError(f"{what}: annotations must map strings to strings")
    return ann


def describe(desc: Descriptor) -> str:
    """``manifest sha256:…`` — how errors name an object."""
    k = mt.kind(desc.media_type)
    return f"{'blob' if k == 'unknown' else k} {desc.digest}"


def parse(desc: Descriptor, data: bytes) -> Manifest | Index:
    """Parse a manifest or an index, checked against its descriptor.

    The document must be the exact verified bytes (size and digest are re-checked), one strict JSON
    object whose ``mediaType`` (when present) equals the descriptor's, and not ambiguous: a document
    with both ``manifests`` and ``config``/``layers`` is rejected.

    :raises UnsupportedError: a Docker schema1 manifest.
    :raises InvalidArgumentError: anything else wrong, naming the object.
    """
    what = describe(desc)
    dmt = mt.base(desc.media_type)
    if dmt in mt.SCHEMA1_TYPES:
        raise UnsupportedError(f"{what}: Docker schema1 manifests are not supported; push the image with schema2 or OCI")
    if desc.size > MAX_MANIFEST_SIZE:
        raise InvalidArgumentError(f"{what}: {desc.size} bytes is larger than the {MAX_MANIFEST_SIZE} byte limit")
    verify_bytes(desc, data, what)
    obj = loads_strict(data, what)
    if obj.get("schemaVersion") == 1:
        raise UnsupportedError(f"{what}: Docker schema1 manifests are not supported; push the image with schema2 or OCI")
    if obj.get("schemaVersion") != 2:
        raise InvalidArgumentError(f"{what}: schemaVersion {obj.get('schemaVersion')!r}, expected 2")
    doc_mt = obj.get("mediaType")
    if doc_mt is not None:
        if not isinstance(doc_mt, str):
            raise InvalidArgumentError(f"{what}: mediaType must be a string")
        if mt.base(doc_mt) in mt.SCHEMA1_TYPES:
            raise UnsupportedError(f"{what}: Docker schema1 manifests are not supported")
        if mt.base(doc_mt) != dmt:
            raise InvalidArgumentError(f"{what}: document mediaType {doc_mt!r} disagrees with descriptor {desc.media_type!r}")
    has_manifests = "manifests" in obj
    has_image = "config" in obj or "layers" in obj
    if has_manifests and has_image:
        raise InvalidArgumentError(f"{what}: ambiguous document: has both 'manifests' and 'config'/'layers'")
    if dmt in mt.INDEX_TYPES:
        if has_image:
            raise InvalidArgumentError(f"{what}: described as an index but has 'config'/'layers'")
        return Index(media_type=dmt, manifests=_descriptors(obj, "manifests", what), annotations=_annotations(obj, what))
    if dmt in mt.MANIFEST_TYPES:
        if has_manifests:
            raise InvalidArgumentError(f"{what}: described as a manifest but has 'manifests'")
        if not isinstance(obj.get("config"), dict):
            raise InvalidArgumentError(f"{what}: missing 'config' descriptor")
        try:
            config = Descriptor.from_json(obj["config"])
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{what}: config: {e}") from e
        subject = None
        if isinstance(obj.get("subject"), dict):
            subject = Descriptor.from_json(obj["subject"])
        return Manifest(
            media_type=dmt,
            config=config,
            layers=_descriptors(obj, "layers", what),
            annotations=_annotations(obj, what),
            subject=subject,
        )
    raise InvalidArgumentError(f"{what}: media type {desc.media_type!r} is not a manifest or an index")


def parse_config(desc: Descriptor, data: bytes) -> dict[str, Any]:
    """Parse an image config (strict JSON object) from its verified bytes.

    :raises InvalidArgumentError: not JSON, too large, or not the described bytes.
    """
    what = f"config {desc.digest}"
    if desc.size > MAX_CONFIG_SIZE:
        raise InvalidArgumentError(f"{what}: {desc.size} bytes is larger than the {MAX_CONFIG_SIZE} byte limit")
    verify_bytes(desc, data, what)
    return loads_strict(data, what)


def config_platform(config: Mapping[str, Any]) -> Platform | None:
    """The platform an image config declares, if it declares one."""
    os_, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        return None
    variant = config.get("variant")
    return Platform(os=os_, architecture=arch, variant=variant if isinstance(variant, str) else "")
