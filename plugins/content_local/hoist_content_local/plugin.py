"""Registration of ``hoist.content.v1.local``: the local content store under the plugin's root."""

from __future__ import annotations

import attrs

from hoist.plugin import InitContext, Registration, hookimpl
from hoist_content_local.store import LocalContentStore


def _non_negative(_inst: object, attr: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attr.name}: expected a non-negative integer, got {value!r}")


@attrs.frozen(kw_only=True)
class LocalContentConfig:
    """``[plugins."hoist.content.v1.local"]``.

    :ivar fsync: flush each blob and its directory to disk before a commit returns.
    :ivar writeback_mib: start kernel write-back of ingest data every this many MiB, so the final flush is short (0: off).
    :ivar direct_write_mib: with ``fsync``, write blobs larger than this many MiB around the page cache
        (``O_DIRECT``), where the file system allows it: less CPU for large pulls (0: off).
    """

    fsync: bool = True
    writeback_mib: int = attrs.field(default=8, validator=_non_negative)
    direct_write_mib: int = attrs.field(default=8, validator=_non_negative)


def _init(ic: InitContext) -> LocalContentStore:
    cfg = ic.config if ic.config is not None else LocalContentConfig()
    return LocalContentStore(ic.root, fsync=cfg.fsync, writeback_bytes=cfg.writeback_mib << 20,
                             direct_bytes=cfg.direct_write_mib << 20)


@hookimpl
def hoist_register_plugins(register) -> None:  # type: ignore[no-untyped-def]
    """Register the local content store."""
    register(Registration(type="hoist.content.v1", id="local", requires=(), config=LocalContentConfig, init=_init))
