"""Blob upload sessions remembered across runs, so an interrupted push resumes where the registry stands.

One small JSON file per (registry, repository, blob digest) under the docker resolver's root
directory (``<root>/hoist.resolver.v1.docker/uploads/``), replaced atomically.  The pusher writes it
once the ``POST`` opens a chunked session and again after every ``PATCH`` (the registry's newest
``Location``: Docker Distribution refuses a status ``GET`` whose state token lags behind the
session), and removes it when the final ``PUT`` lands or the session is lost.  Failing to read or
write these files never fails a push: the upload just is not resumable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

log = logging.getLogger("hoist.resolver.v1.docker")

#: Sessions older than this are not asked about (Docker Distribution purges uploads after a week).
MAX_AGE = 7 * 24 * 3600.0
_VERSION = 1


@attrs.frozen(kw_only=True)
class RememberedUpload:
    """An upload session a push opened: where to continue it and when it started (Unix time)."""

    registry: str
    repository: str
    digest: str
    location: str
    started: float
    min_chunk: int = 0


class UploadSessions:
    """The remembered sessions in ``directory`` (created on first write); safe to share between threads.

    :param directory: where the state files live.
    :param max_age: seconds after which a session is forgotten unasked.
    :param clock: the current Unix time (tests).
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_age = max_age
        self._clock = clock
        self._pruned = False

    def path(self, registry: str, repository: str, digest: str) -> Path:
        """The state file of one blob's upload to one repository."""
        key = hashlib.sha256(f"{registry}\n{repository}\n{digest}".encode()).hexdigest()[:32]
        return self.directory / f"{key}.json"

    def get(self, registry: str, repository: str, digest: str) -> RememberedUpload | None:
        """The session remembered for this blob and repository; an unreadable or stale one is forgotten."""
        path = self.path(registry, repository, digest)
        try:
            raw = json.loads(path.read_bytes())
            saved = RememberedUpload(registry=str(raw["registry"]), repository=str(raw["repository"]),
                                     digest=str(raw["digest"]), location=str(raw["location"]),
                                     started=float(raw["started"]), min_chunk=int(raw.get("min_chunk", 0)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.info("upload state %s: unreadable, forgetting it: %s", path, e)
            self._remove(path)
            return None
        if (saved.registry, saved.repository, saved.digest) != (registry, repository, digest):
            return None
        age = self._clock() - saved.started
        if age > self.max_age or age < -self.max_age:
            log.info("%s/%s@%s: forgetting the upload session started %.0f s ago", registry, repository, digest, age)
            self._remove(path)
            return None
        return saved

    def remember(self, registry: str, repository: str, digest: str, location: str, *, started: float | None = None,
                 min_chunk: int = 0) -> RememberedUpload:
        """Record (or move on) the session of this blob's upload; a failure to write is logged, not raised."""
        saved = RememberedUpload(registry=registry, repository=repository, digest=digest, location=location,
                                 started=self._clock() if started is None else started, min_chunk=min_chunk)
        data = json.dumps({"version": _VERSION, **attrs.asdict(saved)}, sort_keys=True).encode()
        path = self.path(registry, repository, digest)
        tmp = ""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._prune()
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = ""
        except OSError as e:
            log.info("%s/%s@%s: cannot record the upload session in %s: %s", registry, repository, digest,
                     self.directory, e)
        finally:
            if tmp:
                self._remove(Path(tmp))
        return saved

    def forget(self, registry: str, repository: str, digest: str) -> None:
        """Drop the session of this blob's upload (nothing if none is remembered)."""
        self._remove(self.path(registry, repository, digest))

    def _prune(self) -> None:
        """Once per instance: drop files left by sessions too old to resume (blobs never pushed again)."""
        if self._pruned:
            return
        self._pruned = True
        cutoff = self._clock() - self.max_age
        for path in self.directory.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    self._remove(path)
            except OSError:
                continue

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.info("upload state %s: cannot remove it: %s", path, e)


__all__ = ["MAX_AGE", "RememberedUpload", "UploadSessions"]
