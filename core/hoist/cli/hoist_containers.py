"""``hoist run`` and ``hoist containers ls|get|kill|rm|wait|logs|events``: containers, in-process or through hoistd."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal as _signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from hoist.cli.dist_remote import resolver_options
from hoist.containers import Container, CreateOptions, Execution
from hoist.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnsupportedError
from hoist.remotes import ResolverOptions

log = logging.getLogger("hoist.cli")

EXECUTION_URI = "hoist.service.v1.execution"
_CHUNK = 1 << 20


def execution(c: Any) -> Execution:
    """The execution service of client ``c``: the in-process plugin, or hoistd's over gRPC with ``--address``.

    :raises NotFoundError: in-process, the ``hoist.service.v1.execution`` plugin is not loaded (says why).
    """
    if c.remote:
        from hoist.api.execution_client import RemoteExecution

        return RemoteExecution(c.channel())
    svc = c.plugins_of("hoist.service.v1").get("execution")
    if svc is None:
        why = next((r.reason() or r.status for r in c.plugin_results() if r.uri == EXECUTION_URI), "not enabled")
        raise NotFoundError(f"plugin {EXECUTION_URI} is not loaded: {why}")
    return svc


def _images(c: Any) -> Any:
    """The image store of ``c``'s namespace (the daemon's with ``--address``)."""
    try:
        return c.metadata.images(c.namespace)
    except UnsupportedError:
        from hoist.api.images_client import RemoteImageStore

        return RemoteImageStore(c.channel(), c.namespace)


def parse_signal(value: str) -> int:
    """``TERM``, ``SIGTERM`` or ``15`` as a signal number.

    :raises InvalidArgumentError: no such signal.
    """
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
        raise InvalidArgumentError(f"signal {value!r}: out of range")
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise InvalidArgumentError(f"signal {value!r}: unknown") from None


# -- hoist run ------------------------------------------------------------------------------------


class _Relay:
    """Copies what a container writes into a FIFO to one of our streams, until the container is done."""

    def __init__(self, path: Path, out: BinaryIO) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._out = out
        self._rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writer keeps the FIFO from reading as ended before the container has opened it.
        self._wfd: int | None = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._rfd, True)
        self._thread = threading.Thread(target=self._copy, name=f"hoist-relay-{path.name}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            while data := os.read(self._rfd, _CHUNK):
                try:
                    self._out.write(data)
                    self._out.flush()
                except (BrokenPipeError, ValueError):
                    pass
        finally:
            os.close(self._rfd)

    def finish(self, timeout: float = 10.0) -> None:
        """Drain what the container wrote (its processes are gone once it exited)."""
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        self._thread.join(timeout)


class _StdinRelay:
    """Copies our stdin into a FIFO the container reads as its stdin; our EOF becomes the container's EOF."""

    def __init__(self, path: Path, src: BinaryIO) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._src = src
        self._thread = threading.Thread(target=self._copy, name="hoist-relay-stdin", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            # Blocks until the container opens its end: bytes written to a FIFO nobody has open are lost.
            wfd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            while data := self._src.read1(_CHUNK) if hasattr(self._src, "read1") else self._src.read(_CHUNK):
                os.write(wfd, data)
        except (OSError, ValueError):  # the container went away, or our stdin was closed
            pass
        finally:
            os.close(wfd)  # the container reads end-of-file

    def finish(self, timeout: float = 10.0) -> None:
        """Release a copier still waiting for a container that never opened its stdin.

        A copier blocked reading our stdin is left to end with the process.
        """
        if self._thread.is_alive():
            try:
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError:
                pass


@contextlib.contextmanager
def _relays(attach: bool, interactive: bool = False) -> Iterator[tuple[str, str, str, list[Any]]]:
    if not attach:
        yield "", "", "", []
        return
    with tempfile.TemporaryDirectory(prefix="hoist-run-") as tmp:
        out = _Relay(Path(tmp) / "stdout", sys.stdout.buffer)
        err = _Relay(Path(tmp) / "stderr", sys.stderr.buffer)
        relays: list[Any] = [out, err]
        stdin = ""
        if interactive:
            inp = _StdinRelay(Path(tmp) / "stdin", sys.stdin.buffer)
            relays.append(inp)
            stdin = str(inp.path)
        try:
            yield stdin, str(out.path), str(err.path), relays
        finally:
            for r in relays:
                r.finish(timeout=1.0)


def _pull(c: Any, ref: str, options: ResolverOptions, progress_mode: str) -> str:
    """The image name to create from: ``ref`` when it is in the metadata store, else what pulling it recorded."""
    from hoist.fetch import FetchParts, fetch
    from hoist.progress import ProgressTracker, renderer_for

    images = _images(c)
    try:
        return images.get(ref).name
    except NotFoundError:
        pass
    if progress_mode != "none":
        click.echo(f"pulling {ref}", err=True)
    with c.with_lease():  # what the pull writes is safe from garbage collection until the image is named
        parts = FetchParts(content=c.content, metadata=_MetadataOf(images), resolver=c.resolver(ref, options),
                           namespace=c.namespace)  # fmt: skip
        tracker = ProgressTracker(c.content, renderer_for(progress_mode, sys.stderr))
        with tracker:
            image = fetch(parts, ref, (), tracker, resolver_options=options)
    if progress_mode != "none":
        click.echo(f"{image.name} {image.target.digest}: {tracker.summary().line()}", err=True)
    return image.name


class _MetadataOf:
    """A metadata store that only has the one image view ``fetch`` needs."""

    def __init__(self, images: Any) -> None:
        self._images = images

    def images(self, _namespace: str) -> Any:
        return self._images


def _forward_signals(exe: Execution, id: str, namespace: str) -> Any:
    """Send SIGINT/SIGTERM/SIGHUP we get on to the container; a second Ctrl-C kills it."""
    seen: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        sig = int(_signal.SIGKILL) if seen and signum == _signal.SIGINT else signum
        seen.append(signum)
        threading.Thread(target=_quiet_kill, args=(exe, id, sig, namespace), daemon=True).start()

    old = {s: _signal.signal(s, handler) for s in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)}
    return lambda: [_signal.signal(s, h) for s, h in old.items()]


def _quiet_kill(exe: Execution, id: str, sig: int, namespace: str) -> None:
    try:
        exe.kill(id, sig, all=sig == _signal.SIGKILL, namespace=namespace)
    except (NotFoundError, FailedPreconditionError):
        pass


def _wait_interruptibly(exe: Execution, id: str, namespace: str) -> Any:
    """``exe.wait`` in a thread, so that our signal handlers run while we wait."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            result["exit"] = exe.wait(id, namespace=namespace)
        except BaseException as e:  # handed to the main thread
            result["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="hoist-run-wait", daemon=True).start()
    while not done.wait(0.2):
        pass
    if "error" in result:
        raise result["error"]
    return result["exit"]


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("id")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--rm", "remove", is_flag=True, help="Delete the container when it exits.")
@click.option("--detach", "-d", is_flag=True, help="Start it and print its id; output goes to its log (hoist containers logs).")
@click.option("--interactive", "-i", is_flag=True, help="Copy our stdin to the container's (it reads EOF when ours ends).")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE", help="Set an environment variable (repeatable).")
@click.option("--cwd", "-w", default="", metavar="DIR", help="Working directory (absolute) [default: the image's].")
@click.option("--user", default="", metavar="USER[:GROUP]", help="User (name or uid, from the image's /etc/passwd) [default: the image's].")
@click.option("--hostname", default="", metavar="NAME", help="Hostname [default: the container id].")
@click.option("--net", "network", type=click.Choice(["host", "none"]), default="host", show_default=True,
              help="host shares the host's network; none gives only loopback.")
@click.option("--read-only", "readonly", is_flag=True, help="Mount the root filesystem read-only.")
@click.option("--no-new-privileges", is_flag=True, help="The process and its children cannot gain privileges (setuid).")
@click.option("--entrypoint", default=None, metavar="CMD", help="Run CMD (then ARGS) instead of the image's entrypoint and command.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the container (repeatable).")
@click.option("--snapshotter", default="", metavar="NAME", help="Snapshotter plugin id [default: the service's].")
@resolver_options(user_flag=("--registry-user",))
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "none"]), default="auto",
              show_default=True, help="Pull progress on stderr.")
@click.pass_context
def run(ctx: click.Context, image: str, id: str, args: tuple[str, ...], remove: bool, detach: bool, interactive: bool,
        env: tuple[str, ...],
        cwd: str, user: str, hostname: str, network: str, readonly: bool, no_new_privileges: bool,
        entrypoint: str | None, labels: tuple[str, ...], snapshotter: str, resolver_options: ResolverOptions,
        progress_mode: str) -> None:
    """Run container ID from IMAGE, pulling the image first when it is not here.

    ARGS replace the image's command.  Without --detach the container's stdout and stderr are
    copied to ours (and with -i our stdin to its), signals we get are passed on, and hoist exits with the container's exit status
    (128+N when signal N killed it).
    """
    from hoist.cli.dist_images import _labels

    if remove and detach:
        raise InvalidArgumentError("--rm and --detach cannot be used together")
    if interactive and detach:
        raise InvalidArgumentError("--interactive and --detach cannot be used together")
    g = ctx.obj
    with g.client() as c:
        exe = execution(c)
        ns = c.namespace
        name = _pull(c, image, resolver_options, progress_mode)
        with _relays(not detach, interactive) as (stdin, stdout, stderr, relays):
            opts = CreateOptions(
                image=name, snapshotter=snapshotter, args=list(args) if args else None,
                entrypoint=[entrypoint] if entrypoint is not None else None, env=env, cwd=cwd, user=user,
                hostname=hostname, network=network, readonly=readonly, no_new_privileges=no_new_privileges,
                stdin=stdin, stdout=stdout, stderr=stderr, labels=_labels(labels),
            )  # fmt: skip
            exe.create(id, opts, namespace=ns)
            if detach:
                exe.start(id, namespace=ns)
                click.echo(id)
                return
            restore = _forward_signals(exe, id, ns)
            try:
                try:
                    exe.start(id, namespace=ns)
                except BaseException:
                    if remove:
                        exe.delete(id, force=True, namespace=ns)
                    raise
                ex = _wait_interruptibly(exe, id, ns)
            finally:
                restore()
            for r in relays:
                r.finish()
        if remove:
            exe.delete(id, force=True, namespace=ns)
    if ex.error:
        click.echo(f"hoist: container {id}: {ex.error}", err=True)
    ctx.exit(ex.status)


# -- hoist containers -----------------------------------------------------------------------------


@click.group("containers")
def containers() -> None:
    """List, inspect, signal, wait for, read and remove containers."""


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _exit_text(ctr: Container) -> str:
    return "-" if ctr.exit_status is None else str(ctr.exit_status)


@containers.command("ls")
@click.argument("filters", nargs=-1)
@click.option("--quiet", "-q", is_flag=True, help="Only the ids.")
@click.pass_obj
def containers_ls(g: Any, filters: tuple[str, ...], quiet: bool) -> None:
    """List containers: ID IMAGE STATUS PID EXIT RUNTIME; FILTERS like status==running, image~=busybox, labels.K==V."""
    with g.client() as c:
        found = execution(c).list(*filters, namespace=c.namespace)
    if quiet:
        for ctr in found:
            click.echo(ctr.id)
        return
    rows = [("ID", "IMAGE", "STATUS", "PID", "EXIT", "RUNTIME")]
    rows += [(x.id, x.image or "-", x.status.value, str(x.pid or "-"), _exit_text(x), x.runtime) for x in found]
    _table(rows)


@containers.command("get")
@click.argument("id")
@click.pass_obj
def containers_get(g: Any, id: str) -> None:
    """Print container ID as JSON: image, snapshot, runtime, status, pid, exit status, process, io."""
    with g.client() as c:
        ctr = execution(c).get(id, namespace=c.namespace)
    click.echo(json.dumps(ctr.to_json(), indent=2, sort_keys=True))


@containers.command("kill")
@click.argument("id")
@click.option("--signal", "-s", "sig", default="TERM", show_default=True, metavar="SIG",
              help="Signal name (TERM, SIGKILL) or number.")
@click.option("--all", "-a", "all_", is_flag=True, help="Signal every process of the container, not only its init.")
@click.pass_obj
def containers_kill(g: Any, id: str, sig: str, all_: bool) -> None:
    """Send a signal to container ID.

    Its init process is PID 1 in its namespace: it only gets the signals it handles, and SIGKILL.
    """
    number = parse_signal(sig)
    with g.client() as c:
        execution(c).kill(id, number, all=all_, namespace=c.namespace)


@containers.command("rm")
@click.argument("ids", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Stop running containers first (SIGTERM, then SIGKILL).")
@click.pass_obj
def containers_rm(g: Any, ids: tuple[str, ...], force: bool) -> None:
    """Delete containers IDS: their task, snapshot, log and record; print each id removed."""
    with g.client() as c:
        exe = execution(c)
        for id in ids:
            exe.delete(id, force=force, namespace=c.namespace)
            click.echo(id)


@containers.command("wait")
@click.argument("id")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up (exit 1) after this long.")
@click.pass_obj
def containers_wait(g: Any, id: str, timeout: float | None) -> None:
    """Wait until container ID exits and print its exit status."""
    with g.client() as c:
        ex = execution(c).wait(id, timeout, namespace=c.namespace)
    click.echo(str(ex.status))


@containers.command("logs")
@click.argument("id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the container writes until it exits.")
@click.pass_obj
def containers_logs(g: Any, id: str, follow: bool) -> None:
    """Print the log (stdout and stderr) of container ID, made with hoist run --detach."""
    out = sys.stdout.buffer
    with g.client() as c:
        for data in execution(c).logs(id, follow=follow, namespace=c.namespace):
            out.write(data)
            if follow:
                out.flush()
    out.flush()


@containers.command("events")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many events.")
@click.pass_obj
def containers_events(g: Any, count: int | None) -> None:
    """Print container events (create, start, exit, delete) of the namespace as they happen, one per line.

    Needs hoistd (--address): only the daemon sees every container's life.
    """
    with g.client() as c:
        if not c.remote:
            raise UnsupportedError("events: only hoistd sees every container's events; use --address")
        stream = execution(c).events(namespace=c.namespace)
        log.debug("containers events: subscribed to namespace %s", c.namespace)
        seen = 0
        try:
            for event in stream:
                click.echo(event.line())
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    break
        finally:
            stream.close()


__all__ = ["containers", "execution", "parse_signal", "run"]
