"""``hoist``: the container client — run, containers, plugins, version."""

from __future__ import annotations

import json

import click

from hoist.cli.common import Globals, global_options, make_globals, run, version_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@global_options
@click.pass_context
def hoist(ctx: click.Context, **opts: object) -> None:
    """Run containers from images and inspect Hoist.

    Without --address, plugins run in this process on --root; with --address, hoist talks to hoistd.
    """
    make_globals(ctx, **opts)  # type: ignore[arg-type]


@hoist.group()
def plugins() -> None:
    """Plugins and their status."""


@plugins.command("ls")
@click.option("--detail", "-d", is_flag=True, help="Show each plugin's requirements and the error of failed ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
@click.pass_obj
def plugins_ls(g: Globals, detail: bool, as_json: bool) -> None:
    """List plugins: TYPE, ID, STATUS (ok, skip, error), like `ctr plugins ls`."""
    with g.client() as client:
        results = client.plugin_results()
    if as_json:
        for r in results:
            click.echo(json.dumps({"type": r.type, "id": r.id, "status": r.status, "requires": list(r.requires),
                                   "error": r.reason() or None}))
        return
    if not detail:
        rows = [("TYPE", "ID", "STATUS")] + [(r.type, r.id, r.status) for r in results]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        for row in rows:
            click.echo(f"{row[0]:<{widths[0]}}    {row[1]:<{widths[1]}}    {row[2]}")
        return
    for i, r in enumerate(results):
        if i:
            click.echo("")
        click.echo(f"Type:          {r.type}")
        click.echo(f"ID:            {r.id}")
        click.echo(f"Status:        {r.status}")
        if r.requires:
            click.echo("Requires:")
            for t in r.requires:
                click.echo(f"               {t}")
        if r.source:
            click.echo(f"Source:        {r.source}")
        if r.error is not None:
            click.echo(f"Error:         {r.reason()}")


@hoist.command("version")
@click.pass_obj
def version(g: Globals) -> None:
    """Print the client's version, and the daemon's when --address is set."""
    from hoist.version import describe, revision

    click.echo("Client:")
    click.echo(f"  Version:  {describe()}")
    click.echo(f"  Revision: {revision() or '-'}")
    if g.address:
        with g.client() as client:
            from hoist.api.version_client import server_version

            v, rev = server_version(client.channel())
        click.echo("")
        click.echo("Server:")
        click.echo(f"  Version:  {v}")
        click.echo(f"  Revision: {rev or '-'}")


def _attach() -> None:
    from hoist.cli.hoist_containers import containers, containers_events, run as run_command

    hoist.add_command(run_command)
    hoist.add_command(containers)
    hoist.add_command(containers_events, "events")


_attach()


def main() -> None:
    run(hoist)
