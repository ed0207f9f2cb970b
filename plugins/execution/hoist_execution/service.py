"""The execution service: containers (create, start, get, list, kill, delete, wait, logs, events) over a runtime plugin.

A container is a record in the metadata store, an active snapshot (its root filesystem, on the image's
chain ID) and a task of the configured runtime.  The service keeps the three in step: ``create`` makes
the snapshot (unpacking the image first when needed), generates the OCI spec from the image config and
the caller's overrides and hands the bundle to the runtime; a waiter thread per started container
records its exit; ``delete`` releases the task, the snapshot and the record.  A new service on the same
root and state (a restarted ``hoistd``) finds the runtime's tasks again and resumes waiting.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from hoist.containers import Container, ContainerEvent, CreateOptions
from hoist.errors import (
    ConfigError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hoist.runtime import IO, UNKNOWN_EXIT_STATUS, Bundle, Exit, Status, check_identifier
from hoist_execution.events import EventBus, Subscription

log = logging.getLogger("hoist.service.v1.execution")

RUNTIME_TYPE = "hoist.runtime.v1"
SNAPSHOTTER_TYPE = "hoist.snapshotter.v1"
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")
_WAIT_SLICE = 0.5
_LOG_CHUNK = 1 << 20
_FOLLOW_POLL = 0.1  # seconds between reads of a followed log that has no new data


def _identifier_or_empty(_inst: object, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{attribute.name}: expected a string, got {value!r}")
    if value and not re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", value):
        raise ConfigError(f"{attribute.name}: {value!r} is not a plugin id")


@attrs.frozen(kw_only=True)
class ExecutionConfig:
    """``[plugins."hoist.service.v1.execution"]``.

    :param runtime: id of the ``hoist.runtime.v1`` plugin that runs new containers; ``""`` takes
        ``builtin`` when it is loaded, else the first loaded runtime by id.
    :param snapshotter: id of the snapshotter for containers that name none; ``""`` takes
        ``overlayfs`` when it loaded, else ``native``, else the first by id.
    """

    runtime: str = attrs.field(default="", validator=_identifier_or_empty)
    snapshotter: str = attrs.field(default="", validator=_identifier_or_empty)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _fields(c: Container) -> dict[str, str]:
    return {"id": c.id, "image": c.image, "status": c.status.value, "runtime": c.runtime, "snapshotter": c.snapshotter}


class ExecutionService:
    """``hoist.service.v1.execution``: the :class:`hoist.containers.Execution` interface, in-process.

    :param metadata: the metadata store (``containers(ns)``, ``images(ns)``).
    :param content: the content store (image manifests, configs and layers).
    :param runtimes: returns ``{id: runtime}`` of the loaded ``hoist.runtime.v1`` plugins.
    :param snapshotters: returns ``{id: snapshotter}`` of the loaded ``hoist.snapshotter.v1`` plugins.
    :param state: the plugin's state directory (container log files).
    :raises NotFoundError: the configured runtime (or any runtime) is not loaded.
    """

    def __init__(
        self,
        *,
        metadata: Any,
        content: Any,
        runtimes: Callable[[], Mapping[str, Any]],
        snapshotters: Callable[[], Mapping[str, Any]],
        state: Path,
        config: ExecutionConfig | None = None,
    ) -> None:
        self.metadata = metadata
        self.content = content
        self._runtimes = runtimes
        self._snapshotters = snapshotters
        self.state = Path(state)
        self.config = config or ExecutionConfig()
        self.runtime_id = self._choose_runtime()
        self._bus = EventBus()
        self._lock = threading.Lock()
        self._exited: set[tuple[str, str]] = set()
        self._deleting: set[tuple[str, str]] = set()
        self._waiters: dict[tuple[str, str], threading.Thread] = {}
        self._closed = threading.Event()
        self.recover()

    # -- plugins ---------------------------------------------------------------------------------

    def _choose_runtime(self) -> str:
        loaded = self._runtimes()
        if self.config.runtime:
            if self.config.runtime not in loaded:
                raise NotFoundError(f"runtime {RUNTIME_TYPE}.{self.config.runtime}: configured, but not loaded")
            return self.config.runtime
        if "builtin" in loaded:
            return "builtin"
        if not loaded:
            raise NotFoundError(f"no {RUNTIME_TYPE} plugin is loaded")
        return sorted(loaded)[0]

    @property
    def runtime(self) -> Any:
        """The runtime new containers are created with."""
        return self._runtimes()[self.runtime_id]

    def _runtime_of(self, c: Container) -> Any:
        rid = c.runtime.rsplit(".", 1)[-1]
        found = self._runtimes().get(rid)
        if found is None:
            raise FailedPreconditionError(f"container {c.id}: its runtime {c.runtime} is not loaded")
        return found

    def _snapshotter(self, name: str, namespace: str) -> tuple[str, Any]:
        from hoist.snapshots import namespaced

        loaded = self._snapshotters()
        if name:
            if name not in loaded:
                raise NotFoundError(f"snapshotter {name}: not loaded")
            return name, namespaced(loaded[name], namespace)
        wanted = self.config.snapshotter
        if wanted:
            if wanted not in loaded:
                raise FailedPreconditionError(f"snapshotter {wanted} (the configured default): not loaded")
            return wanted, namespaced(loaded[wanted], namespace)
        for sid in ("overlayfs", "native", *sorted(loaded)):
            if sid in loaded:
                return sid, namespaced(loaded[sid], namespace)
        raise NotFoundError(f"no {SNAPSHOTTER_TYPE} plugin is loaded")

    def _content(self, namespace: str) -> Any:
        """The content of ``namespace``: the metadata store's records over the content store (its labels are GC roots)."""
        view = getattr(self.metadata, "content", None)
        return view(self.content, namespace) if view is not None else self.content

    def _store(self, namespace: str) -> Any:
        return self.metadata.containers(check_identifier("namespace", namespace))

    # -- create ----------------------------------------------------------------------------------

    def _image_rootfs(self, namespace: str, name: str, sid: str, sn: Any) -> tuple[str, Any]:
        """``(chain ID, ImageConfig)`` of image ``name``, its layers unpacked into ``sn``."""
        from hoist.images.platforms import Matcher
        from hoist.oci_spec import ImageConfig
        from hoist.unpack import image_layers, label_config, unpack

        try:
            image = self.metadata.images(namespace).get(name)
        except NotFoundError:
            raise NotFoundError(f"image {name}: not found in namespace {namespace}; pull it first (dist pull {name})") from None
        content = self._content(namespace)
        _mdesc, manifest, config = image_layers(content, image.target, Matcher.from_specs([]))
        if not manifest.layers:
            raise InvalidArgumentError(f"image {name}: has no layers to make a root filesystem from")
        result = unpack(content, sn, manifest.layers, config)
        assert result.chain_id is not None
        label_config(content, manifest.config, sid, result.chain_id)
        return str(result.chain_id), ImageConfig.from_json(config)

    def _spec(self, id: str, image: Any, options: CreateOptions, mounts: list[Any]) -> dict[str, Any]:
        from hoist.oci_spec import SpecOptions, generate_spec
        from hoist.snapshots import mounted

        hostname = options.hostname or (id if _HOSTNAME.fullmatch(id) else "")
        opts = SpecOptions(
            args=options.args, entrypoint=options.entrypoint, env=options.env, cwd=options.cwd or None,
            user=options.user or None, hostname=hostname, readonly_rootfs=options.readonly,
            no_new_privileges=options.no_new_privileges, network=options.network or "host",  # type: ignore[arg-type]
        )  # fmt: skip
        with mounted(mounts, prefix="hoist-spec-") as root:
            return generate_spec(image, opts, rootfs=root)

    def _log_path(self, namespace: str, id: str) -> Path:
        return self.state / "logs" / namespace / f"{id}.log"

    def create(self, id: str, options: CreateOptions, *, namespace: str = "default") -> Container:
        """Make container ``id`` from ``options`` and its task, waiting for :meth:`start`.

        :raises InvalidArgumentError: a malformed id or override, an image the spec cannot be made from.
        :raises AlreadyExistsError: the id is taken in ``namespace``.
        :raises NotFoundError: the image (or snapshot, or snapshotter) does not exist.
        """
        from hoist.oci_spec import ImageConfig

        check_identifier("container id", id)
        store = self._store(namespace)
        sid, sn = self._snapshotter(options.snapshotter, namespace)
        runtime_uri = f"{RUNTIME_TYPE}.{self.runtime_id}"
        log_path = ""
        io = IO(stdin=options.stdin, stdout=options.stdout, stderr=options.stderr)
        if not options.stdout and not options.stderr:
            path = self._log_path(namespace, id)
            log_path = str(path)
            io = attrs.evolve(io, stdout=log_path, stderr=log_path)
        record = store.create(Container(
            id=id, namespace=namespace, image=options.image, snapshotter=sid, snapshot_key=id, runtime=runtime_uri,
            status=Status.CREATED, labels=options.labels, io=io, log_path=log_path,
        ))  # fmt: skip
        made_snapshot = False
        try:
            if options.image:
                parent, image_config = self._image_rootfs(namespace, options.image, sid, sn)
            else:
                parent, image_config = options.snapshot, ImageConfig()
                try:
                    sn.stat(parent)
                except NotFoundError:
                    raise NotFoundError(f"snapshot {parent}: not found in {sid} (namespace {namespace})") from None
            mounts = sn.prepare(id, parent, {"hoist.container": id})
            made_snapshot = True
            spec = self._spec(id, image_config, options, mounts)
            if log_path:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                Path(log_path).unlink(missing_ok=True)
            task = self.runtime.create(id, Bundle(spec=spec, mounts=mounts), io, namespace=namespace)
            record = store.update(id, spec=spec, pid=task.state().pid)
        except BaseException:
            if made_snapshot:
                try:
                    sn.remove(id)
                except HoistError as e:
                    log.warning("container %s/%s: cannot remove its snapshot: %s", namespace, id, e)
            if log_path:
                Path(log_path).unlink(missing_ok=True)
            store.delete(id)
            raise
        log.info("container %s/%s: created from %s on %s", namespace, id, options.image or options.snapshot, runtime_uri)
        self._bus.publish(ContainerEvent(type="create", namespace=namespace, id=id, timestamp=_now(), pid=record.pid))
        return record

    # -- lifecycle -------------------------------------------------------------------------------

    def _task(self, c: Container) -> Any | None:
        try:
            return self._runtime_of(c).get(c.id, namespace=c.namespace)
        except NotFoundError:
            return None

    def start(self, id: str, *, namespace: str = "default") -> Container:
        """Run the container's process.

        :raises FailedPreconditionError: it was already started, or has exited.
        """
        store = self._store(namespace)
        c = store.get(id)
        task = self._task(c)
        if task is None:
            raise FailedPreconditionError(f"container {id}: its task is gone from {c.runtime}")
        pid = task.start()
        c = store.update(id, status=Status.RUNNING, pid=pid)
        self._bus.publish(ContainerEvent(type="start", namespace=namespace, id=id, timestamp=_now(), pid=pid))
        self._watch(c, task)
        return c

    def _watch(self, c: Container, task: Any) -> None:
        key = (c.namespace, c.id)
        with self._lock:
            if key in self._waiters or key in self._exited or self._closed.is_set():
                return
            t = threading.Thread(target=self._waiter, args=(c, task), name=f"hoist-wait-{c.namespace}/{c.id}", daemon=True)
            self._waiters[key] = t
        t.start()

    def _waiter(self, c: Container, task: Any) -> None:
        key = (c.namespace, c.id)
        try:
            while not self._closed.is_set():
                try:
                    ex = task.wait(_WAIT_SLICE)
                except UnavailableError:
                    continue
                with self._lock:
                    if key in self._deleting:
                        return
                self._exit(c.namespace, c.id, ex)
                return
        except Exception as e:  # a waiter must never take the daemon down; the record is fixed on the next get
            if not self._closed.is_set():
                log.warning("container %s/%s: waiting for its exit failed: %s", c.namespace, c.id, e)
        finally:
            with self._lock:
                self._waiters.pop(key, None)

    def _exit(self, namespace: str, id: str, ex: Exit) -> None:
        """Record an exit and publish it, once per container per service."""
        key = (namespace, id)
        with self._lock:
            first = key not in self._exited
            self._exited.add(key)
        try:
            self._store(namespace).update(
                id, status=Status.STOPPED, exit_status=ex.status, exited_at=ex.exited_at, error=ex.error
            )
        except NotFoundError:
            return
        if first:
            log.info("container %s/%s: exited with status %d", namespace, id, ex.status)
            self._bus.publish(ContainerEvent(type="exit", namespace=namespace, id=id, timestamp=ex.exited_at,
                                             pid=ex.pid, exit_status=ex.status))  # fmt: skip

    def _refresh(self, c: Container) -> Container:
        """``c`` with the runtime's view of its task (the record lags when no waiter ran, say after a restart)."""
        if c.status is Status.STOPPED:
            return c
        try:
            task = self._task(c)
        except FailedPreconditionError:
            return c
        if task is None:
            ex = Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_now(), error=f"its task is gone from {c.runtime}")
            self._exit(c.namespace, c.id, ex)
            return self._store(c.namespace).get(c.id)
        st = task.state()
        if st.status is Status.STOPPED:
            self._exit(c.namespace, c.id, Exit(status=st.exit_status if st.exit_status is not None else UNKNOWN_EXIT_STATUS,
                                               exited_at=st.exited_at or _now(), pid=st.pid))
            return self._store(c.namespace).get(c.id)
        if st.status is not c.status or st.pid != c.pid:
            return self._store(c.namespace).update(c.id, status=st.status, pid=st.pid)
        return c

    def recover(self) -> None:
        """Find every container's task again (after a restart): update the records, resume waiting for running ones."""
        tasks = {}
        for rid, rt in sorted(self._runtimes().items()):
            try:
                for t in rt.tasks():
                    tasks[(f"{RUNTIME_TYPE}.{rid}", t.namespace, t.id)] = t
            except HoistError as e:
                log.warning("%s.%s: cannot list its tasks: %s", RUNTIME_TYPE, rid, e)
        for ns in self.metadata.list_namespaces():
            for c in self._store(ns).list():
                if c.status is Status.STOPPED:
                    continue
                if not any(c.runtime == f"{RUNTIME_TYPE}.{rid}" for rid in self._runtimes()):
                    log.warning("container %s/%s: its runtime %s is not loaded", ns, c.id, c.runtime)
                    continue
                task = tasks.get((c.runtime, ns, c.id))
                if task is None:
                    self._exit(ns, c.id, Exit(status=UNKNOWN_EXIT_STATUS, exited_at=_now(),
                                              error=f"its task is gone from {c.runtime}"))  # fmt: skip
                    continue
                c = self._refresh(c)
                if c.status is Status.RUNNING:
                    self._watch(c, task)

    def get(self, id: str, *, namespace: str = "default") -> Container:
        """:raises NotFoundError: no container ``id`` in ``namespace``."""
        return self._refresh(self._store(namespace).get(id))

    def list(self, *filters: str, namespace: str = "default") -> list[Container]:
        """Containers of ``namespace`` sorted by id; ``filters`` (containerd syntax) over id, image, status, runtime,
        snapshotter and ``labels.<key>``, any matching."""
        from hoist.services.support import compile_filters

        match = compile_filters(_fields, *filters) if filters else (lambda _c: True)
        return [c for c in (self._refresh(c) for c in self._store(namespace).list()) if match(c)]

    def kill(self, id: str, signal: int = 15, *, all: bool = False, namespace: str = "default") -> None:
        """Signal the container's init process (every process with ``all``).

        :raises NotFoundError: the process has already finished.
        """
        c = self._store(namespace).get(id)
        if not 0 < int(signal) < 65:
            raise InvalidArgumentError(f"signal {signal}: invalid")
        task = self._task(c)
        if task is None or c.status is Status.STOPPED:
            raise NotFoundError(f"container {id}: process already finished")
        try:
            task.kill(int(signal), all=all)
        except NotFoundError:
            raise NotFoundError(f"container {id}: process already finished") from None

    def wait(self, id: str, timeout: float | None = None, *, namespace: str = "default") -> Exit:
        """Block until the process exits; its status, time and pid.

        :raises UnavailableError: still running after ``timeout`` seconds.
        :raises FailedPreconditionError: the container was never started.
        """
        c = self._refresh(self._store(namespace).get(id))
        if c.status is Status.STOPPED:
            assert c.exit_status is not None and c.exited_at is not None
            return Exit(status=c.exit_status, exited_at=c.exited_at, pid=c.pid, error=c.error)
        if c.status is Status.CREATED:
            raise FailedPreconditionError(f"container {id}: not started")
        task = self._task(c)
        if task is None:
            return self.wait(id, 0, namespace=namespace)
        ex = task.wait(timeout)
        self._exit(namespace, id, ex)
        return ex

    def delete(self, id: str, *, force: bool = False, namespace: str = "default") -> Container:
        """Remove the container: its task, its snapshot, its log file and its record; returns its last state.

        :raises FailedPreconditionError: it is running and ``force`` is not set.
        """
        store = self._store(namespace)
        c = self._refresh(store.get(id))
        key = (namespace, id)
        task = self._task(c)
        if task is not None and c.status is Status.RUNNING and not force:
            raise FailedPreconditionError(f"container {id}: is running; kill it first, or delete it with force")
        with self._lock:
            self._deleting.add(key)
        try:
            if task is not None:
                ex = task.delete()
                if c.status is Status.RUNNING:
                    self._exit(namespace, id, ex)
                c = store.get(id)
            try:
                from hoist.snapshots import namespaced

                sn = self._snapshotters().get(c.snapshotter)
                if sn is None:
                    log.warning("container %s/%s: snapshotter %s not loaded; snapshot %s left", namespace, id,
                                c.snapshotter, c.snapshot_key)  # fmt: skip
                else:
                    namespaced(sn, namespace).remove(c.snapshot_key)
            except NotFoundError:
                pass
            if c.log_path:
                Path(c.log_path).unlink(missing_ok=True)
            store.delete(id)
        finally:
            with self._lock:
                self._deleting.discard(key)
                self._exited.discard(key)
        log.info("container %s/%s: deleted", namespace, id)
        self._bus.publish(ContainerEvent(type="delete", namespace=namespace, id=id, timestamp=_now(),
                                         exit_status=c.exit_status))  # fmt: skip
        return c

    def logs(self, id: str, *, follow: bool = False, namespace: str = "default",
             active: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """The container's log file in chunks of up to 1 MiB.

        With ``follow``, keeps reading what the container writes until it has exited (and its log is
        drained), as ``tail -f`` would; ``active`` (when given) is asked between polls whether the
        reader still wants more.

        :raises NotFoundError: the container has no log file (it was given stdout or stderr paths).
        """
        c = self._store(namespace).get(id)
        if not c.log_path:
            raise NotFoundError(f"container {id}: has no log: its output goes to {c.io.stdout or c.io.stderr}")
        try:
            fd = os.open(c.log_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return iter(())

        def running() -> bool:
            try:
                return self._refresh(self._store(namespace).get(id)).status is not Status.STOPPED
            except NotFoundError:
                return False

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    while data := os.read(fd, _LOG_CHUNK):
                        yield data
                    if not follow or self._closed.is_set() or (active is not None and not active()):
                        return
                    if not running():  # exited: what it wrote before exiting is read by one more pass
                        while data := os.read(fd, _LOG_CHUNK):
                            yield data
                        return
                    self._closed.wait(_FOLLOW_POLL)
            finally:
                os.close(fd)

        return chunks()

    def events(self, *, namespace: str | None = "default") -> Subscription:
        """Events of ``namespace`` (every namespace with ``None``) from now on."""
        return self._bus.subscribe(namespace)

    def register(self, server: Any) -> None:
        """Serve this service as ``hoist.services.execution.v1.Execution`` on a ``grpc.Server`` (hoistd calls it)."""
        from hoist_execution.servicer import register

        register(self, server)

    def close(self) -> None:
        """Stop the waiters and end the event streams; containers keep running.

        Waits for each waiter to notice (one wait slice), so none writes to a metadata store closing after this.
        """
        self._closed.set()
        with self._lock:
            waiters = [t for t in self._waiters.values() if t is not threading.current_thread()]
        for t in waiters:
            t.join(_WAIT_SLICE + 5)
        self._bus.close()


__all__ = ["ExecutionConfig", "ExecutionService"]
