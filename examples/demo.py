#!/usr/bin/env python3
"""Hoist end to end: a registry on loopback, hoistd, an image fetched over the API, a container run from it.

`make demo` runs this after set-up. Every step prints the command it runs; everything lives under a
temporary directory and every process it starts is stopped by PID at the end.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.images import ImageSet  # noqa: E402  (the project's own deterministic image builder)
from support.registry import Registry  # noqa: E402  (Docker Distribution on 127.0.0.1)


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def sh(*args: object, expect: str | None = None) -> str:
    print("$ " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.exit(f"demo: {Path(str(args[0])).name} failed with exit code {r.returncode}")
    if expect is not None and expect not in r.stdout:
        sys.exit(f"demo: expected {expect!r} in the output of {Path(str(args[0])).name}")
    return r.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hoist-demo-") as tmp:
        t = Path(tmp)
        step("a Docker Distribution registry on 127.0.0.1, holding a busybox image")
        with Registry(t / "registry") as registry:
            layout = ImageSet(t / "layouts").busybox()
            registry.push_http(layout, "demo/busybox", "1")
            ref = f"{registry.host}/demo/busybox:1"
            print(f"pushed {ref}")

            step("hoistd with the default configuration on a temporary root")
            sock = t / "run" / "hoistd.sock"
            config = t / "hoistd.toml"
            default = subprocess.run([BIN / "hoistd", "config", "default"], capture_output=True, text=True,
                                     check=True).stdout
            config.write_text(default.replace('"/var/lib/hoist"', f'"{t / "root"}"')
                              .replace('"/run/hoist/hoistd.sock"', f'"{sock}"')
                              .replace('"/run/hoist"', f'"{t / "state"}"'))
            log = t / "hoistd.log"
            print(f"$ hoistd --config {config} &")
            proc = subprocess.Popen([BIN / "hoistd", "--config", config], stdout=log.open("w"),
                                    stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 60
                while "hoistd serving" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                print(log.read_text(), end="")
                if "hoistd serving" not in log.read_text():
                    sys.exit("demo: hoistd did not come up")
                a = ("--address", sock)

                step("its plugins, through Hoist and through containerd's own ctr")
                sh(BIN / "hoist", *a, "plugins", "ls")
                sh("ctr", "--address", sock, "version")

                step("resolve the image, then pull it through hoistd: fetch into its content store, unpack into its snapshots")
                sh(BIN / "dist", *a, "resolve", ref)
                sh(BIN / "dist", *a, "pull", "--progress", "plain", ref, expect="unpacked into")
                sh(BIN / "dist", *a, "images", "ls", expect=ref)
                sh("ctr", "--address", sock, "images", "check", expect=ref)

                step("run containers from it")
                sh(BIN / "hoist", *a, "run", "--rm", ref, "demo1", expect="hello from busybox")
                sh(BIN / "hoist", *a, "run", "--rm", ref, "demo2", "/bin/sh", "-c",
                   "echo pid $$ on $(hostname) as $(id -un)", expect="pid 1 on demo2 as root")
                sh(BIN / "hoist", *a, "run", "-d", ref, "demo3", "sleep", "600", expect="demo3")
                sh(BIN / "hoist", *a, "containers", "ls", expect="demo3")
                sh(BIN / "hoist", *a, "containers", "rm", "--force", "demo3", expect="demo3")
                sh(BIN / "hoist", *a, "containers", "ls")
            finally:
                step("stop hoistd with SIGTERM")
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
                print(f"hoistd exited with {code}; socket removed: {not sock.exists()}")
                if code != 0 or sock.exists():
                    sys.exit("demo: hoistd did not stop cleanly")
    print("\ndemo: done")


if __name__ == "__main__":
    main()
