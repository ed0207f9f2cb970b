"""Platform specifiers and matching, as containerd's ``platforms`` package does them.

``linux/arm64/v8`` and ``aarch64`` name the same platform once normalised; a matcher for the host
also accepts the platforms it can run (``linux/386`` on ``linux/amd64``, ``arm/v6`` on ``arm/v7``).
"""

from __future__ import annotations

import platform as _pyplatform
import re
import sys
from collections.abc import Iterable, Sequence

import attrs

from hoist.content import Platform
from hoist.errors import InvalidArgumentError

_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_KNOWN_OS = {
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
    "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos", "wasip1",
}
_KNOWN_ARCH = {
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
}


def normalize_os(os_: str) -> str:
    """Lower-case the OS; ``macos`` is ``darwin``."""
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """Canonical ``(architecture, variant)``: ``x86_64`` → ``amd64``, ``aarch64``/``v8`` → ``arm64``/``""``."""
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386", "i486", "i586", "i686"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        elif re.fullmatch(r"v?\d+\.\d+", variant):
            variant = variant if variant.startswith("v") else "v" + variant
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """``p`` with normalised os, architecture and variant."""
    arch, variant = normalize_arch(p.architecture, p.variant)
    return attrs.evolve(p, os=normalize_os(p.os), architecture=arch, variant=variant)


def host() -> Platform:
    """The platform of the machine Hoist runs on (normalised)."""
    os_ = "linux" if sys.platform.startswith("linux") else normalize_os(sys.platform)
    machine = _pyplatform.machine() or "amd64"
    variant = ""
    if machine.startswith("armv"):
        variant = machine[4:5]
        machine = "arm"
    return normalize(Platform(os=os_, architecture=machine, variant=variant))


def parse(spec: str) -> Platform:
    """Parse ``os[/arch[/variant]]`` or a bare ``arch``/``os`` (the rest from the host), normalised.

    :raises InvalidArgumentError: empty components, stray characters, more than three parts.
    """
    parts = spec.split("/")
    if not spec or len(parts) > 3 or any(not p or not _COMPONENT.match(p) for p in parts):
        raise InvalidArgumentError(f"invalid platform {spec!r}: expected os[/arch[/variant]]")
    h = host()
    if len(parts) == 1:
        word = parts[0].lower()
        if normalize_os(word) in _KNOWN_OS:
            os_ = normalize_os(word)
            if os_ == h.os:
                return h
            return normalize(Platform(os=os_, architecture=h.architecture, variant=h.variant))
        arch, variant = normalize_arch(word, "")
        if arch in _KNOWN_ARCH:
            return normalize(Platform(os=h.os, architecture=arch, variant=variant))
        raise InvalidArgumentError(f"invalid platform {spec!r}: unknown operating system or architecture")
    if len(parts) == 2:
        return normalize(Platform(os=parts[0], architecture=parts[1]))
    return normalize(Platform(os=parts[0], architecture=parts[1], variant=parts[2]))


def format(p: Platform) -> str:  # noqa: A001 - mirrors containerd's platforms.Format
    """``os/arch[/variant]``."""
    return str(p)


def _compatible(p: Platform) -> list[Platform]:
    """Platforms ``p`` can run, best first (containerd's ``platforms.Only``)."""
    p = normalize(p)
    out = [p]
    if p.architecture == "amd64":
        levels = ["v4", "v3", "v2", ""]
        if p.variant in levels:
            out += [attrs.evolve(p, variant=v) for v in levels[levels.index(p.variant) + 1:]]
        out.append(Platform(os=p.os, architecture="386"))
    elif p.architecture == "arm64":
        if p.variant == "":
            out.append(attrs.evolve(p, variant="v8"))
        out += [Platform(os=p.os, architecture="arm", variant=v) for v in ("v8", "v7", "v6", "v5")]
    elif p.architecture == "arm":
        for v in ("v8", "v7", "v6", "v5"):
            if v < p.variant and attrs.evolve(p, variant=v) not in out:
                out.append(attrs.evolve(p, variant=v))
    return out


@attrs.frozen
class Matcher:
    """Matches descriptors' platforms against wanted platforms and ranks the matches.

    ``Matcher.all()`` matches everything; ``Matcher.only(p)`` matches ``p`` and what ``p`` can run;
    ``Matcher.exact(ps)`` matches any of ``ps`` (normalised) and their compatible platforms.
    """

    wanted: tuple[tuple[Platform, ...], ...] = ()
    everything: bool = False

    @classmethod
    def all(cls) -> Matcher:
        return cls(everything=True)

    @classmethod
    def only(cls, *ps: Platform) -> Matcher:
        return cls(tuple(tuple(_key(c) for c in _compatible(p)) for p in ps))

    @classmethod
    def default(cls) -> Matcher:
        return cls.only(host())

    @classmethod
    def from_specs(cls, specs: Sequence[str], all_platforms: bool = False) -> Matcher:
        """The matcher for ``--platform`` values (host default when none) or ``--all-platforms``."""
        if all_platforms:
            return cls.all()
        if not specs:
            return cls.default()
        return cls.only(*(parse(s) for s in specs))

    def match(self, p: Platform | None) -> bool:
        if self.everything:
            return True
        if p is None:
            return False
        k = _key(p)
        return any(k in group for group in self.wanted)

    def rank(self, p: Platform) -> tuple[int, int]:
        """Sort key: lower is better; ``(group, position)`` of the first wanted platform ``p`` matches."""
        k = _key(p)
        for gi, group in enumerate(self.wanted):
            if k in group:
                return gi, group.index(k)
        return len(self.wanted), 0

    def select(self, descs: Iterable) -> list:
        """From an index's entries, the ones to follow: with ``all``, every one; otherwise, for each wanted
        platform the best-ranked entry, plus entries that carry no platform but are nested indexes.
        """
        descs = list(descs)
        if self.everything:
            return descs
        from hoist.images import mediatypes as mt

        chosen: list = []
        for group in self.wanted:
            best = None
            best_rank = len(group)
            for d in descs:
                if d.platform is None:
                    continue
                k = _key(d.platform)
                if k in group and group.index(k) < best_rank:
                    best, best_rank = d, group.index(k)
            if best is not None and best not in chosen:
                chosen.append(best)
        chosen += [d for d in descs if d.platform is None and mt.is_index(d.media_type) and d not in chosen]
        return chosen

    def describe(self) -> str:
        if self.everything:
            return "all platforms"
        return ", ".join(str(g[0]) for g in self.wanted)


def _key(p: Platform) -> Platform:
    n = normalize(p)
    return Platform(os=n.os, architecture=n.architecture, variant=n.variant)
