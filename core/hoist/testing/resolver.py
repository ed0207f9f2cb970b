"""The resolver conformance suite: what every ``hoist.resolver.v1`` resolver must do, as one test class.

A resolver author runs it by subclassing and providing one fixture, ``resolver_case``::

    import pytest
    from hoist.testing.resolver import ResolverCase, ResolverSuite

    class TestMyResolver(ResolverSuite):
        @pytest.fixture
        def resolver_case(self, tmp_path):
            blobs = publish_known_image(tmp_path)          # your way of making an image the resolver can find
            resolver = MyResolver(...)
            yield ResolverCase(
                resolver=resolver,
                ref="my-scheme:///images/app:1",            # names the known image by tag
                digest_ref="my-scheme:///images/app@sha256:…",   # the same image by digest ("" if unsupported)
                digest=manifest_digest,                      # what ref names (a manifest or an index)
                blobs=blobs,                                 # {digest: exact bytes} of every blob of the image
                missing_ref="my-scheme:///images/app:nope",  # well formed, but not there
                invalid_ref="my-scheme:relative",            # malformed
                tamper=lambda d, data: overwrite(d, data),   # make the resolver serve `data` for blob d
            )
            resolver.close()

The suite checks that ``resolve`` returns the name, descriptor and a fetcher; that the fetcher yields
exactly the bytes of each blob and verifies them (short, long and wrong content are errors before
the last byte is handed out); that unknown references are :class:`~hoist.errors.NotFoundError` and
malformed ones :class:`~hoist.errors.InvalidArgumentError`; and that fetches run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from hoist.content import Descriptor, Digest
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from hoist.images import mediatypes as mt
from hoist.remotes import Fetcher, Resolved, Resolver


@attrs.frozen(kw_only=True)
class ResolverCase:
    """What :class:`ResolverSuite` needs: a resolver, a known image and how to reach or break it.

    :ivar resolver: the resolver under test (the fixture closes it).
    :ivar ref: a reference to the known image, by tag.
    :ivar digest_ref: the same image by digest, or ``""`` if the resolver has no such form.
    :ivar digest: the digest of the manifest or index ``ref`` names.
    :ivar blobs: every blob of the image (that manifest or index, its children, configs, layers) → bytes.
    :ivar missing_ref: a well-formed reference to an image that does not exist.
    :ivar invalid_ref: a malformed reference.
    :ivar name: the ``Resolved.name`` expected for ``ref`` (``None``: any non-empty string).
    :ivar tamper: ``tamper(digest, data)`` makes the resolver serve ``data`` (same length) for that blob.
    """

    resolver: Resolver
    ref: str
    digest: Digest = attrs.field(converter=Digest.parse)
    blobs: Mapping[Digest, bytes]
    missing_ref: str
    invalid_ref: str
    tamper: Callable[[Digest, bytes], None]
    digest_ref: str = ""
    name: str | None = None


def _read(stream, chunk: int = 1 << 20) -> bytes:  # noqa: ANN001
    parts = []
    with stream:
        while True:
            b = stream.read(chunk)
            if not b:
                return b"".join(parts)
            parts.append(b)


def _media_type(data: bytes) -> str:
    import json

    try:
        obj = json.loads(data)
    except ValueError:
        return "application/octet-stream"
    if not isinstance(obj, dict):
        return "application/octet-stream"
    return obj.get("mediaType") or (mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST if "layers" in obj
                                    else mt.OCI_CONFIG)


class ResolverSuite:
    """Conformance tests for a resolver; subclass and provide the ``resolver_case`` fixture (a :class:`ResolverCase`)."""

    @pytest.fixture
    def resolver_case(self) -> ResolverCase:
        raise NotImplementedError("subclass ResolverSuite and provide a resolver_case fixture")

    def _desc(self, case: ResolverCase, digest: Digest, **changes: object) -> Descriptor:
        data = case.blobs[digest]
        base = Descriptor(media_type=_media_type(data), digest=digest, size=len(data))
        return attrs.evolve(base, **changes)

    def _largest(self, case: ResolverCase) -> Digest:
        return max(case.blobs, key=lambda d: (len(case.blobs[d]), str(d)))

    # -- resolve ---------------------------------------------------------------------------------

    def test_resolve_returns_name_descriptor_and_fetcher(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        resolved = case.resolver.resolve(case.ref)
        assert isinstance(resolved, Resolved)
        assert isinstance(resolved.name, str) and resolved.name
        if case.name is not None:
            assert resolved.name == case.name
        assert resolved.descriptor.digest == case.digest
        assert resolved.descriptor.size == len(case.blobs[case.digest])
        assert mt.is_index(resolved.descriptor.media_type) or mt.is_manifest(resolved.descriptor.media_type)
        assert isinstance(resolved.fetcher, Fetcher)
        assert _read(resolved.fetcher.fetch(resolved.descriptor)) == case.blobs[case.digest]

    def test_resolve_by_digest_names_the_same_object(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        if not case.digest_ref:
            return
        by_tag = case.resolver.resolve(case.ref)
        by_digest = case.resolver.resolve(case.digest_ref)
        assert by_digest.descriptor.digest == by_tag.descriptor.digest == case.digest
        assert by_digest.descriptor.size == by_tag.descriptor.size

    def test_unknown_reference_is_not_found(self, resolver_case: ResolverCase) -> None:
        with pytest.raises(NotFoundError):
            resolver_case.resolver.resolve(resolver_case.missing_ref)

    def test_malformed_reference_is_invalid(self, resolver_case: ResolverCase) -> None:
        with pytest.raises(InvalidArgumentError):
            resolver_case.resolver.resolve(resolver_case.invalid_ref)

    # -- fetch -----------------------------------------------------------------------------------

    def test_fetcher_yields_every_blob_exactly(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        fetcher = case.resolver.resolve(case.ref).fetcher
        for digest, data in case.blobs.items():
            assert _read(fetcher.fetch(self._desc(case, digest))) == data, f"blob {digest}"
        # Odd read sizes and readinto give the same bytes.
        largest = self._largest(case)
        assert _read(fetcher.fetch(self._desc(case, largest)), 4093) == case.blobs[largest]
        buf = bytearray(len(case.blobs[largest]))
        view, got = memoryview(buf), 0
        with fetcher.fetch(self._desc(case, largest)) as s:
            while got < len(buf) and (n := s.readinto(view[got:])):
                got += n
        assert bytes(buf[:got]) == case.blobs[largest]

    def test_repository_fetcher_fetches_blobs(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        fetcher = case.resolver.fetcher(case.ref)
        largest = self._largest(case)
        assert _read(fetcher.fetch(self._desc(case, largest))) == case.blobs[largest]

    def test_a_blob_that_is_not_there_is_not_found(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        ghost = Descriptor(media_type="application/octet-stream", digest=Digest.from_bytes(b"not in the image\n"), size=17)
        fetcher = case.resolver.resolve(case.ref).fetcher
        with pytest.raises(NotFoundError):
            _read(fetcher.fetch(ghost))

    @pytest.mark.parametrize("delta", [-1, 1])
    def test_a_wrong_size_is_refused_before_the_last_byte(self, resolver_case: ResolverCase, delta: int) -> None:
        case = resolver_case
        largest = self._largest(case)
        data = case.blobs[largest]
        desc = self._desc(case, largest, size=len(data) + delta)
        fetcher = case.resolver.resolve(case.ref).fetcher
        received = bytearray()
        with pytest.raises(FailedPreconditionError):
            stream = fetcher.fetch(desc)
            with stream:
                while b := stream.read(1 << 16):
                    received += b
        # Never the whole of what the descriptor claims: the object would look complete.
        assert len(received) < len(data) - 1 if delta < 0 else len(received) <= len(data)

    def test_wrong_content_is_refused_before_the_last_byte(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        largest = self._largest(case)
        data = case.blobs[largest]
        bad = bytes([data[0] ^ 0xFF]) + data[1:]
        case.tamper(largest, bad)
        fetcher = case.resolver.resolve(case.ref).fetcher
        received = bytearray()
        with pytest.raises(FailedPreconditionError, match="digest"):
            stream = fetcher.fetch(self._desc(case, largest))
            with stream:
                while b := stream.read(1 << 16):
                    received += b
        assert len(received) < len(data)

    def test_concurrent_fetches(self, resolver_case: ResolverCase) -> None:
        case = resolver_case
        fetcher = case.resolver.resolve(case.ref).fetcher
        todo = [d for d in case.blobs for _ in range(4)]
        start = threading.Barrier(min(8, len(todo)))

        def one(digest: Digest) -> bool:
            try:
                start.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            return _read(fetcher.fetch(self._desc(case, digest)), 1 << 15) == case.blobs[digest]

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert all(pool.map(one, todo))


__all__ = ["ResolverCase", "ResolverSuite"]
