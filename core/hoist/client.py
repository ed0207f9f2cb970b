"""``hoist.Client``: one API for programs and for the CLIs, embedded (plugins opened in-process on a root) or remote.

Embedded mode loads the configured plugins on ``root`` in this process — no daemon needed.  Remote
mode (``address`` given) talks to ``hoistd`` (or a real containerd) over its gRPC API.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hoist import config as _config
from hoist.errors import NotFoundError, UnavailableError, UnsupportedError
from hoist.host import PluginHost
from hoist.leases import DEFAULT_EXPIRY, temporary_lease
from hoist.plugin import PluginResult

DEFAULT_NAMESPACE = "default"

def load_config(path: str | os.PathLike[str] | None = None) -> _config.Config:
    """The config at ``path``; else ``$HOIST_CONFIG``; else ``/etc/hoist/config.toml`` if it exists; else defaults."""
    chosen = path or os.environ.get("HOIST_CONFIG")
    if chosen:
        return _config.load(chosen)
    if Path(_config.DEFAULT_CONFIG_PATH).is_file():
        return _config.load(_config.DEFAULT_CONFIG_PATH)
    return _config.Config()


class Client:
    """Hoist's client API.

    Open with :meth:`open`; use as a context manager so plugins (embedded) or channels (remote) are closed.

    :param host: the loaded plugin host (embedded mode), or ``None`` in remote mode.
    :param address: the daemon's socket (remote mode).
    :param namespace: the namespace for images, leases and containers.
    """

    def __init__(self, *, host: PluginHost | None = None, address: str | None = None,
                 namespace: str = DEFAULT_NAMESPACE) -> None:
        self.host = host
        self.address = address
        self.namespace = namespace
        self._remote: dict[str, Any] = {}
        self._views: dict[Any, Any] = {}
        self._channel: Any = None

    @classmethod
    def open(cls, *, root: str | None = None, state: str | None = None, address: str | None = None,
             namespace: str = DEFAULT_NAMESPACE, config_path: str | os.PathLike[str] | None = None,
             config: _config.Config | None = None) -> Client:
        """Open a client: remote when ``address`` is given, else embedded on ``root`` with the config's plugins.

        :raises ConfigError: the config file is wrong.
        :raises PluginError: a required plugin failed to load (embedded mode).
        """
        if address:
            from hoist.api.server import socket_answers, socket_path

            if not socket_answers(socket_path(address)):
                raise UnavailableError(f"{address}: nothing is serving on this socket; start it with "
                                       f"`hoistd --address {address}`, or drop --address to run in-process")
            return cls(address=address, namespace=namespace)
        cfg = config if config is not None else load_config(config_path)
        cfg = cfg.with_overrides(root=root, state=state)
        host = PluginHost(cfg)
        try:
            host.load()
            host.check_required()
        except BaseException:
            host.close()
            raise
        return cls(host=host, namespace=namespace)

    # -- plugins -----------------------------------------------------------------------------------

    @property
    def remote(self) -> bool:
        return self.host is None

    def channel(self) -> Any:
        """The gRPC channel to the daemon (remote mode)."""
        if self._channel is None:
            import grpc

            target = self.address if "://" in (self.address or "") else f"unix://{self.address}"
            self._channel = grpc.insecure_channel(target, options=[
                ("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)])
        return self._channel

    def plugin(self, type: str) -> Any:
        """The first ``ok`` plugin instance of ``type`` (embedded mode).

        :raises NotFoundError: none is loaded.
        """
        if self.host is None:
            raise UnsupportedError(f"plugin {type} is in-process only; not available over {self.address}")
        return self.host.get(type)

    def plugins_of(self, type: str) -> dict[str, Any]:
        """``{id: instance}`` of every ``ok`` plugin of ``type`` (embedded mode)."""
        if self.host is None:
            return {}
        return self.host.get_all(type)

    def plugin_results(self) -> list[PluginResult]:
        """Every plugin's status: from the in-process host, or from the daemon's Introspection service."""
        if self.host is not None:
            return self.host.ordered()
        from hoist.api.introspection_client import plugin_results

        return plugin_results(self.channel())

    # -- subsystems --------------------------------------------------------------------------------

    @property
    def content(self) -> Any:
        """The content of this client's namespace, under the current lease (see :meth:`with_lease`).

        Embedded: the metadata store's records of this namespace over the ``hoist.content.v1`` plugin
        (:class:`hoist.metadata.NamespacedContentStore`; the bare plugin when no metadata store is loaded).
        Remote: the daemon's Content service, which namespaces the same way.
        """
        lease = self._remote.get("lease")
        if self.host is not None:
            key = ("content", lease)
            if key not in self._views:
                raw = self.plugin("hoist.content.v1")
                found = self.host.get_all("hoist.metadata.v1")
                metadata = found[sorted(found)[0]] if found else None
                if getattr(metadata, "content", None) is None:
                    return raw
                # a client that finds a blob already there will name it: the lease holds it meanwhile
                self._views[key] = metadata.content(raw, self.namespace, lease=lease, hold_on_read=True)
            return self._views[key]
        key = ("content", lease)
        if key not in self._remote:
            from hoist.api.content_client import RemoteContentStore

            self._remote[key] = RemoteContentStore(self.channel(), namespace=self.namespace, lease=lease)
        return self._remote[key]

    @property
    def metadata(self) -> Any:
        """The metadata store: the ``hoist.metadata.v1`` plugin, or the daemon's Images/Leases/Namespaces services."""
        if self.host is not None:
            return self.plugin("hoist.metadata.v1")
        if "metadata" not in self._remote:
            from hoist.api.metadata_client import RemoteMetadataStore

            self._remote["metadata"] = RemoteMetadataStore(self.channel())
        return self._remote["metadata"]

    @property
    def images(self) -> Any:
        """The images of this client's namespace."""
        return self.metadata.images(self.namespace)

    @property
    def leases(self) -> Any:
        """The leases of this client's namespace."""
        return self.metadata.leases(self.namespace)

    def snapshotter(self, name: str = "overlayfs") -> Any:
        """Snapshotter ``name`` in this client's namespace: the plugin (embedded) or the daemon's Snapshots service.

        :raises NotFoundError: no such snapshotter is loaded (embedded mode).
        """
        if self.host is not None:
            from hoist.snapshots import namespaced

            found = self.plugins_of("hoist.snapshotter.v1")
            if name not in found:
                raise NotFoundError(f"snapshotter {name}: not loaded")
            sn = namespaced(found[name], self.namespace)
            lease = self._remote.get("lease")
            return _LeasedSnapshotter(sn, self.leases, lease, name) if lease else sn
        from hoist.api.snapshots_client import RemoteSnapshotter

        return RemoteSnapshotter(self.channel(), name, self.namespace, lease=self._remote.get("lease"))

    @contextlib.contextmanager
    def with_lease(self, expiry: _dt.timedelta | None = None) -> Iterator[str | None]:
        """Hold a lease for the block, so what is written (or found already there) meanwhile is safe from GC.

        As containerd's client around a pull: the lease carries ``containerd.io/gc.expire`` (``expiry``
        from now, 24 hours by default), so a process killed mid-way pins nothing for longer, and it is
        deleted when the block ends.  Embedded, the lease is in the metadata store on the root, which a
        daemon on the same root collects against; the content and snapshotter views taken in the block
        add what they write (and the blobs they find already there) to it.  Nested blocks share the outer lease.  Yields the lease id
        (``None`` in-process without a metadata store).
        """
        if self._remote.get("lease"):
            yield self._remote["lease"]
            return
        if self.host is not None and not self.host.get_all("hoist.metadata.v1"):
            yield None
            return
        with temporary_lease(self.leases, expiry or DEFAULT_EXPIRY) as lease:
            self._remote["lease"] = lease
            try:
                yield lease
            finally:
                self._remote.pop("lease", None)
                self._views.pop(("content", lease), None)

    def collect_garbage(self) -> Any:
        """Run a garbage collection of this root in-process (embedded mode); returns a :class:`hoist.gc.GCResult`.

        Remote, the daemon collects when an image or lease is deleted with ``sync``.

        :raises UnsupportedError: in remote mode.
        """
        if self.host is None:
            raise UnsupportedError(f"garbage collection runs in the daemon at {self.address}: delete with sync")
        from hoist.gc import GarbageCollector

        return GarbageCollector(self.metadata, self.plugin("hoist.content.v1"),
                                lambda: self.plugins_of("hoist.snapshotter.v1")).collect()

    def resolver(self, ref: str, options: Any = None) -> Any:
        """A resolver for ``ref``: the first ``hoist.resolver.v1`` plugin that claims it, the docker one last.

        :raises NotFoundError: no enabled resolver claims ``ref``.
        """
        resolvers = self.plugins_of("hoist.resolver.v1") if self.host is not None else self._local_resolvers()
        for rid in sorted(resolvers, key=lambda i: (i == "docker", i)):
            plugin = resolvers[rid]
            if plugin.claims(ref):
                return plugin.new_resolver(options)
        raise NotFoundError(f"{ref}: no enabled resolver plugin handles this reference")

    def _local_resolvers(self) -> dict[str, Any]:
        # In remote mode the client still resolves and fetches itself, as ctr does; resolvers load in-process.
        if "resolvers" not in self._remote:
            import attrs

            from hoist.host import available_plugins

            cfg = load_config()
            wanted = cfg.enabled_plugins if cfg.enabled_plugins is not None else tuple(available_plugins())
            only = tuple(u for u in wanted if u.startswith("hoist.resolver.v1."))
            tables = {u: t for u, t in cfg.plugin_tables.items() if u in only}
            cfg = attrs.evolve(cfg, enabled_plugins=only, required_plugins=(), plugin_tables=tables)
            self._remote["resolver_host"] = host = PluginHost(cfg)
            host.load()
            self._remote["resolvers"] = host.get_all("hoist.resolver.v1")
        return self._remote["resolvers"]

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the plugins (embedded) or the channel (remote)."""
        if self.host is not None:
            self.host.close()
        extra = self._remote.get("resolver_host")
        if extra is not None:
            extra.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LeasedSnapshotter:
    """A namespace's snapshotter whose prepared, viewed and committed snapshots a lease holds (embedded mode)."""

    def __init__(self, sn: Any, leases: Any, lease: str, snapshotter: str) -> None:
        self._sn = sn
        self._leases = leases
        self._lease = lease
        self._type = f"snapshots/{snapshotter}"

    def _hold(self, key: str) -> None:
        from hoist.metadata import LeaseResource

        self._leases.add_resource(self._lease, LeaseResource(type=self._type, id=key))

    def prepare(self, key: str, parent: str = "", labels: Any = None) -> Any:
        self._hold(key)
        return self._sn.prepare(key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Any = None) -> Any:
        self._hold(key)
        return self._sn.view(key, parent, labels)

    def commit(self, name: str, key: str, labels: Any = None) -> Any:
        self._hold(name)
        return self._sn.commit(name, key, labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sn, name)
