"""Progress of a transfer (fetch, pull, push): per-ref rows fed by handler events and ``list_statuses``.

A :class:`ProgressTracker` keeps one row per ingest ref.  A background thread polls the content store's
``list_statuses`` for the offsets of rows that are downloading (uploads report theirs with
:meth:`ProgressTracker.advance`) and asks the renderer to draw: a live ``rich`` table on a TTY, periodic
plain lines otherwise, or one JSON object per line with ``--json``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

import attrs

from hoist.images.handlers import Event

#: States a row can be in.  A fetch goes ``resolving``/``waiting``/``downloading`` → ``done`` or
#: ``exists``; a push goes ``uploading`` → ``committed``, or straight to ``exists`` (the registry had it) or
#: ``mounted`` (from another repository).
STATES = ("resolving", "waiting", "downloading", "uploading", "done", "committed", "exists", "mounted", "error")
#: States that move bytes.
ACTIVE = frozenset({"downloading", "uploading"})
#: Final states.
FINAL = frozenset({"done", "committed", "exists", "mounted", "error"})
#: Final states reached without moving any byte.
SKIPPED = frozenset({"exists", "mounted"})


@attrs.define(kw_only=True)
class Row:
    """One ref's progress."""

    ref: str
    state: str
    total: int = 0
    offset: int = 0
    start_offset: int = 0
    started: float = attrs.field(factory=time.monotonic)
    finished: float | None = None
    message: str = ""

    def elapsed(self, now: float) -> float:
        return (self.finished or now) - self.started

    def transferred(self) -> int:
        """Bytes this run moved for the row (a resumed ingest's earlier bytes not counted)."""
        if self.state in SKIPPED:
            return 0
        return max(0, self.offset - self.start_offset)


@attrs.frozen(kw_only=True)
class Summary:
    """The totals printed at the end of a fetch (blobs fetched vs already present) or of a push (uploaded,
    mounted, already present), with the bytes moved, time and rate.

    :param transfer: ``fetch`` or ``push``: which counts :meth:`line` and :meth:`to_json` give.
    """

    present: int
    errors: int
    bytes: int
    total_bytes: int
    elapsed: float
    fetched: int = 0
    uploaded: int = 0
    mounted: int = 0
    transfer: str = "fetch"

    @property
    def rate(self) -> float:
        """Bytes per second moved by this run."""
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        moved = f"{human_size(self.bytes)} in {self.elapsed:.1f}s ({self.rate / 1e6:.1f} MB/s)"
        if self.transfer == "push":
            return (f"{self.uploaded} blob{'s' if self.uploaded != 1 else ''} uploaded, {self.mounted} mounted, "
                    f"{self.present} already present, {moved}")
        return f"{self.fetched} blob{'s' if self.fetched != 1 else ''} fetched, {self.present} already present, {moved}"

    def to_json(self) -> dict[str, Any]:
        counts = {"uploaded": self.uploaded, "mounted": self.mounted} if self.transfer == "push" \
            else {"fetched": self.fetched}
        return {
            "event": "summary",
            **counts,
            "present": self.present,
            "errors": self.errors,
            "bytes": self.bytes,
            "total_bytes": self.total_bytes,
            "elapsed": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
        }


def human_size(n: float) -> str:
    """``1.5 MiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Renderer(Protocol):
    """Draws a tracker's rows; called from the tracker's thread and once more at the end."""

    def event(self, row: Row, ev: Event | None) -> None:
        """A row changed state (``ev`` is the handler event, ``None`` for synthetic ones)."""

    def tick(self, rows: list[Row], now: float) -> None:
        """Periodic redraw with current offsets."""

    def finish(self, rows: list[Row], summary: Summary) -> None:
        """Final draw; the summary line is printed by the caller or here (JSON)."""


class ProgressTracker:
    """Collects handler events and content-store statuses into rows and drives a renderer.

    Use as a context manager around the transfer; pass :meth:`event` as the handlers' ``on_event``.

    :param store: the content store (its ``list_statuses`` gives offsets of ingests in progress).
    :param renderer: what draws the rows; ``None`` keeps the rows without drawing.
    :param interval: seconds between polls/redraws.
    :param transfer: ``fetch`` or ``push``, for the summary's wording.
    """

    def __init__(self, store: Any = None, renderer: Renderer | None = None, *, interval: float = 0.1,
                 transfer: str = "fetch") -> None:
        if transfer not in ("fetch", "push"):
            raise ValueError(f"transfer must be 'fetch' or 'push', not {transfer!r}")
        self.store = store
        self.renderer = renderer
        self.interval = interval
        self.transfer = transfer
        self.rows: dict[str, Row] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.finished: float | None = None

    def __enter__(self) -> ProgressTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.monotonic()
        if self._thread is None and (self.renderer is not None):
            self._thread = threading.Thread(target=self._run, name="hoist-progress", daemon=True)
            self._thread.start()

    def stop(self) -> Summary:
        """Stop polling, draw the final state and return the summary."""
        if self.finished is None:
            self.finished = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.poll()
        s = self.summary()
        if self.renderer is not None:
            self.renderer.finish(self.snapshot(), s)
            self.renderer = None
        return s

    def event(self, ev: Event) -> None:
        """Record a handler event (thread-safe)."""
        with self._lock:
            row = self.rows.get(ev.ref)
            if row is None:
                row = self.rows[ev.ref] = Row(ref=ev.ref, state=ev.state, total=ev.size, started=ev.time)
            if ev.state in ACTIVE:
                if row.state != ev.state:
                    row.started = ev.time
                row.start_offset = row.offset = ev.offset
            elif ev.state in SKIPPED:
                row.start_offset = row.offset = ev.offset
                row.finished = ev.time
            elif ev.state in FINAL:
                row.offset = ev.offset if ev.state != "error" else row.offset
                row.finished = ev.time
            elif ev.state == "waiting":
                row.offset = ev.offset
            row.state = ev.state
            row.total = ev.size or row.total
            row.message = ev.message
            renderer = self.renderer
            snap = attrs.evolve(row) if renderer is not None else None
        if renderer is not None:
            renderer.event(snap, ev)

    def advance(self, ref: str, offset: int) -> None:
        """Bytes of ``ref`` moved so far, from a transfer the store does not see (uploads); thread-safe."""
        with self._lock:
            row = self.rows.get(ref)
            if row is not None and row.state in ACTIVE:
                row.offset = offset

    def poll(self) -> None:
        """Refresh the offsets of downloading rows from the store's ``list_statuses``."""
        if self.store is None:
            return
        with self._lock:
            active = {r.ref for r in self.rows.values() if r.state == "downloading"}
        if not active:
            return
        try:
            statuses = self.store.list_statuses()
        except Exception:  # noqa: BLE001 - progress must never break the transfer it reports on
            return
        with self._lock:
            for st in statuses:
                row = self.rows.get(st.ref)
                if row is not None and row.state == "downloading":
                    row.offset = max(row.offset, st.offset)
                    if st.total:
                        row.total = st.total

    def snapshot(self) -> list[Row]:
        with self._lock:
            return [attrs.evolve(r) for r in self.rows.values()]

    def summary(self) -> Summary:
        rows = self.snapshot()
        blobs = [r for r in rows if not r.ref.startswith("resolve ")]
        end = self.finished or time.monotonic()
        return Summary(
            fetched=sum(1 for r in blobs if r.state == "done"),
            uploaded=sum(1 for r in blobs if r.state == "committed"),
            mounted=sum(1 for r in blobs if r.state == "mounted"),
            present=sum(1 for r in blobs if r.state == "exists"),
            errors=sum(1 for r in blobs if r.state == "error"),
            bytes=sum(r.transferred() for r in blobs),
            total_bytes=sum(r.total for r in blobs),
            elapsed=end - self.started,
            transfer=self.transfer,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
            if self.renderer is not None:
                self.renderer.tick(self.snapshot(), time.monotonic())


def _rate(row: Row, now: float) -> float:
    el = row.elapsed(now)
    return row.transferred() / el if el > 0 else 0.0


#: States whose rows show a rate.
_MOVED = ACTIVE | {"done", "committed"}
_STYLES = {"done": "green", "committed": "green", "exists": "cyan", "mounted": "cyan", "error": "red",
           "waiting": "yellow"}


class RichRenderer:
    """A live table on a terminal: REF STATE PROGRESS BAR RATE ELAPSED, one row per ref."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream or sys.stderr)
        self._rows: list[Row] = []
        self.live = Live(self._table([], time.monotonic()), console=self.console, refresh_per_second=10, transient=False)
        self.live.start()

    def _table(self, rows: list[Row], now: float) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for col in ("REF", "STATE", "BYTES", "", "RATE", "ELAPSED"):
            t.add_column(col, no_wrap=True)
        for r in rows:
            total = r.total or 0
            done = total if r.state in SKIPPED else r.offset
            bar = ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=24)
            rate = f"{_rate(r, now) / 1e6:.1f} MB/s" if r.state in _MOVED else ""
            style = _STYLES.get(r.state, "")
            t.add_row(
                short_ref(r.ref),
                f"[{style}]{r.state}[/]" if style else r.state,
                f"{human_size(done)}/{human_size(total)}" if total else "",
                bar if total else "",
                rate,
                f"{r.elapsed(now):.1f}s",
            )
        return t

    def event(self, row: Row, ev: Event | None) -> None:
        return None

    def tick(self, rows: list[Row], now: float) -> None:
        self.live.update(self._table(rows, now))

    def finish(self, rows: list[Row], summary: Summary) -> None:
        self.live.update(self._table(rows, time.monotonic()))
        self.live.stop()


class PlainRenderer:
    """Plain lines for logs and pipes: one line per finished blob, a totals line every ``every`` seconds."""

    def __init__(self, stream: IO[str] | None = None, *, every: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def event(self, row: Row, ev: Event | None) -> None:
        # Errors are left to the command's one-line error message.
        if row.state in ("done", "committed", "exists", "mounted", "waiting", "resolving"):
            extra = f" {human_size(row.total)}" if row.total else ""
            if row.state in ("done", "committed"):
                extra += f" in {row.elapsed(time.monotonic()):.1f}s"
            if row.message:
                extra += f": {row.message}"
            self._print(f"{short_ref(row.ref)}: {row.state}{extra}")

    def tick(self, rows: list[Row], now: float) -> None:
        if now - self._last < self.every:
            return
        self._last = now
        for state in sorted(ACTIVE):
            active = [r for r in rows if r.state == state]
            if not active:
                continue
            done = sum(r.offset for r in active)
            total = sum(r.total for r in active)
            rate = sum(_rate(r, now) for r in active)
            self._print(f"{state} {len(active)} blob{'s' if len(active) != 1 else ''}: "
                        f"{human_size(done)}/{human_size(total)} at {rate / 1e6:.1f} MB/s")

    def finish(self, rows: list[Row], summary: Summary) -> None:
        return None


class JsonRenderer:
    """One JSON object per line: every state change, periodic ``progress`` events, then ``summary``."""

    def __init__(self, stream: IO[str] | None = None, *, every: float = 0.5) -> None:
        self.stream = stream or sys.stdout
        self.every = every
        self._last = 0.0
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps(obj, sort_keys=True) + "\n")
            self.stream.flush()

    def event(self, row: Row, ev: Event | None) -> None:
        obj: dict[str, Any] = {"event": "state", "ref": row.ref, "state": row.state, "offset": row.offset, "total": row.total}
        if ev is not None and ev.digest is not None:
            obj["digest"] = str(ev.digest)
            obj["media_type"] = ev.media_type
        if row.message:
            obj["message"] = row.message
        self._emit(obj)

    def tick(self, rows: list[Row], now: float) -> None:
        if now - self._last < self.every:
            return
        self._last = now
        for r in rows:
            if r.state in ACTIVE:
                self._emit({"event": "progress", "ref": r.ref, "state": r.state, "offset": r.offset, "total": r.total,
                            "elapsed": round(r.elapsed(now), 3)})

    def finish(self, rows: list[Row], summary: Summary) -> None:
        self._emit(summary.to_json())


def short_ref(ref: str) -> str:
    """``layer-sha256:<12 hex>`` for an ingest ref (other refs as they are)."""
    kind, _, rest = ref.partition("-")
    if rest.startswith(("sha256:", "sha512:")):
        alg, _, hx = rest.partition(":")
        return f"{kind}-{alg}:{hx[:12]}"
    return ref


def renderer_for(mode: str, stream: IO[str] | None = None) -> Renderer | None:
    """The renderer for ``mode``: ``auto`` (rich on a TTY, else plain), ``tty``, ``plain``, ``json`` or ``none``."""
    if mode == "none":
        return None
    if mode == "json":
        return JsonRenderer(stream)
    out = stream or sys.stderr
    if mode == "tty" or (mode == "auto" and isatty(out)):
        return RichRenderer(out)
    return PlainRenderer(out)


def isatty(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (False for closed or odd streams)."""
    f: Callable[[], bool] | None = getattr(stream, "isatty", None)
    try:
        return bool(f and f())
    except ValueError:
        return False
