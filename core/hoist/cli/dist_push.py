"""``dist push`` and ``dist push-object``: send local images and objects to a registry."""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
import click

from hoist.cli.dist_remote import resolver_options
from hoist.content import Digest
from hoist.errors import InvalidArgumentError
from hoist.remotes import ResolverOptions


@click.command("push")
@click.argument("ref")
@click.argument("local", required=False, default=None)
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Push only this platform's manifest of an index (repeatable; REF names the first).")
@click.option("--all-platforms", is_flag=True, help="Push the whole index with every platform (the default).")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout, then a summary object.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "none"]), default="auto",
              show_default=True, help="Progress display on stderr: a live table on a terminal, else plain lines.")
@click.option("--max-concurrent-uploads", type=click.IntRange(min=1), default=None,
              help="Objects uploaded at once [default: the resolver plugin's max_concurrent_uploads].")
@resolver_options
@click.pass_obj
def push(g: Any, ref: str, local: str | None, platforms: tuple[str, ...], all_platforms: bool, as_json: bool,
         progress_mode: str, max_concurrent_uploads: int | None, resolver_options: ResolverOptions) -> None:
    """Push the local image LOCAL (default: REF) to the registry as REF.

    Layers and config go first, then manifests, then the index; what the registry already has is
    skipped after a HEAD, blobs another repository of the same registry holds are mounted, the rest
    is uploaded.  Local content is checked before anything is sent.  The last line gives REF, the
    digest it names, the blobs uploaded, mounted and already present, the bytes, time and rate.
    """
    from hoist.progress import renderer_for
    from hoist.push import PushProgressTracker, push as do_push, pushed_json

    if all_platforms and platforms:
        raise InvalidArgumentError("--platform and --all-platforms cannot be used together")
    options = attrs.evolve(resolver_options, max_concurrency=max_concurrent_uploads)
    with g.client() as c:
        renderer = renderer_for("json" if as_json else progress_mode, sys.stdout if as_json else sys.stderr)
        tracker = PushProgressTracker(renderer)
        with tracker:
            result = do_push(c, ref, local or ref, list(platforms), all_platforms, tracker,
                             resolver_options=options, max_concurrent_uploads=max_concurrent_uploads)
        summary = tracker.summary()
    if as_json:
        click.echo(pushed_json(result))
    else:
        click.echo(f"{result.name} {result.target.digest}: {summary.line()}")


@click.command("push-object")
@click.argument("ref")
@click.argument("digest")
@click.argument("media_type", metavar="TYPE")
@resolver_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome and descriptor as JSON.")
@click.pass_obj
def push_object(g: Any, ref: str, digest: str, media_type: str, resolver_options: ResolverOptions,
                as_json: bool) -> None:
    """Push the object DIGEST from the content store to REF's repository as media type TYPE.

    A manifest or index type goes up by REF's tag (by digest when REF has none); anything else is a
    blob.  Prints ``REPOSITORY@DIGEST: exists|mounted|committed``.
    """
    from hoist.push import push_object as do_push_object

    with g.client() as c:
        result = do_push_object(c, ref, Digest.parse(digest), media_type,
                                resolver_options=resolver_options)
    if as_json:
        click.echo(json.dumps({"name": result.name, "state": result.state,
                               "descriptor": result.descriptor.to_json()}, sort_keys=True))
    else:
        click.echo(f"{result.name}: {result.state}")
