"""hoistd's TOML configuration: the top-level keys, and decoding ``[plugins."<uri>"]`` into plugin config classes.

The list of plugins to load is ``enabled_plugins`` (a TOML file cannot hold both an array named
``plugins`` and the ``[plugins."<uri>"]`` tables, so the list sits beside containerd's own
``required_plugins`` / ``disabled_plugins`` style of names).
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from hoist.errors import ConfigError

DEFAULT_ROOT = "/var/lib/hoist"
DEFAULT_STATE = "/run/hoist"
DEFAULT_ADDRESS = "/run/hoist/hoistd.sock"
DEFAULT_CONFIG_PATH = "/etc/hoist/config.toml"
CONFIG_VERSION = 1


@attrs.frozen(kw_only=True)
class GrpcConfig:
    """``[grpc]``: where hoistd listens and who owns the socket.

    :ivar address: the unix socket hoistd serves on (a filesystem path, never abstract).
    :ivar uid: owner of the socket.
    :ivar gid: group of the socket (mode 0660: that group may use the API).
    :ivar transport: ``hoist``: Hoist's own HTTP/2 server (:mod:`hoist.api.transport`), made for
        clients that make many small calls; ``grpcio``: grpcio's server.
    """

    address: str = DEFAULT_ADDRESS
    uid: int = 0
    gid: int = 0
    transport: str = attrs.field(default="hoist", validator=lambda _i, _a, v: _transport(v))


TRANSPORTS = ("hoist", "grpcio")


def _transport(value: object) -> None:
    if value not in TRANSPORTS:
        raise ConfigError(f"transport: expected one of {', '.join(map(repr, TRANSPORTS))}, got {value!r}")


@attrs.frozen(kw_only=True)
class Config:
    """A decoded hoistd configuration.

    :ivar version: config format version; only 1 exists.
    :ivar root: persistent data; each plugin gets ``<root>/<uri>``.
    :ivar state: runtime state (sockets, task state); each plugin gets ``<state>/<uri>``.
    :ivar enabled_plugins: plugin URIs to load, builtins included; unset loads every available plugin.
    :ivar required_plugins: plugins without which hoistd stops before serving.
    :ivar grpc: the ``[grpc]`` table.
    :ivar plugin_tables: raw ``[plugins."<uri>"]`` tables, decoded later against each plugin's config class.
    :ivar source: the file it came from (``<default>`` when built in), for error messages.
    """

    version: int = CONFIG_VERSION
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    enabled_plugins: tuple[str, ...] | None = None
    required_plugins: tuple[str, ...] = ("hoist.content.v1.local",)
    grpc: GrpcConfig = attrs.field(factory=GrpcConfig)
    plugin_tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    source: str = "<default>"

    def with_overrides(self, *, root: str | None = None, state: str | None = None, address: str | None = None) -> Config:
        """This config with the command-line/environment overrides applied."""
        grpc = self.grpc if address is None else attrs.evolve(self.grpc, address=address)
        return attrs.evolve(
            self,
            root=root if root is not None else self.root,
            state=state if state is not None else self.state,
            grpc=grpc,
        )


_TOP_KEYS = {"version", "root", "state", "enabled_plugins", "required_plugins", "grpc", "plugins"}


def _describe(value: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
             dict: "a table"}
    kind = names.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}" if not isinstance(value, (dict, list)) else kind


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"an array of {_type_name(args[0]).split(' ', 1)[1]}s" if args else "an array"
    if origin in (dict, Mapping) or tp is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if attrs.has(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def decode_value(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` (from TOML) against the annotation ``tp`` and convert it; ``where`` names it in errors.

    :raises ConfigError: ``<where>: expected <type>, got <value>``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return decode_value(a, value, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    if attrs.has(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(value)}")
        return decode_attrs(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected a boolean (true or false), got {_describe(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [decode_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(value)}")
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {k: decode_value(vt, v, f"{where}.{k}") for k, v in value.items()}
    return value


def decode_attrs(cls: type, table: Mapping[str, Any], where: str) -> Any:
    """Build the attrs class ``cls`` from a TOML table, rejecting unknown keys and wrong types.

    :raises ConfigError: naming ``<where>.<key>`` and the problem.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    known = {f.alias if getattr(f, "alias", None) else f.name: f for f in fields.values()}
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            choices = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {choices})")
        f = known[key]
        kwargs[key] = decode_value(hints.get(f.name, Any), value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def parse(text: str, source: str = "<string>") -> Config:
    """Parse config text.

    :raises ConfigError: not TOML, unknown key, wrong type, unsupported version — naming ``source`` and the key.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{source}: {key}: unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    version = decode_value(int, data.get("version", CONFIG_VERSION), f"{source}: version")
    if version != CONFIG_VERSION:
        raise ConfigError(f"{source}: version: expected {CONFIG_VERSION}, got {version}")
    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict):
        raise ConfigError(f"{source}: plugins: expected tables [plugins.\"<uri>\"], got {_describe(plugins)}"
                          " (the list of plugins to load is enabled_plugins)")
    for uri, table in plugins.items():
        if not isinstance(table, dict):
            raise ConfigError(f'{source}: plugins."{uri}": expected a table, got {_describe(table)}')
    enabled = data.get("enabled_plugins")
    cfg = Config(
        version=version,
        root=decode_value(str, data.get("root", DEFAULT_ROOT), f"{source}: root"),
        state=decode_value(str, data.get("state", DEFAULT_STATE), f"{source}: state"),
        enabled_plugins=None if enabled is None else decode_value(tuple[str, ...], enabled, f"{source}: enabled_plugins"),
        required_plugins=decode_value(tuple[str, ...], data.get("required_plugins", ["hoist.content.v1.local"]), f"{source}: required_plugins"),
        grpc=decode_attrs(GrpcConfig, data.get("grpc", {}), f"{source}: grpc") if isinstance(data.get("grpc", {}), dict)
        else decode_value(GrpcConfig, data["grpc"], f"{source}: grpc"),
        plugin_tables=plugins,
        source=source,
    )
    return cfg


def load(path: str | os.PathLike[str]) -> Config:
    """Read and parse the config file at ``path``.

    :raises ConfigError: the file cannot be read, or :func:`parse` rejects it.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: not UTF-8 text") from e
    return parse(text, str(p))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def config_as_dict(obj: Any) -> dict[str, Any]:
    """An attrs plugin config as a plain dict (for ``hoistd config dump``)."""
    return attrs.asdict(obj, recurse=True) if attrs.has(type(obj)) else {}


def render(cfg: Config, plugin_configs: Mapping[str, Any] | None = None) -> str:
    """``cfg`` as TOML text that :func:`parse` accepts; ``plugin_configs`` are decoded plugin config objects."""
    out = [f"version = {cfg.version}", f"root = {_toml_value(cfg.root)}", f"state = {_toml_value(cfg.state)}"]
    if cfg.enabled_plugins is not None:
        out.append("enabled_plugins = [")
        out += [f"  {_toml_value(u)}," for u in cfg.enabled_plugins]
        out.append("]")
    out.append(f"required_plugins = {_toml_value(list(cfg.required_plugins))}")
    out += ["", "[grpc]", f"address = {_toml_value(cfg.grpc.address)}", f"uid = {cfg.grpc.uid}", f"gid = {cfg.grpc.gid}",
            f"transport = {_toml_value(cfg.grpc.transport)}"]
    tables: dict[str, Mapping[str, Any]] = {}
    for uri, obj in (plugin_configs or {}).items():
        tables[uri] = config_as_dict(obj)
    for uri, table in cfg.plugin_tables.items():
        tables.setdefault(uri, table)
    for uri in sorted(tables):
        table = {k: v for k, v in tables[uri].items() if v is not None}
        out += ["", f'[plugins."{uri}"]']
        out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"
