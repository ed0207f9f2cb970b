"""hoist.reference: the distribution grammar, its limits, and explicit normalization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoist.content import Digest
from hoist.errors import InvalidArgumentError
from hoist.reference import Reference, familiar, normalize, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("docker.io/library/redis:latest", "docker.io", "library/redis", "latest", None),
        ("127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000", "test/busybox", "1", None),
        (f"localhost/app@{D}", "localhost", "app", "", D),
        (f"[::1]:5000/a/b:v1.0-rc_1@{D}", "[::1]:5000", "a/b", "v1.0-rc_1", D),
        ("[fe80::1]/repo", "[fe80::1]", "repo", "", None),
        ("Registry.Example.COM/a__b/c-d/e.f:TAG", "Registry.Example.COM", "a__b/c-d/e.f", "TAG", None),
        ("redis", "", "redis", "", None),
        ("user/app:1", "", "user/app", "1", None),
        ("localhost:5000", "", "localhost", "5000", None),
        ("a---b/c", "", "a---b/c", "", None),
    ],
)
def test_parse_decomposes_locator_and_object(text: str, domain: str, path: str, tag: str, digest: str | None) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert ref.locator == (f"{domain}/{path}" if domain else path)
    assert ref.object == tag + (f"@{digest}" if digest else "")
    assert str(ref) == text


def test_host_and_port() -> None:
    assert (parse("[::1]:5000/x").hostname, parse("[::1]:5000/x").port) == ("[::1]", 5000)
    assert (parse("example.com/x").hostname, parse("example.com/x").port) == ("example.com", None)
    assert parse("127.0.0.1:5000/x").port == 5000


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "empty reference"),
        (":tag", "repository name is missing before ':'"),
        (f"@{D}", "repository name is missing before '@'"),
        ("Upper/case", "repository name must be lower-case"),
        ("docker.io/Library/redis", "repository name must be lower-case"),
        ("repo@sha256:short", "digest 'sha256:short'"),
        ("repo@sha256:" + "a" * 63, "sha256 needs 64 hex characters, got 63"),
        ("repo@md5:" + "a" * 32, "unsupported algorithm"),
        ("a" * 300, "repository name is 300 characters, longer than 255"),
        ("repo:", "empty tag after ':'"),
        ("repo:-bad", "tag '-bad' must match"),
        ("repo:" + "t" * 129, "must match"),
        ("a//b", "empty path component"),
        ("a/b/", "empty path component"),
        ("a/_b", "path component '_b'"),
        ("a/b_", "path component 'b_'"),
        ("a/b...c", "path component 'b...c'"),
        ("a/b___c", "path component 'b___c'"),
        ("host.com:port/x", "port must be decimal digits"),
        ("-bad.com/x", "not a valid domain name"),
        ("[::1]:5000", "repository name is missing after the registry host"),
        ("[zz::1]/x", "not a valid bracketed IPv6 address"),
        ("https://docker.io/redis", "a scheme"),
        ("re dis", "whitespace"),
        (f"repo@{D}@{D}", "more than one '@'"),
        ("repo@", "empty digest"),
    ],
)
def test_invalid_references_name_the_reference_and_the_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        parse(text)
    message = str(e.value)
    assert message.startswith(f"invalid reference {text[:117]!r}"[: len("invalid reference ") + 10])
    assert rule in message
    assert "\n" not in message


def test_name_length_limit_is_255_including_the_domain() -> None:
    ok = "example.com/" + "a" * (255 - len("example.com/"))
    assert len(parse(ok).locator) == 255
    with pytest.raises(InvalidArgumentError, match="256 characters, longer than 255"):
        parse(ok + "a")


@pytest.mark.parametrize(
    ("short", "full"),
    [
        ("redis", "docker.io/library/redis:latest"),
        ("redis:7", "docker.io/library/redis:7"),
        ("user/app", "docker.io/user/app:latest"),
        (f"redis@{D}", f"docker.io/library/redis@{D}"),
        ("index.docker.io/redis", "docker.io/library/redis:latest"),
        ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
        ("localhost/x:1", "localhost/x:1"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ],
)
def test_normalize_is_explicit_and_idempotent(short: str, full: str) -> None:
    assert str(parse(short)) == short  # parsing alone never expands
    assert str(normalize(short)) == full
    assert str(normalize(normalize(short))) == full


def test_normalize_rejects_names_too_long_once_expanded() -> None:
    name = "a" * 250
    parse(name)
    with pytest.raises(InvalidArgumentError, match="longer than 255"):
        normalize(name)


def test_familiar_and_with_object() -> None:
    assert familiar("docker.io/library/redis:latest") == "redis:latest"
    assert familiar("docker.io/user/app:1") == "user/app:1"
    assert familiar("127.0.0.1:5000/x:1") == "127.0.0.1:5000/x:1"
    ref = parse("127.0.0.1:5000/x:1")
    assert str(ref.with_object(D)) == f"127.0.0.1:5000/x@{D}"
    assert str(ref.with_object("@" + D)) == f"127.0.0.1:5000/x@{D}"
    assert str(ref.with_object("v2")) == "127.0.0.1:5000/x:v2"
    assert str(ref.with_object("")) == "127.0.0.1:5000/x"
    with pytest.raises(InvalidArgumentError):
        ref.with_object("sha256:nothex")


# -- properties -------------------------------------------------------------------------------------

alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
separator = st.sampled_from([".", "_", "__", "-", "--"])
component = st.builds(lambda first, rest: first + "".join(s + a for s, a in rest), alnum,
                      st.lists(st.tuples(separator, alnum), max_size=3))
path = st.lists(component, min_size=1, max_size=4).map("/".join)
domain = st.one_of(
    st.sampled_from(["localhost", "127.0.0.1", "[::1]", "registry.example.com", "a-b.c"]),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["localhost", "example.com", "[::1]", "10.0.0.1"]),
              st.integers(1, 65535)),
)
tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,20}\Z")
digest = st.binary(min_size=1, max_size=8).map(lambda b: str(Digest.from_bytes(b)))


@st.composite
def references(draw: st.DrawFn) -> str:
    d = draw(st.one_of(st.none(), domain))
    p = draw(path)
    if d is None and ("." in p.split("/")[0] or p.split("/")[0] == "localhost"):
        d = "localhost"  # such a first component would be read as a registry host
    text = f"{d}/{p}" if d else p
    t = draw(st.one_of(st.none(), tag))
    g = draw(st.one_of(st.none(), digest))
    return text + (f":{t}" if t else "") + (f"@{g}" if g else "")


@given(references())
def test_valid_references_round_trip(text: str) -> None:
    ref = parse(text)
    assert str(ref) == text
    assert parse(str(ref)) == ref
    n = normalize(ref)
    assert n.domain and (n.tag or n.digest)
    assert normalize(str(n)) == n


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidArgumentError as e:
        assert str(e).startswith("invalid reference ")
    else:
        assert isinstance(ref, Reference)
        assert str(ref) == text
