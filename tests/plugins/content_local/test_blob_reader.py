"""The local store's blob reader: ranged reads as the Content service makes them, from the first byte to past the end."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from hoist.content import Descriptor, Digest
from hoist.errors import NotFoundError, OutOfRangeError
from hoist_content_local.store import LocalContentStore


def _put(store: LocalContentStore, data: bytes) -> Digest:
    dgst = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    with store.writer("upload", total=len(data)) as w:
        w.write(data)
        w.commit(len(data), dgst)
    return dgst


def test_ranged_reads_cover_the_blob_and_stop_at_its_end(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path, fsync=False)
    data = os.urandom(3 * 32768 + 11)
    dgst = _put(store, data)
    with store.reader_at(Descriptor(media_type="", digest=dgst, size=0)) as ra:
        assert b"".join(ra.read_at(off, 32768) for off in range(0, len(data), 32768)) == data
        assert ra.read_at(len(data) - 11, 32768) == data[-11:]
        assert ra.read_at(len(data), 32768) == b""
        assert ra.size == len(data)
        with pytest.raises(OutOfRangeError, match=f"content {dgst}: read at {len(data) + 1} past the end"):
            ra.read_at(len(data) + 1, 1)


def test_a_read_asking_far_more_than_the_blob_gets_the_rest(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path, fsync=False)
    data = os.urandom(100_000)
    dgst = _put(store, data)
    with store.reader_at(Descriptor(media_type="", digest=dgst, size=0)) as ra:
        assert ra.read_at(10, 1 << 40) == data[10:]  # no buffer of the size asked for


def test_past_the_end_before_the_size_is_known(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path, fsync=False)
    dgst = _put(store, b"hoist")
    with store.reader_at(Descriptor(media_type="", digest=dgst, size=0)) as ra:
        with pytest.raises(OutOfRangeError, match="past the end \\(5 bytes\\)"):
            ra.read_at(6, 32768)
    with store.reader_at(Descriptor(media_type="", digest=dgst, size=0)) as ra:
        assert ra.seek(-2, io.SEEK_END) == 3 and ra.read() == b"st"


def test_a_deleted_blob_cannot_be_opened_again(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path, fsync=False)
    dgst = _put(store, b"short-lived")
    with store.reader_at(Descriptor(media_type="", digest=dgst, size=0)) as ra:
        assert ra.read_at(0, 5) == b"short"
    store.delete(dgst)
    with pytest.raises(NotFoundError, match=f"content {dgst}: not found"):
        store.reader_at(Descriptor(media_type="", digest=dgst, size=0))
