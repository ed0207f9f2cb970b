"""What every Hoist command shares: global flags, the client, the one-line error contract, ``-v``."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pathlib import Path

import attrs
import click

from hoist.errors import HoistError

log = logging.getLogger("hoist.cli")

PACKAGE = "hoist"


@attrs.define(kw_only=True)
class Globals:
    """The global flags of ``dist`` and ``hoist``; ``client()`` opens a :class:`hoist.Client` from them."""

    address: str | None = None
    root: str | None = None
    state: str | None = None
    namespace: str = "default"
    debug: bool = False
    config: str | None = None
    _client: Any = None

    def client(self) -> Any:
        """The (cached) client.

        Remote when ``--address`` (or ``HOIST_ADDRESS``) names a socket; embedded on ``--root`` when
        ``--root`` or ``--config`` is given; otherwise remote if a daemon answers on the default
        socket, else embedded on the configured root.
        """
        if self._client is None:
            from hoist.client import Client
            from hoist.host import plugins_on_demand

            address = self.address or self._live_default_address()
            if address:
                log.debug("using the daemon at %s, namespace %s", address, self.namespace)
            else:
                log.debug("running plugins in-process on root %s, namespace %s",
                          self.root or "from the config", self.namespace)
            # In-process, a command loads the required plugins and then only those it uses, on first use.
            with plugins_on_demand():
                self._client = Client.open(root=self.root, state=self.state, address=address,
                                           namespace=self.namespace, config_path=self.config)
        return _Borrowed(self._client)

    def _live_default_address(self) -> str | None:
        if self.root is not None or self.config is not None:
            return None
        from hoist.api.server import socket_answers
        from hoist.config import DEFAULT_ADDRESS

        return DEFAULT_ADDRESS if socket_answers(Path(DEFAULT_ADDRESS)) else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _Borrowed:
    """Lets commands write ``with g.client() as c:`` while the group closes the real client once."""

    def __init__(self, client: Any) -> None:
        self._c = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def __enter__(self) -> Any:
        return self._c

    def __exit__(self, *exc: object) -> None:
        return None


def prog_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "hoist"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from hoist.version import describe

    click.echo(f"{ctx.find_root().info_name or prog_name()} {PACKAGE} {describe()}")
    ctx.exit(0)


def version_option(f: Callable) -> Callable:
    """``-v/--version``: print ``<argv0> hoist <git describe>`` and exit."""
    return click.option("-v", "--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=_print_version, help="Print the version and exit.")(f)


def global_options(f: Callable) -> Callable:
    """``--address``, ``--root``, ``--state``, ``--config``, ``--namespace/-n``, ``--debug`` (also from ``HOIST_*``)."""
    opts = [
        click.option("--address", "-a", envvar="HOIST_ADDRESS", default=None, metavar="SOCKET",
                     help="hoistd's (or containerd's) gRPC socket; without it, plugins run in-process on --root."),
        click.option("--root", envvar="HOIST_ROOT", default=None, metavar="DIR",
                     help="Root directory for in-process use [default: from the config, /var/lib/hoist]."),
        click.option("--state", envvar="HOIST_STATE", default=None, metavar="DIR",
                     help="State directory for in-process use [default: from the config, /run/hoist]."),
        click.option("--config", "-c", envvar="HOIST_CONFIG", default=None, metavar="FILE",
                     help="Config file for in-process use [default: /etc/hoist/config.toml if present]."),
        click.option("--namespace", "-n", envvar="HOIST_NAMESPACE", default="default", show_default=True,
                     help="Namespace for images, leases and containers."),
        click.option("--debug", is_flag=True, envvar="HOIST_DEBUG", help="Debug logging and tracebacks on errors."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_globals(ctx: click.Context, address: str | None, root: str | None, state: str | None, config: str | None,
                 namespace: str, debug: bool) -> Globals:
    g = Globals(address=address, root=root, state=state, namespace=namespace, debug=debug, config=config)
    setup_logging("debug" if debug else "error")
    tune_allocator()  # the client commands (dist, hoist); hoistd keeps glibc's defaults
    ctx.obj = g
    ctx.call_on_close(g.close)
    return g


def setup_logging(level: str) -> None:
    """Plain one-line logs on stderr."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


#: glibc's ``mallopt`` parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Let the C allocator keep and reuse the large buffers a transfer churns through (glibc only).

    Every chunk read from a socket, parsed or hashed is a short-lived buffer of up to a MiB.  By
    default glibc maps each such buffer afresh (or trims the heap under it when it is freed), so the
    kernel zero-fills and faults in every page again: about a fifth of a fetch's CPU time.  Serving
    them from the heap and keeping freed memory in the process makes them cheap; peak RSS does not
    grow, since the same few buffers are reused (a long-running daemon, which could hold on to freed
    memory, is not tuned).  A ``GLIBC_TUNABLES`` that sets malloc parameters is left alone.  Returns
    whether the allocator was tuned.
    """
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # below 32 MiB (glibc's largest mmap threshold) from the heap; return memory to the kernel only past 256 MiB free
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))


_teardown = True


def skip_teardown() -> None:
    """Let :func:`run` end the process without the interpreter's teardown once this command returns.

    For a command that closes everything it opens (files, databases, connections) before it returns:
    tearing down some 360 modules and freeing every object costs about 30 ms, a tenth of a small fetch.
    Exit handlers still run and the standard streams are flushed; with other non-daemon threads still
    running, the process exits as usual.
    """
    global _teardown
    _teardown = False


def _exit_now(code: int) -> None:
    """End the process with ``code`` after the exit handlers, skipping the teardown; returns if it cannot."""
    import atexit
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    main = threading.main_thread()
    if run_exit_handlers is None or any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed pipe or stream: the usual exit reports it
    run_exit_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(cli: click.Command, prog: str | None = None) -> None:
    """Run a click command with Hoist's error contract: one line ``PROG: what: why``, exit 1 (2 for usage)."""
    global _teardown
    _teardown = True  # a command opts out again for this process only (see skip_teardown)
    prog = prog or prog_name()
    debug = "--debug" in sys.argv[1:] or os.environ.get("HOIST_DEBUG", "") not in ("", "0", "false")
    try:
        rv = cli.main(args=sys.argv[1:], prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except HoistError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"{prog}: {_one_line(str(e)) or type(e).__name__}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except OSError as e:
        if debug:
            traceback.print_exc()
        what = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"{prog}: {what}{e.strerror or e}", err=True)
        sys.exit(1)
    code = rv if isinstance(rv, int) else 0
    if not _teardown:
        _exit_now(code)
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()
