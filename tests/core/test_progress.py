"""``hoist.progress`` with push states: one tracker and one set of renderers for fetches and pushes."""

from __future__ import annotations

import io
import json
import re

import pytest

from hoist.content import Digest
from hoist.images.handlers import Event
from hoist.progress import (
    JsonRenderer,
    PlainRenderer,
    ProgressTracker,
    RichRenderer,
    isatty,
    renderer_for,
    short_ref,
)
from hoist.push import PushProgressTracker

LAYER = Digest.from_bytes(b"layer")
CONFIG = Digest.from_bytes(b"config")
MANIFEST = Digest.from_bytes(b"manifest")
MiB = 1 << 20


def _push_events(tracker: ProgressTracker) -> None:
    ev = tracker.event
    ev(Event(state="mounted", ref=f"config-{CONFIG}", digest=CONFIG, size=1234, offset=1234))
    ev(Event(state="uploading", ref=f"layer-{LAYER}", digest=LAYER, size=4 * MiB))
    tracker.advance(f"layer-{LAYER}", 3 * MiB)
    ev(Event(state="committed", ref=f"layer-{LAYER}", digest=LAYER, size=4 * MiB, offset=4 * MiB))
    ev(Event(state="exists", ref=f"manifest-{MANIFEST}", digest=MANIFEST, size=500, offset=500))


def test_push_rows_and_summary() -> None:
    tracker = PushProgressTracker()
    with tracker:
        ev = tracker.event
        ev(Event(state="uploading", ref=f"layer-{LAYER}", digest=LAYER, size=4 * MiB))
        tracker.advance(f"layer-{LAYER}", 3 * MiB)
        assert {r.ref: r.offset for r in tracker.snapshot()} == {f"layer-{LAYER}": 3 * MiB}
        _push_events(tracker)
    s = tracker.summary()
    assert (s.uploaded, s.mounted, s.present, s.errors, s.fetched) == (1, 1, 1, 0, 0)
    assert s.bytes == 4 * MiB and s.total_bytes == 4 * MiB + 1234 + 500
    assert re.fullmatch(r"1 blob uploaded, 1 mounted, 1 already present, 4\.0 MiB in \d+\.\ds \(\d+\.\d MB/s\)",
                        s.line())
    assert set(s.to_json()) == {"event", "uploaded", "mounted", "present", "errors", "bytes", "total_bytes",
                                "elapsed", "rate"}


def test_fetch_summary_keeps_its_words() -> None:
    tracker = ProgressTracker()
    tracker.event(Event(state="downloading", ref=f"layer-{LAYER}", digest=LAYER, size=100, offset=40))
    tracker.event(Event(state="done", ref=f"layer-{LAYER}", digest=LAYER, size=100, offset=100))
    tracker.event(Event(state="exists", ref=f"config-{CONFIG}", digest=CONFIG, size=10, offset=10))
    s = tracker.summary()
    assert (s.fetched, s.present, s.bytes) == (1, 1, 60)
    assert s.line().startswith("1 blob fetched, 1 already present, 60 B in ")
    assert set(s.to_json()) == {"event", "fetched", "present", "errors", "bytes", "total_bytes", "elapsed", "rate"}


def test_plain_lines_for_push_states() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out, every=0.0)
    tracker = PushProgressTracker(renderer, interval=3600)
    tracker.event(Event(state="uploading", ref=f"layer-{LAYER}", digest=LAYER, size=4 * MiB))
    tracker.advance(f"layer-{LAYER}", MiB)
    renderer.tick(tracker.snapshot(), tracker.started + 1)
    _push_events(tracker)
    tracker.stop()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"uploading 1 blob: 1\.0 MiB/4\.0 MiB at \d+\.\d MB/s", lines[0])
    assert lines[1] == f"config-sha256:{CONFIG.hex[:12]}: mounted 1.2 KiB"
    assert re.fullmatch(rf"layer-sha256:{LAYER.hex[:12]}: committed 4\.0 MiB in \d+\.\ds", lines[2])
    assert lines[3] == f"manifest-sha256:{MANIFEST.hex[:12]}: exists 500 B"
    assert len(lines) == 4


def test_json_progress_for_uploads() -> None:
    out = io.StringIO()
    renderer = JsonRenderer(out, every=0.0)
    tracker = PushProgressTracker(renderer, interval=3600)
    tracker.event(Event(state="uploading", ref=f"layer-{LAYER}", digest=LAYER, size=4 * MiB))
    tracker.advance(f"layer-{LAYER}", 2 * MiB)
    renderer.tick(tracker.snapshot(), tracker.started + 1)
    tracker.stop()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["state", "progress", "summary"]
    assert events[1]["ref"] == f"layer-{LAYER}" and events[1]["offset"] == 2 * MiB
    assert "uploaded" in events[2] and "fetched" not in events[2]


def test_the_live_table_shows_push_states(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    renderer = renderer_for("tty", out)
    assert isinstance(renderer, RichRenderer)
    tracker = PushProgressTracker(renderer, interval=3600)
    _push_events(tracker)
    tracker.stop()
    text = out.getvalue()
    for word in ("mounted", "committed", "exists", short_ref(f"layer-{LAYER}")):
        assert word in text


def test_helpers() -> None:
    assert short_ref(f"layer-{LAYER}") == f"layer-sha256:{LAYER.hex[:12]}"
    assert short_ref("resolve 127.0.0.1:5000/a:1") == "resolve 127.0.0.1:5000/a:1"
    assert not isatty(io.StringIO())
    closed = io.StringIO()
    closed.close()
    assert not isatty(closed)
    assert isinstance(renderer_for("auto", io.StringIO()), PlainRenderer)
    assert renderer_for("none") is None
