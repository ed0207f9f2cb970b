"""The checked-in bindings are exactly what ``python -m hoist.api.generate`` produces from the protos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hoist.api import generate


def test_checked_in_bindings_match_a_fresh_generation(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hoist.api.generate", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("generated ")
    fresh = generate.generated_files(tmp_path)
    checked_in = generate.generated_files(generate.IMPORT_ROOT)
    assert fresh == checked_in, "generated file set differs: run `make proto` (python -m hoist.api.generate)"
    stale = [str(rel) for rel in fresh if (tmp_path / rel).read_bytes() != (generate.IMPORT_ROOT / rel).read_bytes()]
    assert not stale, f"bindings out of date, run `make proto`: {stale}"
    # every package of generated modules is importable as a regular package
    for rel in fresh:
        assert (generate.IMPORT_ROOT / rel).parent.joinpath("__init__.py").is_file(), rel


def test_a_proto_error_is_one_line_and_exit_status_1(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "hoist" / "api" / "broken.proto"
    bad.parent.mkdir(parents=True)
    bad.write_text('syntax = "proto3";\nmessage Broken { strin x = 1; }\n')
    monkeypatch.setattr(generate, "proto_files", lambda: [Path("hoist/api/broken.proto")])
    monkeypatch.setattr(generate, "include_dirs", lambda: [tmp_path])
    assert generate.main(["--out", str(tmp_path / "out")]) == 1
