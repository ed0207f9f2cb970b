"""Registration of the ``hoist.metadata.v1.sqlite`` builtin plugin."""

from __future__ import annotations

import attrs

from hoist.errors import ConfigError
from hoist.metadata.store import SQLiteMetadataStore
from hoist.plugin import InitContext, Registration, hookimpl

DB_NAME = "meta.db"


def _policy(_inst: object, attribute: attrs.Attribute, value: str) -> None:
    from hoist.metadata.content import SHARING_POLICIES

    if value not in SHARING_POLICIES:
        raise ConfigError(f"{attribute.name}: expected one of {', '.join(SHARING_POLICIES)}, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attribute.name}: expected a positive number of seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class SQLiteMetadataConfig:
    """``[plugins."hoist.metadata.v1.sqlite"]``.

    :ivar busy_timeout: seconds to wait for another process holding the database's write lock.
    :ivar content_sharing_policy: ``shared``: a namespace records a blob that another namespace already
        stored without its bytes being sent again; ``isolated``: the bytes must be written (and verified)
        in each namespace that wants the blob.
    """

    busy_timeout: float = attrs.field(default=60.0, validator=_positive)
    content_sharing_policy: str = attrs.field(default="shared", validator=_policy)


def _init(ic: InitContext) -> SQLiteMetadataStore:
    cfg = ic.config or SQLiteMetadataConfig()
    return SQLiteMetadataStore(ic.root / DB_NAME, busy_timeout=cfg.busy_timeout,
                               content_sharing_policy=cfg.content_sharing_policy)


@hookimpl
def hoist_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes the host's callback
    register(Registration(type="hoist.metadata.v1", id="sqlite", init=_init, config=SQLiteMetadataConfig))
