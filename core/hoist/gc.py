"""Garbage collection of content and snapshots that nothing references, as containerd's metadata GC does.

Mark and sweep.  Roots are every namespace's images (their targets), the resources of every lease that
has not expired (``containerd.io/gc.expire``; expired leases are deleted first), blobs and snapshots
labelled ``containerd.io/gc.root``, and every active or view snapshot (a container's or an unpack's
working snapshot is never taken from under it).  References are followed through containerd's labels
(``containerd.io/gc.ref.content…`` to blobs, ``containerd.io/gc.ref.snapshot.<snapshotter>`` to
snapshots), through the children an index or manifest lists (so images fetched by Hoist, which does not
write those labels, are kept whole), and from a snapshot to its parents.  Then every unmarked blob and
every unmarked committed snapshot is removed.  Ingests in progress are never touched.

Content is one store shared by all namespaces, so a blob is kept while any namespace references it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, HoistError, InvalidArgumentError, NotFoundError
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.snapshots import Kind

log = logging.getLogger("hoist.gc")

LABEL_ROOT = "containerd.io/gc.root"
LABEL_EXPIRE = "containerd.io/gc.expire"
LABEL_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

_LOCK = threading.Lock()  # one collection at a time in this process


@attrs.frozen(kw_only=True)
class GCResult:
    """What a collection removed."""

    content: tuple[Digest, ...] = ()
    snapshots: tuple[tuple[str, str], ...] = ()
    leases: tuple[tuple[str, str], ...] = ()


def parse_expire(value: str) -> _dt.datetime | None:
    """The time of a ``containerd.io/gc.expire`` label (RFC 3339), or ``None`` when it does not parse."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Go writes nanoseconds; Python reads at most microseconds
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        text = f"{head}.{frac[:6].ljust(6, '0')}{rest[i:]}"
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def lease_expired(labels: Mapping[str, str], now: _dt.datetime | None = None) -> bool:
    """Whether a lease's ``containerd.io/gc.expire`` label lies in the past."""
    value = labels.get(LABEL_EXPIRE)
    if not value:
        return False
    when = parse_expire(value)
    return when is not None and when <= (now or _dt.datetime.now(_dt.timezone.utc))


def _split_key(key: str) -> tuple[str, str]:
    ns, _, rest = key.partition("/")
    return ns, rest


class GarbageCollector:
    """Collects the content store and the snapshotters against the metadata store's references.

    :param metadata: the metadata store (namespaces, images, leases).
    :param content: the content store (``walk``, ``info``, ``reader_at``, ``delete``).
    :param snapshotters: returns ``{id: snapshotter}`` (backends, keys stored as ``<namespace>/<key>``).
    """

    def __init__(self, metadata: Any, content: Any, snapshotters: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.metadata = metadata
        self.content = content
        self.snapshotters = snapshotters or (lambda: {})

    def collect(self, now: _dt.datetime | None = None) -> GCResult:
        """Run one collection; returns what was removed."""
        with _LOCK:
            return self._collect(now or _dt.datetime.now(_dt.timezone.utc))

    def _collect(self, now: _dt.datetime) -> GCResult:
        expired: list[tuple[str, str]] = []
        queue: list[tuple[Digest, str]] = []  # (digest, media type or "")
        snap_refs: set[tuple[str, str]] = set()  # (snapshotter, backend key)
        snap_names: set[tuple[str, str]] = set()  # (snapshotter, key in any namespace)
        for ns in self.metadata.list_namespaces():
            leases = self.metadata.leases(ns)
            for lease in leases.list():
                if lease_expired(lease.labels, now):
                    try:
                        leases.delete(lease.id)
                        expired.append((ns, lease.id))
                    except NotFoundError:
                        pass
                    continue
                try:
                    resources = leases.list_resources(lease.id)
                except NotFoundError:
                    continue
                for res in resources:
                    if res.type == "content":
                        try:
                            queue.append((Digest.parse(res.id), ""))
                        except InvalidArgumentError:
                            continue
                    elif res.type.startswith("snapshots/"):
                        snap_refs.add((res.type[len("snapshots/"):], f"{ns}/{res.id}"))
            for img in self.metadata.images(ns).list():
                queue.append((img.target.digest, img.target.media_type))

        infos: dict[Digest, Any] = {}
        self.content.walk(lambda info: infos.__setitem__(info.digest, info))
        for d, info in infos.items():
            if LABEL_ROOT in info.labels:
                queue.append((d, ""))

        marked: set[Digest] = set()
        while queue:
            digest, media_type = queue.pop()
            if digest in marked or digest not in infos:
                continue
            marked.add(digest)
            for key, value in infos[digest].labels.items():
                if key.startswith(LABEL_REF_CONTENT):
                    try:
                        queue.append((Digest.parse(value), ""))
                    except InvalidArgumentError:
                        continue
                elif key.startswith(LABEL_REF_SNAPSHOT):
                    snap_names.add((key[len(LABEL_REF_SNAPSHOT):], value))
            if media_type and mt.kind(media_type) in ("index", "manifest"):
                queue.extend(self._children(Descriptor(media_type=media_type, digest=digest, size=infos[digest].size)))

        removed_snaps = self._sweep_snapshots(snap_refs, snap_names)
        removed: list[Digest] = []
        for d in sorted(set(infos) - marked, key=str):
            try:
                self.content.delete(d)
                removed.append(d)
            except NotFoundError:
                pass
            except HoistError as e:
                log.warning("gc: content %s: cannot remove: %s", d, e)
        if removed or removed_snaps or expired:
            log.info("gc: removed %d blobs, %d snapshots, %d expired leases", len(removed), len(removed_snaps), len(expired))
        return GCResult(content=tuple(removed), snapshots=tuple(removed_snaps), leases=tuple(expired))

    def _children(self, desc: Descriptor) -> list[tuple[Digest, str]]:
        from hoist.images.handlers import read_blob

        try:
            doc = documents.parse(desc, read_blob(self.content, desc, documents.MAX_MANIFEST_SIZE))
        except HoistError as e:
            log.debug("gc: %s: not followed: %s", desc.digest, e)
            return []
        if isinstance(doc, documents.Index):
            kids = list(doc.manifests)
        else:
            kids = [doc.config, *doc.layers]
        return [(k.digest, k.media_type) for k in kids]

    def _sweep_snapshots(self, refs: set[tuple[str, str]], names: set[tuple[str, str]]) -> list[tuple[str, str]]:
        removed: list[tuple[str, str]] = []
        for sid, sn in sorted(self.snapshotters().items()):
            infos: dict[str, Any] = {}
            sn.walk(lambda info: infos.__setitem__(info.name, info))
            keep: list[str] = []
            for name, info in infos.items():
                _ns, key = _split_key(name)
                if (
                    info.kind is not Kind.COMMITTED
                    or (sid, name) in refs
                    or (sid, key) in names
                    or LABEL_ROOT in info.labels
                ):
                    keep.append(name)
            marked: set[str] = set()
            while keep:
                name = keep.pop()
                if name in marked or name not in infos:
                    continue
                marked.add(name)
                if infos[name].parent:
                    keep.append(infos[name].parent)
            # children before parents: repeat while something is removed
            left = [n for n in infos if n not in marked]
            progress = True
            while left and progress:
                progress = False
                for name in list(left):
                    try:
                        sn.remove(name)
                    except NotFoundError:
                        left.remove(name)
                        continue
                    except FailedPreconditionError:
                        continue  # has a child not yet removed
                    except HoistError as e:
                        log.warning("gc: snapshot %s/%s: cannot remove: %s", sid, name, e)
                        left.remove(name)
                        continue
                    removed.append((sid, name))
                    left.remove(name)
                    progress = True
        return removed





def children_labels(desc: Descriptor, provider: Any) -> dict[str, str]:
    """containerd's GC labels for the children an index or manifest lists (empty for other blobs).

    Index entries are ``containerd.io/gc.ref.content.m.<i>``; a manifest's config is
    ``containerd.io/gc.ref.content.config`` and its layers ``containerd.io/gc.ref.content.l.<i>``, as
    containerd's client writes them while pulling.
    """
    from hoist.images.handlers import read_blob

    kind = mt.kind(desc.media_type)
    if kind not in ("index", "manifest"):
        return {}
    doc = documents.parse(desc, read_blob(provider, desc, documents.MAX_MANIFEST_SIZE))
    if isinstance(doc, documents.Index):
        return {f"{LABEL_REF_CONTENT}.m.{i}": str(d.digest) for i, d in enumerate(doc.manifests)}
    labels = {f"{LABEL_REF_CONTENT}.config": str(doc.config.digest)}
    labels.update({f"{LABEL_REF_CONTENT}.l.{i}": str(d.digest) for i, d in enumerate(doc.layers)})
    return labels


def label_children(store: Any, target: Descriptor) -> int:
    """Write :func:`children_labels` on every index and manifest of the image at ``target`` in ``store``.

    A daemon that collects by labels only (containerd) then keeps what the image needs once the
    lease that protected the fetch is gone.  Returns how many blobs were labelled.
    """
    from hoist.images.image import walk
    from hoist.images.platforms import Matcher

    n = 0
    for node in walk(store, target, Matcher.all()):
        if not node.present:
            continue
        want = children_labels(node.desc, store)
        if not want:
            continue
        info = store.info(node.desc.digest)
        if all(info.labels.get(k) == v for k, v in want.items()):
            continue
        store.update(attrs.evolve(info, labels={**info.labels, **want}), tuple(f"labels.{k}" for k in want))
        n += 1
    return n
__all__ = ["GCResult", "GarbageCollector", "LABEL_EXPIRE", "LABEL_ROOT", "children_labels", "label_children", "lease_expired", "parse_expire"]
