"""``hoistd``: the daemon. Loads the plugins its TOML config lists and serves the gRPC API on a unix socket."""

from __future__ import annotations

import click

from hoist import config as _config
from hoist.cli.common import run, setup_logging, version_option
from hoist.client import load_config


def _effective(config_path: str | None, root: str | None, state: str | None, address: str | None) -> _config.Config:
    return load_config(config_path).with_overrides(root=root, state=state, address=address)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@click.option("--config", "-c", "config_path", envvar="HOIST_CONFIG", default=None, metavar="FILE",
              help="Config file [default: /etc/hoist/config.toml if present, else built-in defaults].")
@click.option("--root", envvar="HOIST_ROOT", default=None, metavar="DIR", help="Override the config's root.")
@click.option("--state", envvar="HOIST_STATE", default=None, metavar="DIR", help="Override the config's state.")
@click.option("--address", "-a", envvar="HOIST_ADDRESS", default=None, metavar="SOCKET",
              help="Override the config's [grpc] address.")
@click.option("--log-level", "-l", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Logging level.")
@click.pass_context
def hoistd(ctx: click.Context, config_path: str | None, root: str | None, state: str | None, address: str | None,
           log_level: str) -> None:
    """Run the Hoist daemon until SIGTERM or SIGINT."""
    ctx.obj = (config_path, root, state, address)
    if ctx.invoked_subcommand is not None:
        return
    from hoist.daemon import run_daemon

    setup_logging(log_level)
    ctx.exit(run_daemon(_effective(config_path, root, state, address)))


@hoistd.group("config")
def config_group() -> None:
    """Print configurations."""


@config_group.command("default")
def config_default() -> None:
    """Print the default configuration (every installed plugin enabled, defaults for their keys)."""
    from hoist.host import available_plugins

    cfg = _config.Config(enabled_plugins=tuple(sorted(available_plugins())),
                         required_plugins=("hoist.content.v1.local",))
    click.echo(_config.render(cfg, _plugin_defaults(cfg)), nl=False)


@config_group.command("dump")
@click.pass_obj
def config_dump(obj: tuple) -> None:
    """Print the effective configuration: the file, the overrides, and every plugin's decoded keys."""
    cfg = _effective(*obj)
    click.echo(_config.render(cfg, _plugin_defaults(cfg)), nl=False)


def _plugin_defaults(cfg: _config.Config) -> dict:
    """Decoded config objects of each enabled plugin, registering (not initialising) them."""
    import logging

    from hoist.host import PluginHost

    logging.getLogger("hoist.host").setLevel(logging.ERROR)

    host = PluginHost(cfg)
    available = __import__("hoist.host", fromlist=["available_plugins"]).available_plugins()
    enabled = cfg.enabled_plugins if cfg.enabled_plugins is not None else tuple(sorted(available))
    out = {}
    for uri in enabled:
        host._register(uri, available.get(uri, []))
        r = host.results.get(uri)
        if r is None or r.registration is None or r.registration.config is None:
            continue
        out[uri] = host._decode_config(r.registration)
    return out


def main() -> None:
    run(hoistd)
