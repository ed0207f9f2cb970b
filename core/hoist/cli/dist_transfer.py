"""``dist export`` and ``dist import``: images to and from OCI layout archives (and ``docker save`` archives)."""

from __future__ import annotations

from typing import Any

import click

from hoist.errors import InvalidArgumentError, NotFoundError
from hoist.progress import human_size


def _image(store: Any, ref: str) -> Any:
    from hoist import reference

    try:
        return store.get(ref)
    except NotFoundError:
        try:
            full = str(reference.normalize(ref))
        except InvalidArgumentError:
            raise NotFoundError(f"image {ref!r}: not found") from None
        if full == ref:
            raise
        return store.get(full)


def _matcher(platforms: tuple[str, ...], all_platforms: bool) -> Any:
    from hoist.images.platforms import Matcher

    if all_platforms and platforms:
        raise InvalidArgumentError("--platform and --all-platforms cannot be used together")
    return Matcher.from_specs(list(platforms), all_platforms)


@click.command("export")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Export this platform of an index (repeatable) [default: this machine's].")
@click.option("--all-platforms", is_flag=True, help="Export every platform of an index (all must be present).")
@click.pass_obj
def export(g: Any, refs: tuple[str, ...], file: str, platforms: tuple[str, ...], all_platforms: bool) -> None:
    """Write images REF... and their blobs to FILE, an OCI image layout tar archive.

    The archive is what ``skopeo copy oci-archive:`` and ``ctr images import`` read; each image's
    entry in ``index.json`` carries its full name and its tag.  FILE appears only when complete.
    """
    from hoist.ocilayout import export_archive

    matcher = _matcher(platforms, all_platforms)
    with g.client() as c:
        store = c.metadata.images(c.namespace)
        imgs = [_image(store, r) for r in refs]
        result = export_archive(c.content, imgs, file, matcher=matcher)
    n = len(result.entries)
    click.echo(f"exported {n} image{'s' if n != 1 else ''}, {result.blobs} blobs ({human_size(result.size)}) to {file}")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", default=None, metavar="NAME", help="Name for the archive's only image (instead of the archive's).")
@click.option("--base-name", default=None, metavar="NAME",
              help="Repository for images the archive names only by a tag: NAME:TAG.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Import this platform of an index (repeatable) [default: this machine's].")
@click.option("--all-platforms", is_flag=True, help="Import every platform of an index.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the image records (repeatable).")
@click.pass_obj
def import_(g: Any, file: str, name: str | None, base_name: str | None, platforms: tuple[str, ...],
            all_platforms: bool, labels: tuple[str, ...]) -> None:
    """Import the images of FILE, an OCI image layout archive or a ``docker save`` archive (gzip or zstd compressed, or not).

    Every blob is verified against its digest; a ``docker save`` archive's images become Docker
    schema2 manifests.  Prints ``NAME DIGEST`` for each image named.  If anything is wrong with
    the archive, nothing is stored.
    """
    from hoist.cli.dist_images import _labels
    from hoist.ocilayout import import_archive

    matcher = _matcher(platforms, all_platforms)
    with g.client() as c, c.with_lease():
        result = import_archive(c.content, c.metadata.images(c.namespace), file, name=name, base_name=base_name,
                                matcher=matcher, labels=_labels(labels))
    for img in result.images:
        click.echo(f"{img.name} {img.target.digest}")
    click.echo(f"imported {len(result.images)} image(s) from a {result.format} archive: "
               f"{result.blobs_written} blobs written, {result.blobs_present} already present", err=True)


import_.name = "import"
