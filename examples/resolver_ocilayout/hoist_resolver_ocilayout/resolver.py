"""Resolving ``oci-layout:///dir:tag`` and ``oci-archive:/file.tar:tag`` against OCI image layouts on disk.

Reference forms (the path is always absolute; the object is optional when the layout holds one image):

- ``oci-layout:///path/to/dir:tag``, ``oci-layout:///path/to/dir@sha256:…``
- ``oci-archive:/path/file.tar:tag``, ``oci-archive:///path/file.tar@sha256:…``

The tag is matched against the ``org.opencontainers.image.ref.name`` (or containerd's
``io.containerd.image.name``) annotation of ``index.json``'s entries.  Reading is done by
:mod:`hoist.ocilayout`, which refuses symlinks out of the layout, oversized JSON and blobs whose bytes
do not match their digest.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import attrs

from hoist.errors import InvalidArgumentError, UnsupportedError
from hoist.ocilayout import LayoutFetcher, TarLayout, find_entry, open_layout
from hoist.remotes import Resolved

SCHEMES = ("oci-layout:", "oci-archive:")


@attrs.frozen(kw_only=True)
class OCILayoutConfig:
    """``[plugins."hoist.resolver.v1.ocilayout"]``."""

    #: Directories layouts and archives may be read from; empty allows any absolute path.
    allowed_roots: tuple[str, ...] = ()
    #: Blobs copied at once by ``dist fetch``/``dist pull``.
    max_concurrent_downloads: int = 4


@attrs.frozen
class LayoutRef:
    """A parsed reference: the scheme, the absolute path, and the object (``tag``, ``@digest`` or ``""``)."""

    scheme: str
    path: Path
    object: str

    def __str__(self) -> str:
        sep = "" if not self.object or self.object.startswith("@") else ":"
        return f"{self.scheme}://{self.path}{sep}{self.object}"


def parse(ref: str) -> LayoutRef:
    """Split an ``oci-layout:`` or ``oci-archive:`` reference.

    :raises InvalidArgumentError: another scheme, a relative path, an empty tag.
    """
    scheme, sep, rest = ref.partition(":")
    if not sep or f"{scheme}:" not in SCHEMES:
        raise InvalidArgumentError(f"invalid reference {ref!r}: expected oci-layout:///DIR[:TAG|@DIGEST] or oci-archive:/FILE[:TAG|@DIGEST]")
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest.startswith("/") or "\x00" in rest:
        raise InvalidArgumentError(f"invalid reference {ref!r}: the path must be absolute")
    head, slash, last = rest.rpartition("/")
    obj = ""
    if "@" in last:
        last, _, digest = last.partition("@")
        obj = "@" + digest
        from hoist.content import Digest

        Digest.parse(digest)
    elif ":" in last:
        last, _, obj = last.partition(":")
        if not obj:
            raise InvalidArgumentError(f"invalid reference {ref!r}: empty tag after ':'")
    path = Path(os.path.normpath(head + slash + last))
    if str(path) == "/":
        raise InvalidArgumentError(f"invalid reference {ref!r}: no layout path")
    return LayoutRef(scheme, path, obj)


class OCILayoutResolver:
    """A :class:`hoist.remotes.Resolver` over layouts on disk; keeps each opened archive until :meth:`close`."""

    def __init__(self, config: OCILayoutConfig | None = None) -> None:
        self.config = config or OCILayoutConfig()
        self.max_concurrent_downloads = self.config.max_concurrent_downloads
        self._open: dict[Path, object] = {}
        self._lock = threading.Lock()

    def _layout(self, parsed: LayoutRef):  # noqa: ANN202
        roots = [Path(os.path.realpath(r)) for r in self.config.allowed_roots]
        real = Path(os.path.realpath(parsed.path))
        if roots and not any(real == r or r in real.parents for r in roots):
            raise InvalidArgumentError(f"{parsed}: {parsed.path} is outside the allowed roots ({', '.join(map(str, roots))})")
        with self._lock:
            layout = self._open.get(real)
            if layout is None:
                layout = open_layout(real)
                if parsed.scheme == "oci-layout" and isinstance(layout, TarLayout):
                    layout.close()
                    raise InvalidArgumentError(f"{parsed}: {parsed.path} is a file; use oci-archive: for archives")
                if parsed.scheme == "oci-archive" and not isinstance(layout, TarLayout):
                    raise InvalidArgumentError(f"{parsed}: {parsed.path} is a directory; use oci-layout: for layouts")
                self._open[real] = layout
            return layout

    def resolve(self, ref: str) -> Resolved:
        """The entry of the layout's ``index.json`` that ``ref`` names.

        :raises InvalidArgumentError: a malformed reference (nothing is opened).
        :raises NotFoundError: no such layout, tag or digest.
        """
        parsed = parse(ref)
        layout = self._layout(parsed)
        desc = find_entry(layout, parsed.object)
        return Resolved(name=str(parsed), descriptor=desc, fetcher=LayoutFetcher(layout))

    def fetcher(self, ref: str) -> LayoutFetcher:
        """A fetcher for every blob of the layout ``ref`` names (its object is ignored)."""
        return LayoutFetcher(self._layout(parse(ref)))

    def pusher(self, ref: str):  # noqa: ANN201
        raise UnsupportedError(f"{ref}: pushing to an OCI layout is not supported (use dist export)")

    def close(self) -> None:
        with self._lock:
            for layout in self._open.values():
                layout.close()  # type: ignore[attr-defined]
            self._open.clear()
