"""``dist pull``, ``dist rootfs unpack|prepare``, ``dist apply`` and ``dist snapshots ls|rm|usage``."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import click

from hoist.content import Descriptor, Digest
from hoist.errors import HoistError, InvalidArgumentError, NotFoundError, UnsupportedError
from hoist.progress import human_size

log = logging.getLogger("hoist.cli")

SNAPSHOTTER_TYPE = "hoist.snapshotter.v1"


def choose_snapshotter(c: Any, name: str | None) -> tuple[str, Any]:
    """``(id, namespaced snapshotter)``: ``name``, else overlayfs when it loaded, else native (logging why).

    :raises NotFoundError: the named (or any) snapshotter plugin is not loaded.
    """
    if c.remote:
        # a real containerd reports its snapshotters as io.containerd.snapshotter.v1
        ok = {r.id for r in c.plugin_results() if r.type in (SNAPSHOTTER_TYPE, "io.containerd.snapshotter.v1") and r.ok}
        chosen = name or ("overlayfs" if "overlayfs" in ok else "native" if "native" in ok else min(ok, default=""))
        if chosen not in ok:
            why = _reason(c, chosen) if chosen else ""
            raise NotFoundError(f"snapshotter {chosen or '(any)'}: not loaded in the daemon at {c.address}"
                                f"{': ' + why if why else ''}")
        return chosen, c.snapshotter(chosen)
    loaded = c.plugins_of(SNAPSHOTTER_TYPE)
    if name:
        if name not in loaded:
            why = _reason(c, name)
            raise NotFoundError(f"snapshotter {name}: not loaded{': ' + why if why else ''}")
        return name, c.snapshotter(name)
    if "overlayfs" in loaded:
        return "overlayfs", c.snapshotter("overlayfs")
    if "native" in loaded:
        why = _reason(c, "overlayfs")
        log.info("%s.overlayfs not available%s; using native", SNAPSHOTTER_TYPE, f" ({why})" if why else "")
        return "native", c.snapshotter("native")
    if loaded:
        sid = sorted(loaded)[0]
        return sid, c.snapshotter(sid)
    raise NotFoundError(f"no {SNAPSHOTTER_TYPE} plugin is loaded")


def _reason(c: Any, sid: str) -> str:
    for r in c.plugin_results():
        if r.uri == f"{SNAPSHOTTER_TYPE}.{sid}":
            return r.reason() or r.status
    return ""


def _snapshotter_option(f: Any) -> Any:
    return click.option("--snapshotter", default=None, metavar="NAME",
                        help="Snapshotter plugin id [default: overlayfs when the kernel allows it, else native].")(f)


def _target_of(c: Any, ref: str) -> Descriptor:
    """The descriptor of an image name in the metadata store, or of a manifest/index digest in the content store."""
    from hoist.content import read_blob
    from hoist.images import documents

    if ref.startswith(("sha256:", "sha512:")):
        digest = Digest.parse(ref)
        info = c.content.info(digest)
        probe = Descriptor(media_type="", digest=digest, size=info.size)
        data = read_blob(c.content, probe, documents.MAX_MANIFEST_SIZE)
        try:
            media_type = json.loads(data).get("mediaType", "")
        except ValueError as e:
            raise InvalidArgumentError(f"{ref}: not an image manifest or index") from e
        if not media_type:
            obj = json.loads(data)
            media_type = ("application/vnd.oci.image.index.v1+json" if "manifests" in obj
                          else "application/vnd.oci.image.manifest.v1+json")
        return Descriptor(media_type=media_type, digest=digest, size=info.size)
    return c.metadata.images(c.namespace).get(ref).target


def _print_layer(res: Any, quiet: bool) -> None:
    if quiet:
        return
    what = "reused" if res.reused else f"applied {human_size(res.size)} in {res.seconds:.1f}s"
    click.echo(f"unpack {res.layer.digest.short()}: {what} -> {res.chain_id.short()}", err=True)


# -- dist pull ------------------------------------------------------------------------------------


def _pull_options(f: Any) -> Any:
    from hoist.cli.dist_images import _resolver_flags

    f = _resolver_flags(f)
    for o in reversed([
        click.option("--platform", "platform", default=None, metavar="OS/ARCH[/VARIANT]",
                     help="Platform to pull from an index [default: this machine's]."),
        click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "none"]), default="auto",
                     show_default=True, help="Progress display on stderr."),
        click.option("--max-concurrent-downloads", type=click.IntRange(min=1), default=None,
                     help="Blobs fetched at once [default: the resolver plugin's setting, else 4]."),
    ]):
        f = o(f)
    return _snapshotter_option(f)


@click.command("pull")
@click.argument("ref")
@_pull_options
@click.pass_obj
def pull(g: Any, ref: str, platform: str | None, progress_mode: str, max_concurrent_downloads: int | None,
         snapshotter: str | None, **resolver_opts: Any) -> None:
    """Fetch image REF, name it, and unpack its layers into snapshots.

    Each layer is unpacked as soon as it is fetched, while later layers are still downloading.  The
    last line gives the image name and digest, the fetch summary and the rootfs chain ID.
    """
    from hoist.cli.dist_images import _resolver_options
    from hoist.fetch import fetch as do_fetch
    from hoist.images.platforms import Matcher
    from hoist.progress import ProgressTracker, renderer_for
    from hoist.unpack import image_layers, label_config, unpack

    options = _resolver_options(resolver_opts)
    platforms = (platform,) if platform else ()
    matcher = Matcher.from_specs(list(platforms))
    with g.client() as c, c.with_lease():
        sid, sn = choose_snapshotter(c, snapshotter)
        applier = None
        if c.remote:
            from hoist.api.diff_client import RemoteApplier

            applier = RemoteApplier(c.channel(), c.namespace)
        resolved = c.resolver(ref, options).resolve(ref)
        tracker = ProgressTracker(c.content, renderer_for(progress_mode, sys.stderr))
        done = threading.Event()
        cancel = threading.Event()
        outcome: dict[str, Any] = {}

        def run_fetch() -> None:
            try:
                outcome["image"] = do_fetch(c, ref, platforms, tracker, max_concurrent_downloads=max_concurrent_downloads,
                                            resolver_options=options, cancel=cancel)
            except BaseException as e:  # handed to the main thread
                outcome["error"] = e
            finally:
                done.set()

        def fetch_failed() -> None:
            if "error" in outcome:
                raise outcome["error"]

        def when_present(fn: Any) -> Any:
            while True:
                try:
                    return fn()
                except NotFoundError:
                    fetch_failed()
                    if done.is_set():
                        return fn()
                    done.wait(0.02)

        def wait_layer(_i: int, desc: Descriptor) -> None:
            when_present(lambda: c.content.info(desc.digest))

        quiet = progress_mode == "none"
        with tracker:
            worker = threading.Thread(target=run_fetch, name="hoist-pull-fetch", daemon=True)
            worker.start()
            try:
                _mdesc, manifest, config = when_present(lambda: image_layers(c.content, resolved.descriptor, matcher))
                result = unpack(c.content, sn, manifest.layers, config, wait=wait_layer,
                                on_layer=lambda r: _print_layer(r, quiet), applier=applier)
            except BaseException:
                cancel.set()  # the unpack's own error is the one to report
                worker.join()
                raise
            worker.join()
        fetch_failed()
        image = outcome["image"]
        if result.chain_id is not None:
            label_config(c.content, manifest.config, sid, result.chain_id)
        summary = tracker.summary()
    chain = str(result.chain_id) if result.chain_id else "-"
    click.echo(f"{image.name} {image.target.digest}: {summary.line()}; unpacked into {sid} as {chain}")


# -- dist rootfs ----------------------------------------------------------------------------------


@click.group("rootfs")
def rootfs() -> None:
    """Unpack images into snapshots and prepare writable root filesystems from them."""


@rootfs.command("unpack")
@click.argument("image")
@click.option("--platform", default=None, metavar="OS/ARCH[/VARIANT]", help="Platform to unpack from an index.")
@_snapshotter_option
@click.pass_obj
def rootfs_unpack(g: Any, image: str, platform: str | None, snapshotter: str | None) -> None:
    """Unpack IMAGE (an image name, or a manifest or index digest in the content store); print its chain ID."""
    from hoist.images.platforms import Matcher
    from hoist.unpack import image_layers, label_config, unpack

    with g.client() as c, c.with_lease():
        sid, sn = choose_snapshotter(c, snapshotter)
        applier = None
        if c.remote:
            from hoist.api.diff_client import RemoteApplier

            applier = RemoteApplier(c.channel(), c.namespace)
        target = _target_of(c, image)
        _mdesc, manifest, config = image_layers(c.content, target, Matcher.from_specs([platform] if platform else []))
        result = unpack(c.content, sn, manifest.layers, config, on_layer=lambda r: _print_layer(r, False),
                        applier=applier)
        if result.chain_id is None:
            raise InvalidArgumentError(f"{image}: the image has no layers")
        label_config(c.content, manifest.config, sid, result.chain_id)
    click.echo(str(result.chain_id))


@rootfs.command("prepare")
@click.argument("chain")
@click.argument("key")
@_snapshotter_option
@click.pass_obj
def rootfs_prepare(g: Any, chain: str, key: str, snapshotter: str | None) -> None:
    """Make active snapshot KEY on committed snapshot CHAIN (a chain ID) and print how to mount it."""
    with g.client() as c:
        _sid, sn = choose_snapshotter(c, snapshotter)
        mounts = sn.prepare(key, chain)
    for m in mounts:
        click.echo(f"mount -t {m.type} {m.source} <target> -o {','.join(m.options)}")


@click.command("apply")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--expected-diff-id", default=None, metavar="DIGEST", help="Fail unless the uncompressed layer has this digest.")
@click.option("--overlay", is_flag=True, help="DIRECTORY is an overlay upperdir: write overlay whiteouts.")
@click.pass_obj
def apply(g: Any, directory: str, expected_diff_id: str | None, overlay: bool) -> None:
    """Apply a layer (tar, gzip or zstd) read from stdin onto DIRECTORY; print its diff ID and size."""
    from hoist.archive import apply_layer

    started = time.monotonic()
    res = apply_layer(directory, sys.stdin.buffer, whiteouts="overlay" if overlay else "delete",
                      expected_diff_id=expected_diff_id, layer="stdin")
    click.echo(f"{res.diff_id} {res.size}")
    log.info("applied %s in %.2fs", human_size(res.size), time.monotonic() - started)


# -- dist snapshots -------------------------------------------------------------------------------


@click.group("snapshots")
def snapshots() -> None:
    """List, remove and measure snapshots."""


@snapshots.command("ls")
@click.argument("filters", nargs=-1)
@_snapshotter_option
@click.pass_obj
def snapshots_ls(g: Any, filters: tuple[str, ...], snapshotter: str | None) -> None:
    """List snapshots: KEY PARENT KIND (like ``ctr snapshots ls``); FILTERS as kind==committed, parent==KEY, labels.K==V."""
    from hoist.snapshots import list_snapshots

    with g.client() as c:
        _sid, sn = choose_snapshotter(c, snapshotter)
        infos = list_snapshots(sn, *filters)
    rows = [("KEY", "PARENT", "KIND")] + [(i.name, i.parent or "", i.kind.value) for i in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@snapshots.command("rm")
@click.argument("keys", nargs=-1, required=True)
@_snapshotter_option
@click.pass_obj
def snapshots_rm(g: Any, keys: tuple[str, ...], snapshotter: str | None) -> None:
    """Remove snapshots KEYS (children first); a snapshot with children is refused."""
    with g.client() as c:
        _sid, sn = choose_snapshotter(c, snapshotter)
        failed: HoistError | None = None
        for key in keys:
            try:
                sn.remove(key)
            except HoistError as e:
                click.echo(f"dist: {e}", err=True)
                failed = e
        if failed is not None:
            raise SystemExit(1)


@snapshots.command("usage")
@click.argument("keys", nargs=-1)
@_snapshotter_option
@click.pass_obj
def snapshots_usage(g: Any, keys: tuple[str, ...], snapshotter: str | None) -> None:
    """Disk usage of snapshots KEYS (all when none): KEY SIZE INODES."""
    from hoist.snapshots import list_snapshots

    with g.client() as c:
        _sid, sn = choose_snapshotter(c, snapshotter)
        names = list(keys) or [i.name for i in list_snapshots(sn)]
        rows = [("KEY", "SIZE", "INODES")]
        for k in names:
            u = sn.usage(k)
            rows.append((k, human_size(u.size), str(u.inodes)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
