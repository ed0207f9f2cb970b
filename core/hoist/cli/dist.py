"""``dist``: the distribution client — resolve, fetch, pull, push, content, images."""

from __future__ import annotations

import importlib

import click

from hoist.cli.common import global_options, make_globals, run, version_option


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one runs (or help lists them): fast start-up."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


# command name -> (module, attribute) of each subcommand
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "content": ("hoist.cli.dist_content", "content"),
    "resolve": ("hoist.cli.dist_remote", "resolve"),
    "fetch-object": ("hoist.cli.dist_remote", "fetch_object"),
    "fetch": ("hoist.cli.dist_images", "fetch"),
    "images": ("hoist.cli.dist_images", "images"),
    "push": ("hoist.cli.dist_push", "push"),
    "push-object": ("hoist.cli.dist_push", "push_object"),
    "export": ("hoist.cli.dist_transfer", "export"),
    "import": ("hoist.cli.dist_transfer", "import_"),
    "pull": ("hoist.cli.dist_rootfs", "pull"),
    "rootfs": ("hoist.cli.dist_rootfs", "rootfs"),
    "apply": ("hoist.cli.dist_rootfs", "apply"),
    "snapshots": ("hoist.cli.dist_rootfs", "snapshots"),
}


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@global_options
@click.pass_context
def dist(ctx: click.Context, **opts: object) -> None:
    """Fetch, push and manage images and content.

    Without --address, plugins run in this process on --root (no daemon needed); with --address,
    dist talks to hoistd or to a real containerd over its gRPC API.
    """
    make_globals(ctx, **opts)  # type: ignore[arg-type]


def main() -> None:
    run(dist)
