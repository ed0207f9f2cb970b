"""Hoist's commands tune glibc's allocator for streaming buffers, unless the user set malloc tunables."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

CODE = "from hoist.cli.common import tune_allocator; print(tune_allocator())"


def run(**env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


GLIBC = platform.libc_ver()[0] == "glibc"


def test_allocator_is_tuned_on_glibc() -> None:
    assert run() == str(GLIBC)
    assert run(GLIBC_TUNABLES="glibc.rtld.optional_static_tls=512") == str(GLIBC)


def test_malloc_tunables_set_by_the_user_are_left_alone() -> None:
    assert run(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1048576") == "False"
