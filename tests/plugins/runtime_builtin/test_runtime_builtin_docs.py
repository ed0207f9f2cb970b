"""The Python example in docs/runtime.md runs and prints what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "runtime.md"


def test_the_python_example_prints_what_the_page_says(rootfs, tmp_path):
    text = DOC.read_text()
    section = text[text.index("## Using the runtime from Python"):]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    code = next(body for lang, body in blocks if lang == "python")
    expected = next(body for lang, body in blocks if lang == "")
    code = (code.replace("/tmp/busybox-rootfs", str(rootfs))
                .replace("/tmp/hoist", str(tmp_path / "hoist"))
                .replace("/tmp/demo.out", str(tmp_path / "demo.out")))  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    assert out.getvalue() == expected
