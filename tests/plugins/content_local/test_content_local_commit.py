"""Commits of the local store running at once: each blob lands whole, and a failed directory flush is reported.

Committing threads share the flush of the blob directory (one ``fsync`` covers every blob linked before
it began); what a user sees is that every committed blob is there, and that a flush which fails fails
the commit that ran it while the next commit flushes again.
"""

from __future__ import annotations

import errno
import io
import threading
from pathlib import Path

import pytest

import hoist_content_local.store as local
from hoist.content import Digest, read_blob, write_blob
from hoist.testing.content import make_content
from hoist_content_local.store import LocalContentStore


def test_blobs_committed_at_once_all_land(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "content")
    blobs = [make_content(1000 + i) for i in range(24)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def commit_some(k: int) -> None:
        try:
            start.wait()
            for i in range(k, len(blobs), 8):
                data, d = blobs[i]
                write_blob(store, f"layer-{i}", io.BytesIO(data), len(data), d)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=commit_some, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for data, d in blobs:
        assert store.info(d).size == len(data)
        assert read_blob(store, _desc(d, len(data))) == data
    assert store.list_statuses() == []


def test_a_failed_directory_flush_fails_that_commit_and_the_next_one_flushes_again(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalContentStore(tmp_path / "content")
    write_blob(store, "first", io.BytesIO(b"first"), 5, Digest.from_bytes(b"first"))  # the directory exists
    real = local._fsync_dir
    flushed: list[Path] = []

    def failing_once(path: Path) -> None:
        flushed.append(path)
        if len(flushed) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    monkeypatch.setattr(local, "_fsync_dir", failing_once)
    data, d = make_content(300)
    with pytest.raises(OSError, match="Input/output error"):
        write_blob(store, "layer-a", io.BytesIO(data), len(data), d)
    more, d2 = make_content(301)
    write_blob(store, "layer-b", io.BytesIO(more), len(more), d2)
    assert flushed == [tmp_path / "content" / "blobs" / "sha256"] * 2
    assert store.info(d2).size == 301


def _desc(d: Digest, size: int):  # type: ignore[no-untyped-def]
    from hoist.content import Descriptor

    return Descriptor(media_type="application/octet-stream", digest=d, size=size)
