"""OCI image layouts on disk: read a layout directory or archive safely, import archives, export images.

A layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``) is read either from a directory or
from a tar archive (what ``skopeo copy oci-archive:`` and ``ctr images export`` write), which may be
gzip- or zstd-compressed.
``docker save`` archives (``manifest.json`` plus layer tars) are imported too, converted into Docker
schema2 manifests.  Archives are untrusted: member names that climb out (``../``, absolute), links
that lead outside the archive, devices, oversized JSON documents and blobs whose bytes do not match
their digest are all refused, and an import that fails leaves nothing behind in the content store.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import attrs

from hoist.content import CHUNK_SIZE, Descriptor, Digest, as_file
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
)
from hoist.images import documents
from hoist.images import mediatypes as mt
from hoist.images.handlers import Event, children_handler, dispatch, fetch_handler, handlers, ingest_ref
from hoist.images.image import Image, check, walk
from hoist.images.platforms import Matcher
from hoist.remotes import VerifyingReader

#: Largest ``index.json``, ``oci-layout`` or ``manifest.json`` accepted (the manifest limit).
MAX_JSON_SIZE = documents.MAX_MANIFEST_SIZE
#: Largest image config accepted from a ``docker save`` archive.
MAX_CONFIG_SIZE = documents.MAX_CONFIG_SIZE
#: Most members an archive may have (bounds the memory of its table of contents).
MAX_MEMBERS = 100_000
#: Most images one ``index.json`` or ``manifest.json`` may list.
MAX_ENTRIES = 10_000
#: The ``imageLayoutVersion`` this module reads and writes.
LAYOUT_VERSION = "1.0.0"

#: Annotation containerd puts on index entries: the image's full name.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
#: The OCI annotation naming an index entry (a tag, or a full reference).
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"



class Layout(Protocol):
    """Files of one image layout, by their slash-separated path inside it."""

    name: str

    def size(self, path: str) -> int:
        """The size of the regular file ``path``.

        :raises NotFoundError: no such file.
        """

    def open(self, path: str) -> BinaryIO:
        """A raw stream of the file ``path`` (exactly :meth:`size` bytes)."""

    def close(self) -> None: ...


def _clean(name: str, where: str) -> str:
    """``name`` as a relative path inside the layout, refusing any that climbs out."""
    if "\x00" in name:
        raise InvalidArgumentError(f"{where}: member name contains NUL")
    if name.startswith("/"):
        raise InvalidArgumentError(f"{where}: member {name!r}: absolute path")
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise InvalidArgumentError(f"{where}: member {name!r}: path climbs out of the archive")
            parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


class _Slice(io.RawIOBase):
    """``size`` bytes of an open file from ``offset``; reads go through ``os.pread`` (thread-safe, seekable)."""

    def __init__(self, fd: int, offset: int, size: int, *, own: bool = True) -> None:
        super().__init__()
        self._fd, self._start, self._size, self._pos, self._own = fd, offset, size, 0, own

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [view[:want]], self._start + self._pos)
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            if self._own:
                os.close(self._fd)
            super().close()


class DirLayout:
    """A layout directory; every path is opened without following symlinks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.name = f"image layout {path}"
        if not self.root.is_dir():
            raise NotFoundError(f"{self.name}: not a directory")

    def _open_fd(self, path: str) -> int:
        rel = _clean(path, f"{self.name}")
        dirfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            parts = rel.split("/")
            for part in parts[:-1]:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
                os.close(dirfd)
                dirfd = nxt
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:
            raise NotFoundError(f"{self.name}: {rel}: not found") from None
        except OSError as e:
            raise InvalidArgumentError(f"{self.name}: {rel}: {e.strerror} (symbolic links are refused)") from None
        finally:
            os.close(dirfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidArgumentError(f"{self.name}: {rel}: not a regular file")
        return fd

    def size(self, path: str) -> int:
        fd = self._open_fd(path)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def open(self, path: str) -> BinaryIO:
        fd = self._open_fd(path)
        return _Slice(fd, 0, os.fstat(fd).st_size)  # type: ignore[return-value]

    def close(self) -> None:
        return None


@attrs.frozen
class _Member:
    offset: int
    size: int


class TarLayout:
    """A layout inside a tar archive (gzip or zstd compressed ones are first decompressed to a temporary file);
    the table of contents is read once, data on demand.

    Links are followed only to regular members inside the archive; devices, FIFOs, sparse files,
    absolute or climbing names, and more than :data:`MAX_MEMBERS` members are refused.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"archive {path}"
        where = self.name
        self._members: dict[str, _Member] = {}
        links: dict[str, str] = {}
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise InvalidArgumentError(f"{where}: is a directory (use an oci-layout directory reference)") from None
        try:
            self.compression = self._decompress_if_needed(where)
            with os.fdopen(os.dup(self._fd), "rb") as f:
                try:
                    tf = tarfile.open(fileobj=f, mode="r:")
                except tarfile.TarError:
                    if self.compression != "none":
                        raise InvalidArgumentError(f"{where}: its {self.compression} stream does not hold a tar archive") from None
                    raise InvalidArgumentError(f"{where}: not a tar archive (nor a gzip- or zstd-compressed one)") from None
                count = 0
                try:
                    while (m := tf.next()) is not None:
                        count += 1
                        if count > MAX_MEMBERS:
                            raise InvalidArgumentError(f"{where}: more than {MAX_MEMBERS} members")
                        tf.members.clear()  # keep only our own compact table
                        name = _clean(m.name, where)
                        if m.isdir():
                            continue
                        if m.issym() or m.islnk():
                            base = posixpath.dirname(name) if m.issym() else ""
                            if m.linkname.startswith("/"):
                                raise InvalidArgumentError(f"{where}: member {name!r}: link to {m.linkname!r} points outside the archive")
                            links[name] = _clean(posixpath.join(base, m.linkname), where)
                            continue
                        if not m.isreg() or m.issparse():
                            raise InvalidArgumentError(f"{where}: member {name!r}: not a regular file, directory or link")
                        self._members[name] = _Member(m.offset_data, m.size)
                except tarfile.TarError as e:
                    raise InvalidArgumentError(f"{where}: corrupt tar archive: {e}") from None
            for name, target in links.items():
                if target not in self._members:
                    raise InvalidArgumentError(f"{where}: member {name!r}: link target {target!r} is not a file in the archive")
                self._members.setdefault(name, self._members[target])
        except BaseException:
            os.close(self._fd)
            raise

    def _decompress_if_needed(self, where: str) -> str:
        """Replace a gzip- or zstd-compressed archive by its tar stream in an unnamed temporary file.

        The temporary file lives in ``$TMPDIR`` and disappears with the layout; memory stays bounded.
        :returns: the compression found (``none``, ``gzip``, ``zstd``).
        """
        from hoist.archive import Compression, decompressed, detect_compression

        head = os.pread(self._fd, 4, 0)
        if detect_compression(head) is Compression.NONE:
            return Compression.NONE.value
        raw = os.fdopen(os.dup(self._fd), "rb")
        tmp = tempfile.TemporaryFile(prefix="hoist-import-")
        try:
            with raw:
                stream, found = decompressed(raw)
                try:
                    while chunk := stream.read(CHUNK_SIZE):
                        tmp.write(chunk)
                except HoistError:
                    raise
                except OSError as e:
                    if e.errno == errno.ENOSPC:
                        raise FailedPreconditionError(f"{where}: no space left in {tempfile.gettempdir()} to decompress it "
                                                      "(set TMPDIR to a larger file system)") from None
                    raise InvalidArgumentError(f"{where}: corrupt {found.value} stream: {e}") from None
                except Exception as e:  # zlib, isal, zstandard and EOF errors all mean a broken stream
                    raise InvalidArgumentError(f"{where}: corrupt {found.value} stream: {e}") from None
            tmp.flush()
            tmp.seek(0)
            fd = os.dup(tmp.fileno())
        finally:
            tmp.close()
        os.close(self._fd)
        self._fd = fd
        return found.value

    def names(self) -> list[str]:
        """Every regular file (and link to one) in the archive."""
        return sorted(self._members)

    def _member(self, path: str) -> _Member:
        m = self._members.get(_clean(path, f"{self.name}"))
        if m is None:
            raise NotFoundError(f"{self.name}: {path}: not found")
        return m

    def size(self, path: str) -> int:
        return self._member(path).size

    def open(self, path: str) -> BinaryIO:
        m = self._member(path)
        return _Slice(self._fd, m.offset, m.size, own=False)  # type: ignore[return-value]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TarLayout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_layout(path: str | os.PathLike[str]) -> DirLayout | TarLayout:
    """A :class:`DirLayout` for a directory, a :class:`TarLayout` for a file.

    :raises NotFoundError: nothing at ``path``.
    :raises InvalidArgumentError: an unreadable or hostile archive.
    """
    p = Path(path)
    if p.is_dir():
        return DirLayout(p)
    if not p.exists():
        raise NotFoundError(f"image layout {p}: no such file or directory")
    return TarLayout(p)


def read_json(layout: Layout, path: str, limit: int = MAX_JSON_SIZE) -> Any:
    """Parse the JSON file ``path`` of ``layout`` strictly, refusing one larger than ``limit`` before reading it.

    :raises InvalidArgumentError: too large, or not valid JSON.
    """
    size = layout.size(path)
    if size > limit:
        raise InvalidArgumentError(f"{layout.name}: {path}: {size} bytes is larger than the {limit}-byte limit")
    with layout.open(path) as f:
        data = f.read(limit + 1)
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates(path))
    except ValueError as e:
        raise InvalidArgumentError(f"{layout.name}: {path}: not valid JSON: {e}") from None


def _no_duplicates(what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    return hook


def blob_path(digest: Digest | str) -> str:
    """``blobs/<algorithm>/<hex>``."""
    d = Digest.parse(digest)
    return f"blobs/{d.algorithm}/{d.hex}"


def is_oci_layout(layout: Layout) -> bool:
    """Whether ``layout`` has an ``oci-layout`` file and an ``index.json``."""
    try:
        layout.size("oci-layout")
        layout.size("index.json")
    except NotFoundError:
        return False
    return True


def read_index(layout: Layout) -> list[Descriptor]:
    """The entries of ``index.json`` after checking ``oci-layout``'s version.

    :raises NotFoundError: ``oci-layout`` or ``index.json`` is missing.
    :raises InvalidArgumentError: a wrong version, an oversized or malformed index.
    """
    marker = read_json(layout, "oci-layout")
    version = marker.get("imageLayoutVersion") if isinstance(marker, dict) else None
    if version != LAYOUT_VERSION:
        raise InvalidArgumentError(f"{layout.name}: oci-layout: imageLayoutVersion {version!r}, expected {LAYOUT_VERSION!r}")
    index = read_json(layout, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidArgumentError(f"{layout.name}: index.json: expected an object with a manifests array")
    entries = index["manifests"]
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgumentError(f"{layout.name}: index.json: lists {len(entries)} manifests, more than {MAX_ENTRIES}")
    out = []
    for i, e in enumerate(entries):
        try:
            out.append(Descriptor.from_json(e))
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{layout.name}: index.json: manifests[{i}]: {err}") from None
    return out


def entry_name(desc: Descriptor) -> str:
    """The name an index entry gives: containerd's full image name, else the OCI ref name (often a tag), else ``""``."""
    return desc.annotations.get(ANNOTATION_IMAGE_NAME) or desc.annotations.get(ANNOTATION_REF_NAME, "")


def find_entry(layout: Layout, obj: str) -> Descriptor:
    """The index entry ``obj`` names: a tag or full name (by annotation), or ``@digest``/``sha256:…``; ``""`` = the only entry.

    :raises NotFoundError: nothing matches.
    :raises InvalidArgumentError: ``""`` but the index lists several entries.
    """
    entries = read_index(layout)
    if not obj:
        if len(entries) == 1:
            return _bare(entries[0])
        raise InvalidArgumentError(f"{layout.name}: index.json lists {len(entries)} images; name one with :tag or @digest")
    if obj.startswith("@") or obj.split(":", 1)[0] in ("sha256", "sha512"):
        want = Digest.parse(obj.lstrip("@"))
        for e in entries:
            if e.digest == want:
                return _bare(e)
        try:  # a manifest reachable from the index but not listed in it (a platform's manifest)
            size = layout.size(blob_path(want))
        except NotFoundError:
            raise NotFoundError(f"{layout.name}: {want}: not found") from None
        media_type = _sniff_media_type(layout, want, size)
        return Descriptor(media_type=media_type, digest=want, size=size)
    for e in entries:
        if obj in (e.annotations.get(ANNOTATION_REF_NAME), e.annotations.get(ANNOTATION_IMAGE_NAME)):
            return _bare(e)
    raise NotFoundError(f"{layout.name}: {obj}: not found")


def _bare(desc: Descriptor) -> Descriptor:
    return Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size)


def _sniff_media_type(layout: Layout, digest: Digest, size: int) -> str:
    if size > MAX_JSON_SIZE:
        return "application/octet-stream"
    try:
        obj = read_json(layout, blob_path(digest))
    except InvalidArgumentError:
        return "application/octet-stream"
    if not isinstance(obj, dict):
        return "application/octet-stream"
    if isinstance(obj.get("mediaType"), str) and obj["mediaType"]:
        return obj["mediaType"]
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "layers" in obj:
        return mt.OCI_MANIFEST
    return "application/octet-stream"


class LayoutFetcher:
    """A :class:`hoist.remotes.Fetcher` over a layout's blobs: verified streams of exactly ``desc.size`` bytes."""

    def __init__(self, layout: Layout, *, extra: Mapping[Digest, str] | None = None) -> None:
        self.layout = layout
        self._extra = dict(extra or {})

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        """:raises NotFoundError: the layout has no blob ``desc.digest``."""
        path = self._extra.get(desc.digest) or blob_path(desc.digest)
        try:
            size = self.layout.size(path)
        except NotFoundError:
            raise NotFoundError(f"{self.layout.name}: blob {desc.digest}: not found") from None
        if size != desc.size:
            raise FailedPreconditionError(
                f"{self.layout.name}: blob {desc.digest}: size mismatch: descriptor says {desc.size}, archive has {size}")
        return VerifyingReader(self.layout.open(path), desc, name=f"{self.layout.name}: blob {desc.digest}")


# -- import ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Imported:
    """What :func:`import_archive` recorded: the image records, and how many blobs were new or already present."""

    images: tuple[Image, ...]
    blobs_written: int
    blobs_present: int
    format: str


def _hash_member(layout: Layout, path: str) -> tuple[Digest, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with layout.open(path) as f:
        while n := f.readinto(view):
            h.update(view[:n])
            size += n
    return Digest("sha256", h.hexdigest()), size


def _docker_manifest(layout: Layout, entry: Any, i: int) -> tuple[Descriptor, bytes, dict[Digest, str], list[str]]:
    """Convert one ``manifest.json`` entry of a ``docker save`` archive: (manifest desc, bytes, digest→member, tags)."""
    where = f"{layout.name}: manifest.json[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
        raise InvalidArgumentError(f"{where}: expected Config (a string) and Layers (an array)")
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgumentError(f"{where}: RepoTags must be an array of strings")
    members: dict[Digest, str] = {}
    cpath = _clean(entry["Config"], where)
    csize = layout.size(cpath)
    if csize > MAX_CONFIG_SIZE:
        raise InvalidArgumentError(f"{where}: config {cpath}: {csize} bytes is larger than the {MAX_CONFIG_SIZE}-byte limit")
    cdigest, _ = _hash_member(layout, cpath)
    config = read_json(layout, cpath, MAX_CONFIG_SIZE)
    diff_ids = ((config.get("rootfs") or {}).get("diff_ids") or []) if isinstance(config, dict) else []
    if len(entry["Layers"]) != len(diff_ids):
        raise InvalidArgumentError(f"{where}: {len(entry['Layers'])} layers but the config lists {len(diff_ids)} diff_ids")
    members[cdigest] = cpath
    layers = []
    for n, (lp, diff_id) in enumerate(zip(entry["Layers"], diff_ids)):
        if not isinstance(lp, str):
            raise InvalidArgumentError(f"{where}: Layers[{n}]: expected a string")
        path = _clean(lp, where)
        d, size = _hash_member(layout, path)
        media_type = mt.DOCKER_SCHEMA2_LAYER
        if str(d) != diff_id:
            # An uncompressed layer's digest is its diff ID; a compressed one (newer docker) is named by it.
            with layout.open(path) as f:
                magic = f.read(4)
            if magic[:2] == b"\x1f\x8b":
                media_type = mt.DOCKER_SCHEMA2_LAYER_GZIP
            elif magic == b"\x28\xb5\x2f\xfd":
                media_type = mt.DOCKER_SCHEMA2_LAYER_ZSTD
            else:
                raise InvalidArgumentError(f"{where}: layer {path}: digest {d} does not match the config's diff_id {diff_id}")
        members[d] = path
        layers.append({"mediaType": media_type, "size": size, "digest": str(d)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_SCHEMA2_MANIFEST,
        "config": {"mediaType": mt.DOCKER_SCHEMA2_CONFIG, "size": csize, "digest": str(cdigest)},
        "layers": layers,
    }
    data = json.dumps(manifest, indent=3).encode()
    desc = Descriptor(media_type=mt.DOCKER_SCHEMA2_MANIFEST, digest=Digest.from_bytes(data), size=len(data))
    return desc, data, members, tags


def _normalized(name: str) -> str:
    from hoist import reference

    return str(reference.normalize(name))


def _oci_name(desc: Descriptor, name: str | None, base_name: str | None, where: str) -> str:
    if name:
        return name
    full = desc.annotations.get(ANNOTATION_IMAGE_NAME, "")
    if full:
        return full
    ref_name = desc.annotations.get(ANNOTATION_REF_NAME, "")
    if base_name:
        if not ref_name:
            return f"{base_name}@{desc.digest}"
        return f"{base_name}:{ref_name}" if "/" not in ref_name and ":" not in ref_name else ref_name
    if ref_name and ("/" in ref_name or ":" in ref_name):
        try:
            return _normalized(ref_name)
        except InvalidArgumentError:
            return ref_name
    shown = f"the tag {ref_name!r}" if ref_name else "no name"
    raise InvalidArgumentError(f"{where}: image {desc.digest.short()} has {shown}; name it with --base-name or --name")


def import_archive(
    content: Any,
    images: Any,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    base_name: str | None = None,
    matcher: Matcher | None = None,
    labels: Mapping[str, str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    concurrency: int = 4,
) -> Imported:
    """Import an OCI layout archive (or a ``docker save`` archive) into ``content`` and name its images in ``images``.

    Every blob is verified against its digest as it is written.  If anything fails, the blobs this
    call added are deleted again and no image is named.

    :param content: the content store.
    :param images: an image store (``metadata.images(namespace)``).
    :param name: the name for the archive's only image (overrides the archive's names).
    :param base_name: ``BASE`` for entries named only by a tag: ``BASE:tag``.
    :param matcher: platforms to import from indexes (default: this machine's).
    :raises InvalidArgumentError: a malformed or hostile archive, or an image without a name.
    :raises FailedPreconditionError: a blob whose bytes do not match its digest or size.
    :raises NotFoundError: a blob the image needs is not in the archive.
    """
    matcher = matcher or Matcher.default()
    events = on_event or (lambda _e: None)
    written: list[Descriptor] = []
    lock = threading.Lock()

    def record(ev: Event) -> None:
        if ev.state == "done":
            with lock:
                written.append(Descriptor(media_type=ev.media_type or "application/octet-stream", digest=ev.digest, size=ev.size))
        events(ev)

    layout = TarLayout(path)
    present_before = 0
    visited: list[Descriptor] = []
    try:
        targets: list[tuple[str, Descriptor]] = []
        extra: dict[Digest, str] = {}
        docker_docs: dict[Digest, bytes] = {}
        if is_oci_layout(layout):
            fmt = "oci"
            entries = read_index(layout)
            if name and len(entries) != 1:
                raise InvalidArgumentError(f"{layout.name}: --name needs an archive of one image; it lists {len(entries)}")
            for e in entries:
                if not (mt.is_index(e.media_type) or mt.is_manifest(e.media_type)):
                    raise InvalidArgumentError(f"{layout.name}: index.json lists {e.digest} of type {e.media_type!r}, not a manifest or index")
                targets.append((_oci_name(e, name, base_name, layout.name), _bare(e)))
        else:
            try:
                manifest_json = read_json(layout, "manifest.json")
            except NotFoundError:
                raise InvalidArgumentError(
                    f"{layout.name}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)") from None
            fmt = "docker"
            if not isinstance(manifest_json, list) or len(manifest_json) > MAX_ENTRIES:
                raise InvalidArgumentError(f"{layout.name}: manifest.json: expected an array of at most {MAX_ENTRIES} images")
            if name and len(manifest_json) != 1:
                raise InvalidArgumentError(f"{layout.name}: --name needs an archive of one image; it lists {len(manifest_json)}")
            for i, entry in enumerate(manifest_json):
                desc, data, members, tags = _docker_manifest(layout, entry, i)
                extra.update(members)
                docker_docs[desc.digest] = data
                names = [name] if name else [_normalized(t) for t in tags]
                if not names:
                    if not base_name:
                        raise InvalidArgumentError(f"{layout.name}: manifest.json[{i}]: image has no RepoTags; name it with --base-name or --name")
                    names = [f"{base_name}@{desc.digest}"]
                targets += [(n, desc) for n in names]
        fetcher = _ArchiveFetcher(layout, extra, docker_docs)
        for _, desc in targets:
            visited += dispatch(handlers(fetch_handler(content, fetcher, on_event=record), children_handler(content, matcher)),
                                [desc], limit=concurrency)
        for n, desc in targets:
            result = check(content, desc, matcher)
            if not result.available:
                missing = ", ".join(documents.describe(d) for d in result.missing[:3])
                raise NotFoundError(f"{layout.name}: image {n}: not in the archive: {missing}")
            if mt.is_index(desc.media_type) and not any(mt.is_manifest(node.desc.media_type) for node in walk(content, desc, matcher)):
                raise NotFoundError(f"{layout.name}: image {n}: no manifest for {matcher.describe()}")
        recorded = []
        for n, desc in targets:
            img = Image(name=n, target=desc, labels=dict(labels or {}))
            try:
                recorded.append(images.create(img))
            except AlreadyExistsError:
                recorded.append(images.update(img, "target", *(f"labels.{k}" for k in img.labels)))
        present_before = len({d.digest for d in visited}) - len({d.digest for d in written})
        return Imported(images=tuple(recorded), blobs_written=len(written), blobs_present=max(0, present_before), format=fmt)
    except BaseException:
        _roll_back(content, written, visited)
        raise
    finally:
        layout.close()


class _ArchiveFetcher(LayoutFetcher):
    def __init__(self, layout: Layout, extra: Mapping[Digest, str], docs: Mapping[Digest, bytes]) -> None:
        super().__init__(layout, extra=extra)
        self._docs = docs

    def fetch(self, desc: Descriptor) -> Any:
        data = self._docs.get(desc.digest)
        if data is not None:
            return VerifyingReader(io.BytesIO(data), desc)
        return super().fetch(desc)


def _roll_back(content: Any, written: Iterable[Descriptor], visited: Iterable[Descriptor]) -> None:
    for d in written:
        try:
            content.delete(d.digest)
        except HoistError:
            pass
    for d in visited:
        try:
            content.abort(ingest_ref(d))
        except HoistError:
            pass


# -- export ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Exported:
    """What :func:`export_archive` wrote: the archive's index entries and the number of blobs and bytes."""

    entries: tuple[Descriptor, ...]
    blobs: int
    size: int


def _tag_of(name: str) -> str:
    from hoist import reference

    try:
        parsed = reference.parse(name)
    except InvalidArgumentError:
        return ""
    return parsed.tag


def export_archive(
    content: Any,
    images: Sequence[Image],
    path: str | os.PathLike[str],
    *,
    matcher: Matcher | None = None,
) -> Exported:
    """Write ``images`` and every blob they need (for ``matcher``'s platforms; all by default) as an OCI layout tar.

    Index entries carry ``io.containerd.image.name`` (the full name) and
    ``org.opencontainers.image.ref.name`` (its tag), as ``ctr images export`` writes them.  The file
    appears atomically: a failed export leaves nothing at ``path``.

    :raises NotFoundError: a blob an image needs is missing from the content store.
    """
    matcher = matcher or Matcher.all()
    entries: list[Descriptor] = []
    blobs: dict[Digest, Descriptor] = {}
    for img in images:
        for node in walk(content, img.target, matcher):
            if not node.present:
                if mt.is_non_distributable(node.desc.media_type):
                    continue
                raise NotFoundError(f"image {img.name}: {documents.describe(node.desc)}: not in the content store")
            blobs.setdefault(node.desc.digest, node.desc)
        ann = {ANNOTATION_IMAGE_NAME: img.name}
        tag = _tag_of(img.name)
        if tag:
            ann[ANNOTATION_REF_NAME] = tag
        entries.append(Descriptor(media_type=img.target.media_type, digest=img.target.digest, size=img.target.size,
                                  annotations=ann))
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [e.to_json() for e in entries]}
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent or ".")
    total = 0
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:", format=tarfile.PAX_FORMAT, copybufsize=CHUNK_SIZE) as tf:
            _add_dir(tf, "blobs")
            for alg in sorted({d.algorithm for d in blobs}):
                _add_dir(tf, f"blobs/{alg}")
            for digest, desc in blobs.items():
                ra = content.reader_at(desc)
                try:
                    src = as_file(ra)
                    info = _file_info(blob_path(digest), ra.size)
                    tf.addfile(info, src)
                    total += ra.size
                finally:
                    ra.close()
            _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
            _add_bytes(tf, "index.json", json.dumps(index).encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return Exported(entries=tuple(entries), blobs=len(blobs), size=total)


def _file_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    return info


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tf.addfile(info)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_file_info(name, len(data)), io.BytesIO(data))


__all__ = [
    "MAX_JSON_SIZE",
    "MAX_MEMBERS",
    "LAYOUT_VERSION",
    "ANNOTATION_IMAGE_NAME",
    "ANNOTATION_REF_NAME",
    "Layout",
    "DirLayout",
    "TarLayout",
    "open_layout",
    "read_json",
    "read_index",
    "blob_path",
    "is_oci_layout",
    "entry_name",
    "find_entry",
    "LayoutFetcher",
    "Imported",
    "import_archive",
    "Exported",
    "export_archive",
]
