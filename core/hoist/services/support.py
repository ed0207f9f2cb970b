"""What the core gRPC services share: containerd list filters, lease bookkeeping, garbage collection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hoist import filters as filters_mod
from hoist.gc import GarbageCollector, GCResult
from hoist.plugin import InitContext

SNAPSHOTTER_TYPE = "hoist.snapshotter.v1"


def compile_filters(fields: Callable[[Any], Mapping[str, str]], *filters: str) -> Callable[[Any], bool]:
    """A predicate for containerd filters over an object's plain ``fields`` and its ``labels.<key>``.

    :param fields: maps an object to ``{"name": ..., "target.digest": ...}``; ``labels`` come from ``obj.labels``.
    :raises InvalidArgumentError: a filter does not parse.
    """
    parsed = filters_mod.parse(*filters)

    def match(obj: Any) -> bool:
        plain = fields(obj)

        def adaptor(path: tuple[str, ...]) -> tuple[str, bool]:
            if not path:
                return "", False
            if path[0] == "labels":
                return filters_mod.map_field(path[1:], dict(obj.labels))
            key = ".".join(path)
            if key in plain:
                value = plain[key]
                return value, bool(value)
            return "", False

        return parsed.match(adaptor)

    return match


def add_lease_resource(metadata: Any, namespace: str, lease: str | None, type: str, id: str) -> None:
    """Record that ``lease`` (when set) holds resource ``type``/``id``, as containerd does for a leased call.

    :raises NotFoundError: the lease does not exist.
    """
    if not lease or metadata is None:
        return
    from hoist.metadata import LeaseResource

    metadata.leases(namespace).add_resource(lease, LeaseResource(type=type, id=id))


class Plugins:
    """Late lookups of the plugins a service uses, so init order between service and store never matters."""

    def __init__(self, ic: InitContext) -> None:
        self._ic = ic

    def optional(self, type: str) -> Any:
        found = self._ic.get_all(type)
        return found[sorted(found)[0]] if found else None

    def content(self, namespace: str, *, lease: str | None = None) -> Any:
        """The content of ``namespace`` (the metadata store's view), or the bare store without a metadata store."""
        raw = self.optional("hoist.content.v1")
        metadata = self.optional("hoist.metadata.v1")
        if raw is None or getattr(metadata, "content", None) is None:
            return raw
        return metadata.content(raw, namespace, lease=lease)

    def snapshotters(self) -> dict[str, Any]:
        return self._ic.get_all(SNAPSHOTTER_TYPE)

    def collector(self) -> GarbageCollector | None:
        metadata = self.optional("hoist.metadata.v1")
        content = self.optional("hoist.content.v1")
        if metadata is None or content is None:
            return None
        return GarbageCollector(metadata, content, self.snapshotters)

    def collect(self) -> GCResult | None:
        """Run a garbage collection now (nothing when the metadata or content store is missing)."""
        gc = self.collector()
        return gc.collect() if gc is not None else None
