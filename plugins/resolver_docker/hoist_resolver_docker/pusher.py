"""The registry pusher: existence checks, cross-repository mounts, monolithic and chunked (resumable) uploads.

``DockerPusher`` pushes into one repository over the resolver's pooled clients, hosts and token cache.
A blob is first checked with ``HEAD``; when its content labels name a source repository on the same
registry it is mounted (``POST …/blobs/uploads/?mount=<digest>&from=<repo>``); otherwise it is uploaded
monolithically (``POST`` then ``PUT ?digest=``) or, above ``chunked_upload_threshold`` or when the
registry refuses a large body (413), in ``PATCH`` chunks with ``Content-Range`` that follow the
``Location`` and ``Range`` the registry returns.  A chunk cut off mid-way is resumed from the offset the
registry reports for the session (``GET`` on the upload URL); a session the registry no longer accepts
is restarted.  With an upload state directory (the plugin's root), chunked sessions are remembered
across runs (:mod:`hoist_resolver_docker.uploads`): the next push of the blob asks the registry where
the session stands and continues from there.  Manifests go up last with their exact bytes and media
type, by tag or by digest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import attrs
import httpx

from hoist import reference
from hoist.content import Descriptor, Digest, ReaderAt
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from hoist.images import mediatypes as mt
from hoist_resolver_docker import transport as _transport
from hoist_resolver_docker.hosts import RegistryHost
from hoist_resolver_docker.transport import Body, close_quietly, error_for_status, parse_error_body
from hoist_resolver_docker.uploads import UploadSessions

log = logging.getLogger("hoist.resolver.v1.docker")

#: Content label naming the repositories of a registry that hold a blob (containerd's key prefix;
#: the full key ends with the registry host, the value is a comma-separated list of repositories).
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
#: Bytes per ``PATCH`` of a chunked upload (``chunk_size`` in the plugin's config).
DEFAULT_CHUNK_SIZE = 16 << 20
#: Blobs larger than this are uploaded in chunks (``chunked_upload_threshold`` in the plugin's config).
DEFAULT_CHUNKED_UPLOAD_THRESHOLD = 128 << 20
#: Most source repositories tried for a mount.
MAX_MOUNT_SOURCES = 3
#: Bytes read from the local blob per request body piece.
_BLOCK = 4 << 20
_SCHEME = "docker://"
_OCTET = "application/octet-stream"
_MANIFEST_ACCEPT = (mt.OCI_INDEX, mt.DOCKER_SCHEMA2_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_SCHEMA2_MANIFEST)

#: What happened to an object: already on the registry, mounted from another repository, or uploaded.
EXISTS, MOUNTED, COMMITTED = "exists", "mounted", "committed"

ProgressFunc = Callable[[int], None]
StateFunc = Callable[[str, int], None]


def distribution_source_key(registry: str) -> str:
    """The content label key listing ``registry``'s repositories that hold a blob."""
    return DISTRIBUTION_SOURCE_PREFIX + registry


def distribution_sources(labels: Mapping[str, str], registry: str) -> tuple[str, ...]:
    """The repositories of ``registry`` named by a blob's labels (or descriptor annotations)."""
    value = labels.get(distribution_source_key(registry), "")
    return tuple(dict.fromkeys(r.strip() for r in value.split(",") if r.strip()))


def append_distribution_source(labels: Mapping[str, str], registry: str, repository: str) -> str:
    """The label value once ``repository`` is added (kept first-seen order, no duplicates)."""
    return ",".join(dict.fromkeys((*distribution_sources(labels, registry), repository)))


def _parse_range(value: str | None) -> int | None:
    """The next offset from an upload's ``Range: 0-<last>`` (``None`` if absent or unreadable)."""
    if not value:
        return None
    text = value.strip().removeprefix("bytes=").strip()
    start, sep, end = text.partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        return None
    # distribution reports an empty session as "0-0" too; 0 is the safe reading (a wrong guess is
    # answered 416 and the session is restarted).
    last = int(end)
    return 0 if last == 0 else last + 1


def _describe(desc: Descriptor) -> str:
    k = mt.kind(desc.media_type)
    return f"{'blob' if k in ('unknown', 'layer') else k} {desc.digest}"


class _UploadLost(HoistError):
    """The registry no longer knows (or accepts) an upload session; start a new one."""


class DockerPusher:
    """Pushes objects to one repository of a Docker Registry v2 / OCI registry; safe to share between threads.

    :param resolver: the :class:`~hoist_resolver_docker.resolver.DockerResolver` whose session (pooled
        clients, hosts, credentials, token cache, retry policy) requests go through.
    :param ref: the repository (``host[:port]/path``, a tag or digest is ignored; ``docker://`` allowed).
    :param chunk_size: bytes per ``PATCH`` (default: the config's ``chunk_size``, else 16 MiB).
    :param chunked_upload_threshold: blobs larger than this are uploaded in chunks (default: the config's
        ``chunked_upload_threshold``, else 128 MiB).
    :param upload_state_dir: where chunked upload sessions are remembered so a later run resumes them
        (default: the resolver's ``upload_state_dir``, which the plugin sets to
        ``<root>/hoist.resolver.v1.docker/uploads``; none: sessions are not remembered).
    :raises InvalidArgumentError: a malformed reference or a reference without a registry host.
    :raises UnsupportedError: no endpoint of the registry has the ``push`` capability.
    """

    def __init__(self, resolver: Any, ref: str | reference.Reference, *, chunk_size: int | None = None,
                 chunked_upload_threshold: int | None = None,
                 upload_state_dir: str | os.PathLike[str] | None = None) -> None:
        parsed = ref if isinstance(ref, reference.Reference) else _parse_ref(ref)
        self._resolver = resolver
        self._ref = parsed
        self._session = resolver.session
        self._session.use_credentials_for(parsed.domain)
        cfg = getattr(resolver, "config", None)
        self.chunk_size = chunk_size or getattr(cfg, "chunk_size", None) or DEFAULT_CHUNK_SIZE
        threshold = chunked_upload_threshold if chunked_upload_threshold is not None else \
            getattr(cfg, "chunked_upload_threshold", None)
        self.chunked_upload_threshold = DEFAULT_CHUNKED_UPLOAD_THRESHOLD if threshold is None else threshold
        if self.chunk_size < 1:
            raise InvalidArgumentError(f"chunk size must be positive, got {self.chunk_size}")
        hosts = self._session.hosts(parsed.domain).for_capability("push")
        if not hosts:
            raise UnsupportedError(f"{parsed.locator}: no endpoint of {parsed.domain} has the 'push' capability")
        self._host: RegistryHost = hosts[0]
        self._scopes = (f"repository:{parsed.path}:pull,push",)
        state_dir = upload_state_dir if upload_state_dir is not None else getattr(resolver, "upload_state_dir", None)
        self.sessions: UploadSessions | None = UploadSessions(state_dir) if state_dir else None

    @property
    def locator(self) -> str:
        """``host[:port]/path`` of the repository pushed to."""
        return self._ref.locator

    @property
    def registry(self) -> str:
        """``host[:port]`` of the registry (the key of its distribution-source label)."""
        return self._ref.domain

    @property
    def repository(self) -> str:
        """The repository's path on the registry."""
        return self._ref.path

    @property
    def max_concurrent_uploads(self) -> int:
        return int(getattr(getattr(self._resolver, "config", None), "max_concurrent_uploads", 3))

    def _name(self, desc: Descriptor) -> str:
        return f"{self._ref.locator}@{desc.digest}"

    def _url(self, *parts: str) -> str:
        return "/".join((self._host.base_url, self._ref.path, *parts))

    # -- requests ------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, what: str, headers: Mapping[str, str] | None = None,
              body: Body | None = None, length: int | None = None, ok: tuple[int, ...] = (200,),
              scopes: tuple[str, ...] | None = None, retry: bool = True,
              attempts: int | None = None) -> httpx.Response:
        """A request to the push endpoint through the session (auth, redirects, retries; see its ``open``).

        With ``retry=False`` a connection error or 5xx is raised at once (the caller recovers itself).
        """
        return self._session.open(self._host, method, url, registry=self._ref.domain, scopes=scopes or self._scopes,
                                  what=what, headers=headers, ok=ok, body=body, length=length, retry=retry,
                                  attempts=attempts, error=_error)

    def _head(self, url: str, what: str, accept: str, attempts: int | None = None) -> httpx.Response | None:
        """A HEAD through the session (redirects, auth, retries); ``None`` when the registry says 404."""
        try:
            response = self._send("HEAD", url, what=what, headers={"Accept": accept}, attempts=attempts)
        except NotFoundError:
            return None
        close_quietly(response)
        return response

    # -- existence -------------------------------------------------------------------------------------

    def exists(self, desc: Descriptor, tag: str = "") -> bool:
        """Whether the repository already has ``desc`` (a manifest: by digest, or as ``tag`` when given).

        A tag counts only when it points at ``desc.digest``.
        """
        name = self._name(desc)
        if mt.kind(desc.media_type) not in ("manifest", "index"):
            response = self._head(self._url("blobs", str(desc.digest)), name, "*/*")
            if response is None:
                return False
            length = response.headers.get("content-length", "")
            return not length.isdigit() or int(length) == desc.size
        accept = ", ".join(dict.fromkeys((desc.media_type, *_MANIFEST_ACCEPT)))
        target = tag or str(desc.digest)
        try:
            # distribution answers HEAD /manifests/<digest of a non-manifest> with 500: ask once.
            response = self._head(self._url("manifests", target), f"{self._ref.locator}:{target}" if tag else name,
                                  accept, attempts=1)
        except UnavailableError:
            return False
        if response is None:
            return False
        header = response.headers.get("docker-content-digest", "").strip()
        if tag:
            return header == str(desc.digest)
        return not header or header == str(desc.digest)

    # -- the Pusher protocol ---------------------------------------------------------------------------

    def push(self, desc: Descriptor) -> DockerPushWriter:
        """A writer for ``desc``: write its bytes, then ``commit``.

        A manifest or index goes up by digest on commit; to name it by a tag use :meth:`push_manifest`.

        :raises AlreadyExistsError: the repository already has it, or it was mounted from a source
            repository named in ``desc.annotations`` (the distribution-source key of this registry).
        """
        if self.exists(desc):
            raise AlreadyExistsError(f"{_describe(desc)}: already exists in {self._ref.locator}")
        manifest = mt.kind(desc.media_type) in ("manifest", "index")
        location = None
        if not manifest:
            sources = distribution_sources(desc.annotations, self._ref.domain)
            mounted, location = self._try_mounts(desc, sources)
            if mounted:
                raise AlreadyExistsError(f"{_describe(desc)}: mounted into {self._ref.locator} from {mounted}")
        return DockerPushWriter(self, desc, manifest=manifest, location=location)

    # -- blobs -----------------------------------------------------------------------------------------

    def push_blob(self, desc: Descriptor, reader: ReaderAt, *, sources: Iterable[str] = (),
                  on_state: StateFunc | None = None, on_progress: ProgressFunc | None = None,
                  check_exists: bool = True) -> str:
        """Make the repository hold blob ``desc``, reading it from ``reader`` when it must be uploaded.

        :param sources: repositories of this registry known to hold it (tried for a mount, in order);
            the distribution-source annotation of ``desc`` is used too.
        :param on_state: ``on_state("uploading", offset)`` when bytes start to move (again after a restart).
        :param on_progress: called with the offset reached as bytes go out.
        :param check_exists: ``HEAD`` first (skip when the caller just did).
        :returns: ``"exists"``, ``"mounted"`` or ``"committed"``.
        :raises FailedPreconditionError: the registry disagrees with the digest or size (its error text included).
        :raises UnavailableError: the upload stopped making progress after retries.
        """
        if check_exists and self.exists(desc):
            return EXISTS
        wanted = tuple(dict.fromkeys((*sources, *distribution_sources(desc.annotations, self._ref.domain))))
        mounted, location = self._try_mounts(desc, wanted)
        if mounted:
            self._drop_remembered(desc)
            return MOUNTED
        upload = _BlobUpload(self, desc, reader, on_state or (lambda _s, _o: None), on_progress or (lambda _o: None))
        upload.run(location)
        return COMMITTED

    def _drop_remembered(self, desc: Descriptor) -> None:
        """Forget (and cancel, best effort) a remembered session of a blob that no longer needs it."""
        if self.sessions is None:
            return
        saved = self.sessions.get(self._ref.domain, self._ref.path, str(desc.digest))
        if saved is not None:
            self.sessions.forget(self._ref.domain, self._ref.path, str(desc.digest))
            self.cancel_upload(saved.location)

    def _try_mounts(self, desc: Descriptor, sources: Iterable[str]) -> tuple[str, str | None]:
        """Mount from the first source that has the blob: ``(source, None)``; else ``("", upload URL or None)``."""
        location: str | None = None
        for source in [s for s in sources if s != self._ref.path][:MAX_MOUNT_SOURCES]:
            url = str(httpx.URL(self._url("blobs", "uploads", "")).copy_merge_params(
                {"mount": str(desc.digest), "from": source}))
            scopes = (*self._scopes, f"repository:{source}:pull")
            try:
                response = self._send("POST", url, what=f"{self._name(desc)}: mount from {source}",
                                      ok=(201, 202), scopes=scopes)
            except (NotFoundError, InvalidArgumentError, FailedPreconditionError, UnsupportedError) as e:
                log.debug("%s: mount from %s refused: %s", self._name(desc), source, e)
                continue
            close_quietly(response)
            if response.status_code == 201:
                log.info("%s: mounted from %s", self._name(desc), source)
                return source, None
            if location is None:
                location = self._location(response, url)
        return "", location

    def _location(self, response: httpx.Response, request_url: str) -> str:
        value = response.headers.get("location")
        if not value:
            raise FailedPreconditionError(f"{self._ref.locator}: registry started an upload without a Location")
        try:
            location = urljoin(str(response.url) or request_url, value)
            httpx.URL(location)
        except (httpx.InvalidURL, ValueError) as e:
            raise FailedPreconditionError(f"{self._ref.locator}: registry gave an unusable upload Location "
                                          f"{value!r}: {e}") from e
        return location

    def start_upload(self, what: str) -> tuple[str, int]:
        """Open an upload session: its URL and the minimum chunk length the registry asks for (0 if none)."""
        url = self._url("blobs", "uploads", "")
        response = self._send("POST", url, what=what, ok=(202,))
        close_quietly(response)
        min_chunk = response.headers.get("oci-chunk-min-length", "")
        return self._location(response, url), int(min_chunk) if min_chunk.isdigit() else 0

    def upload_status(self, location: str, what: str) -> tuple[str, int]:
        """Where an upload session stands: ``(URL to continue at, next offset)``.

        :raises _UploadLost: the registry no longer knows or accepts the session.
        """
        try:
            response = self._send("GET", location, what=what, ok=(204, 200))
        except (NotFoundError, InvalidArgumentError, FailedPreconditionError) as e:
            raise _UploadLost(str(e)) from e
        close_quietly(response)
        offset = _parse_range(response.headers.get("range"))
        if offset is None:
            raise _UploadLost(f"{what}: registry reported no Range for the upload session")
        return self._location(response, location) if response.headers.get("location") else location, offset

    def cancel_upload(self, location: str) -> None:
        """Best effort: tell the registry to drop an upload session."""
        try:
            close_quietly(self._send("DELETE", location, what=f"{self._ref.locator}: cancel upload",
                                     ok=(204, 200, 202, 404), retry=False))
        except HoistError as e:
            log.debug("%s: cancelling upload %s: %s", self._ref.locator, location, e)

    # -- manifests -------------------------------------------------------------------------------------

    def push_manifest(self, desc: Descriptor, data: bytes, *, tag: str = "", check_exists: bool = True) -> str:
        """Put the manifest or index ``desc`` (exactly ``data``) in the repository, named by ``tag`` or its digest.

        :returns: ``"exists"`` (already there under that name and digest) or ``"committed"``.
        :raises InvalidArgumentError: ``data`` is not ``desc``'s bytes.
        :raises FailedPreconditionError: the registry stored it under another digest.
        """
        if len(data) != desc.size or Digest.from_bytes(data, desc.digest.algorithm) != desc.digest:
            raise InvalidArgumentError(f"{_describe(desc)}: the bytes to push do not match the descriptor")
        if check_exists and self.exists(desc, tag):
            return EXISTS
        target = tag or str(desc.digest)
        what = f"{self._ref.locator}:{tag}" if tag else self._name(desc)
        response = self._send("PUT", self._url("manifests", target), what=what, body=data, length=len(data),
                              headers={"Content-Type": desc.media_type}, ok=(201, 200, 202))
        close_quietly(response)
        header = response.headers.get("docker-content-digest", "").strip()
        if header and header != str(desc.digest):
            raise FailedPreconditionError(f"{what}: registry stored the manifest as {header}, expected {desc.digest}")
        return COMMITTED


def _parse_ref(ref: str) -> reference.Reference:
    parsed = reference.parse(ref[len(_SCHEME):] if ref.startswith(_SCHEME) else ref)
    if not parsed.domain:
        raise InvalidArgumentError(
            f"invalid reference {ref!r}: no registry host; normalize it first (e.g. {reference.normalize(parsed)})")
    return parsed


def _error(response: httpx.Response, what: str, body: bytes) -> HoistError:
    if response.status_code == 413:
        info = parse_error_body(body) if body else None
        detail = f" ({info.message})" if info is not None and info.message else ""
        return FailedPreconditionError(f"{what}: registry refused the upload as too large (HTTP 413){detail}")
    if response.status_code == 416:
        return _UploadLost(f"{what}: registry refused the byte range (HTTP 416)")
    return error_for_status(response, what, body)


class _BlobUpload:
    """One blob's upload: monolithic or chunked, resumed from the registry's offset after a cut."""

    def __init__(self, pusher: DockerPusher, desc: Descriptor, reader: ReaderAt, on_state: StateFunc,
                 on_progress: ProgressFunc) -> None:
        self.p = pusher
        self.desc = desc
        self.reader = reader
        self.on_state = on_state
        self.on_progress = on_progress
        self.name = pusher._name(desc)
        self.chunked = desc.size > pusher.chunked_upload_threshold
        self.chunk_size = pusher.chunk_size
        self.min_chunk = 0
        self.started: float | None = None

    def body(self, start: int, length: int, stopped: list[Exception] | None = None) -> Callable[[], Iterator[bytes]]:
        """The request body for bytes ``start`` to ``start + length`` of the blob, reporting progress.

        With ``stopped``, an exception from the progress callback (the push is being cancelled) is kept
        there and the body is still sent whole: a chunk cut mid-way would leave the registry's session
        at an offset this run never learns, which Docker Distribution then refuses to resume.
        """
        reader, name, progress = self.reader, self.name, self.on_progress

        def gen() -> Iterator[bytes]:
            pos, end = start, start + length
            while pos < end:
                try:
                    data = reader.read_at(pos, min(_BLOCK, end - pos))
                except OSError as e:  # a local failure, not the network's: never retried as one
                    raise FailedPreconditionError(f"content {name}: reading the local blob at byte {pos}: {e}") from e
                if not data:
                    raise FailedPreconditionError(f"content {name}: local blob ended at byte {pos}, expected {end}")
                pos += len(data)
                yield data
                if stopped is None:
                    progress(pos)
                elif not stopped:
                    try:
                        progress(pos)
                    except Exception as e:  # noqa: BLE001 - re-raised once the chunk is in
                        stopped.append(e)

        return gen

    # -- remembered sessions (across runs) ----------------------------------------------------------------

    def _remember(self, location: str) -> None:
        sessions = self.p.sessions
        if sessions is not None:
            self.started = sessions.remember(self.p.registry, self.p.repository, str(self.desc.digest), location,
                                             started=self.started, min_chunk=self.min_chunk).started

    def _forget(self) -> None:
        if self.p.sessions is not None:
            self.p.sessions.forget(self.p.registry, self.p.repository, str(self.desc.digest))
        self.started = None

    def _resume(self) -> tuple[str, int] | None:
        """The remembered session of an earlier run, if the registry still holds it: ``(URL, next offset)``.

        Whatever goes wrong (gone, expired, refused, an offset past the blob's end) forgets it; a
        network failure keeps the record for a later run.  ``None``: start a new session.
        """
        sessions = self.p.sessions
        if sessions is None:
            return None
        saved = sessions.get(self.p.registry, self.p.repository, str(self.desc.digest))
        if saved is None:
            return None
        try:
            location, offset = self.p.upload_status(saved.location, self.name)
        except UnavailableError as e:
            log.info("%s: cannot ask about the upload session of an earlier run; starting a new one: %s", self.name, e)
            return None
        except HoistError as e:
            log.info("%s: the upload session of an earlier run is gone; starting a new one: %s", self.name, e)
            sessions.forget(self.p.registry, self.p.repository, str(self.desc.digest))
            return None
        if offset > self.desc.size:
            log.warning("%s: registry claims %d bytes in the upload session of an earlier run, more than the "
                        "blob's %d; starting a new upload", self.name, offset, self.desc.size)
            sessions.forget(self.p.registry, self.p.repository, str(self.desc.digest))
            self.p.cancel_upload(location)
            return None
        self.started, self.min_chunk = saved.started, saved.min_chunk
        if saved.min_chunk:
            self.chunk_size = max(self.chunk_size, saved.min_chunk)
        log.info("%s: resuming the upload session of an earlier run at byte %d of %d", self.name, offset,
                 self.desc.size)
        return location, offset

    def run(self, location: str | None) -> None:
        policy = self.p._session.policy
        restarts = 0
        offset = 0
        resumed = self._resume()
        if resumed is not None:
            if location is not None:   # the session a refused mount offered is not needed
                self.p.cancel_upload(location)
            location, offset = resumed
            self.chunked = self.chunked or offset > 0
        while True:
            try:
                if location is None:
                    location, self.min_chunk = self.p.start_upload(self.name)
                    offset = 0
                    if self.min_chunk:
                        self.chunk_size = max(self.chunk_size, self.min_chunk)
                if self.chunked:
                    self._chunked(location, offset)
                else:
                    self._monolithic(location)
                self._forget()
                return
            except _UploadLost as e:
                self._forget()
                restarts += 1
                if restarts > policy.attempts:
                    raise UnavailableError(f"{self.name}: upload failed {restarts} times: {e}") from e
                log.info("%s: starting the upload again: %s", self.name, e)
                location = None
            except _TooLarge as e:
                if self.chunked:
                    self._forget()
                    raise e.error from None
                log.info("%s: registry refused one %d-byte body; uploading in chunks", self.name, self.desc.size)
                self.p.cancel_upload(location)
                self.chunked = True
                location = None
            except (FailedPreconditionError, InvalidArgumentError):
                # The registry refused the content (or the local blob is unreadable): resuming cannot help.
                self._forget()
                raise

    def _monolithic(self, location: str) -> None:
        self.on_state("uploading", 0)
        self.on_progress(0)
        url = str(httpx.URL(location).copy_merge_params({"digest": str(self.desc.digest)}))
        try:
            close_quietly(self.p._send("PUT", url, what=self.name, body=self.body(0, self.desc.size),
                                       length=self.desc.size, headers={"Content-Type": _OCTET}, ok=(201, 204),
                                       retry=False))
        except FailedPreconditionError as e:
            if "(HTTP 413)" in str(e):
                raise _TooLarge(e) from e
            raise
        except (UnavailableError, NotFoundError) as e:
            # The body may be partly stored; a new session starts clean.
            if self.p.exists(self.desc):
                return
            raise _UploadLost(str(e)) from e

    def _chunked(self, location: str, offset: int = 0) -> None:
        policy = self.p._session.policy
        size = self.desc.size
        failures = 0
        mark = offset
        self._remember(location)
        self.on_state("uploading", offset)
        self.on_progress(offset)
        while offset < size:
            n = min(self.chunk_size, size - offset)
            stopped: list[Exception] = []
            try:
                response = self.p._send(
                    "PATCH", location, what=self.name, body=self.body(offset, n, stopped), length=n, ok=(202, 204),
                    headers={"Content-Type": _OCTET, "Content-Range": f"{offset}-{offset + n - 1}"}, retry=False)
            except FailedPreconditionError as e:
                if "(HTTP 413)" in str(e):
                    raise _TooLarge(e) from e
                raise
            except NotFoundError as e:
                raise _UploadLost(str(e)) from e
            except UnavailableError as e:
                if stopped:
                    raise stopped[0] from e
                if offset > mark:
                    failures, mark = 0, offset
                failures += 1
                if failures > policy.resume_attempts:
                    raise UnavailableError(
                        f"{self.name}: upload stopped at byte {offset} of {size} after {policy.resume_attempts} "
                        f"attempts without progress: {e}") from e
                if failures > 1:
                    _transport.sleep(policy.delay(failures - 1))
                location, offset = self.p.upload_status(location, self.name)
                if offset > size:
                    raise _UploadLost(f"{self.name}: registry claims {offset} bytes in the upload session, more "
                                      f"than the blob's {size}") from e
                self._remember(location)
                log.info("%s: resuming the upload at byte %d of %d (%s)", self.name, offset, size, e)
                self.on_state("uploading", offset)
                self.on_progress(offset)
                continue
            close_quietly(response)
            if response.headers.get("location"):
                location = self.p._location(response, location)
            reported = _parse_range(response.headers.get("range"))
            offset = reported if reported is not None and reported > 0 else offset + n
            if offset > size:
                raise _UploadLost(f"{self.name}: registry claims {offset} bytes in the upload session, more than "
                                  f"the blob's {size}")
            self._remember(location)
            if stopped:
                raise stopped[0]
            self.on_progress(offset)
        url = str(httpx.URL(location).copy_merge_params({"digest": str(self.desc.digest)}))
        try:
            close_quietly(self.p._send("PUT", url, what=self.name, ok=(201, 204), headers={"Content-Type": _OCTET}))
        except (UnavailableError, NotFoundError) as e:
            # A commit whose answer was lost may have landed; otherwise the session is gone.
            if self.p.exists(self.desc):
                return
            raise _UploadLost(str(e)) from e


class _TooLarge(HoistError):
    def __init__(self, error: HoistError) -> None:
        super().__init__(str(error))
        self.error = error


class DockerPushWriter:
    """The :class:`~hoist.remotes.PushWriter` of :meth:`DockerPusher.push`.

    Blob bytes go out in ``PATCH`` chunks of the pusher's ``chunk_size`` as they are written; the rest
    travels with the final ``PUT ?digest=``.  Manifests are kept in memory and ``PUT`` on commit.
    """

    def __init__(self, pusher: DockerPusher, desc: Descriptor, *, manifest: bool, location: str | None) -> None:
        self._p = pusher
        self._desc = desc
        self._manifest = manifest
        self._location = location
        self._buf = bytearray()
        self._offset = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise FailedPreconditionError(f"{_describe(self._desc)}: write after commit or close")
        self._buf += data
        if not self._manifest:
            while len(self._buf) >= self._p.chunk_size:
                self._patch(bytes(self._buf[: self._p.chunk_size]))
                del self._buf[: self._p.chunk_size]
        return len(data)

    def _session(self) -> str:
        if self._location is None:
            self._location, _ = self._p.start_upload(self._p._name(self._desc))
        return self._location

    def _patch(self, data: bytes) -> None:
        location = self._session()
        end = self._offset + len(data) - 1
        response = self._p._send("PATCH", location, what=self._p._name(self._desc), body=data, length=len(data),
                                 headers={"Content-Type": _OCTET, "Content-Range": f"{self._offset}-{end}"},
                                 ok=(202, 204), retry=False)
        close_quietly(response)
        if response.headers.get("location"):
            self._location = self._p._location(response, location)
        self._offset += len(data)

    def commit(self, size: int, expected: Digest | str) -> None:
        """Finish: the registry checks ``size`` and ``expected``.

        :raises FailedPreconditionError: the bytes written are not ``size`` long.
        """
        if self._done:
            raise FailedPreconditionError(f"{_describe(self._desc)}: already committed or closed")
        want = Digest.parse(expected)
        if self._offset + len(self._buf) != size:
            raise FailedPreconditionError(
                f"{_describe(self._desc)}: size mismatch: wrote {self._offset + len(self._buf)} bytes, expected {size}")
        self._done = True
        if self._manifest:
            desc = attrs.evolve(self._desc, digest=want, size=size)
            self._p.push_manifest(desc, bytes(self._buf), check_exists=False)
            return
        location = self._session()
        url = str(httpx.URL(location).copy_merge_params({"digest": str(want)}))
        data = bytes(self._buf)
        headers = {"Content-Type": _OCTET}
        if data:
            headers["Content-Range"] = f"{self._offset}-{self._offset + len(data) - 1}"
        close_quietly(self._p._send("PUT", url, what=self._p._name(self._desc), body=data or None,
                                    length=len(data), headers=headers, ok=(201, 204), retry=False))
        self._buf.clear()

    def close(self) -> None:
        """Abandon the upload unless committed."""
        if not self._done:
            self._done = True
            if self._location is not None:
                self._p.cancel_upload(self._location)
        self._buf.clear()

    def __enter__(self) -> DockerPushWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "COMMITTED",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CHUNKED_UPLOAD_THRESHOLD",
    "DISTRIBUTION_SOURCE_PREFIX",
    "EXISTS",
    "MOUNTED",
    "DockerPushWriter",
    "DockerPusher",
    "append_distribution_source",
    "distribution_source_key",
    "distribution_sources",
]
