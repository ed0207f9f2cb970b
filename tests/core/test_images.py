"""hoist.images: media types, strict parsing, platform matching, handlers and dispatch.

The handlers run against the real local content store; the blob source is an in-memory fetcher so each
protocol case (hostile graphs, concurrency, cancellation) is exact.  The real registry is in
tests/integration/test_fetch.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time

import pytest

from hoist.content import Descriptor, Digest, Platform
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnsupportedError
from hoist.images import (
    Event,
    Matcher,
    check,
    children_handler,
    dispatch,
    fetch_handler,
    handlers,
    ingest_ref,
    loads_strict,
    mediatypes as mt,
    parse,
    parse_config,
)
from hoist.images import platforms
from hoist_content_local.store import LocalContentStore


def blob(data: bytes, media_type: str, platform: Platform | None = None) -> tuple[Descriptor, bytes]:
    return Descriptor(media_type=media_type, digest=Digest.from_bytes(data), size=len(data), platform=platform), data


def doc(obj: dict, media_type: str, platform: Platform | None = None) -> tuple[Descriptor, bytes]:
    return blob(json.dumps(obj).encode(), media_type, platform)


class DictFetcher:
    """Serves blobs from memory, counting requests per digest; optional per-blob delay."""

    def __init__(self, blobs: dict[Digest, bytes], delay: float = 0.0) -> None:
        self.blobs = blobs
        self.delay = delay
        self.requests: dict[Digest, int] = {}
        self.lock = threading.Lock()

    def fetch(self, desc: Descriptor) -> io.BytesIO:
        with self.lock:
            self.requests[desc.digest] = self.requests.get(desc.digest, 0) + 1
        if self.delay:
            time.sleep(self.delay)
        if desc.digest not in self.blobs:
            raise NotFoundError(f"content {desc.digest}: not found")
        return io.BytesIO(self.blobs[desc.digest])


def image(layers: int = 2, platform: Platform | None = None, seed: bytes = b"") -> tuple[Descriptor, dict[Digest, bytes]]:
    blobs: dict[Digest, bytes] = {}
    cfg_d, cfg = doc({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "s": seed.hex()},
                     mt.OCI_CONFIG)
    blobs[cfg_d.digest] = cfg
    ls = []
    for i in range(layers):
        d, b = blob(hashlib.sha256(seed + bytes([i])).digest() * 1000, mt.OCI_LAYER_GZIP)
        blobs[d.digest] = b
        ls.append(d.to_json())
    man_d, man = doc({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cfg_d.to_json(), "layers": ls},
                     mt.OCI_MANIFEST, platform)
    blobs[man_d.digest] = man
    return man_d, blobs


@pytest.fixture
def store(tmp_path) -> LocalContentStore:
    return LocalContentStore(tmp_path / "content", fsync=False)


# -- media types ----------------------------------------------------------------------------------


def test_media_type_kinds_and_compression() -> None:
    assert mt.kind(mt.OCI_INDEX) == "index" and mt.kind(mt.DOCKER_SCHEMA2_MANIFEST_LIST) == "index"
    assert mt.kind(mt.DOCKER_SCHEMA2_MANIFEST) == "manifest" and mt.kind(mt.DOCKER_SCHEMA2_CONFIG) == "config"
    assert mt.kind(mt.OCI_LAYER_ZSTD) == "layer" and mt.kind("application/x-other") == "unknown"
    assert mt.compression(mt.DOCKER_SCHEMA2_LAYER_GZIP) == "gzip"
    assert mt.compression(mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD) == "zstd"
    assert mt.compression(mt.OCI_LAYER) == ""
    assert mt.is_non_distributable(mt.DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP)
    assert not mt.is_non_distributable(mt.OCI_LAYER_GZIP)
    assert mt.is_manifest(mt.OCI_MANIFEST + "; charset=utf-8")


def test_ingest_refs_name_the_kind() -> None:
    d = Digest.from_bytes(b"x")
    assert ingest_ref(Descriptor(media_type=mt.OCI_INDEX, digest=d, size=1)) == f"index-{d}"
    assert ingest_ref(Descriptor(media_type=mt.DOCKER_SCHEMA2_MANIFEST, digest=d, size=1)) == f"manifest-{d}"
    assert ingest_ref(Descriptor(media_type=mt.DOCKER_SCHEMA2_CONFIG, digest=d, size=1)) == f"config-{d}"
    assert ingest_ref(Descriptor(media_type=mt.OCI_LAYER_ZSTD, digest=d, size=1)) == f"layer-{d}"


# -- strict parsing --------------------------------------------------------------------------------


def test_duplicate_keys_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="manifest x: duplicate JSON key 'layers'"):
        loads_strict(b'{"layers": [], "layers": [1]}', "manifest x")


@pytest.mark.parametrize("data, why", [
    (b"[1]", "expected a JSON object"),
    (b'{"a": NaN}', "not valid JSON"),
    (b"\xff{}", "not valid UTF-8"),
    (b"{", "not valid JSON"),
])  # fmt: skip
def test_not_strict_json_is_rejected(data: bytes, why: str) -> None:
    with pytest.raises(InvalidArgumentError, match=why):
        loads_strict(data, "config c")


def test_parse_manifest_and_index() -> None:
    man_d, blobs = image(layers=3)
    m = parse(man_d, blobs[man_d.digest])
    assert m.config.media_type == mt.OCI_CONFIG and len(m.layers) == 3
    idx_d, idx = doc({"schemaVersion": 2, "manifests": [man_d.to_json()]}, mt.OCI_INDEX)
    assert parse(idx_d, idx).manifests == (man_d,)


def test_ambiguous_document_is_rejected() -> None:
    man_d, _ = image()
    obj = {"schemaVersion": 2, "manifests": [man_d.to_json()], "layers": [], "config": man_d.to_json()}
    for media_type in (mt.OCI_INDEX, mt.OCI_MANIFEST):
        d, data = doc(obj, media_type)
        with pytest.raises(InvalidArgumentError, match=f"{d.digest}: ambiguous document"):
            parse(d, data)


def test_media_type_must_agree_with_descriptor() -> None:
    d, data = doc({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, mt.OCI_MANIFEST)
    with pytest.raises(InvalidArgumentError, match="disagrees with descriptor"):
        parse(d, data)


def test_schema1_is_unsupported() -> None:
    d, data = doc({"schemaVersion": 1, "name": "x", "fsLayers": []}, mt.DOCKER_SCHEMA1_MANIFEST_SIGNED)
    with pytest.raises(UnsupportedError, match="schema1"):
        parse(d, data)
    d, data = doc({"schemaVersion": 1, "name": "x", "fsLayers": []}, mt.DOCKER_SCHEMA2_MANIFEST)
    with pytest.raises(UnsupportedError, match="schema1"):
        parse(d, data)


def test_parse_checks_the_exact_bytes() -> None:
    man_d, blobs = image()
    data = blobs[man_d.digest]
    with pytest.raises(InvalidArgumentError, match="digest mismatch"):
        parse(man_d, data[:-1] + b" ")
    with pytest.raises(InvalidArgumentError, match="size mismatch"):
        parse(man_d, data + b" ")


def test_config_that_is_not_json_names_the_config() -> None:
    d, data = blob(b"not json", mt.OCI_CONFIG)
    with pytest.raises(InvalidArgumentError, match=f"config {d.digest}: not valid JSON"):
        parse_config(d, data)


def test_oversized_manifest_is_refused_before_reading() -> None:
    d = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"x"), size=5 << 20)
    with pytest.raises(InvalidArgumentError, match="larger than the 4194304 byte limit"):
        parse(d, b"")


# -- platforms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, want", [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("Linux/AMD64/v1", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/i686", "linux/386"),
    ("macos/arm64", "darwin/arm64"),
])  # fmt: skip
def test_platform_normalisation(spec: str, want: str) -> None:
    assert str(platforms.parse(spec)) == want


@pytest.mark.parametrize("spec", ["", "linux//amd64", "a/b/c/d", "linux/am d64", "nonsense"])
def test_bad_platform_specs(spec: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid platform"):
        platforms.parse(spec)


def test_bare_os_or_arch_takes_the_rest_from_the_host() -> None:
    h = platforms.host()
    assert platforms.parse("linux") == h if h.os == "linux" else True
    assert platforms.parse("arm64").os == h.os


def test_matcher_ranks_and_selects() -> None:
    amd = Matcher.only(platforms.parse("linux/amd64"))
    assert amd.match(Platform(os="linux", architecture="x86_64"))
    assert amd.match(Platform(os="linux", architecture="386"))
    assert not amd.match(Platform(os="linux", architecture="arm64"))
    assert not amd.match(None)
    arm = Matcher.only(platforms.parse("linux/arm64"))
    assert arm.match(Platform(os="linux", architecture="arm64", variant="v8"))
    m386 = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"1"), size=1,
                      platform=Platform(os="linux", architecture="386"))
    m64 = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"2"), size=1,
                     platform=Platform(os="linux", architecture="amd64"))
    marm = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"3"), size=1,
                      platform=Platform(os="linux", architecture="arm64", variant="v8"))
    assert amd.select([m386, marm, m64]) == [m64]
    assert Matcher.from_specs(["linux/arm64", "linux/amd64"]).select([m386, marm, m64]) == [marm, m64]
    assert Matcher.from_specs([], all_platforms=True).select([m386, marm]) == [m386, marm]
    assert amd.select([marm]) == []


# -- dispatch --------------------------------------------------------------------------------------


def _chain(n: int) -> tuple[Descriptor, dict[Digest, Descriptor]]:
    """A graph of n distinct descriptors, each pointing at the next, as a children map."""
    descs = [Descriptor(media_type=mt.OCI_INDEX, digest=Digest.from_bytes(str(i).encode()), size=1) for i in range(n)]
    return descs[0], {descs[i].digest: descs[i + 1] for i in range(n - 1)}


def test_dispatch_visits_each_digest_once_within_the_limit() -> None:
    leaves = [Descriptor(media_type=mt.OCI_LAYER, digest=Digest.from_bytes(bytes([i])), size=1) for i in range(20)]
    root = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"root"), size=1)
    calls: dict[Digest, int] = {}
    running = 0
    peak = 0
    lock = threading.Lock()

    def handler(d: Descriptor) -> list[Descriptor]:
        nonlocal running, peak
        with lock:
            calls[d.digest] = calls.get(d.digest, 0) + 1
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return leaves * 3 if d == root else []

    visited = dispatch(handler, [root, root], limit=3)
    assert len(visited) == 21 and set(calls.values()) == {1}
    assert 1 < peak <= 3


def test_dispatch_first_error_cancels_the_rest() -> None:
    leaves = [Descriptor(media_type=mt.OCI_LAYER, digest=Digest.from_bytes(bytes([i])), size=1) for i in range(50)]
    root = Descriptor(media_type=mt.OCI_MANIFEST, digest=Digest.from_bytes(b"root"), size=1)
    cancel = threading.Event()
    started = []

    def handler(d: Descriptor) -> list[Descriptor]:
        if d == root:
            return leaves
        started.append(d)
        if d == leaves[0]:
            raise FailedPreconditionError("layer 0: digest mismatch")
        cancel.wait(2)
        return []

    t0 = time.monotonic()
    with pytest.raises(FailedPreconditionError, match="layer 0: digest mismatch"):
        dispatch(handler, [root], limit=2, cancel=cancel)
    assert cancel.is_set() and len(started) < 10 and time.monotonic() - t0 < 2


def test_dispatch_depth_cap() -> None:
    root, kids = _chain(50)
    with pytest.raises(InvalidArgumentError, match="nested more than 8 levels deep"):
        dispatch(lambda d: [kids[d.digest]] if d.digest in kids else [], [root], limit=2)


# -- fetch and children handlers on the local content store ----------------------------------------


def test_fetch_handlers_fill_the_store_and_skip_what_is_there(store: LocalContentStore) -> None:
    man_d, blobs = image(layers=3)
    fetcher = DictFetcher(blobs)
    events: list[Event] = []
    h = handlers(fetch_handler(store, fetcher, on_event=events.append), children_handler(store))
    visited = dispatch(h, [man_d], limit=2)
    assert {d.digest for d in visited} == set(blobs)
    for dg, data in blobs.items():
        assert store.info(dg).size == len(data)
    assert set(fetcher.requests.values()) == {1}
    assert {e.ref for e in events if e.state == "done"} == {ingest_ref(d) for d in visited}
    assert check(store, man_d).available

    fetcher2 = DictFetcher(blobs)
    events.clear()
    h = handlers(fetch_handler(store, fetcher2, on_event=events.append), children_handler(store))
    dispatch(h, [man_d])
    assert fetcher2.requests == {} and {e.state for e in events} == {"exists"}


def test_index_platform_selection(store: LocalContentStore) -> None:
    amd_d, blobs = image(platform=Platform(os="linux", architecture="amd64"), seed=b"amd")
    arm_d, arm_blobs = image(platform=Platform(os="linux", architecture="arm64", variant="v8"), seed=b"arm")
    blobs.update(arm_blobs)
    idx_d, idx = doc({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [amd_d.to_json(), arm_d.to_json()]},
                     mt.OCI_INDEX)
    blobs[idx_d.digest] = idx
    fetcher = DictFetcher(blobs)
    matcher = Matcher.from_specs(["linux/arm64"])
    dispatch(handlers(fetch_handler(store, fetcher), children_handler(store, matcher)), [idx_d])
    assert arm_d.digest in fetcher.requests and amd_d.digest not in fetcher.requests
    r = check(store, idx_d, matcher)
    assert r.available and [str(p) for p in r.platforms] == ["linux/arm64/v8"]
    everything = check(store, idx_d, Matcher.all())
    assert not everything.available and amd_d in everything.missing


def test_hostile_index_fifty_deep_fails_fast_fetching_each_digest_once(store: LocalContentStore) -> None:
    man_d, blobs = image()
    inner = man_d
    for _ in range(50):
        inner, data = doc({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [inner.to_json()]}, mt.OCI_INDEX)
        blobs[inner.digest] = data
    fetcher = DictFetcher(blobs)
    t0 = time.monotonic()
    with pytest.raises(InvalidArgumentError, match="nested more than 8 levels deep"):
        dispatch(handlers(fetch_handler(store, fetcher), children_handler(store, Matcher.all())), [inner])
    assert time.monotonic() - t0 < 5
    assert set(fetcher.requests.values()) == {1} and len(fetcher.requests) == 8


def test_hostile_index_ten_thousand_copies(store: LocalContentStore) -> None:
    man_d, blobs = image(platform=Platform(os="linux", architecture="amd64"))
    idx_d, idx = doc({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [man_d.to_json()] * 10_000},
                     mt.OCI_INDEX)
    blobs[idx_d.digest] = idx
    fetcher = DictFetcher(blobs)
    t0 = time.monotonic()
    with pytest.raises(InvalidArgumentError, match=f"index {idx_d.digest}: lists 10000 manifests, more than the limit"):
        dispatch(handlers(fetch_handler(store, fetcher), children_handler(store, Matcher.all())), [idx_d])
    assert time.monotonic() - t0 < 5 and fetcher.requests == {idx_d.digest: 1}
    # Under the cap, copies of one digest are fetched once.
    idx_d, idx = doc({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [man_d.to_json()] * 900}, mt.OCI_INDEX)
    blobs[idx_d.digest] = idx
    fetcher = DictFetcher(blobs)
    dispatch(handlers(fetch_handler(store, fetcher), children_handler(store, Matcher.all())), [idx_d])
    assert set(fetcher.requests.values()) == {1} and len(fetcher.requests) == len(blobs) - 1


def test_non_distributable_layers_are_not_fetched(store: LocalContentStore) -> None:
    cfg_d, cfg = doc({"os": "linux", "architecture": "amd64"}, mt.OCI_CONFIG)
    foreign = Descriptor(media_type=mt.DOCKER_SCHEMA2_LAYER_FOREIGN_GZIP, digest=Digest.from_bytes(b"f"), size=1,
                         urls=("https://example.invalid/layer",))
    man_d, man = doc({"schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA2_MANIFEST, "config": cfg_d.to_json(),
                      "layers": [foreign.to_json()]}, mt.DOCKER_SCHEMA2_MANIFEST)
    fetcher = DictFetcher({cfg_d.digest: cfg, man_d.digest: man})
    dispatch(handlers(fetch_handler(store, fetcher), children_handler(store)), [man_d])
    assert foreign.digest not in fetcher.requests and check(store, man_d).available


def test_waiting_on_a_held_ref_then_finding_the_blob(store: LocalContentStore) -> None:
    man_d, blobs = image(layers=1)
    layer = parse(man_d, blobs[man_d.digest]).layers[0]
    w = store.writer(ingest_ref(layer), total=layer.size, expected=layer.digest)
    events: list[Event] = []
    fetcher = DictFetcher(blobs)

    def finish_other_writer() -> None:
        time.sleep(0.3)
        w.write(blobs[layer.digest])
        w.commit(layer.size, layer.digest)
        w.close()

    t = threading.Thread(target=finish_other_writer)
    t.start()
    dispatch(handlers(fetch_handler(store, fetcher, on_event=events.append), children_handler(store)), [man_d])
    t.join()
    states = [e.state for e in events if e.digest == layer.digest]
    assert states == ["waiting", "exists"] and layer.digest not in fetcher.requests
