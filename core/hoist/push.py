"""``push``: send a local image to a registry — config and layers, then manifests, then the index.

The seed's ``dist push`` as a library call.  Everything is checked locally first (every blob present
with the right size, documents parsed and verified), then the registry is asked what it already has
(``HEAD``), the blobs that must travel are verified against their digests, and only then does
anything move: children before parents, with bounded concurrency, through the resolver's pusher
(which mounts from another repository of the same registry when it can).  Progress rows use the
pull's display with the states ``uploading``, ``exists``, ``mounted``, ``committed`` and ``error``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import attrs

from hoist import reference
from hoist.content import Descriptor, Digest, copy_reader_at
from hoist.fetch import DISTRIBUTION_SOURCE_PREFIX, record_sources
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
)
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.images.handlers import MAX_DEPTH, Event, ingest_ref, read_blob
from hoist.images.platforms import Matcher
from hoist.progress import ProgressTracker, Renderer

log = logging.getLogger("hoist.push")

#: Default number of blobs uploaded at once (when the resolver does not say).
DEFAULT_UPLOAD_CONCURRENCY = 3
_VERIFY_BLOCK = 4 << 20


class PushCancelled(HoistError):
    """The push was stopped (another upload failed or the user interrupted) before this object finished."""


@attrs.frozen(kw_only=True)
class PushParts:
    """What ``push`` works with, when not taken from a :class:`hoist.Client`.

    :param content: the content store (``info``, ``reader_at``, ``update``).
    :param metadata: the metadata store (``images(namespace)`` view).
    :param resolver: a resolver (``pusher(ref)``).
    :param namespace: the namespace the local image is named in.
    """

    content: Any
    metadata: Any
    resolver: Any
    namespace: str = "default"


@attrs.frozen(kw_only=True)
class Pushed:
    """What ``push`` did: the remote ``name``, the ``target`` it names, and each object's outcome."""

    name: str
    target: Descriptor
    states: Mapping[Digest, str] = attrs.field(factory=dict, hash=False)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


@attrs.frozen(kw_only=True)
class _Plan:
    root: Descriptor
    nodes: dict[Digest, Descriptor]
    levels: dict[Digest, int]
    documents: dict[Digest, bytes]


def _full_reference(ref: str) -> str:
    if "://" in ref:
        return ref
    return str(reference.normalize(ref))


def _parts(client_or_parts: Any, ref: str, resolver_options: Any) -> tuple[PushParts, bool]:
    if isinstance(client_or_parts, PushParts):
        return client_or_parts, False
    c = client_or_parts
    return PushParts(content=c.content, metadata=c.metadata, resolver=c.resolver(ref, resolver_options),
                     namespace=c.namespace), True


def local_image(metadata: Any, namespace: str, name: str) -> Any:
    """The image record ``name`` (as given, else normalized: ``busybox`` → ``docker.io/library/busybox:latest``).

    :raises NotFoundError: neither name exists in ``namespace``.
    """
    images = metadata.images(namespace)
    try:
        return images.get(name)
    except NotFoundError:
        pass
    try:
        normal = str(reference.normalize(name))
    except InvalidArgumentError:
        normal = name
    if normal != name:
        try:
            return images.get(normal)
        except NotFoundError:
            pass
    raise NotFoundError(f"image {name!r}: not found in namespace {namespace!r}")


def push(
    client_or_parts: Any,
    ref: str,
    local_name: str | None = None,
    platforms: Sequence[str] | None = None,
    all_platforms: bool = False,
    progress: ProgressTracker | None = None,
    *,
    resolver_options: Any = None,
    max_concurrent_uploads: int | None = None,
    verify: bool = True,
    cancel: threading.Event | None = None,
) -> Pushed:
    """Push the local image ``local_name`` (default: ``ref``) to the registry as ``ref``.

    :param client_or_parts: a :class:`hoist.Client` or :class:`PushParts`.
    :param ref: where to push (``host[:port]/repo:tag``; plain names are normalized; ``@digest`` must
        match what is pushed).
    :param platforms: ``os/arch[/variant]``: for an index, push only the manifests for these platforms
        (by digest) and name ``ref`` after the one for the first; without it, the whole index.
    :param all_platforms: push the whole index (the default; kept for symmetry with fetch).
    :param progress: a tracker (:class:`PushProgressTracker` shows bytes and rates).
    :param max_concurrent_uploads: objects uploaded at once (default: the resolver's setting, else 3).
    :param verify: hash every blob that must be uploaded before the first upload.
    :returns: the remote name, its target and each object's outcome.
    :raises NotFoundError: the local image, one of its blobs, or a manifest for a platform is missing
        (before any request).
    :raises FailedPreconditionError: local content is corrupt (before any upload), or the registry
        refused an object (its error text included).
    """
    if platforms and all_platforms:
        raise InvalidArgumentError("--platform and --all-platforms cannot be used together")
    remote = _full_reference(ref)
    parts, owned = _parts(client_or_parts, remote, resolver_options)
    try:
        return _push(parts, remote, local_name or ref, list(platforms or ()), progress, max_concurrent_uploads,
                     verify, cancel or threading.Event())
    finally:
        if owned:
            close = getattr(parts.resolver, "close", None)
            if close is not None:
                close()


def _remote_parts(remote: str) -> reference.Reference | None:
    try:
        return reference.parse(remote.removeprefix("docker://"))
    except InvalidArgumentError:
        return None


def _push(parts: PushParts, remote: str, local: str, platforms: list[str], progress: ProgressTracker | None,
          limit: int | None, verify: bool, cancel: threading.Event) -> Pushed:
    on_event: Callable[[Event], None] = progress.event if progress is not None else (lambda _e: None)
    advance: Callable[[str, int], None] = progress.advance if progress is not None else (lambda _r, _o: None)
    image = local_image(parts.metadata, parts.namespace, local)
    plan = _plan(parts.content, image.target, platforms, local)
    parsed = _remote_parts(remote)
    tag = parsed.tag if parsed is not None else ""
    if parsed is not None and parsed.digest is not None and parsed.digest != plan.root.digest:
        raise InvalidArgumentError(f"{remote}: the image to push is {plan.root.digest}, not {parsed.digest}")
    pusher = parts.resolver.pusher(remote)
    if limit is None:
        limit = getattr(pusher, "max_concurrent_uploads", None) or \
            getattr(parts.resolver, "max_concurrent_uploads", None) or DEFAULT_UPLOAD_CONCURRENCY
    if limit < 1:
        raise InvalidArgumentError(f"max concurrent uploads must be at least 1, got {limit}")
    docker_like = hasattr(pusher, "push_blob") and hasattr(pusher, "exists")
    registry = getattr(pusher, "registry", "")
    repository = getattr(pusher, "repository", "")
    sources = _source_hints(image.name, registry, repository)
    states: dict[Digest, str] = {}
    lock = threading.Lock()

    def ev(state: str, desc: Descriptor, offset: int = 0, message: str = "") -> None:
        on_event(Event(state=state, ref=ingest_ref(desc), digest=desc.digest, size=desc.size,
                       media_type=desc.media_type, offset=offset, message=message))

    def finish(desc: Descriptor, state: str) -> None:
        with lock:
            states[desc.digest] = state
        ev(state, desc, desc.size)

    todo = dict(plan.nodes)
    if docker_like:
        def check(desc: Descriptor) -> None:
            is_root = desc.digest == plan.root.digest
            if pusher.exists(desc, tag) if is_root and tag else pusher.exists(desc):
                finish(desc, "exists")
                with lock:
                    todo.pop(desc.digest, None)

        _run_all(check, list(plan.nodes.values()), limit, cancel)
        if verify:
            _run_all(lambda d: _verify_local(parts.content, d, cancel),
                     [d for d in todo.values() if d.digest not in plan.documents], limit, cancel)

    def upload(desc: Descriptor) -> None:
        ref = ingest_ref(desc)
        is_root = desc.digest == plan.root.digest
        try:
            if desc.digest in plan.documents:
                data = plan.documents[desc.digest]
                ev("uploading", desc)
                if docker_like:
                    state = pusher.push_manifest(desc, data, tag=tag if is_root else "", check_exists=False)
                else:
                    state = _push_generic(pusher, desc, data=data)
                advance(ref, desc.size)
            else:
                annotated = _with_sources(parts.content, desc)

                def on_progress(offset: int) -> None:
                    if cancel.is_set():
                        raise PushCancelled(f"{documents.describe(desc)}: push cancelled")
                    advance(ref, offset)

                if docker_like:
                    reader = parts.content.reader_at(desc)
                    try:
                        state = pusher.push_blob(annotated, reader, sources=sources, check_exists=False,
                                                 on_state=lambda s, o: ev(s, desc, o), on_progress=on_progress)
                    finally:
                        reader.close()
                else:
                    state = _push_generic(pusher, annotated, content=parts.content, on_event=ev,
                                          on_progress=on_progress)
        except BaseException as e:
            if not cancel.is_set() or not isinstance(e, PushCancelled):
                ev("error", desc, message=str(e))
            raise
        finish(desc, state)

    for level in sorted({plan.levels[d] for d in todo}):
        batch = [d for d in todo.values() if plan.levels[d.digest] == level]
        _run_all(upload, batch, limit, cancel)
    record_sources(parts.content, list(states), registry, repository)
    return Pushed(name=remote, target=plan.root, states=states)


@attrs.frozen(kw_only=True)
class PushedObject:
    """What ``push_object`` did: ``name`` (``repository@digest``), the outcome ``state`` and the descriptor."""

    name: str
    state: str
    descriptor: Descriptor


def push_object(client_or_parts: Any, ref: str, digest: Digest | str, media_type: str, *,
                resolver_options: Any = None) -> PushedObject:
    """Push one object of the content store to ``ref``'s repository as ``media_type``.

    A manifest or index goes up by ``ref``'s tag (by digest when it has none), after strict parsing;
    anything else is a blob, hashed before it is sent.

    :raises NotFoundError: the object is not in the content store.
    :raises FailedPreconditionError: it is corrupt (nothing sent), or the registry refused it.
    """
    remote = _full_reference(ref)
    parts, owned = _parts(client_or_parts, remote, resolver_options)
    dgst = Digest.parse(digest)
    try:
        info = parts.content.info(dgst)
        desc = Descriptor(media_type=media_type, digest=dgst, size=info.size)
        pusher = parts.resolver.pusher(remote)
        parsed = _remote_parts(remote)
        if mt.kind(media_type) in ("manifest", "index"):
            doc, data = _document(parts.content, desc, str(dgst))
            tag = parsed.tag if parsed is not None else ""
            if hasattr(pusher, "push_manifest"):
                state = pusher.push_manifest(desc, data, tag=tag)
            else:
                state = _push_generic(pusher, desc, data=data)
        else:
            _verify_local(parts.content, desc, threading.Event())
            annotated = _with_sources(parts.content, desc)
            if hasattr(pusher, "push_blob"):
                reader = parts.content.reader_at(desc)
                try:
                    state = pusher.push_blob(annotated, reader)
                finally:
                    reader.close()
            else:
                state = _push_generic(pusher, annotated, content=parts.content)
        registry = getattr(pusher, "registry", "")
        repository = getattr(pusher, "repository", "")
        record_sources(parts.content, [dgst], registry, repository)
        locator = getattr(pusher, "locator", "") or (parsed.locator if parsed is not None else remote)
        return PushedObject(name=f"{locator}@{dgst}", state=state, descriptor=desc)
    finally:
        if owned:
            close = getattr(parts.resolver, "close", None)
            if close is not None:
                close()


def _source_hints(local_name: str, registry: str, repository: str) -> tuple[str, ...]:
    """The repository the local image was named after, when it is another one on the same registry."""
    if not registry:
        return ()
    parsed = _remote_parts(local_name)
    if parsed is None or parsed.domain != registry or parsed.path == repository:
        return ()
    return (parsed.path,)


def _with_sources(content: Any, desc: Descriptor) -> Descriptor:
    """``desc`` annotated with the blob's distribution-source labels (as containerd's push handler does)."""
    try:
        labels = content.info(desc.digest).labels
    except NotFoundError:
        return desc
    extra = {k: v for k, v in labels.items() if k.startswith(DISTRIBUTION_SOURCE_PREFIX)}
    if not extra:
        return desc
    return attrs.evolve(desc, annotations={**desc.annotations, **extra})


def _plan(content: Any, target: Descriptor, platforms: list[str], local: str) -> _Plan:
    """Walk the local image: every descriptor to push, its level (children first) and the documents' bytes.

    :raises NotFoundError: a blob is missing (all missing ones named, up to three).
    :raises FailedPreconditionError: a blob's stored size differs from its descriptor.
    """
    root = target
    matcher = Matcher.all()
    if platforms:
        matcher = Matcher.from_specs(platforms)
        if mt.is_index(target.media_type):
            doc = _document(content, target, local)
            assert isinstance(doc[0], documents.Index)
            chosen = matcher.select(doc[0].manifests)
            manifests = [d for d in chosen if mt.is_manifest(d.media_type)]
            if not manifests:
                raise NotFoundError(f"{local}: no manifest for {matcher.describe()} in index {target.digest}")
            root = manifests[0]
    nodes: dict[Digest, Descriptor] = {}
    kids: dict[Digest, list[Digest]] = {}
    docs: dict[Digest, bytes] = {}
    missing: list[Descriptor] = []
    stack: list[tuple[Descriptor, int]] = [(root, 1)]
    while stack:
        desc, depth = stack.pop()
        if desc.digest in nodes or mt.is_non_distributable(desc.media_type):
            continue
        if depth > MAX_DEPTH:
            raise InvalidArgumentError(f"{documents.describe(desc)}: nested more than {MAX_DEPTH} levels deep")
        nodes[desc.digest] = desc
        kids[desc.digest] = []
        try:
            info = content.info(desc.digest)
        except NotFoundError:
            missing.append(desc)
            continue
        if info.size != desc.size:
            raise FailedPreconditionError(
                f"content {desc.digest}: size mismatch: descriptor says {desc.size}, the content store has {info.size}")
        kind = mt.kind(desc.media_type)
        if kind not in ("index", "manifest"):
            continue
        doc, data = _document(content, desc, local)
        docs[desc.digest] = data
        if isinstance(doc, documents.Index):
            children = list(doc.manifests)
        else:
            children = [doc.config, *doc.layers]
        for child in children:
            if not mt.is_non_distributable(child.media_type):
                kids[desc.digest].append(child.digest)
                stack.append((child, depth + 1))
    if missing:
        names = ", ".join(documents.describe(d) for d in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise NotFoundError(f"{local}: content missing in the local content store: {names}{more}"
                            + ("; fetch it first (with --all-platforms for every platform)"
                               if any(mt.is_manifest(d.media_type) for d in missing) else ""))
    levels: dict[Digest, int] = {}

    def level(d: Digest) -> int:
        if d not in levels:
            levels[d] = 1 + max((level(k) for k in kids[d]), default=-1)
        return levels[d]

    for d in nodes:
        level(d)
    # The object named by the reference goes up last, after everything else.
    levels[root.digest] = max(levels.values()) + 1
    return _Plan(root=root, nodes=nodes, levels=levels, documents=docs)


def _document(content: Any, desc: Descriptor, local: str) -> tuple[documents.Manifest | documents.Index, bytes]:
    data = read_blob(content, desc, documents.MAX_MANIFEST_SIZE)
    try:
        return documents.parse(desc, data), data
    except InvalidArgumentError as e:
        raise FailedPreconditionError(f"{local}: local {e}") from e


def _verify_local(content: Any, desc: Descriptor, cancel: threading.Event) -> None:
    """Hash the stored blob; a mismatch names it as corrupt."""
    reader = content.reader_at(desc)
    try:
        h = desc.digest.hasher()
        offset = 0
        while offset < desc.size:
            if cancel.is_set():
                raise PushCancelled(f"{documents.describe(desc)}: push cancelled")
            data = reader.read_at(offset, min(_VERIFY_BLOCK, desc.size - offset))
            if not data:
                break
            h.update(data)
            offset += len(data)
    finally:
        reader.close()
    got = Digest(desc.digest.algorithm, h.hexdigest())
    if offset != desc.size or got != desc.digest:
        raise FailedPreconditionError(
            f"content {desc.digest}: corrupt in the local content store (read {offset} bytes hashing to {got}); "
            "nothing was pushed")


def _push_generic(pusher: Any, desc: Descriptor, *, data: bytes | None = None, content: Any = None,
                  on_event: Callable[..., None] | None = None,
                  on_progress: Callable[[int], None] | None = None) -> str:
    """Push through the plain :class:`~hoist.remotes.Pusher` protocol (third-party resolvers)."""
    try:
        writer = pusher.push(desc)
    except AlreadyExistsError as e:
        return "mounted" if "mounted" in str(e) else "exists"
    try:
        if data is not None:
            writer.write(data)
        else:
            if on_event is not None:
                on_event("uploading", desc, 0)
            copy_reader_at(content, desc, writer.write, chunk=_VERIFY_BLOCK, progress=on_progress)
        writer.commit(desc.size, desc.digest)
    finally:
        writer.close()
    return "committed"


def _run_all(fn: Callable[[Descriptor], None], descs: list[Descriptor], limit: int, cancel: threading.Event) -> None:
    """Run ``fn`` on every descriptor, ``limit`` at a time; the first error cancels the rest and is raised."""
    if not descs:
        return
    if cancel.is_set():
        raise PushCancelled("push cancelled")
    pool = ThreadPoolExecutor(max_workers=min(limit, len(descs)), thread_name_prefix="hoist-push")
    first: BaseException | None = None
    try:
        futures = [pool.submit(fn, d) for d in descs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                first = f.exception()
                break
    except BaseException as e:
        first = e
    finally:
        if first is not None:
            cancel.set()
        pool.shutdown(wait=True, cancel_futures=first is not None)
    if first is not None:
        raise first


# -- progress -------------------------------------------------------------------------------------------


class PushProgressTracker(ProgressTracker):
    """A :class:`~hoist.progress.ProgressTracker` for pushes: no store to poll, offsets come from ``advance``."""

    def __init__(self, renderer: Renderer | None = None, *, interval: float = 0.1) -> None:
        super().__init__(None, renderer, interval=interval, transfer="push")


def pushed_json(result: Pushed) -> str:
    """The final ``--json`` line: ``{"event": "image", "name", "target"}``."""
    return json.dumps({"event": "image", "name": result.name, "target": result.target.to_json()}, sort_keys=True)


__all__ = [
    "DISTRIBUTION_SOURCE_PREFIX",
    "PushCancelled",
    "PushParts",
    "PushProgressTracker",
    "Pushed",
    "PushedObject",
    "local_image",
    "push",
    "push_object",
    "pushed_json",
    "record_sources",
]
