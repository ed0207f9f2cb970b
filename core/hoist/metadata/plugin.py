"""Registration of the ``hoist.metadata.v1.sqlite`` builtin plugin."""

from __future__ import annotations

import attrs

from hoist.errors import ConfigError
from hoist.metadata.store import SQLiteMetadataStore
from hoist.plugin import InitContext, Registration, hookimpl

DB_NAME = "meta.db"


def _positive(_inst: object, attribute: attrs.Attribute, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attribute.name}: expected a positive number of seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class SQLiteMetadataConfig:
    """``[plugins."hoist.metadata.v1.sqlite"]``.

    :param busy_timeout: seconds to wait for another process holding the database's write lock.
    """

    busy_timeout: float = attrs.field(default=60.0, validator=_positive)


def _init(ic: InitContext) -> SQLiteMetadataStore:
    cfg = ic.config or SQLiteMetadataConfig()
    return SQLiteMetadataStore(ic.root / DB_NAME, busy_timeout=cfg.busy_timeout)


@hookimpl
def hoist_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes the host's callback
    register(Registration(type="hoist.metadata.v1", id="sqlite", init=_init, config=SQLiteMetadataConfig))
