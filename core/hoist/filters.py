"""containerd's filter syntax: ``<fieldpath>[<op><value>]`` selectors, ``,`` for AND, several filters for OR.

Grammar (as containerd's ``filters`` package)::

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+
    quoted    := "..." (Go escapes); with ~= also /.../ or |...|

A selector without operator tests that the field is present (``labels.foo``).  ``~=`` is a regular
expression searched anywhere in the value.  Objects are matched through an adaptor: a function from
a field path (a tuple of strings) to ``(value, present)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import attrs

from hoist.errors import InvalidArgumentError

Adaptor = Callable[[tuple[str, ...]], tuple[str, bool]]
"""Looks up a field path on one object: ``(value, present)``."""

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_OPERATORS = ("==", "!=", "~=")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


@attrs.frozen(kw_only=True)
class Selector:
    """One ``fieldpath op value`` test; ``op`` is ``""`` for a presence test."""

    fieldpath: tuple[str, ...]
    op: str = ""
    value: str = ""
    pattern: re.Pattern[str] | None = attrs.field(default=None, eq=False)

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.op == "":
            return present
        if self.op == "==":
            return present and value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.pattern is not None
        return self.pattern.search(value) is not None


@attrs.frozen
class Filter:
    """A parsed filter set: matches when any alternative has all its selectors matching.

    No alternatives at all (no filters given, or only empty strings) matches everything.
    """

    alternatives: tuple[tuple[Selector, ...], ...] = ()

    def match(self, adaptor: Adaptor) -> bool:
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in alt) for alt in self.alternatives)


def parse(*filters: str) -> Filter:
    """Parse filter strings; several strings are alternatives (OR).

    :raises InvalidArgumentError: a malformed filter, naming it and the position of the problem.
    """
    alts: list[tuple[Selector, ...]] = []
    for text in filters:
        if not isinstance(text, str):
            raise InvalidArgumentError(f"invalid filter {text!r}: not a string")
        if text == "":
            return Filter(())  # containerd: an empty filter matches everything
        alts.append(_Parser(text).selectors())
    return Filter(tuple(alts))


def map_field(fieldpath: Iterable[str], mapping: dict[str, str] | None) -> tuple[str, bool]:
    """Look ``fieldpath`` (joined with ``.``) up in a label-like mapping, as containerd's ``checkMap``."""
    if not mapping:
        return "", False
    key = ".".join(fieldpath)
    if key in mapping:
        return mapping[key], True
    return "", False


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, msg: str, pos: int | None = None) -> InvalidArgumentError:
        p = self.pos if pos is None else pos
        return InvalidArgumentError(f"invalid filter {self.text!r}: {msg} at position {p}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def selectors(self) -> tuple[Selector, ...]:
        out = [self.selector()]
        while True:
            c = self.peek()
            if c == "":
                return tuple(out)
            if c != ",":
                raise self.error(f"unexpected input {c!r}")
            self.pos += 1
            out.append(self.selector())

    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        c = self.peek()
        if c in (",", ""):
            return Selector(fieldpath=tuple(path))
        op = self.text[self.pos : self.pos + 2]
        if op not in _OPERATORS:
            raise self.error('expected an operator ("=="|"!="|"~=")')
        self.pos += 2
        value = self.value(alt_quotes=op == "~=")
        pattern = None
        if op == "~=":
            try:
                pattern = re.compile(value)
            except re.error as e:
                raise self.error(f"invalid regular expression {value!r}: {e}") from e
        return Selector(fieldpath=tuple(path), op=op, value=value, pattern=pattern)

    def field(self) -> str:
        c = self.peek()
        if c == '"':
            return self.quoted(c)
        m = _FIELD.match(self.text, self.pos)
        if not m:
            raise self.error("expected field or quoted" if c else "unexpected end of filter")
        self.pos = m.end()
        return m.group()

    def value(self, alt_quotes: bool) -> str:
        c = self.peek()
        if c == "":
            raise self.error("expected value or quoted")
        if c == '"' or (alt_quotes and c in "/|"):
            return self.quoted(c)
        if c in "/|":
            raise self.error("invalid quote encountered")
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "," and not self.text[self.pos].isspace():
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.error("quoted literal not terminated", start)
            c = self.text[self.pos]
            self.pos += 1
            if c == quote:
                return "".join(out)
            if c != "\\":
                out.append(c)
                continue
            if self.pos >= len(self.text):
                raise self.error("quoted literal not terminated", start)
            e = self.text[self.pos]
            self.pos += 1
            if e == quote:
                # inside a regex quote an escaped delimiter stays an escape for the regex engine
                out.append(quote if quote == '"' else "\\" + quote)
            elif e in _ESCAPES:
                out.append(_ESCAPES[e] if quote == '"' else "\\" + e)
            elif e in "xuU" or e.isdigit():
                if quote != '"':
                    out.append("\\" + e)
                    continue
                n, base = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(e, (3, 8))
                digits = self.text[self.pos : self.pos + n] if e in "xuU" else self.text[self.pos - 1 : self.pos + 2]
                try:
                    out.append(chr(int(digits, base)))
                except ValueError as err:
                    raise self.error("illegal numeric escape sequence", self.pos) from err
                self.pos += n if e in "xuU" else 2
            elif quote != '"':
                out.append("\\" + e)  # regex escapes (\d, \., ...) pass through
            else:
                raise self.error("illegal escape sequence", self.pos - 1)
