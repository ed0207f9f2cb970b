"""Garbage collection of content and snapshots that nothing references, as containerd's metadata GC does.

Mark and sweep, per namespace.  Content is one store of bytes, and each namespace sees the blobs it
*records* (:mod:`hoist.metadata.content`).  Roots, in each namespace: its images (their targets), the
resources of its leases that have not expired (``containerd.io/gc.expire``; expired leases are deleted
first), its records labelled ``containerd.io/gc.root``, and every active or view snapshot (a container's
or an unpack's working snapshot is never taken from under it).  References stay inside the namespace:
``containerd.io/gc.ref.content…`` labels to blobs, ``containerd.io/gc.ref.snapshot.<snapshotter>`` to
snapshots, the children an index or manifest lists (so images fetched by Hoist, which does not write
those labels, are kept whole), and from a snapshot to its parents.

Then every record no root of its namespace reaches is removed, every unmarked committed snapshot, and
the bytes of every blob that no namespace records any more and no live lease holds.  Ingests are never
touched.  The collection holds ``content.lock`` exclusively, so no commit — in this process or another
one on the same root — lands between the marking and the sweeping.
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
from hoist.leases import LABEL_EXPIRE
from hoist.snapshots import Kind

log = logging.getLogger("hoist.gc")

LABEL_ROOT = "containerd.io/gc.root"
LABEL_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

_LOCK = threading.Lock()  # one collection at a time in this process


@attrs.frozen(kw_only=True)
class GCResult:
    """What a collection removed."""

    content: tuple[Digest, ...] = ()
    """Blobs whose bytes were removed."""
    snapshots: tuple[tuple[str, str], ...] = ()
    """``(snapshotter, backend key)`` of the snapshots removed."""
    leases: tuple[tuple[str, str], ...] = ()
    """``(namespace, id)`` of the expired leases deleted."""
    records: tuple[tuple[str, Digest], ...] = ()
    """``(namespace, digest)`` of the content records removed (a blob another namespace keeps stays on disk)."""


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


class GarbageCollector:
    """Collects the content store and the snapshotters against the metadata store's references.

    :param metadata: the metadata store (namespaces, images, leases, content records).
    :param content: the ``hoist.content.v1`` store holding the bytes (the plugin itself, not a namespace's view).
    :param snapshotters: returns ``{id: snapshotter}`` (backends, keys stored as ``<namespace>/<key>``).

    The metadata store must keep content records (:meth:`hoist.metadata.SQLiteMetadataStore.content_binding`).
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
        binding = self._binding()
        if binding is None:
            raise FailedPreconditionError("gc: the metadata store keeps no content records; nothing can be collected")
        binding.ensure_adopted()  # before the exclusive lock, which adoption takes too
        with binding.locked(exclusive=True):
            return self._mark_and_sweep(binding, now)

    def _binding(self) -> Any:
        bind = getattr(self.metadata, "content_binding", None)
        return bind(self.content) if bind is not None else None

    def _mark_and_sweep(self, binding: Any, now: _dt.datetime) -> GCResult:
        expired: list[tuple[str, str]] = []
        queue: list[tuple[str, Digest, str]] = []  # (namespace, digest, media type or "")
        held: set[Digest] = set()  # bytes a live lease names, recorded or not
        snap_refs: set[tuple[str, str]] = set()  # (snapshotter, backend key)
        snap_names: set[tuple[str, str]] = set()  # (snapshotter, backend key) named by labels
        records: dict[str, dict[Digest, Any]] = binding.records()
        for ns in sorted(set(self.metadata.list_namespaces()) | set(records)):
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
                            d = Digest.parse(res.id)
                        except InvalidArgumentError:
                            continue
                        held.add(d)
                        queue.append((ns, d, ""))
                    elif res.type.startswith("snapshots/"):
                        snap_refs.add((res.type[len("snapshots/"):], f"{ns}/{res.id}"))
            for img in self.metadata.images(ns).list():
                queue.append((ns, img.target.digest, img.target.media_type))
            for d, info in records.get(ns, {}).items():
                if LABEL_ROOT in info.labels:
                    queue.append((ns, d, ""))

        marked: set[tuple[str, Digest]] = set()
        while queue:
            ns, digest, media_type = queue.pop()
            info = records.get(ns, {}).get(digest)
            if info is None or (ns, digest) in marked:
                continue
            marked.add((ns, digest))
            for key, value in info.labels.items():
                if key.startswith(LABEL_REF_CONTENT):
                    try:
                        queue.append((ns, Digest.parse(value), ""))
                    except InvalidArgumentError:
                        continue
                elif key.startswith(LABEL_REF_SNAPSHOT):
                    snap_names.add((key[len(LABEL_REF_SNAPSHOT):], f"{ns}/{value}"))
            if media_type and mt.kind(media_type) in ("index", "manifest"):
                desc = Descriptor(media_type=media_type, digest=digest, size=info.size)
                queue.extend((ns, d, m) for d, m in self._children(desc))

        removed_snaps = self._sweep_snapshots(snap_refs, snap_names)
        dead = sorted(((ns, d) for ns, found in records.items() for d in found if (ns, d) not in marked), key=str)
        binding.delete_records(dead)
        kept = {d for _ns, d in marked} | held
        on_disk: list[Digest] = []
        self.content.walk(lambda info: on_disk.append(info.digest))
        removed: list[Digest] = []
        for d in sorted(set(on_disk) - kept, key=str):
            try:
                self.content.delete(d)
                removed.append(d)
            except NotFoundError:
                pass
            except HoistError as e:
                log.warning("gc: content %s: cannot remove: %s", d, e)
        if removed or removed_snaps or expired or dead:
            log.info("gc: removed %d blobs (%d namespace records), %d snapshots, %d expired leases",
                     len(removed), len(dead), len(removed_snaps), len(expired))
        return GCResult(content=tuple(removed), snapshots=tuple(removed_snaps), leases=tuple(expired),
                        records=tuple(dead))

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
                if (
                    info.kind is not Kind.COMMITTED
                    or (sid, name) in refs
                    or (sid, name) in names
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
