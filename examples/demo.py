#!/usr/bin/env python3
"""Hoist's end-to-end demo: start hoistd on a temporary root, show its plugins, stop it cleanly.

Run by `make demo` after set-up; every step prints what it runs.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def sh(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    print("$ " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    r = subprocess.run([str(a) for a in args], text=True)
    if check and r.returncode != 0:
        sys.exit(f"demo: {args[0]} failed with exit code {r.returncode}")
    return r


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hoist-demo-") as tmp:
        t = Path(tmp)
        sock = t / "hoistd.sock"
        config = t / "hoistd.toml"
        step("the default configuration, with a temporary root")
        default = subprocess.run([BIN / "hoistd", "config", "default"], capture_output=True, text=True, check=True).stdout
        config.write_text(default.replace('"/var/lib/hoist"', f'"{t / "root"}"').replace('"/run/hoist"', f'"{t / "state"}"')
                          .replace('"/run/hoist/hoistd.sock"', f'"{sock}"'))
        print(config.read_text())
        step("start hoistd")
        log = t / "hoistd.log"
        proc = subprocess.Popen([BIN / "hoistd", "--config", config], stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not sock.exists():
                print(log.read_text())
                sys.exit("demo: hoistd did not come up")
            print(log.read_text(), end="")
            step("its plugins")
            sh(BIN / "hoist", "--config", config, "plugins", "ls")
            sh(BIN / "dist", "-v")
        finally:
            step("stop hoistd with SIGTERM")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            print(f"hoistd exited with {code}; socket removed: {not sock.exists()}")
            if code != 0 or sock.exists():
                sys.exit("demo: hoistd did not stop cleanly")
    print("\ndemo: done")


if __name__ == "__main__":
    main()
