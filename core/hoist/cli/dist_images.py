"""``dist fetch`` and ``dist images ls|inspect|rm|tag|check``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import attrs
import click

from hoist.cli.common import skip_teardown
from hoist.cli.dist_remote import resolver_options
from hoist.errors import AlreadyExistsError, HoistError, InvalidArgumentError, NotFoundError
from hoist.progress import ProgressTracker, human_size, renderer_for
from hoist.remotes import ResolverOptions


# Compatibility for commands still importing the old names from here (``dist pull`` in dist_rootfs.py):
# the shared flags, and the options they passed in a command's ``**kwargs``.
_resolver_flags = resolver_options


def _resolver_options(opts: Mapping[str, Any], max_concurrency: int | None = None) -> ResolverOptions:
    """The :class:`ResolverOptions` that :func:`~hoist.cli.dist_remote.resolver_options` put in ``opts``."""
    options: ResolverOptions = opts["resolver_options"]
    return attrs.evolve(options, max_concurrency=max_concurrency) if max_concurrency is not None else options


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise InvalidArgumentError(f"label {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


@click.command("fetch")
@click.argument("ref")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Fetch this platform from an index (repeatable) [default: this machine's].")
@click.option("--all-platforms", is_flag=True, help="Fetch every platform of an index.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout, then a summary object.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "none"]), default="auto",
              show_default=True, help="Progress display on stderr: a live table on a terminal, else plain lines.")
@click.option("--max-concurrent-downloads", type=click.IntRange(min=1), default=None,
              help="Blobs fetched at once [default: the resolver plugin's setting, else 4].")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the image record (repeatable).")
@resolver_options
@click.pass_obj
def fetch(g: Any, ref: str, platforms: tuple[str, ...], all_platforms: bool, as_json: bool, progress_mode: str,
          max_concurrent_downloads: int | None, labels: tuple[str, ...], resolver_options: ResolverOptions) -> None:
    """Fetch everything image REF needs into the content store and name it in the metadata store.

    Blobs already present are not requested again; an interrupted fetch resumes where it stopped.
    The fetch holds a lease while it runs, so a daemon collecting garbage on the same root keeps what
    it wrote before the image is named.
    The last line gives the image's name and digest, the blobs fetched and already present, the
    bytes moved, the time and the rate.
    """
    from hoist.fetch import fetch as do_fetch

    if all_platforms and platforms:
        raise InvalidArgumentError("--platform and --all-platforms cannot be used together")
    options = attrs.evolve(resolver_options, max_concurrency=max_concurrent_downloads)
    lbl = _labels(labels)
    with g.client() as c, c.with_lease():
        renderer = renderer_for("json" if as_json else progress_mode, sys.stdout if as_json else sys.stderr)
        tracker = ProgressTracker(c.content, renderer)
        with tracker:
            image = do_fetch(c, ref, platforms, tracker, all_platforms=all_platforms,
                             max_concurrent_downloads=max_concurrent_downloads, labels=lbl, resolver_options=options)
        summary = tracker.summary()
    if as_json:
        click.echo(json.dumps({"event": "image", "name": image.name, "target": image.target.to_json()}, sort_keys=True))
    else:
        click.echo(f"{image.name} {image.target.digest}: {summary.line()}")
    skip_teardown()  # the client and everything it opened are closed by the time the process exits


@click.group("images")
def images() -> None:
    """List, inspect, remove, tag and check images in the metadata store."""


def _image_store(c: Any) -> Any:
    return c.metadata.images(c.namespace)


def _platforms_and_size(c: Any, image: Any) -> tuple[str, str]:
    from hoist.images import Matcher, check

    try:
        everything = check(c.content, image.target, Matcher.all())
        here = check(c.content, image.target, Matcher.default())
    except HoistError:
        return "-", "-"
    plats = ",".join(sorted(str(p) for p in everything.platforms)) or "-"
    size = human_size(here.size) if here.available else f"{human_size(here.size)} (incomplete)"
    return plats, size


@images.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Print only the image names.")
@click.argument("filters", nargs=-1)
@click.pass_obj
def images_ls(g: Any, quiet: bool, filters: tuple[str, ...]) -> None:
    """List images: REF TYPE DIGEST SIZE PLATFORMS LABELS (like ``ctr images ls``).

    FILTERS are containerd-style: name==NAME, name~=REGEX, target.digest==D, labels.KEY==V.
    """
    with g.client() as c:
        imgs = _image_store(c).list(*filters)
        if quiet:
            for i in imgs:
                click.echo(i.name)
            return
        rows = [("REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS")]
        for i in imgs:
            plats, size = _platforms_and_size(c, i)
            labels = ",".join(f"{k}={v}" for k, v in sorted(i.labels.items())) or "-"
            rows.append((i.name, i.target.media_type, str(i.target.digest), size, plats, labels))
    _table(rows)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@images.command("inspect")
@click.argument("name")
@click.pass_obj
def images_inspect(g: Any, name: str) -> None:
    """Print the image record and its target document as JSON."""
    from hoist.content import read_blob

    with g.client() as c:
        img = _image_store(c).get(name)
        out = img.to_json()
        try:
            out["document"] = json.loads(read_blob(c.content, img.target))
        except (HoistError, ValueError):
            out["document"] = None
    click.echo(json.dumps(out, indent=2, sort_keys=True))


@images.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--sync", is_flag=True,
              help="Collect garbage before returning: the blobs and snapshots only these images used go too.")
@click.pass_obj
def images_rm(g: Any, names: tuple[str, ...], sync: bool) -> None:
    """Remove image records (their content stays until garbage collection, or goes at once with --sync).

    With --sync, what another image or namespace still uses stays.
    """
    missing = []
    with g.client() as c:
        store = _image_store(c)
        for n in names:
            try:
                if sync and c.remote:
                    store.delete(n, sync=True)
                else:
                    store.delete(n)
            except NotFoundError:
                missing.append(n)
                continue
            click.echo(n)
        if sync and not c.remote:
            c.collect_garbage()
    if missing:
        raise NotFoundError(f"image {', '.join(repr(m) for m in missing)}: not found")


@images.command("tag")
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Replace a target name that already exists.")
@click.pass_obj
def images_tag(g: Any, source: str, targets: tuple[str, ...], force: bool) -> None:
    """Name SOURCE's target under each of TARGETS."""
    from hoist.images import Image

    with g.client() as c:
        store = _image_store(c)
        src = store.get(source)
        for t in targets:
            img = Image(name=t, target=src.target, labels=src.labels)
            try:
                store.create(img)
            except AlreadyExistsError:
                if not force:
                    raise AlreadyExistsError(f"image {t!r}: already exists (use --force to replace it)") from None
                store.update(img)
            click.echo(t)


@images.command("check")
@click.argument("names", nargs=-1)
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Check this platform (repeatable) [default: this machine's].")
@click.option("--all-platforms", is_flag=True, help="Check every platform of an index.")
@click.pass_obj
def images_check(g: Any, names: tuple[str, ...], platforms: tuple[str, ...], all_platforms: bool) -> None:
    """Say whether all content of each image (all images without NAMES) is present.

    Columns: REF DIGEST STATUS SIZE PLATFORMS; STATUS is ``complete (n/n)`` or ``incomplete (k/n)``.
    Exits 1 when an image is incomplete.
    """
    from hoist.images import Matcher, check

    matcher = Matcher.from_specs(list(platforms), all_platforms)
    incomplete = False
    rows = [("REF", "DIGEST", "STATUS", "SIZE", "PLATFORMS")]
    with g.client() as c:
        store = _image_store(c)
        imgs = [store.get(n) for n in names] if names else store.list()
        for i in imgs:
            r = check(c.content, i.target, matcher)
            n, k = len(r.required), len(r.present)
            status = f"complete ({k}/{n})" if r.available else f"incomplete ({k}/{n})"
            incomplete |= not r.available
            have = sum(d.size for d in r.present)
            plats = ",".join(sorted(str(p) for p in r.platforms)) or "-"
            rows.append((i.name, str(i.target.digest), status, f"{human_size(have)}/{human_size(r.size)}", plats))
    _table(rows)
    if incomplete:
        raise click.exceptions.Exit(1)
