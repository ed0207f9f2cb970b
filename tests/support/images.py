"""Deterministic OCI image layouts for tests: tar entries, layers, manifests, indexes.

Every byte is a function of the inputs (PAX tar with fixed mtime/owners, gzip through zlib
with mtime 0, zstd through zstandard, random payloads from ``random.Random(seed)``), so digests
are stable for a given zlib/zstandard build. :class:`ImageSet` builds the standard test images
lazily and caches them for the whole session.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import attrs
import zstandard

from hoist.content import Descriptor, Digest, Platform

MiB = 1 << 20
MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX_PATH = Path("/bin/busybox")

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

LAYER_MEDIA_TYPES = {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD, "none": MT_OCI_LAYER}
BUSYBOX_APPLETS = (
    "sh", "ls", "echo", "cat", "env", "true", "false", "id", "ps", "mkdir", "rm", "sleep",
    "uname", "find", "wc", "sha256sum", "du", "stat", "test", "[", "head", "tail", "grep",
    "sed", "hostname", "date", "touch", "chmod", "readlink",
)
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
_CHUNK = MiB


# ---------------------------------------------------------------- tar entries


@attrs.frozen(kw_only=True)
class TarEntry:
    """One tar member: its header and, for regular files, a factory for its content stream."""

    info: tarfile.TarInfo
    open: Callable[[], BinaryIO] | None = None


def _info(name: str, type_: bytes, *, size: int = 0, mode: int, linkname: str = "",
          uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = size
    ti.mode = mode
    ti.mtime = MTIME
    ti.uid, ti.gid = uid, gid
    ti.uname = "root" if uid == 0 else ""
    ti.gname = "root" if gid == 0 else ""
    ti.linkname = linkname
    return ti


def tar_dir(name: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> TarEntry:
    """A directory entry (``name`` with or without the trailing slash)."""
    return TarEntry(info=_info(name.rstrip("/") + "/", tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid))


def tar_file(name: str, data: bytes | str, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> TarEntry:
    """A regular file holding ``data`` (str is UTF-8 encoded)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return TarEntry(info=_info(name, tarfile.REGTYPE, size=len(raw), mode=mode, uid=uid, gid=gid),
                    open=lambda: io.BytesIO(raw))


def tar_random_file(name: str, *, seed: int, size: int, mode: int = 0o644) -> TarEntry:
    """A regular file of ``size`` seeded random bytes, streamed (never held in memory whole)."""
    return TarEntry(info=_info(name, tarfile.REGTYPE, size=size, mode=mode),
                    open=lambda: _RandomReader(seed, size))


def tar_symlink(name: str, target: str) -> TarEntry:
    """A symbolic link ``name -> target``."""
    return TarEntry(info=_info(name, tarfile.SYMTYPE, mode=0o777, linkname=target))


def tar_hardlink(name: str, target: str) -> TarEntry:
    """A hard link to the earlier member ``target``."""
    return TarEntry(info=_info(name, tarfile.LNKTYPE, mode=0o644, linkname=target))


def tar_whiteout(path: str) -> TarEntry:
    """The OCI whiteout that deletes ``path`` from lower layers (``dir/.wh.name``)."""
    parent, _, base = path.strip("/").rpartition("/")
    return tar_file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b"")


def tar_opaque(directory: str) -> TarEntry:
    """The OCI opaque marker that hides everything lower layers put in ``directory``."""
    return tar_file(f"{directory.strip('/')}/.wh..wh..opq", b"")


def tar_raw(info: tarfile.TarInfo, data: bytes | None = None) -> TarEntry:
    """Any header as given (for hostile layers: ``../`` names, absolute links, devices)."""
    if data is not None:
        info.size = len(data)
        return TarEntry(info=info, open=lambda: io.BytesIO(data))
    return TarEntry(info=info)


class _RandomReader:
    def __init__(self, seed: int, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            n = self._left
        self._left -= n
        return self._rng.randbytes(n)


def busybox_entries() -> list[TarEntry]:
    """A minimal root filesystem: static /bin/busybox, applet symlinks, /etc/passwd and /etc/group."""
    data = BUSYBOX_PATH.read_bytes()
    entries = [tar_dir("bin"), tar_file("bin/busybox", data, 0o755)]
    entries += [tar_symlink(f"bin/{a}", "busybox") for a in BUSYBOX_APPLETS]
    entries += [
        tar_dir("dev"), tar_dir("proc"), tar_dir("sys"), tar_dir("root", 0o700),
        tar_dir("tmp", 0o1777), tar_dir("etc"),
        tar_file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        tar_file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ]
    return entries


# ---------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
class Layer:
    """A layer blob in a layout: its descriptor, the digest of its uncompressed tar, and that size."""

    descriptor: Descriptor
    diff_id: str
    uncompressed_size: int

    @property
    def digest(self) -> str:
        return str(self.descriptor.digest)


@attrs.frozen(kw_only=True)
class Image:
    """One image manifest in a layout with its config and layers (in order, base first)."""

    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return str(self.manifest.digest)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)

    @property
    def platform(self) -> Platform | None:
        return self.manifest.platform

    @property
    def config_json(self) -> dict:
        return json.loads(self.config_bytes)

    def blobs(self) -> tuple[Descriptor, ...]:
        """Every descriptor this manifest references and itself: manifest, config, layers."""
        return (self.manifest, self.config, *(layer.descriptor for layer in self.layers))


@attrs.frozen(kw_only=True)
class ImageLayout:
    """A built OCI image layout directory with one tagged target (a manifest or an index)."""

    name: str
    path: Path
    tag: str
    target: Descriptor
    target_bytes: bytes
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        """The digest of the tagged target (the index digest for multi-platform layouts)."""
        return str(self.target.digest)

    @property
    def is_index(self) -> bool:
        return self.target.media_type in (MT_OCI_INDEX, MT_DOCKER_LIST)

    @property
    def image(self) -> Image:
        """The only (or first) image manifest."""
        return self.images[0]

    @property
    def oci_ref(self) -> str:
        """The ``oci:<dir>:<tag>`` transport reference for skopeo."""
        return f"oci:{self.path}:{self.tag}"

    def image_for(self, platform: str) -> Image:
        """The image whose platform is ``os/arch[/variant]``."""
        for img in self.images:
            if img.platform is not None and str(img.platform) == platform:
                return img
        raise KeyError(f"layout {self.name}: no image for platform {platform}")

    def blob_path(self, digest: str | Digest) -> Path:
        d = Digest.parse(digest)
        return self.path / "blobs" / d.algorithm / d.hex

    def blob(self, digest: str | Digest) -> bytes:
        return self.blob_path(digest).read_bytes()

    def all_blobs(self) -> tuple[Descriptor, ...]:
        """Every distinct blob reachable from the target, target first."""
        seen: dict[str, Descriptor] = {self.digest: self.target}
        for img in self.images:
            for desc in img.blobs():
                seen.setdefault(str(desc.digest), desc)
        return tuple(seen.values())


# ---------------------------------------------------------------- writer


class _HashingSink:
    """File-like target for tarfile: hashes the tar, compresses, writes and hashes the blob."""

    def __init__(self, out: BinaryIO, compression: str, level: int | None) -> None:
        self._out = out
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.usize = 0
        self.csize = 0
        if compression == "gzip":
            self._z = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
        elif compression == "zstd":
            self._z = zstandard.ZstdCompressor(level=3 if level is None else level).compressobj()
        elif compression == "none":
            self._z = None
        else:
            raise ValueError(f"unknown layer compression {compression!r} (gzip, zstd, none)")

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.blob.update(data)
            self.csize += len(data)

    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self.usize += len(data)
        self._emit(self._z.compress(data) if self._z is not None else bytes(data))
        return len(data)

    def finish(self) -> None:
        if self._z is not None:
            self._emit(self._z.flush())


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class LayoutWriter:
    """Writes blobs, layers, images and indexes into an OCI image layout directory.

    Use :meth:`add_layer`, :meth:`add_image` (and :meth:`add_index`), then :meth:`finish`.
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self._blobdir = self.path / "blobs" / "sha256"
        self._blobdir.mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._images: list[Image] = []

    def add_blob(self, data: bytes, media_type: str, *, platform: Platform | None = None,
                 annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Store ``data`` as a blob and return its descriptor."""
        hexd = hashlib.sha256(data).hexdigest()
        path = self._blobdir / hexd
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Descriptor(media_type=media_type, digest=f"sha256:{hexd}", size=len(data),
                          platform=platform, annotations=annotations or {})

    def add_layer(self, entries: Iterable[TarEntry], *, compression: str = "gzip",
                  level: int | None = None, media_type: str | None = None) -> Layer:
        """Write ``entries`` as a PAX tar, compressed with ``gzip``, ``zstd`` or ``none``."""
        tmp = self._blobdir / f".layer-{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            sink = _HashingSink(f, compression, level)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK) as tf:  # type: ignore[call-overload]
                for entry in entries:
                    if entry.open is None:
                        tf.addfile(entry.info)
                    else:
                        tf.addfile(entry.info, entry.open())
            sink.finish()
        hexd = sink.blob.hexdigest()
        tmp.replace(self._blobdir / hexd)
        desc = Descriptor(media_type=media_type or LAYER_MEDIA_TYPES[compression],
                          digest=f"sha256:{hexd}", size=sink.csize)
        return Layer(descriptor=desc, diff_id=f"sha256:{sink.diff.hexdigest()}", uncompressed_size=sink.usize)

    def copy_layer(self, layer: Layer, source: Path) -> Layer:
        """Reuse a layer blob already written elsewhere (``source`` is its blob file)."""
        dest = self._blobdir / layer.descriptor.digest.hex
        if not dest.exists():
            try:
                os.link(source, dest)
            except OSError:
                shutil.copyfile(source, dest)
        return layer

    def add_image(self, layers: Sequence[Layer], *, cmd: Sequence[str] | None = None,
                  entrypoint: Sequence[str] | None = None, env: Sequence[str] = DEFAULT_ENV,
                  working_dir: str = "/", user: str = "", platform: str = "linux/amd64",
                  labels: Mapping[str, str] | None = None,
                  annotations: Mapping[str, str] | None = None) -> Image:
        """Write the config and OCI manifest for ``layers`` (base first) and return the image."""
        os_, arch, *rest = platform.split("/")
        plat = Platform(os=os_, architecture=arch, variant=rest[0] if rest else "")
        exec_config: dict = {"Env": list(env), "WorkingDir": working_dir}
        if cmd is not None:
            exec_config["Cmd"] = list(cmd)
        if entrypoint is not None:
            exec_config["Entrypoint"] = list(entrypoint)
        if user:
            exec_config["User"] = user
        if labels:
            exec_config["Labels"] = dict(labels)
        config: dict = {
            "created": CREATED,
            "architecture": arch,
            "os": os_,
            "config": exec_config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": CREATED, "created_by": f"hoist test layer {i}"} for i in range(len(layers))],
        }
        if plat.variant:
            config["variant"] = plat.variant
        config_bytes = _canonical_json(config)
        config_desc = self.add_blob(config_bytes, MT_OCI_CONFIG)
        manifest: dict = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.descriptor.to_json() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        manifest_bytes = _canonical_json(manifest)
        manifest_desc = self.add_blob(manifest_bytes, MT_OCI_MANIFEST, platform=plat)
        image = Image(manifest=manifest_desc, manifest_bytes=manifest_bytes, config=config_desc,
                      config_bytes=config_bytes, layers=tuple(layers))
        self._images.append(image)
        return image

    def add_index(self, images: Sequence[Image], *, annotations: Mapping[str, str] | None = None) -> tuple[Descriptor, bytes]:
        """Write an OCI index over ``images`` (each entry carries its platform)."""
        index: dict = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                       "manifests": [img.manifest.to_json() for img in images]}
        if annotations:
            index["annotations"] = dict(annotations)
        data = _canonical_json(index)
        return self.add_blob(data, MT_OCI_INDEX), data

    def finish(self, target: Image | tuple[Descriptor, bytes], tag: str = "1") -> ImageLayout:
        """Tag ``target`` in ``index.json`` and return the finished layout."""
        if isinstance(target, Image):
            desc, data, images = target.manifest, target.manifest_bytes, (target,)
        else:
            desc, data = target
            listed = {str(d["digest"]) for d in json.loads(data)["manifests"]}
            images = tuple(img for img in self._images if img.digest in listed)
        entry = desc.to_json()
        entry.pop("platform", None)
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [entry]}
        (self.path / "index.json").write_bytes(_canonical_json(index))
        target_desc = Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size)
        return ImageLayout(name=self.name, path=self.path, tag=tag, target=target_desc,
                           target_bytes=data, images=images)


# ---------------------------------------------------------------- standard images


class ImageSet:
    """The standard test images, built on first use under ``root`` and cached for the session.

    Thread-safe: concurrent callers of the same image wait for one build.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._built: dict[str, ImageLayout] = {}
        self._layers: dict[str, tuple[Layer, Path]] = {}

    def build(self, name: str, fn: Callable[[LayoutWriter], ImageLayout]) -> ImageLayout:
        """Build a custom layout once per session: ``fn`` gets a fresh :class:`LayoutWriter` at ``root/name``."""
        with self._lock:
            if name in self._built:
                return self._built[name]
            lock = self._building.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._built:
                    return self._built[name]
            path = self.root / name
            if path.exists():
                shutil.rmtree(path)
            layout = fn(LayoutWriter(path, name))
            with self._lock:
                self._built[name] = layout
            return layout

    def busybox_layer(self, w: LayoutWriter, compression: str = "gzip") -> Layer:
        """The busybox root filesystem layer in ``w``, compressed once per session and then copied."""
        with self._lock:
            cached = self._layers.get(compression)
        if cached is None:
            layer = w.add_layer(busybox_entries(), compression=compression)
            with self._lock:
                self._layers[compression] = (layer, w.path / "blobs" / "sha256" / layer.descriptor.digest.hex)
            return layer
        return w.copy_layer(*cached)

    def busybox(self) -> ImageLayout:
        """One gzip layer: static busybox with applets; Cmd prints ``hello from busybox``."""
        def fn(w: LayoutWriter) -> ImageLayout:
            img = w.add_image([self.busybox_layer(w)], cmd=["/bin/sh", "-c", "echo hello from busybox"])
            return w.finish(img)
        return self.build("busybox", fn)

    def multi(self) -> ImageLayout:
        """An OCI index: linux/amd64 (busybox + /arch.txt) and linux/arm64/v8 (arch.txt + 64 KiB random)."""
        def fn(w: LayoutWriter) -> ImageLayout:
            cmd = ["/bin/sh", "-c", "echo hello from $(cat /arch.txt)"]
            amd = w.add_image([self.busybox_layer(w), w.add_layer([tar_file("arch.txt", "amd64\n")])], cmd=cmd)
            arm = w.add_image(
                [w.add_layer([tar_file("arch.txt", "arm64\n"), tar_random_file("arm64-payload.bin", seed=3000, size=64 * 1024)])],
                cmd=cmd, platform="linux/arm64/v8",
            )
            return w.finish(w.add_index([amd, arm]))
        return self.build("multi", fn)

    def whiteout(self) -> ImageLayout:
        """busybox; then etc/gone.txt and etc/kept.txt; then a whiteout of etc/gone.txt. Cmd prints ``whiteout-ok``."""
        def fn(w: LayoutWriter) -> ImageLayout:
            layers = [
                self.busybox_layer(w),
                w.add_layer([tar_dir("etc"), tar_file("etc/gone.txt", "delete me\n"), tar_file("etc/kept.txt", "keep me\n")]),
                w.add_layer([tar_dir("etc"), tar_whiteout("etc/gone.txt")]),
            ]
            cmd = ["/bin/sh", "-c", "test ! -e /etc/gone.txt && test -e /etc/kept.txt && echo whiteout-ok"]
            return w.finish(w.add_image(layers, cmd=cmd))
        return self.build("whiteout", fn)

    def opaque(self) -> ImageLayout:
        """busybox; then data/old1 and data/sub/old2; then an opaque data/ with data/new. Cmd prints ``opaque-ok``."""
        def fn(w: LayoutWriter) -> ImageLayout:
            layers = [
                self.busybox_layer(w),
                w.add_layer([tar_dir("data"), tar_file("data/old1", "old1\n"), tar_dir("data/sub"),
                             tar_file("data/sub/old2", "old2\n")]),
                w.add_layer([tar_dir("data"), tar_opaque("data"), tar_file("data/new", "new\n")]),
            ]
            cmd = ["/bin/sh", "-c", 'test "$(ls -A /data)" = new && echo opaque-ok']
            return w.finish(w.add_image(layers, cmd=cmd))
        return self.build("opaque", fn)

    def random_layers(self, count: int = 3, mib: float = 1, *, seed: int = 2000,
                      compression: str = "gzip") -> ImageLayout:
        """``count`` layers, each one file ``data/layer-NN.bin`` of ``mib`` MiB seeded random data."""
        size = int(mib * MiB)

        def fn(w: LayoutWriter) -> ImageLayout:
            layers = [
                w.add_layer([tar_dir("data"), tar_random_file(f"data/layer-{i:02d}.bin", seed=seed + i, size=size)],
                            compression=compression, level=1 if compression == "gzip" else None)
                for i in range(count)
            ]
            return w.finish(w.add_image(layers, cmd=["/bin/sh"]))
        return self.build(f"layers-{count}x{size}-s{seed}-{compression}", fn)

    def zstd(self) -> ImageLayout:
        """busybox in one zstd layer plus a zstd layer with /zstd.txt; Cmd prints ``zstd-ok``."""
        def fn(w: LayoutWriter) -> ImageLayout:
            layers = [self.busybox_layer(w, "zstd"),
                      w.add_layer([tar_file("zstd.txt", "zstd-ok\n")], compression="zstd")]
            return w.finish(w.add_image(layers, cmd=["/bin/sh", "-c", "cat /zstd.txt"]))
        return self.build("zstd", fn)

    def uncompressed(self) -> ImageLayout:
        """busybox in one uncompressed tar layer plus /plain.txt; Cmd prints ``uncompressed-ok``."""
        def fn(w: LayoutWriter) -> ImageLayout:
            layers = [self.busybox_layer(w, "none"),
                      w.add_layer([tar_file("plain.txt", "uncompressed-ok\n")], compression="none")]
            return w.finish(w.add_image(layers, cmd=["/bin/sh", "-c", "cat /plain.txt"]))
        return self.build("uncompressed", fn)

    def built(self) -> dict[str, ImageLayout]:
        """The layouts built so far, by name."""
        with self._lock:
            return dict(self._built)


def read_layer_members(path: os.PathLike[str] | str, media_type: str) -> dict[str, tarfile.TarInfo]:
    """Open a layer blob (gzip, zstd or plain tar) and return its members by name (test helper)."""
    raw = Path(path).read_bytes()
    if media_type.endswith("+zstd"):
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif media_type.endswith("gzip"):
        raw = zlib.decompress(raw, 31)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return {m.name: m for m in tf.getmembers()}
