"""LocalContentStore: committed blobs and resumable ingests in plain files under one root directory.

Layout under ``root``::

    blobs/<alg>/<hex>          committed blobs, read-only; only ever appear by an atomic link of verified data
    labels/<alg>/<hex>.json    labels and update time of a blob (absent when it has none)
    ingest/<sha256(ref)>/      one ingest: ``status`` (JSON: ref, total, expected, started_at, updated_at) and ``data``

A ref is hashed into its directory name, never used as a path.  One writer per ref across threads
(an in-process table) and processes (``flock`` on the ingest directory); a dead process's lock dies
with it.  An ingest is two files: every inode created and freed costs a small blob's ingest much of
its time on a busy file system, so there are no per-field files and no separate lock files.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import mmap
import os
import queue
import shutil
import stat
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path

from hoist.content import (
    Digest,
    Info,
    ReaderAtFile,
    Status,
    WalkFunc,
    info_fields,
    status_fields,
    updated_labels,
    write_from_buffer,
)
from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnavailableError,
    UnsupportedError,
)
from hoist.filters import parse as parse_filters

log = logging.getLogger("hoist.content.v1.local")

_ALGORITHMS = ("sha256", "sha512")
_REHASH_CHUNK = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range():  # type: ignore[no-untyped-def]
    # The C library is already in the process: look the symbol up there (ctypes.util.find_library would
    # run ldconfig in a subprocess).
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range_fn: list = []  # [function or None], looked up on first use


def _sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
    """Start write-back of a range (Linux ``sync_file_range``); a no-op where it is unavailable."""
    if not _sync_file_range_fn:
        _sync_file_range_fn.append(_load_sync_file_range())
    fn = _sync_file_range_fn[0]
    if fn is not None:
        fn(fd, offset, nbytes, flags)


# In-process half of the ref lock: lock-file path -> time taken.  flock(2) alone would do across
# open file descriptions, but the table gives a clear message and survives fork() sharing fds.
_held: dict[str, dt.datetime] = {}
_held_mu = threading.Lock()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ref_key(ref: str) -> str:
    if not isinstance(ref, str) or ref == "":
        raise InvalidArgumentError(f"invalid ingest ref {ref!r}: must be a non-empty string")
    try:
        raw = ref.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(f"invalid ingest ref {ref[:80]!r}: not valid UTF-8") from e
    return hashlib.sha256(raw).hexdigest()


def _show(ref: str) -> str:
    return repr(ref if len(ref) <= 120 else ref[:117] + "...")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_INGEST_FILES = ("data", "status")
_STATUS = "status"


def _remove_ingest(path: Path) -> None:
    """Remove a finished ingest directory: its known files, then the directory (anything else: the whole tree)."""
    for name in _INGEST_FILES:
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
        except OSError:
            break
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _empty_dir(path: Path) -> None:
    """Remove everything inside ``path``, keeping the directory (a locked ingest starting afresh)."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _status_doc(ref: str, total: int, expected: Digest | None, started: dt.datetime, updated: dt.datetime) -> bytes:
    doc: dict[str, object] = {"ref": ref, "started_at": started.isoformat(), "updated_at": updated.isoformat()}
    if total:
        doc["total"] = total
    if expected is not None:
        doc["expected"] = str(expected)
    return json.dumps(doc).encode()


def _read_status(path: Path) -> tuple[str, int, Digest | None, dt.datetime, dt.datetime]:
    """``(ref, total, expected, started_at, updated_at)`` of the ingest at ``path``.

    :raises OSError: no status file.
    :raises ValueError: a status file that does not hold them.
    """
    doc = json.loads((path / _STATUS).read_bytes())
    if not isinstance(doc, dict):
        raise ValueError("status is not a JSON object")
    ref, total, expected = doc.get("ref"), doc.get("total", 0), doc.get("expected")
    if not isinstance(ref, str) or not ref:
        raise ValueError("status names no ref")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ValueError(f"status holds total {total!r}")
    if expected is not None and not isinstance(expected, str):
        raise ValueError(f"status holds expected digest {expected!r}")
    try:
        want = Digest.parse(expected) if expected else None
    except InvalidArgumentError as e:
        raise ValueError(str(e)) from None
    if "started_at" not in doc:
        raise ValueError("status has no start time")
    started = _parse_time(str(doc["started_at"]))
    try:
        updated = _parse_time(str(doc["updated_at"]))
    except (KeyError, ValueError):
        updated = started
    return ref, total, want, started, updated


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSync:
    """Group commit of one directory's fsync: one ``fsync`` makes every entry linked before it started durable.

    A committer links its blob, then calls :meth:`sync`, which returns once an fsync that began after
    the link has completed: its own, or one another thread started meanwhile for a later link (threads
    committing at the same time share one).  A failed fsync raises in the thread that ran it; the
    others try again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cv = threading.Condition()
        self._linked = 0  # links announced so far
        self._durable = 0  # links covered by a completed fsync
        self._running = False

    def sync(self) -> None:
        with self._cv:
            self._linked += 1
            ticket = self._linked
            while self._durable < ticket and self._running:
                self._cv.wait()
            if self._durable >= ticket:
                return
            self._running = True
            covers = self._linked
        done = False
        try:
            _fsync_dir(self.path)
            done = True
        finally:
            with self._cv:
                self._running = False
                if done:
                    self._durable = max(self._durable, covers)
                self._cv.notify_all()


def _parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.strip())
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _mtime(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, dt.timezone.utc)


class _RefLock:
    """An exclusive lock on one ingest ref: in-process table entry plus flock on its ingest directory.

    Whoever removes the directory does so while holding the lock; a lock then taken on the removed
    directory is stale, and the taker tries again on a new one.
    """

    def __init__(self, path: Path, ref: str) -> None:
        self.path = path
        self.ref = ref
        self.fd = -1
        self.created = False  # the directory was made by this acquire: a new, empty ingest

    def acquire(self, *, create: bool = True) -> None:
        """Lock the ingest directory, making it first when ``create``.

        :raises UnavailableError: another writer holds the ref.
        :raises NotFoundError: there is no ingest directory and ``create`` is false.
        """
        key = str(self.path)
        with _held_mu:
            since = _held.get(key)
            if since is not None:
                raise UnavailableError(f"ref {_show(self.ref)} locked: in use since {since.isoformat()}")
            _held[key] = _now()
        try:
            self._flock(create)
        except BaseException:
            with _held_mu:
                _held.pop(key, None)
            raise

    def _flock(self, create: bool) -> None:
        while True:
            created = False
            if create:
                try:
                    os.mkdir(self.path)
                    created = True
                except FileExistsError:
                    pass
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if create:
                    continue  # removed by its holder between our mkdir and open
                raise NotFoundError(f"ingest {_show(self.ref)}: not found") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UnavailableError(f"ref {_show(self.ref)} locked by another process") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                self.created = created
                return
            os.close(fd)
            if not create:
                raise NotFoundError(f"ingest {_show(self.ref)}: not found")

    def release(self) -> None:
        """Unlock; the ingest directory (if still there) stays for a later writer."""
        if self.fd < 0:
            return
        try:
            os.close(self.fd)
        finally:
            self.fd = -1
            with _held_mu:
                _held.pop(str(self.path), None)


_UNSIZED_READ = 1 << 20
"""Largest read a :class:`BlobReader` tries before knowing the blob's size (the buffer is allocated first)."""


class BlobReader(ReaderAtFile):
    """Random-access reader of one committed blob; also a seekable read-only file object.

    A committed blob never changes, so its size is looked up (``fstat``) only when first needed: a
    small read that gets all the bytes it asked for needs no size at all (ctr reads blobs in thousands
    of 32 KiB calls, each opening its own reader).
    """

    def __init__(self, fd: int, size: int | None, digest: Digest) -> None:
        super().__init__(None)
        self._fd = fd
        self._size = size
        self.digest = digest

    def _prefix(self) -> str:
        return f"content {self.digest}: "

    @property
    def size(self) -> int:
        if self._size is None:
            self._check()
            self._size = os.fstat(self._fd).st_size
        return self._size

    def fileno(self) -> int:
        self._check()
        return self._fd

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; fewer only at the end, ``b""`` there.

        :raises OutOfRangeError: ``offset`` is past the end of the blob.
        """
        self._check()
        if offset < 0 or n < 0:
            raise InvalidArgumentError(f"content {self.digest}: invalid read at {offset} of {n} bytes")
        if self._size is None and 0 < n <= _UNSIZED_READ:
            out = os.pread(self._fd, n, offset)
            if len(out) == n:
                return out  # all of it, so the range is within the blob
        size = self.size
        if offset > size:
            raise OutOfRangeError(f"content {self.digest}: read at {offset} past the end ({size} bytes)")
        n = min(n, size - offset)
        if n == 0:
            return b""
        out = os.pread(self._fd, n, offset)
        if len(out) < n:
            parts = [out]
            got = len(out)
            while got < n:
                b = os.pread(self._fd, n - got, offset + got)
                if not b:
                    break
                parts.append(b)
                got += len(b)
            out = b"".join(parts)
        return out

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        self._check()
        view = memoryview(buf).cast("B")
        n = min(len(view), max(0, self.size - self._pos))
        if n == 0:
            return 0
        got = os.preadv(self._fd, [view[:n]], self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


_OFFLOAD_MIN = 256 << 10
"""Writes at least this large go to a helper thread while the writer hashes them."""
_OFFLOAD_MIN_TOTAL = 4 << 20
"""Only ingests of blobs larger than this (or of unknown size) hand writes off: a smaller blob gains at most one
write's overlap, and when many are fetched at once the CPUs are busy anyway, so the hand-off would only add
thread switches."""
_OFFLOAD_THREADS = 4
_offload_jobs: queue.SimpleQueue = queue.SimpleQueue()
_offload_started: list[threading.Thread] = []
_offload_mu = threading.Lock()


def _offload_worker() -> None:
    while True:
        fut, fn, arg = _offload_jobs.get()
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(fn(arg))
            except BaseException as e:  # noqa: BLE001 - handed to the writer through the future
                fut.set_exception(e)
        del fut, fn, arg  # hold no writer's buffer while idle


def _offload(fn: Callable[[memoryview], None], arg: memoryview) -> Future:
    """Run ``fn(arg)`` on one of a few daemon threads shared by every writer (they never block exit)."""
    if len(_offload_started) < _OFFLOAD_THREADS:
        with _offload_mu:
            if len(_offload_started) < _OFFLOAD_THREADS:
                t = threading.Thread(target=_offload_worker, name="hoist-content-write", daemon=True)
                t.start()
                _offload_started.append(t)
    fut: Future = Future()
    _offload_jobs.put((fut, fn, arg))
    return fut


_DIRECT_STAGE = 1 << 20
"""Bytes a writer gathers in each of its two aligned buffers before writing them around the page cache."""
_DIRECT_ALIGN = 4096
"""Offsets and lengths of direct writes are multiples of this (a page; every block size we meet divides it)."""
_gathering: weakref.WeakValueDictionary[str, LocalWriter] = weakref.WeakValueDictionary()
"""Direct writers of this process by ingest path: their data file lags their offset by what they
gather, so the store asks them for their status.  (Another process sees the file: at most 2 MiB behind.)"""


def _open_direct(path: Path) -> int:
    """A second descriptor on ``path`` that writes around the page cache, or -1 where the file system
    does not offer that (tmpfs, some FUSE file systems)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return -1
    try:
        return os.open(path, os.O_WRONLY | flag | os.O_CLOEXEC)
    except OSError as e:
        log.debug("%s: no direct writes here: %s", path, e)
        return -1


class LocalWriter:
    """An open, exclusively locked ingest of a :class:`LocalContentStore`.

    A large blob on a store with ``fsync`` is written around the page cache (``O_DIRECT``): the data
    gathers in two page-aligned buffers of 1 MiB, and while a helper thread writes a full one the
    writer hashes and fills the other.  Copying through the page cache and writing it back cost more
    CPU than hashing the blob; these bytes are on the device when the write returns, and the fsync at
    commit only has the last partial buffer (written normally) and the file's metadata left.
    """

    def __init__(
        self,
        store: LocalContentStore,
        lock: _RefLock,
        path: Path,
        fd: int,
        hasher: hashlib._Hash,
        offset: int,
        total: int,
        expected: Digest | None,
        started_at: dt.datetime,
        updated_at: dt.datetime,
        direct_fd: int = -1,
    ) -> None:
        self._store = store
        self._lock = lock
        self._path = path
        self._fd = fd
        self._hasher = hasher
        self._offset = offset
        self._total = total
        self._expected = expected
        self._started_at = started_at
        self._updated_at = updated_at
        self._flushed = offset  # bytes handed to the kernel for write-back
        self._offload = not total or total > _OFFLOAD_MIN_TOTAL
        # direct writes: bytes [_disk, _disk + _staged) wait in _stages[_cur]; _pending writes the other one
        self._dfd = direct_fd
        self._stages: list[mmap.mmap] = []
        self._cur = 0
        self._staged = 0
        self._disk = offset
        self._pending: Future | None = None
        self._pending_at = offset  # where the buffer in flight goes
        self._failed: OSError | None = None  # a direct write failed: only the data before _pending_at is good
        self._scratch = bytearray()  # write_from's buffer when not writing directly
        self.ref = lock.ref
        if direct_fd >= 0:
            _gathering[str(path)] = self

    def __enter__(self) -> LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
                pass

    def _check(self) -> None:
        if self._fd < 0:
            raise FailedPreconditionError(f"ingest {_show(self.ref)}: writer is closed")

    def _failure(self) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"ingest {_show(self.ref)}: an earlier write failed ({getattr(self._failed, 'strerror', None) or self._failed}); "
            "reopen the ref to resume from what reached the disk")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``, hashing it on the way.

        :raises OutOfRangeError: the write would go past the declared total; nothing is written.
        """
        self._check()
        if self._failed is not None:
            raise self._failure()
        view = memoryview(data).cast("B")
        n = len(view)
        if self._total and self._offset + n > self._total:
            raise OutOfRangeError(
                f"ingest {_show(self.ref)}: write of {n} bytes at offset {self._offset} exceeds total {self._total}"
            )
        if self._dfd >= 0:
            self._hasher.update(view)  # while the helper thread writes the previous buffer
            self._stage(view)
        elif n >= _OFFLOAD_MIN and self._offload:
            # Hash here while a helper thread writes: both release the GIL, so a large blob costs about
            # the slower of the two instead of their sum.  The hash state is kept to undo a failed write.
            before = self._hasher.copy()
            done = _offload(self._write_all, view)
            self._hasher.update(view)
            try:
                done.result()
            except BaseException:
                self._hasher = before
                raise
        else:
            self._write_all(view)
            self._hasher.update(view)
        self._offset += n
        self._updated_at = _now()
        step = self._store.writeback_bytes
        if step and self._dfd < 0 and self._offset - self._flushed >= step:
            # Start write-back now so the fsync at commit has little left to do.
            _sync_file_range(self._fd, self._flushed, self._offset - self._flushed, _SYNC_FILE_RANGE_WRITE)
            self._flushed = self._offset
        return n

    def write_from(self, readinto: Callable[[memoryview], int | None], limit: int) -> int:
        """Append up to ``limit`` bytes that ``readinto`` puts straight into this writer's buffer.

        For a blob written around the page cache the source fills the page-aligned buffer itself, so its
        bytes are copied once, by the kernel, on their way from the socket to the disk.  Returns the bytes
        appended; 0 when the source has ended.

        :raises OutOfRangeError: the source went past the declared total; nothing of that read is kept.
        """
        self._check()
        if self._failed is not None:
            raise self._failure()
        if self._dfd < 0:
            if len(self._scratch) < limit:
                self._scratch = bytearray(limit)
            return write_from_buffer(self.write, readinto, self._scratch, limit)
        with memoryview(self._stage_buffer()) as whole:
            view = whole[self._staged:self._staged + min(limit, _DIRECT_STAGE - self._staged)]
            n = readinto(view) or 0
            if not n:
                return 0
            if self._total and self._offset + n > self._total:
                raise OutOfRangeError(
                    f"ingest {_show(self.ref)}: write of {n} bytes at offset {self._offset} exceeds total {self._total}"
                )
            self._hasher.update(view[:n])
            view.release()
        self._staged += n
        self._offset += n
        self._updated_at = _now()
        if self._staged == _DIRECT_STAGE:
            self._submit()
        return n

    def _write_all(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])

    def _stage_buffer(self) -> mmap.mmap:
        """The page-aligned buffer being filled (both are made on first use)."""
        if not self._stages:
            self._stages = [mmap.mmap(-1, _DIRECT_STAGE), mmap.mmap(-1, _DIRECT_STAGE)]
        return self._stages[self._cur]

    def _stage(self, view: memoryview) -> None:
        pos, n = 0, len(view)
        while pos < n:
            k = min(n - pos, _DIRECT_STAGE - self._staged)
            self._stage_buffer()[self._staged:self._staged + k] = view[pos:pos + k]
            self._staged += k
            pos += k
            if self._staged == _DIRECT_STAGE:
                self._submit()

    def _submit(self) -> None:
        """Hand the full buffer to the helper thread and gather into the other one."""
        self._wait_pending()  # the other buffer is free again
        write = functools.partial(self._write_direct, offset=self._disk, fallback=self._fd)
        self._pending = _offload(write, memoryview(self._stages[self._cur]))
        self._pending_at = self._disk
        self._disk += _DIRECT_STAGE
        self._staged = 0
        self._cur ^= 1

    def _write_direct(self, view: memoryview, *, offset: int, fallback: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(self._dfd, view[done:], offset + done)
            if done % _DIRECT_ALIGN:  # a short write off the alignment: the rest goes the normal way
                while done < len(view):
                    done += os.pwrite(fallback, view[done:], offset + done)

    def _wait_pending(self) -> None:
        fut, self._pending = self._pending, None
        if fut is not None:
            try:
                fut.result()
            except OSError as e:
                self._failed = e
                raise

    def _drain(self, fd: int) -> None:
        """Finish direct writing: the buffer in flight, then what is still gathered, written normally."""
        if self._dfd < 0:
            return
        try:
            try:
                self._wait_pending()
            except OSError:
                pass  # recorded in _failed
            if self._failed is not None:
                # the buffers before the failed one are on disk whole; keep exactly those
                os.ftruncate(fd, self._pending_at)
                self._disk, self._staged = self._pending_at, 0
            elif self._staged:
                with memoryview(self._stages[self._cur]) as whole:
                    view = whole[:self._staged]
                    done = 0
                    while done < len(view):
                        done += os.pwrite(fd, view[done:], self._disk + done)
                    view.release()
                self._disk += self._staged
                self._staged = 0
            os.lseek(fd, self._disk, os.SEEK_SET)
        finally:
            os.close(self._dfd)
            self._dfd = -1
            self._stages = []  # unmapped once the last view of them is gone
            _gathering.pop(str(self._path), None)

    def digest(self) -> Digest:
        return Digest(self._hasher.name, self._hasher.copy().hexdigest())

    def status(self) -> Status:
        return Status(
            ref=self.ref,
            offset=self._offset,
            total=self._total,
            expected=self._expected,
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    def truncate(self, size: int) -> None:
        """Discard everything written; only ``size == 0`` is supported."""
        self._check()
        if size != 0:
            raise UnsupportedError(f"ingest {_show(self.ref)}: truncate to {size}: only 0 is supported")
        if self._dfd >= 0:
            try:
                self._wait_pending()
            except OSError:
                pass  # what it failed to write is discarded below anyway
            self._staged = 0
            self._disk = self._pending_at = 0
            self._failed = None  # starting over from nothing
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = hashlib.new(self._hasher.name)
        self._offset = 0
        self._flushed = 0
        self._updated_at = _now()

    def commit(self, size: int, expected: Digest | str | None, labels: Mapping[str, str] | None = None) -> None:
        """Verify and publish the blob atomically; the ref is released whatever happens.

        :param size: expected size; ``0`` or less skips the check (the declared total still applies).
        :raises FailedPreconditionError: size, total or digest disagree with what was written.
        :raises AlreadyExistsError: the blob is already committed (the ingest is removed).
        """
        self._check()
        want = Digest.parse(expected) if expected is not None else None
        fd, self._fd = self._fd, -1
        try:
            self._drain(fd)
            if self._failed is not None:
                raise self._failure()
            self._commit(fd, size, want, labels)
        finally:
            os.close(fd)
            self._lock.release()

    def _commit(self, fd: int, size: int, want: Digest | None, labels: Mapping[str, str] | None) -> None:
        store = self._store
        if store.fsync:
            os.fdatasync(fd)
        actual_size = os.fstat(fd).st_size
        if actual_size != self._offset:
            raise FailedPreconditionError(
                f"ingest {_show(self.ref)}: data file changed underneath: {actual_size} bytes on disk, {self._offset} written"
            )
        if size > 0 and size != self._offset:
            raise FailedPreconditionError(
                f"ingest {_show(self.ref)}: size mismatch: expected {size}, got {self._offset}"
            )
        if self._total and self._total != self._offset:
            raise FailedPreconditionError(
                f"ingest {_show(self.ref)}: size mismatch: expected total {self._total}, got {self._offset}"
            )
        dgst = self.digest()
        for w in (want, self._expected):
            if w is None:
                continue
            got = dgst if w.algorithm == dgst.algorithm else store._rehash(fd, w.algorithm)
            if got != w:
                raise FailedPreconditionError(f"ingest {_show(self.ref)}: digest mismatch: expected {w}, got {got}")
        if want is not None:
            dgst = want
        target = store._blob_path(dgst)
        data = self._path / "data"
        os.fchmod(fd, 0o444)
        try:
            try:
                os.link(data, target)
            except FileNotFoundError:
                if not os.path.exists(data):
                    raise
                store._make_blob_dir(dgst.algorithm)  # the first blob of this algorithm
                os.link(data, target)
        except FileExistsError:
            shutil.rmtree(self._path, ignore_errors=True)
            raise AlreadyExistsError(f"content {dgst}: already exists") from None
        now = _now().timestamp()
        os.utime(target, (now, now))
        if store.fsync:
            store._blob_dir_sync(dgst.algorithm).sync()
        _remove_ingest(self._path)
        if labels:
            store._write_labels(dgst, dict(labels), _now())
        else:
            store._remove_labels(dgst)

    def close(self) -> None:
        """Release the ref, keeping the ingest for a later writer to resume."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            try:
                self._drain(fd)
            except OSError as e:  # the ingest keeps what reached the disk; a resumed write re-reads it
                log.warning("ingest %s: could not write its last bytes: %s", _show(self.ref), e)
            _write_atomic(self._path / _STATUS, _status_doc(self.ref, self._total, self._expected, self._started_at,
                                                           self._updated_at))
        except OSError as e:
            log.warning("ingest %s: could not record update time: %s", _show(self.ref), e)
        finally:
            os.close(fd)
            self._lock.release()


class LocalContentStore:
    """A content store in plain files under ``root`` (see the module docstring for the layout).

    :param fsync: flush blob data and directories to disk before a commit returns.
    :param writeback_bytes: start kernel write-back of ingest data every this many bytes (0: never).
    :param direct_bytes: with ``fsync``, write blobs larger than this around the page cache (``O_DIRECT``)
        where the file system allows it (0: never); see :class:`LocalWriter`.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, writeback_bytes: int = 8 << 20,
                 direct_bytes: int = 8 << 20) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.writeback_bytes = writeback_bytes
        self.direct_bytes = direct_bytes
        for d in ("blobs", "ingest", "labels"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._labels_mu = threading.Lock()
        self._dir_syncs: dict[str, _DirSync] = {}
        self._dir_syncs_mu = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalContentStore({str(self.root)!r})"

    # -- paths ----------------------------------------------------------------------------------

    def _blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def _make_blob_dir(self, algorithm: str) -> None:
        path = self.root / "blobs" / algorithm
        try:
            path.mkdir()
        except FileExistsError:
            return
        if self.fsync:
            _fsync_dir(path.parent)

    def _blob_dir_sync(self, algorithm: str) -> _DirSync:
        with self._dir_syncs_mu:
            found = self._dir_syncs.get(algorithm)
            if found is None:
                found = self._dir_syncs[algorithm] = _DirSync(self.root / "blobs" / algorithm)
            return found

    def _labels_path(self, digest: Digest) -> Path:
        return self.root / "labels" / digest.algorithm / f"{digest.hex}.json"

    def _ingest_path(self, ref: str) -> Path:
        return self.root / "ingest" / _ref_key(ref)

    # -- provider -------------------------------------------------------------------------------

    def reader_at(self, desc) -> BlobReader:  # type: ignore[no-untyped-def]
        """Open the committed blob ``desc.digest`` (a :class:`Descriptor`, or anything with ``.digest``).

        :raises NotFoundError: no such blob.
        """
        dgst = Digest.parse(desc.digest if hasattr(desc, "digest") else desc)
        # a plain string path: readers are opened once per Content.Read call, and ctr makes thousands
        try:
            fd = os.open(f"{self.root}/blobs/{dgst.algorithm}/{dgst.hex}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"content {dgst}: not found") from None
        return BlobReader(fd, None, dgst)

    # -- manager --------------------------------------------------------------------------------

    def info(self, digest: Digest | str) -> Info:
        """:raises NotFoundError: no such blob."""
        dgst = Digest.parse(digest)
        try:
            st = os.stat(self._blob_path(dgst))
        except FileNotFoundError:
            raise NotFoundError(f"content {dgst}: not found") from None
        return self._info(dgst, st)

    def _info(self, dgst: Digest, st: os.stat_result) -> Info:
        created = _mtime(st)
        labels, updated = self._read_labels(dgst)
        return Info(digest=dgst, size=st.st_size, created_at=created, updated_at=updated or created, labels=labels)

    def _read_labels(self, dgst: Digest) -> tuple[dict[str, str], dt.datetime | None]:
        try:
            doc = json.loads(self._labels_path(dgst).read_bytes())
            labels = doc.get("labels") or {}
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise ValueError("labels must map strings to strings")
            return labels, _parse_time(doc["updated_at"]) if doc.get("updated_at") else None
        except FileNotFoundError:
            return {}, None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("content %s: ignoring unreadable labels file: %s", dgst, e)
            return {}, None

    def _write_labels(self, dgst: Digest, labels: dict[str, str], updated: dt.datetime) -> None:
        p = self._labels_path(dgst)
        if not labels:
            self._remove_labels(dgst)
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(p, json.dumps({"labels": labels, "updated_at": updated.isoformat()}, sort_keys=True).encode())

    def _remove_labels(self, dgst: Digest) -> None:
        try:
            self._labels_path(dgst).unlink()
        except FileNotFoundError:
            pass

    def update(self, info: Info, fieldpaths: tuple[str, ...] = ()) -> Info:
        """Replace the labels of ``info.digest``: all of them, or only the ``labels.<key>`` paths given.

        A listed key missing from ``info.labels`` (or with an empty value) is removed.

        :raises NotFoundError: no such blob.
        :raises InvalidArgumentError: a field path other than ``labels`` or ``labels.<key>``.
        """
        dgst = Digest.parse(info.digest)
        paths = tuple(fieldpaths)
        updated_labels(dgst, {}, {}, paths)  # a bad field path fails before anything is locked
        with self._labels_mu, self._labels_file_lock():
            st = self._stat_blob(dgst)
            current, _ = self._read_labels(dgst)
            labels = updated_labels(dgst, current, info.labels, paths)
            now = _now()
            if labels:
                self._write_labels(dgst, labels, now)
            else:
                p = self._labels_path(dgst)
                p.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(p, json.dumps({"labels": {}, "updated_at": now.isoformat()}).encode())
        return Info(digest=dgst, size=st.st_size, created_at=_mtime(st), updated_at=now, labels=labels)

    def _stat_blob(self, dgst: Digest) -> os.stat_result:
        try:
            return os.stat(self._blob_path(dgst))
        except FileNotFoundError:
            raise NotFoundError(f"content {dgst}: not found") from None

    def _labels_file_lock(self):  # type: ignore[no-untyped-def]
        return _FileLock(self.root / "labels" / ".lock")

    def walk(self, fn: WalkFunc, *filters: str) -> None:
        """Call ``fn(info)`` for each committed blob matching any of ``filters``.

        :raises InvalidArgumentError: a malformed filter.
        """
        flt = parse_filters(*filters)
        for alg in _ALGORITHMS:
            d = self.root / "blobs" / alg
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    dgst = Digest.parse(f"{alg}:{name}")
                    st = os.stat(d / name)
                except (InvalidArgumentError, FileNotFoundError):
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                info = self._info(dgst, st)
                if flt.match(info_fields(info)):
                    fn(info)

    def delete(self, digest: Digest | str) -> None:
        """Remove a committed blob and its labels.

        :raises NotFoundError: no such blob.
        """
        dgst = Digest.parse(digest)
        try:
            os.unlink(self._blob_path(dgst))
        except FileNotFoundError:
            raise NotFoundError(f"content {dgst}: not found") from None
        self._remove_labels(dgst)

    # -- ingests --------------------------------------------------------------------------------

    def writer(self, ref: str, total: int | None = None, expected: Digest | str | None = None) -> LocalWriter:
        """Open ingest ``ref``, resuming it at its offset (the data already there is re-hashed).

        ``total`` and ``expected`` are this writer's declarations: they replace the ingest's earlier ones
        (declaring none keeps the data and drops them). A damaged ingest (missing data, wrong ref
        file, data longer than its total) or one declared with a different total or digest is
        discarded and started afresh.

        :raises InvalidArgumentError: an empty ref, a negative total, a malformed digest.
        :raises AlreadyExistsError: ``expected`` is already committed.
        :raises UnavailableError: another writer holds ``ref``.
        """
        key = _ref_key(ref)
        want = Digest.parse(expected) if expected is not None else None
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
            raise InvalidArgumentError(f"ingest {_show(ref)}: invalid total {total!r}")
        total = total or 0
        if want is not None and self._blob_path(want).exists():
            self._drop_finished_ingest(key, ref, want)
            raise AlreadyExistsError(f"content {want}: already exists")
        path = self.root / "ingest" / key
        lock = _RefLock(path, ref)
        lock.acquire()
        try:
            return self._open(lock, path, ref, total, want)
        except BaseException:
            if lock.created:
                shutil.rmtree(path, ignore_errors=True)  # while still locked: nothing of it was usable
            lock.release()
            raise

    def _drop_finished_ingest(self, key: str, ref: str, want: Digest) -> None:
        # A writer killed between publishing the blob and removing its ingest leaves an ingest whose
        # work is done; the next writer for that blob removes it instead of leaving it listed forever.
        # Whatever it declared, an ingest under a ref whose blob is now committed is obsolete: a writer
        # resuming it with this digest would discard it anyway (see _resume).
        path = self.root / "ingest" / key
        if not path.is_dir():
            return
        lock = _RefLock(path, ref)
        try:
            lock.acquire(create=False)
        except (UnavailableError, NotFoundError):
            return
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.release()

    def _open(self, lock: _RefLock, path: Path, ref: str, total: int, want: Digest | None) -> LocalWriter:
        if not lock.created:  # the usual case is a new directory: no ingest under this ref yet
            resumed = self._resume(path, ref, total, want)
            if resumed is not None:
                return LocalWriter(self, lock, path, *resumed, self._direct_fd(path, resumed[3], resumed[2]))
            _empty_dir(path)
        now = _now()
        # Written in place, not through a rename: the directory is new (or emptied) and ``data`` comes
        # last, so a creation cut short leaves an ingest without data, which the next writer discards.
        _write_new(path / _STATUS, _status_doc(ref, total, want, now, now))
        fd = os.open(path / "data", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        hasher = hashlib.new(want.algorithm if want else "sha256")
        return LocalWriter(self, lock, path, fd, hasher, 0, total, want, now, now, self._direct_fd(path, total, 0))

    def _direct_fd(self, path: Path, total: int, offset: int) -> int:
        """A direct-write descriptor for an ingest of ``total`` bytes resuming at ``offset``, or -1."""
        if not (self.fsync and self.direct_bytes and total > self.direct_bytes and offset % _DIRECT_ALIGN == 0):
            return -1
        return _open_direct(path / "data")

    def _resume(self, path: Path, ref: str, total: int, want: Digest | None):  # type: ignore[no-untyped-def]
        try:
            stored_ref, stored_total, stored_want, started, updated = _read_status(path)
            if stored_ref != ref:
                raise ValueError("status names another ref")
            if total and stored_total and total != stored_total:
                raise ValueError(f"declared total {total} differs from the ingest's {stored_total}")
            if want and stored_want and want != stored_want:
                raise ValueError(f"expected digest {want} differs from the ingest's {stored_want}")
            fd = os.open(path / "data", os.O_RDWR | os.O_CLOEXEC)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            log.info("ingest %s: discarding damaged ingest: %s", _show(ref), e)
            return None
        try:
            st = os.fstat(fd)
            if st.st_nlink > 1:
                raise ValueError("data is linked elsewhere (interrupted commit)")
            if total and st.st_size > total:
                raise ValueError(f"data ({st.st_size} bytes) is longer than its total {total}")
            hasher = hashlib.new(want.algorithm if want else "sha256")
            offset = _hash_fd(fd, hasher)
            if st.st_mtime_ns > updated.timestamp() * 1e9:
                updated = _mtime(st)
            # the new writer's declarations replace the old ones (none declared: none kept)
            if stored_total != total or stored_want != want:
                _write_atomic(path / _STATUS, _status_doc(ref, total, want, started, updated))
            return fd, hasher, offset, total, want, started, updated
        except (OSError, ValueError) as e:
            os.close(fd)
            log.info("ingest %s: discarding damaged ingest: %s", _show(ref), e)
            try:
                (path / "data").unlink()  # never truncate: it may share its inode with a blob
            except FileNotFoundError:
                pass
            return None

    def _rehash(self, fd: int, algorithm: str) -> Digest:
        h = hashlib.new(algorithm)
        _hash_fd(fd, h, from_start=True)
        return Digest(algorithm, h.hexdigest())

    def status(self, ref: str) -> Status:
        """The state of ingest ``ref`` (active or abandoned).

        :raises NotFoundError: no such ingest.
        """
        st = self._status(self._ingest_path(ref))
        if st is None or st.ref != ref:
            raise NotFoundError(f"ingest {_show(ref)}: not found")
        return st

    def _status(self, path: Path) -> Status | None:
        live = _gathering.get(str(path))
        if live is not None and live._dfd >= 0:
            return live.status()
        try:
            ref, total, expected, started, updated = _read_status(path)
            data = os.stat(path / "data")
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return Status(
            ref=ref,
            offset=data.st_size,
            total=total,
            expected=expected,
            started_at=started,
            updated_at=max(updated, _mtime(data)),
        )

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest matching any of ``filters`` (fields ``ref``, ``expected``, ``total``), by ref.

        :raises InvalidArgumentError: a malformed filter.
        """
        flt = parse_filters(*filters)
        out = []
        for name in os.listdir(self.root / "ingest"):
            st = self._status(self.root / "ingest" / name)
            if st is not None and flt.match(status_fields(st)):
                out.append(st)
        return sorted(out, key=lambda s: s.ref)

    def abort(self, ref: str) -> None:
        """Discard ingest ``ref``.

        :raises NotFoundError: no such ingest.
        :raises UnavailableError: a writer holds it.
        """
        path = self.root / "ingest" / _ref_key(ref)
        lock = _RefLock(path, ref)
        lock.acquire(create=False)
        try:
            shutil.rmtree(path)
        finally:
            lock.release()


class _FileLock:
    """Blocking flock on a file, for short read-modify-write sections shared with other processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        self.fd = -1


def _hash_fd(fd: int, hasher: hashlib._Hash, from_start: bool = False) -> int:
    """Feed ``fd``'s content to ``hasher`` from its current position (or the start); returns bytes hashed."""
    if from_start:
        os.lseek(fd, 0, os.SEEK_SET)
    buf = bytearray(_REHASH_CHUNK)
    view = memoryview(buf)
    n = 0
    while True:
        k = os.readv(fd, [view])
        if k == 0:
            return n
        hasher.update(view[:k])
        n += k


__all__ = ["LocalContentStore", "LocalWriter", "BlobReader"]
