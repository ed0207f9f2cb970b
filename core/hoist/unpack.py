"""Unpack: turn an image's layers (blobs in a content store) into committed snapshots keyed by chain ID.

For each layer in order: compute its chain ID; reuse an existing committed snapshot with that name;
otherwise prepare a temporary active snapshot on the previous chain, apply the layer into it while
hashing the uncompressed stream, check the digest against the config's ``rootfs.diff_ids[i]`` and
commit it under the chain ID.  A failed layer removes its temporary snapshot, so no half-made
snapshot is ever left behind.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from hoist.archive import ApplyResult, apply_to_mounts
from hoist.content import Descriptor, Digest, ReaderAtFile
from hoist.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.snapshots import LABEL_SNAPSHOT_REF, Kind, Snapshotter

log = logging.getLogger("hoist.unpack")

#: Content label containerd keeps on a compressed layer blob: the digest of its uncompressed tar.
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"


def chain_ids(diff_ids: Sequence[Digest | str]) -> list[Digest]:
    """The OCI chain IDs of a layer stack: ``chain[0] = diff[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff[i])``."""
    out: list[Digest] = []
    for d in diff_ids:
        d = Digest.parse(d)
        if not out:
            out.append(d)
        else:
            out.append(Digest("sha256", hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()))
    return out


def diff_ids_of(config: Mapping[str, Any]) -> list[Digest]:
    """``rootfs.diff_ids`` of an image config, validated.

    :raises InvalidArgumentError: missing, not of type ``layers``, or not digests.
    """
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, Mapping) or rootfs.get("type") != "layers":
        raise InvalidArgumentError('image config: rootfs must be an object with "type": "layers"')
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise InvalidArgumentError("image config: rootfs.diff_ids must be a list")
    return [Digest.parse(d) for d in ids]


@attrs.frozen(kw_only=True)
class LayerResult:
    """One layer of an unpack: what was applied (or reused) and as which chain."""

    layer: Descriptor
    diff_id: Digest
    chain_id: Digest
    reused: bool
    size: int = 0
    seconds: float = 0.0


@attrs.frozen(kw_only=True)
class UnpackResult:
    """The top chain ID (the image's rootfs snapshot name) and each layer's outcome."""

    chain_id: Digest | None
    layers: tuple[LayerResult, ...] = attrs.field(converter=tuple)


def _committed(snapshotter: Snapshotter, name: str) -> bool:
    try:
        return snapshotter.stat(name).kind is Kind.COMMITTED
    except NotFoundError:
        return False


def unpack(
    provider: Any,
    snapshotter: Snapshotter,
    layers: Sequence[Descriptor],
    config: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    wait: Callable[[int, Descriptor], None] | None = None,
    on_layer: Callable[[LayerResult], None] | None = None,
    applier: Any = None,
) -> UnpackResult:
    """Unpack ``layers`` (a manifest's, in order) from ``provider`` into ``snapshotter``.

    :param provider: a content Provider (``reader_at``); when it also has ``info``/``update``, the
        ``containerd.io/uncompressed`` label is set on each applied layer blob.
    :param snapshotter: the (namespaced) snapshotter to write into.
    :param config: the parsed image config; its ``rootfs.diff_ids`` are checked.
    :param labels: labels for the committed snapshots.
    :param wait: called as ``wait(i, desc)`` before layer ``i`` is read (a pull waits for its fetch there).
    :param on_layer: called after each layer is reused or committed.
    :param applier: applies layers where the snapshots live (a daemon's Diff service, whose
        ``apply(desc, mounts)`` returns the uncompressed descriptor); ``None`` applies in-process.
    :raises InvalidArgumentError: layer count and diff IDs disagree, or a hostile/broken layer.
    :raises FailedPreconditionError: a layer's uncompressed digest is not its diff ID.
    """
    diffs = diff_ids_of(config)
    if len(diffs) != len(layers):
        raise InvalidArgumentError(f"image config: {len(diffs)} diff_ids for {len(layers)} layers")
    chains = chain_ids(diffs)
    results: list[LayerResult] = []
    parent = ""
    for i, (desc, diff, chain) in enumerate(zip(layers, diffs, chains)):
        name = str(chain)
        started = time.monotonic()
        if _committed(snapshotter, name):
            res = LayerResult(layer=desc, diff_id=diff, chain_id=chain, reused=True)
        else:
            if wait is not None:
                wait(i, desc)
            applied = apply_layer_snapshot(provider, snapshotter, desc, diff, name, parent, labels=labels,
                                           applier=applier)
            res = LayerResult(
                layer=desc, diff_id=diff, chain_id=chain, reused=applied is None,
                size=applied.size if applied else 0, seconds=time.monotonic() - started,
            )
            if applied is not None:
                _label_uncompressed(provider, desc, diff)
        results.append(res)
        if on_layer is not None:
            on_layer(res)
        parent = name
    return UnpackResult(chain_id=chains[-1] if chains else None, layers=results)


def apply_layer_snapshot(
    provider: Any,
    snapshotter: Snapshotter,
    desc: Descriptor,
    diff_id: Digest,
    name: str,
    parent: str,
    *,
    labels: Mapping[str, str] | None = None,
    applier: Any = None,
) -> ApplyResult | None:
    """Apply one layer onto ``parent`` and commit it as ``name``; ``None`` when another unpack committed it first.

    The temporary active snapshot is removed whatever happens.
    """
    key = f"extract-{time.time_ns()}-{secrets.token_hex(4)} {name}"
    mounts = snapshotter.prepare(key, parent, {LABEL_SNAPSHOT_REF: name})
    try:
        if applier is not None:
            applied = applier.apply(desc, mounts)
            if applied.digest != diff_id:
                raise FailedPreconditionError(
                    f"layer {desc.digest}: uncompressed digest {applied.digest} is not the config's diff_id {diff_id}")
            result = ApplyResult(diff_id=applied.digest, size=applied.size)
        else:
            ra = provider.reader_at(desc)
            with ReaderAtFile(ra) as stream:
                if desc.size and ra.size != desc.size:
                    raise FailedPreconditionError(
                        f"layer {desc.digest}: size mismatch: descriptor says {desc.size}, store has {ra.size}")
                result = apply_to_mounts(mounts, stream, media_type=desc.media_type, expected_diff_id=diff_id,
                                         layer=str(desc.digest))
        try:
            snapshotter.commit(name, key, labels)
        except AlreadyExistsError:
            log.info("unpack: layer %s: chain %s committed concurrently, reusing it", desc.digest.short(), name)
            return None
        return result
    finally:
        try:
            snapshotter.remove(key)
        except NotFoundError:
            pass  # committed: the key is gone


def _label_uncompressed(provider: Any, desc: Descriptor, diff: Digest) -> None:
    if not (hasattr(provider, "info") and hasattr(provider, "update")):
        return
    try:
        info = provider.info(desc.digest)
        if info.labels.get(LABEL_UNCOMPRESSED) == str(diff):
            return
        new = attrs.evolve(info, labels={**info.labels, LABEL_UNCOMPRESSED: str(diff)})
        provider.update(new, (f"labels.{LABEL_UNCOMPRESSED}",))
    except Exception as e:  # a label is a cache hint; never fail an unpack over it
        log.debug("unpack: layer %s: cannot set %s: %s", desc.digest.short(), LABEL_UNCOMPRESSED, e)





def image_layers(provider: Any, target: Descriptor, matcher: Any = None) -> tuple[Descriptor, Any, dict[str, Any]]:
    """The manifest descriptor, the manifest and the parsed config of image ``target`` (an index or a manifest) for ``matcher``.

    :raises NotFoundError: no manifest for the platform, or a needed blob is missing.
    """
    from hoist.content import read_blob
    from hoist.images import documents
    from hoist.images.image import manifest_for

    mdesc, manifest = manifest_for(provider, target, matcher)
    config = documents.parse_config(manifest.config, read_blob(provider, manifest.config, documents.MAX_CONFIG_SIZE))
    return mdesc, manifest, config


def label_config(provider: Any, config: Descriptor, snapshotter_id: str, chain_id: Digest) -> None:
    """Record ``containerd.io/gc.ref.snapshot.<snapshotter>=<chain ID>`` on the config blob, as containerd does."""
    if not (hasattr(provider, "info") and hasattr(provider, "update")):
        return
    key = f"containerd.io/gc.ref.snapshot.{snapshotter_id}"
    try:
        info = provider.info(config.digest)
        if info.labels.get(key) != str(chain_id):
            provider.update(attrs.evolve(info, labels={**info.labels, key: str(chain_id)}), (f"labels.{key}",))
    except Exception as e:  # a GC hint only
        log.debug("unpack: config %s: cannot set %s: %s", config.digest.short(), key, e)
__all__ = ["LABEL_UNCOMPRESSED", "LayerResult", "UnpackResult", "apply_layer_snapshot", "chain_ids", "diff_ids_of", "image_layers", "label_config", "unpack"]
