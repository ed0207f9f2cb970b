"""The image record (a name pointing at a target descriptor) and read-only helpers over stored content."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from hoist.content import Descriptor, Platform
from hoist.errors import InvalidArgumentError, NotFoundError
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.images.handlers import MAX_DEPTH, has_blob, read_blob
from hoist.images.platforms import Matcher


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _labels(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Image:
    """A named image: its name, the descriptor of its manifest or index, labels and timestamps."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_labels, hash=False)
    created_at: _dt.datetime = attrs.field(factory=_now)
    updated_at: _dt.datetime = attrs.field(factory=_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target.to_json(),
            "labels": dict(self.labels),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@attrs.frozen(kw_only=True)
class Node:
    """One descriptor reached while walking an image, with whether its blob is present."""

    desc: Descriptor
    depth: int
    present: bool
    platform: Platform | None = None


def walk(provider: Any, target: Descriptor, matcher: Matcher | None = None, *, max_depth: int = MAX_DEPTH) -> Iterator[Node]:
    """Yield every descriptor of the image at ``target`` that ``matcher`` selects, each digest once.

    Missing blobs are yielded with ``present=False`` and not descended into; non-distributable layers
    count as present.

    :raises InvalidArgumentError: a stored document is malformed or the graph is too deep.
    """
    matcher = matcher or Matcher.all()
    seen: set = set()
    stack: list[tuple[Descriptor, int, Platform | None]] = [(target, 1, target.platform)]
    while stack:
        desc, depth, plat = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if depth > max_depth:
            raise InvalidArgumentError(f"{documents.describe(desc)}: nested more than {max_depth} levels deep")
        present = mt.is_non_distributable(desc.media_type) or has_blob(provider, desc.digest)
        yield Node(desc=desc, depth=depth, present=present, platform=plat)
        if not present:
            continue
        kind = mt.kind(desc.media_type)
        if kind == "index":
            doc = documents.parse(desc, read_blob(provider, desc, documents.MAX_MANIFEST_SIZE))
            kids = [(k, k.platform) for k in matcher.select(doc.manifests)]
        elif kind == "manifest":
            doc = documents.parse(desc, read_blob(provider, desc, documents.MAX_MANIFEST_SIZE))
            kids = [(k, plat) for k in (doc.config, *doc.layers)]
        else:
            continue
        for k, p in reversed(kids):
            stack.append((k, depth + 1, p))


@attrs.frozen(kw_only=True)
class CheckResult:
    """What ``check`` found: whether everything is present, the sizes and the platforms."""

    available: bool
    required: tuple[Descriptor, ...]
    present: tuple[Descriptor, ...]
    missing: tuple[Descriptor, ...]
    size: int
    platforms: tuple[Platform, ...]


def check(provider: Any, target: Descriptor, matcher: Matcher | None = None) -> CheckResult:
    """Whether every blob the image needs (for ``matcher``'s platforms) is in ``provider``.

    ``size`` counts every blob reached (present or missing); ``platforms`` lists the platforms of the
    manifests reached, from the index entries or, for a single manifest, its config.
    """
    required: list[Descriptor] = []
    present: list[Descriptor] = []
    missing: list[Descriptor] = []
    platforms: list[Platform] = []
    for node in walk(provider, target, matcher):
        required.append(node.desc)
        (present if node.present else missing).append(node.desc)
        kind = mt.kind(node.desc.media_type)
        if kind == "manifest" and node.platform is not None and node.platform not in platforms:
            platforms.append(node.platform)
        if kind == "config" and node.present and node.platform is None:
            p = _config_platform(provider, node.desc)
            if p is not None and p not in platforms:
                platforms.append(p)
    return CheckResult(
        available=not missing,
        required=tuple(required),
        present=tuple(present),
        missing=tuple(missing),
        size=sum(d.size for d in required),
        platforms=tuple(platforms),
    )


def _config_platform(provider: Any, desc: Descriptor) -> Platform | None:
    if not mt.is_config(desc.media_type):
        return None
    try:
        cfg = documents.parse_config(desc, read_blob(provider, desc, documents.MAX_CONFIG_SIZE))
    except (InvalidArgumentError, NotFoundError):
        return None
    return documents.config_platform(cfg)


def manifest_for(provider: Any, target: Descriptor, matcher: Matcher | None = None) -> tuple[Descriptor, documents.Manifest]:
    """The first manifest of the image that ``matcher`` selects, with its descriptor.

    :raises NotFoundError: no manifest matches, or a needed blob is missing.
    """
    matcher = matcher or Matcher.default()
    for node in walk(provider, target, matcher):
        if mt.kind(node.desc.media_type) != "manifest":
            continue
        if not node.present:
            raise NotFoundError(f"manifest {node.desc.digest}: not in the content store")
        doc = documents.parse(node.desc, read_blob(provider, node.desc, documents.MAX_MANIFEST_SIZE))
        assert isinstance(doc, documents.Manifest)
        return node.desc, doc
    raise NotFoundError(f"image {target.digest}: no manifest for {matcher.describe()}")
