"""``fetch``: put everything an image needs into the content store, then name it in the metadata store.

The seed's ``dist fetch`` as a library call: resolve the reference, walk index → manifests (for the
selected platforms) → config and layers with bounded concurrency, each blob through ``write_blob``
(already-present blobs skipped without a request, partial ingests resumed), and only when all of it
is committed label the blobs with their source repository and write the image row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hoist import reference
from hoist.content import Digest, Info
from hoist.errors import AlreadyExistsError, FailedPreconditionError, HoistError, InvalidArgumentError, NotFoundError
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.images.handlers import DEFAULT_CONCURRENCY, MAX_DEPTH, Event, children_handler, dispatch, fetch_handler, handlers
from hoist.images.image import Image, check
from hoist.images.platforms import Matcher
from hoist.progress import ProgressTracker

log = logging.getLogger("hoist.fetch")

#: Content labels ``<prefix><registry host>`` list the repositories of that registry holding a blob
#: (containerd's key); the pusher tries them for cross-repository mounts.
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."


def record_sources(content: Any, digests: Sequence[Digest], registry: str, repository: str) -> None:
    """Label each blob with ``repository`` under ``registry``'s distribution-source key (failures are logged).

    Later pushes to other repositories of the registry mount these blobs instead of uploading them.
    """
    if not registry or not repository or not hasattr(content, "update"):
        return
    key = DISTRIBUTION_SOURCE_PREFIX + registry
    for digest in digests:
        try:
            info = content.info(digest)
            have = [r for r in info.labels.get(key, "").split(",") if r]
            if repository in have:
                continue
            value = ",".join([*have, repository])
            content.update(Info(digest=digest, size=info.size, labels={key: value}), (f"labels.{key}",))
        except HoistError as e:
            log.info("content %s: cannot record source %s/%s: %s", digest, registry, repository, e)


@attrs.frozen(kw_only=True)
class FetchParts:
    """What ``fetch`` works with, when not taken from a :class:`hoist.Client`.

    :param content: the content store (Provider, Ingester, Manager, IngestManager).
    :param metadata: the metadata store (``images(namespace)`` view).
    :param resolver: a resolver (``resolve(ref) -> Resolved``).
    :param namespace: the namespace the image is named in.
    """

    content: Any
    metadata: Any
    resolver: Any
    namespace: str = "default"


def _parts(client_or_parts: Any, ref: str, resolver_options: Any) -> tuple[FetchParts, bool]:
    if isinstance(client_or_parts, FetchParts):
        return client_or_parts, False
    c = client_or_parts
    return (
        FetchParts(content=c.content, metadata=c.metadata, resolver=c.resolver(ref, resolver_options), namespace=c.namespace),
        True,
    )


def fetch(
    client_or_parts: Any,
    ref: str,
    platforms: Sequence[str] = (),
    progress: ProgressTracker | None = None,
    *,
    all_platforms: bool = False,
    max_concurrent_downloads: int | None = None,
    labels: Mapping[str, str] | None = None,
    resolver_options: Any = None,
    max_depth: int = MAX_DEPTH,
    cancel: threading.Event | None = None,
) -> Image:
    """Fetch the image ``ref`` into the content store and record it in the metadata store.

    :param client_or_parts: a :class:`hoist.Client` or :class:`FetchParts`.
    :param platforms: ``os/arch[/variant]`` specifiers; none means the host's platform.
    :param progress: a tracker receiving events (its store should be the same content store).
    :param all_platforms: fetch every manifest of an index.
    :param max_concurrent_downloads: blobs fetched at once (default: the resolver's setting, else 4).
    :param labels: labels of the image record.
    :returns: the image record written (name → target descriptor).
    :raises NotFoundError: the reference, a blob, or a manifest for the platform does not exist.
    :raises InvalidArgumentError: a malformed, ambiguous or oversized document (named); nothing is recorded.
    :raises UnsupportedError: a Docker schema1 manifest.
    """
    parts, owned = _parts(client_or_parts, ref, resolver_options)
    try:
        return _fetch(parts, ref, platforms, progress, all_platforms, max_concurrent_downloads, labels, max_depth, cancel)
    finally:
        if owned:
            close = getattr(parts.resolver, "close", None)
            if close is not None:
                close()


def _source(name: str) -> tuple[str, str] | None:
    """``(registry, repository)`` of a resolved name; ``None`` for another resolver's scheme."""
    try:
        parsed = reference.parse(name.removeprefix("docker://"))
    except InvalidArgumentError:
        return None
    return (parsed.domain, parsed.path) if parsed.domain and parsed.path else None


def _record_source(content: Any, name: str, digests: list[Any]) -> None:
    """Label the fetched blobs with the repository they came from (containerd's distribution-source label).

    A later push to another repository of the same registry mounts them instead of uploading.  Blobs
    this fetch committed carry the label from their commit already (see :class:`_LabellingStore`); this
    adds it to the others (already present, or committed by a concurrent writer).
    """
    src = _source(name)
    if src is not None:
        record_sources(content, digests, *src)


class _LabellingStore:
    """The content store as the fetch handler sees it: every blob it commits is labelled with its source.

    Labelling at commit saves a second write per blob after the fetch (for a store that keeps labels in
    a database, a transaction each).
    """

    def __init__(self, store: Any, labels: Mapping[str, str]) -> None:
        self._store = store
        self._labels = dict(labels)

    def writer(self, *args: Any, **kwargs: Any) -> Any:
        return _LabellingWriter(self._store.writer(*args, **kwargs), self._labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _LabellingWriter:
    def __init__(self, writer: Any, labels: Mapping[str, str]) -> None:
        self._w = writer
        self._labels = labels

    def commit(self, size: int, expected: Any, labels: Mapping[str, str] | None = None) -> None:
        self._w.commit(size, expected, {**self._labels, **(labels or {})})

    def __enter__(self) -> _LabellingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._w.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)


def _fetch(
    parts: FetchParts,
    ref: str,
    platforms: Sequence[str],
    progress: ProgressTracker | None,
    all_platforms: bool,
    limit: int | None,
    labels: Mapping[str, str] | None,
    max_depth: int,
    cancel: threading.Event | None,
) -> Image:
    matcher = Matcher.from_specs(list(platforms), all_platforms)
    on_event = progress.event if progress is not None else (lambda _e: None)
    resolve_ref = f"resolve {ref}"
    on_event(Event(state="resolving", ref=resolve_ref))
    try:
        resolved = parts.resolver.resolve(ref)
    except BaseException as e:
        on_event(Event(state="error", ref=resolve_ref, message=str(e)))
        raise
    on_event(Event(state="done", ref=resolve_ref))
    target = resolved.descriptor
    if mt.kind(target.media_type) not in ("index", "manifest"):
        raise InvalidArgumentError(f"{ref}: {target.digest} is a {target.media_type!r}, not an image manifest or index")
    if limit is None:
        limit = getattr(parts.resolver, "max_concurrent_downloads", None) or DEFAULT_CONCURRENCY
    if limit < 1:
        raise InvalidArgumentError(f"max concurrent downloads must be at least 1, got {limit}")
    cancel = cancel or threading.Event()

    def record(ev: Event) -> None:
        on_event(ev)

    # Foreign layers travel only when the resolver follows their URLs (containerd skips them by default).
    follow_foreign = bool(getattr(parts.resolver, "follow_foreign_urls", False))
    # Parallel downloads already overlap network, hashing and disk; a read-ahead thread per download
    # would only add interpreter-lock hand-offs (measured: slower with 4 at once on 2 CPUs).
    src = _source(resolved.name)
    store = parts.content
    if src is not None and hasattr(store, "update"):
        store = _LabellingStore(store, {DISTRIBUTION_SOURCE_PREFIX + src[0]: src[1]})
    fetch_h = fetch_handler(store, resolved.fetcher, on_event=record, cancel=cancel,
                            skip_non_distributable=not follow_foreign, read_ahead=limit == 1)
    kids_h = children_handler(parts.content, matcher)

    def handle(desc: Any) -> Any:
        try:
            return handlers(fetch_h, kids_h)(desc)
        except BaseException as e:
            if not cancel.is_set():
                on_event(Event(state="error", ref=f"{mt.kind(desc.media_type)}-{desc.digest}", digest=desc.digest,
                               size=desc.size, media_type=desc.media_type, message=str(e)))
            raise

    visited = dispatch(handle, [target], limit=limit, max_depth=max_depth, cancel=cancel)
    if mt.is_index(target.media_type) and not any(mt.is_manifest(d.media_type) for d in visited):
        raise NotFoundError(f"{ref}: no manifest for {matcher.describe()} in index {target.digest}")
    # Everything the record will point at must be committed before the row is written.
    result = check(parts.content, target, matcher)
    if not result.available:
        missing = ", ".join(documents.describe(d) for d in result.missing[:3])
        raise FailedPreconditionError(f"{ref}: content missing after fetch: {missing}")
    fetched = [d.digest for d in visited if follow_foreign or not mt.is_non_distributable(d.media_type)]
    _record_source(parts.content, resolved.name, fetched)
    image = Image(name=resolved.name, target=target, labels=dict(labels or {}))
    store = parts.metadata.images(parts.namespace)
    try:
        return store.create(image)
    except AlreadyExistsError:
        # As containerd's pull: point the name at the new target, add the given labels, keep the rest.
        return store.update(image, "target", *(f"labels.{k}" for k in image.labels))
