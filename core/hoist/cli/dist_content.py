"""``dist content``: list, read, write, label and remove blobs of the content store, as ``ctr content``."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import click

from hoist.content import Descriptor, Digest, Info, as_file, write_blob
from hoist.errors import HoistError, InvalidArgumentError, NotFoundError


def _human_size(size: float) -> str:
    """docker/go-units ``HumanSize``: decimal units, four significant digits (``1.049MB``)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{units[i]}"


def _human_duration(d: dt.timedelta) -> str:
    """docker/go-units ``HumanDuration``: ``Less than a second``, ``5 minutes``, ``3 days``..."""
    seconds = int(d.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(d.total_seconds() / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d.total_seconds() / 3600) // 24 // 365} years"


def _tabwrite(rows: Sequence[Sequence[str]], trailing_tab: bool = False) -> str:
    """Go ``tabwriter.NewWriter(w, 1, 8, 1, '\\t', 0)``: every column but the last padded with tabs."""
    if not rows:
        return ""
    ncol = max(len(r) for r in rows)
    aligned = ncol if trailing_tab else ncol - 1
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) + 1 for i in range(aligned)]
    out = []
    for r in rows:
        parts = []
        for i, cell in enumerate(r):
            if i < aligned:
                cellw = (widths[i] + 7) // 8 * 8
                parts.append(cell + "\t" * ((cellw - len(cell) + 7) // 8))
            else:
                parts.append(cell)
        out.append("".join(parts))
    return "\n".join(out) + "\n"


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _time_json(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _info_json(info: Info) -> dict[str, Any]:
    return {
        "Digest": str(info.digest),
        "Size": info.size,
        "CreatedAt": _time_json(info.created_at),
        "UpdatedAt": _time_json(info.updated_at),
        "Labels": dict(sorted(info.labels.items())) or None,
    }


@click.group("content")
def content() -> None:
    """Manage the content store: blobs by digest, and ingests in progress."""


@content.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Print only the blob digests.")
@click.argument("filters", nargs=-1)
@click.pass_obj
def ls(g: Any, quiet: bool, filters: tuple[str, ...]) -> None:
    """List blobs; FILTERS (containerd syntax, e.g. 'labels."k"==v') select them, any of them matching."""
    infos: list[Info] = []
    with g.client() as c:
        c.content.walk(infos.append, *filters)
    if quiet:
        click.echo("".join(f"{i.digest}\n" for i in infos), nl=False)
        return
    now = dt.datetime.now(dt.timezone.utc)
    rows = [["DIGEST", "SIZE", "AGE", "LABELS"]]
    for i in infos:
        rows.append([str(i.digest), _human_size(i.size), _human_duration(now - i.created_at), _labels_text(dict(i.labels)) or "-"])
    click.echo(_tabwrite(rows), nl=False)


@content.command("info")
@click.argument("digest")
@click.pass_obj
def info(g: Any, digest: str) -> None:
    """Print a blob's size, times and labels as JSON."""
    d = Digest.parse(digest)
    with g.client() as c:
        i = c.content.info(d)
    click.echo(json.dumps(_info_json(i), indent=2))


def _copy_out(reader: BinaryIO, size: int, out: BinaryIO) -> None:
    out.flush()
    fileno = getattr(reader, "fileno", None)
    if fileno is not None:
        try:
            src, dst, off = fileno(), out.fileno(), 0
            while off < size:
                n = os.sendfile(dst, src, off, min(size - off, 1 << 30))
                if n == 0:
                    break
                off += n
            if off == size:
                return
            reader.seek(off)
        except (OSError, ValueError, AttributeError):
            reader.seek(0)  # stdout is not something sendfile can write to: copy
    while chunk := reader.read(1 << 20):
        out.write(chunk)
    out.flush()


@content.command("get")
@click.argument("digest")
@click.pass_obj
def get(g: Any, digest: str) -> None:
    """Write the blob DIGEST to stdout."""
    d = Digest.parse(digest)
    with g.client() as c:
        ra = c.content.reader_at(Descriptor(media_type="", digest=d, size=0))
        f = as_file(ra)
        try:
            _copy_out(f, ra.size, sys.stdout.buffer)
        finally:
            f.close()


@content.command("rm")
@click.argument("digests", nargs=-1, required=True)
@click.pass_obj
def rm(g: Any, digests: tuple[str, ...]) -> None:
    """Delete blobs; prints each one deleted. A blob that is not there is skipped silently."""
    failed = False
    with g.client() as c:
        for arg in digests:
            try:
                d = Digest.parse(arg)
                c.content.delete(d)
            except NotFoundError:
                continue
            except HoistError as e:
                failed = True
                click.echo(f"dist: could not delete {arg}: {e}", err=True)
                continue
            click.echo(str(d))
    if failed:
        raise click.exceptions.Exit(1)


@content.command("active")
@click.argument("match", required=False, default="")
@click.pass_obj
def active(g: Any, match: str) -> None:
    """List ingests in progress: ref, bytes written of the total, age. MATCH is a regular expression on the ref."""
    flt = () if not match else (f"ref~={_quote_regex(match)}",)
    with g.client() as c:
        statuses = c.content.list_statuses(*flt)
    now = dt.datetime.now(dt.timezone.utc)
    rows = [["REF", "SIZE", "AGE", ""]]
    for s in statuses:
        size = _human_size(s.offset) + (f"/{_human_size(s.total)}" if s.total else "")
        rows.append([s.ref, size, _human_duration(now - s.started_at), ""])
    click.echo(_tabwrite(rows, trailing_tab=False), nl=False)


def _quote_regex(pattern: str) -> str:
    # ctr passes its argument straight through as a filter; take a bare regular expression
    # too, quoted so that commas and spaces stay inside it.
    if pattern.startswith(("ref~=", "ref==", "ref!=")):
        return pattern[5:]
    return '"' + pattern.replace("\\", "\\\\").replace('"', '\\"') + '"'


@content.command("ingest")
@click.argument("ref")
@click.option("--expected-size", type=click.IntRange(min=0), default=None, help="Fail unless exactly this many bytes arrive.")
@click.option("--expected-digest", default=None, help="Fail unless the data has this digest.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the committed blob (repeatable).")
@click.pass_obj
def ingest(g: Any, ref: str, expected_size: int | None, expected_digest: str | None, labels: tuple[str, ...]) -> None:
    """Read stdin into the store under ingest REF and commit it, verifying size and digest.

    An earlier interrupted ingest of REF resumes where it stopped when stdin is a file.
    """
    want = Digest.parse(expected_digest) if expected_digest else None
    parsed = dict(_label_arg(lv) for lv in labels)
    with g.client() as c:
        write_blob(c.content, ref, sys.stdin.buffer, expected_size, want, labels=parsed or None)


def _label_arg(text: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not k:
        raise InvalidArgumentError(f"invalid label {text!r}: expected KEY=VALUE")
    return k, v


@content.command("abort")
@click.argument("refs", nargs=-1, required=True)
@click.pass_obj
def abort(g: Any, refs: tuple[str, ...]) -> None:
    """Discard ingests in progress, by ref."""
    with g.client() as c:
        for r in refs:
            c.content.abort(r)


@content.command("label")
@click.argument("digest")
@click.argument("labels", nargs=-1)
@click.pass_obj
def label(g: Any, digest: str, labels: tuple[str, ...]) -> None:
    """Set labels KEY=VALUE on a blob (KEY= or KEY removes it); prints the resulting labels."""
    d = Digest.parse(digest)
    pairs = [_label_arg(lv) for lv in labels]
    with g.client() as c:
        if not pairs:
            out = c.content.info(d)
        else:
            cur = c.content.info(d)
            new = Info(digest=d, size=cur.size, labels={k: v for k, v in pairs if v})
            out = c.content.update(new, tuple(f"labels.{k}" for k, _ in pairs))
    click.echo(_labels_text(dict(out.labels)))


def commands() -> Iterable[click.Command]:
    """The commands this module adds to ``dist``."""
    return (content,)
