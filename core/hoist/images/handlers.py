"""Image handlers in containerd's shape: ``children``, ``fetch`` and a bounded concurrent ``dispatch``.

A handler takes a descriptor, does its work and returns the descriptors to visit next.  ``dispatch``
walks the graph with a bounded thread pool, visiting each digest once; the first error stops the walk
and cancels what is still running.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import attrs

from hoist.content import Descriptor, Digest
from hoist.errors import (
    AlreadyExistsError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.images.platforms import Matcher

#: Deepest descriptor chain followed (index → index → … → manifest → layer).
MAX_DEPTH = 8
#: Most children one document may list.
MAX_CHILDREN = 1000
#: Default number of blobs fetched at once.
DEFAULT_CONCURRENCY = 4
#: How often a fetch waiting on another writer's lock looks again (seconds, doubling up to 1 s).
_LOCK_POLL = 0.05

Handler = Callable[[Descriptor], Sequence[Descriptor]]


class FetchCancelled(HoistError):
    """The walk was stopped (another branch failed or the user interrupted) before this blob finished."""


@attrs.frozen(kw_only=True)
class Event:
    """What happened to one blob during a fetch, for progress displays.

    ``state`` is ``resolving``, ``waiting`` (another writer holds the ref), ``downloading``, ``done``,
    ``exists`` (already in the store, nothing requested) or ``error``.  ``offset`` is where the
    download (re)started; ``message`` carries the error text.
    """

    state: str
    ref: str
    digest: Digest | None = None
    size: int = 0
    media_type: str = ""
    offset: int = 0
    message: str = ""
    time: float = attrs.field(factory=time.monotonic)


EventSink = Callable[[Event], None]


def _no_events(_: Event) -> None:
    return None


def ingest_ref(desc: Descriptor) -> str:
    """The ingest ref of a blob: ``index-|manifest-|config-|layer-|unknown-<digest>`` (containerd's MakeRefKey)."""
    return f"{mt.kind(desc.media_type)}-{desc.digest}"


class BlobFetcher(Protocol):
    """What the fetch handler needs from a resolver's fetcher."""

    def fetch(self, desc: Descriptor) -> Any:
        """A verified file-like stream of exactly ``desc.size`` bytes (``read``/``readinto``/``close``)."""


class _CancellableStream:
    """Delegates to a fetch stream, stopping at the next read once ``cancel`` is set."""

    def __init__(self, stream: Any, cancel: threading.Event) -> None:
        self._s = stream
        self._cancel = cancel

    def _check(self) -> None:
        if self._cancel.is_set():
            raise FetchCancelled("fetch cancelled")

    def read(self, n: int = -1) -> bytes:
        self._check()
        return self._s.read(n)

    def readinto(self, buf: Any) -> int:
        self._check()
        ri = getattr(self._s, "readinto", None)
        if ri is not None:
            return ri(buf)
        data = self._s.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        f = getattr(self._s, "seekable", None)
        return bool(f()) if f is not None else hasattr(self._s, "seek")

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._s.seek(offset, whence)

    def tell(self) -> int:
        return self._s.tell()

    def close(self) -> None:
        close = getattr(self._s, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> _CancellableStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def has_blob(store: Any, digest: Digest) -> bool:
    """Whether ``store`` holds the committed blob ``digest``."""
    try:
        store.info(digest)
    except NotFoundError:
        return False
    return True


def fetch_handler(
    store: Any,
    fetcher: BlobFetcher,
    *,
    on_event: EventSink = _no_events,
    cancel: threading.Event | None = None,
    skip_non_distributable: bool = True,
    read_ahead: bool = True,
) -> Handler:
    """A handler that puts each blob into ``store`` through ``write_blob`` under its ingest ref.

    Blobs already committed are reported ``exists`` without a request.  When another writer (thread or
    process) holds the ref, the handler waits and polls until the lock frees or the blob appears.
    Non-distributable (foreign) layers are skipped, as containerd does by default, unless
    ``skip_non_distributable`` is false: then they are fetched like any blob (a resolver that follows
    foreign URLs gets them from there, without credentials) and verified.  ``read_ahead`` is passed to
    ``write_blob``: turn it off when several blobs are fetched at once.
    """
    from hoist.content import write_blob

    cancel = cancel or threading.Event()

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        ref = ingest_ref(desc)
        ev = dict(ref=ref, digest=desc.digest, size=desc.size, media_type=desc.media_type)
        if skip_non_distributable and mt.is_non_distributable(desc.media_type):
            on_event(Event(state="exists", message="non-distributable; not fetched", **ev))
            return ()
        delay = _LOCK_POLL
        waiting = False
        while True:
            if cancel.is_set():
                raise FetchCancelled(f"{documents.describe(desc)}: fetch cancelled")
            # The first time round, the store's writer says whether the blob is there (an Ingester raises
            # AlreadyExistsError for a committed ``expected``): one look-up per blob instead of two.
            if waiting and has_blob(store, desc.digest):
                on_event(Event(state="exists", offset=desc.size, **ev))
                return ()
            started = False

            def open_at(at: int) -> _CancellableStream:
                nonlocal started
                if not started:
                    started = True
                    on_event(Event(state="downloading", offset=at, **ev))
                return _CancellableStream(_open_at(fetcher, desc, at), cancel)

            try:
                # lock_timeout=0: a held ref comes back here at once so the wait is visible as "waiting".
                write_blob(store, ref, open_at, desc.size, desc.digest, lock_timeout=0, read_ahead=read_ahead)
                if not started:
                    on_event(Event(state="exists", offset=desc.size, **ev))
                    return ()
            except AlreadyExistsError:
                on_event(Event(state="exists", offset=desc.size, **ev))
                return ()
            except UnavailableError as e:
                if not _is_lock_error(store, ref, e):
                    raise
                if not waiting:
                    on_event(Event(state="waiting", offset=_ingest_offset(store, ref), **ev))
                    waiting = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            on_event(Event(state="done", offset=desc.size, **ev))
            return ()

    return handle


def _open_at(fetcher: BlobFetcher, desc: Descriptor, offset: int) -> Any:
    """The fetch stream of ``desc`` positioned at ``offset`` (a ranged request when the stream can seek).

    An ingest that already holds every byte needs no request: the commit verifies it.
    """
    if offset >= desc.size:
        return io.BytesIO(b"")
    stream = fetcher.fetch(desc)
    defer = getattr(stream, "defer_digest", None)
    if defer is not None:
        defer()  # write_blob's commit verifies the digest of what it stored; hash each byte once
    if offset:
        seekable = getattr(stream, "seekable", None)
        if seekable is not None and seekable():
            stream.seek(offset)
        else:
            buf = bytearray(min(offset, 1 << 20))
            left = offset
            while left:
                n = stream.readinto(memoryview(buf)[: min(left, len(buf))])
                if not n:
                    break
                left -= n
    return stream


def _ingest_offset(store: Any, ref: str) -> int:
    try:
        return store.status(ref).offset
    except NotFoundError:
        return 0
    except HoistError:
        return 0


def _is_lock_error(store: Any, ref: str, err: UnavailableError) -> bool:
    # A resolver reports an unreachable registry as UnavailableError too; only a held ref means "wait".
    return ref in str(err) or "lock" in str(err).lower()


def children_handler(provider: Any, matcher: Matcher | None = None, *, max_children: int = MAX_CHILDREN) -> Handler:
    """A handler that reads a committed manifest or index and returns what it refers to.

    An index yields the manifests ``matcher`` selects (all of them without a matcher); a manifest yields
    its config then its layers; a config is parsed (it must be a JSON object) and yields nothing.
    """
    matcher = matcher or Matcher.all()

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        kind = mt.kind(desc.media_type)
        if kind not in ("index", "manifest", "config"):
            return ()
        if kind == "config":
            documents.parse_config(desc, read_blob(provider, desc, documents.MAX_CONFIG_SIZE))
            return ()
        doc = documents.parse(desc, read_blob(provider, desc, documents.MAX_MANIFEST_SIZE))
        if isinstance(doc, documents.Index):
            if len(doc.manifests) > max_children:
                raise InvalidArgumentError(
                    f"{documents.describe(desc)}: lists {len(doc.manifests)} manifests, more than the limit of {max_children}"
                )
            return tuple(matcher.select(doc.manifests))
        kids = (doc.config, *doc.layers)
        if len(kids) > max_children:
            raise InvalidArgumentError(
                f"{documents.describe(desc)}: lists {len(kids)} blobs, more than the limit of {max_children}"
            )
        return kids

    return handle


def read_blob(provider: Any, desc: Descriptor, limit: int) -> bytes:
    """The whole committed blob ``desc`` (at most ``limit`` bytes).

    :raises InvalidArgumentError: the blob is larger than ``limit``.
    """
    if desc.size > limit:
        raise InvalidArgumentError(f"{documents.describe(desc)}: {desc.size} bytes is larger than the {limit} byte limit")
    ra = provider.reader_at(desc)
    try:
        parts = []
        got = 0
        while got < desc.size:
            chunk = ra.read_at(got, desc.size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)
    finally:
        ra.close()


def handlers(*hs: Handler) -> Handler:
    """Run ``hs`` in order on each descriptor and concatenate their children."""

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        out: list[Descriptor] = []
        for h in hs:
            out.extend(h(desc))
        return out

    return handle


def dispatch(
    handler: Handler,
    descs: Iterable[Descriptor],
    *,
    limit: int = DEFAULT_CONCURRENCY,
    max_depth: int = MAX_DEPTH,
    cancel: threading.Event | None = None,
) -> list[Descriptor]:
    """Walk from ``descs`` calling ``handler`` on each distinct digest, at most ``limit`` at a time.

    Returns every descriptor visited, in first-seen order.  The first error (including exceeding
    ``max_depth``) sets ``cancel``, cancels queued work, waits for running handlers to stop and is
    raised; a ``KeyboardInterrupt`` in the caller does the same.

    :raises InvalidArgumentError: the graph nests deeper than ``max_depth``.
    """
    if limit < 1:
        raise InvalidArgumentError(f"concurrency limit must be at least 1, got {limit}")
    cancel = cancel or threading.Event()
    seen: dict[Digest, Descriptor] = {}
    pending: dict[Future, tuple[Descriptor, int]] = {}
    # Finished futures arrive here one by one: waiting on all pending ones at once (``wait``) would
    # register with and unregister from each of them every time one finishes.
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    first_error: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="hoist-dispatch")

    def submit(d: Descriptor, depth: int) -> None:
        if d.digest in seen:
            return
        seen[d.digest] = d
        fut = pool.submit(handler, d)
        pending[fut] = (d, depth)
        fut.add_done_callback(finished.put)

    try:
        for d in descs:
            submit(d, 1)
        while pending and first_error is None:
            fut = finished.get()
            d, depth = pending.pop(fut)
            try:
                kids = fut.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below after cancelling the rest
                first_error = first_error or e
                continue
            if kids and depth >= max_depth:
                first_error = first_error or InvalidArgumentError(
                    f"{documents.describe(d)}: nested more than {max_depth} levels deep"
                )
                continue
            for k in kids:
                submit(k, depth + 1)
    except BaseException as e:
        first_error = first_error or e
    finally:
        if first_error is not None:
            cancel.set()
            for fut in pending:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=first_error is not None)
    if first_error is not None:
        raise first_error
    return list(seen.values())
