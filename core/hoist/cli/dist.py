"""``dist``: the distribution client — resolve, fetch, pull, push, content, images."""

from __future__ import annotations

import importlib

import click

from hoist.cli.common import global_options, make_globals, run, version_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@global_options
@click.pass_context
def dist(ctx: click.Context, **opts: object) -> None:
    """Fetch, push and manage images and content.

    Without --address, plugins run in this process on --root (no daemon needed); with --address,
    dist talks to hoistd or to a real containerd over its gRPC API.
    """
    make_globals(ctx, **opts)  # type: ignore[arg-type]


# (module, attribute) of each subcommand; a module that is not there yet is simply not offered.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("hoist.cli.dist_content", "content"),
    ("hoist.cli.dist_remote", "resolve"),
    ("hoist.cli.dist_remote", "fetch_object"),
    ("hoist.cli.dist_images", "fetch"),
    ("hoist.cli.dist_images", "images"),
    ("hoist.cli.dist_push", "push"),
    ("hoist.cli.dist_push", "push_object"),
    ("hoist.cli.dist_transfer", "export"),
    ("hoist.cli.dist_transfer", "import_"),
    ("hoist.cli.dist_rootfs", "pull"),
    ("hoist.cli.dist_rootfs", "rootfs"),
    ("hoist.cli.dist_rootfs", "apply"),
    ("hoist.cli.dist_rootfs", "snapshots"),
]


def _attach() -> None:
    for module, attr in SUBCOMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        dist.add_command(getattr(mod, attr))


_attach()


def main() -> None:
    run(dist)
