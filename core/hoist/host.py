"""The plugin host: discovers enabled plugins, decodes their config, initialises them in order, closes them.

Load order is a contract: topological over ``Registration.requires`` (plugin types), ties broken by
``(type, id)``; never install order.  Only enabled plugins are imported.

A host made *on demand* (``PluginHost(cfg, on_demand=True)``, or created inside :func:`plugins_on_demand`)
loads only the required plugins up front; an enabled plugin of any other type is imported and
initialised the first time something asks for that type (``get``, ``get_all``, an init context's
lookups), with the plugins it requires.  Asking for every result (``ordered``) loads the rest.  An
in-process command so pays only for the plugins it uses; hoistd loads everything at start.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import importlib
import logging
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pluggy

from hoist import builtins as _builtins
from hoist.config import Config, decode_attrs
from hoist.entrypoints import EntryPoint, entry_points
from hoist.errors import ConfigError, NotFoundError, PluginDependencyError, PluginError, PluginSkipped
from hoist.plugin import ENTRY_POINT_GROUP, InitContext, PluginResult, Registration, get_plugin_manager

log = logging.getLogger("hoist.host")


@attrs.frozen
class _Source:
    uri: str
    kind: str  # "builtin" or "entry point"
    target: str  # module path
    dist: str = ""
    entry_point: EntryPoint | None = None

    def describe(self) -> str:
        return f"builtin {self.target}" if self.kind == "builtin" else f"{self.dist} ({self.target})"


def available_plugins(builtins: Mapping[str, str] | None = None) -> dict[str, list[_Source]]:
    """Every plugin URI that could be loaded, with where it comes from (several sources = a duplicate)."""
    found: dict[str, list[_Source]] = {}
    for uri, module in (builtins if builtins is not None else _builtins.BUILTINS).items():
        found.setdefault(uri, []).append(_Source(uri, "builtin", module))
    for ep in entry_points(ENTRY_POINT_GROUP):
        src = _Source(ep.name, "entry point", ep.value, ep.dist, ep)
        if not any(s.kind == "entry point" and s.dist == ep.dist for s in found.get(ep.name, [])):
            found.setdefault(ep.name, []).append(src)
    return found


_ON_DEMAND: contextvars.ContextVar[bool] = contextvars.ContextVar("hoist_plugins_on_demand", default=False)


@contextlib.contextmanager
def plugins_on_demand() -> Iterator[None]:
    """Make every :class:`PluginHost` created inside the block an on-demand host (unless it says otherwise)."""
    token = _ON_DEMAND.set(True)
    try:
        yield
    finally:
        _ON_DEMAND.reset(token)


def _of_type(uri: str, type: str) -> bool:
    return uri.startswith(type + ".")


class PluginHost:
    """Loads the plugins a :class:`~hoist.config.Config` enables and owns their instances.

    :param config: the decoded configuration (root/state dirs, enabled and required plugins, tables).
    :param builtins: URI → module map of core plugins (default :data:`hoist.builtins.BUILTINS`).
    :param on_demand: load only the required plugins in :meth:`load` and the others on first use (default:
        whether the host is created inside :func:`plugins_on_demand`).
    """

    def __init__(self, config: Config, *, builtins: Mapping[str, str] | None = None,
                 on_demand: bool | None = None) -> None:
        self.config = config
        self._builtins = builtins
        self.on_demand = _ON_DEMAND.get() if on_demand is None else on_demand
        self.pm: pluggy.PluginManager = get_plugin_manager()
        self.results: dict[str, PluginResult] = {}
        self._order: list[str] = []
        self._registered: list[str] = []  # every plugin that registered, in registration order
        self._deferred: dict[str, list[_Source]] = {}  # enabled, not imported yet (on demand)
        self._mu = threading.RLock()
        self._initializing = 0
        self._closed = False

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> list[PluginResult]:
        """Import, register, decode config and initialise every enabled plugin (on demand: the required ones).

        Failures are recorded per plugin (see :attr:`results`), never raised, except a configuration
        that names tables for plugins that are not enabled.

        :raises ConfigError: a ``[plugins."<uri>"]`` table for a plugin that is not enabled.
        :return: the results in init order (on demand: of the plugins loaded so far).
        """
        available = available_plugins(self._builtins)
        enabled = list(self.config.enabled_plugins) if self.config.enabled_plugins is not None else sorted(available)
        for uri in self.config.plugin_tables:
            if uri not in enabled:
                why = "is not installed" if uri not in available else "is not in enabled_plugins"
                raise ConfigError(f'{self.config.source}: plugins."{uri}": plugin {uri} {why}')
        with self._mu:
            for uri in enabled:
                self._deferred.setdefault(uri, available.get(uri, []))
            if not self.on_demand:
                self._load(list(self._deferred))
                return self.ordered()
            required = set(self.config.required_plugins)
            self._load([u for u in self._deferred if u in required])
            if self._deferred:
                log.debug("plugins loaded on first use: %s", ", ".join(self._deferred))
            return self._loaded_in_order()

    def load_all(self) -> None:
        """Load every enabled plugin not loaded yet (an on-demand host's remaining plugins)."""
        with self._mu:
            if self._deferred and not self._closed and not self._initializing:
                self._load(list(self._deferred))

    def _demand(self, type: str) -> None:
        """On first use of ``type``: load the enabled plugins of that type (with what they require)."""
        if not self._deferred:
            return
        with self._mu:
            if self._closed or self._initializing:
                return
            wanted = [u for u in self._deferred if _of_type(u, type)]
            if wanted:
                log.debug("loading %s on first use of %s", ", ".join(wanted), type)
                self._load(wanted)

    def _load(self, uris: list[str]) -> None:
        """Register ``uris`` and the deferred plugins of every type they require, then initialise them."""
        batch: list[str] = []
        queue = list(uris)
        while queue:
            uri = queue.pop(0)
            sources = self._deferred.pop(uri, None)
            if sources is None:
                continue  # loaded already (or listed twice)
            self._register(uri, sources)
            batch.append(uri)
            r = self.results[uri]
            if r.status == "pending":
                self._registered.append(uri)
                if self.on_demand:
                    queue += [u for t in r.requires for u in self._deferred if _of_type(u, t)]
        self._init_all(set(batch))

    def _fail(self, uri: str, error: BaseException, registration: Registration | None = None, source: str = "") -> None:
        self.results[uri] = PluginResult(uri=uri, registration=registration, status="error", error=error, source=source)
        log.debug("%s: %s", uri, self.results[uri].reason())

    def _register(self, uri: str, sources: list[_Source]) -> None:
        if not sources:
            self._fail(uri, PluginError(uri, f"not installed (no builtin and no entry point named {uri} in group {ENTRY_POINT_GROUP})"))
            return
        if len(sources) > 1:
            who = " and ".join(s.describe() for s in sources)
            self._fail(uri, PluginError(uri, f"duplicate plugin URI: provided by {who}"))
            return
        src = sources[0]
        try:
            module = src.entry_point.load() if src.entry_point is not None else importlib.import_module(src.target)
        except Exception as e:  # a plugin's import may raise anything; it must not take the host down
            err = PluginError(uri, f"import of {src.target} failed: {type(e).__name__}: {e}")
            err.__cause__ = e
            err.detail = traceback.format_exc()  # type: ignore[attr-defined]
            self._fail(uri, err, source=src.describe())
            return
        try:
            self.pm.register(module, name=uri)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as e:
            if self.pm.get_plugin(uri) is not None:
                self.pm.unregister(name=uri)
            self._fail(uri, PluginError(uri, f"invalid plugin module {src.target}: {e}"), source=src.describe())
            return
        impls = [i for i in self.pm.hook.hoist_register_plugins.get_hookimpls() if i.plugin_name == uri]
        if not impls:
            self._fail(uri, PluginError(uri, f"{src.target} does not implement hoist_register_plugins"), source=src.describe())
            return
        registered: list[Registration] = []

        def register(reg: Registration) -> None:
            if not isinstance(reg, Registration):
                raise PluginError(uri, f"register() takes a hoist.plugin.Registration, got {type(reg).__name__}")
            registered.append(reg)

        try:
            for impl in impls:
                impl.function(**{name: register for name in impl.argnames})
        except Exception as e:
            self._fail(uri, PluginError(uri, f"hoist_register_plugins raised {type(e).__name__}: {e}"), source=src.describe())
            return
        if len(registered) != 1:
            self._fail(uri, PluginError(uri, f"must register exactly one plugin, registered {len(registered)}"), source=src.describe())
            return
        reg = registered[0]
        if reg.uri != uri:
            self._fail(uri, PluginError(uri, f"registered as {reg.uri}, but is installed as {uri}"), reg, src.describe())
            return
        self.results[uri] = PluginResult(uri=uri, registration=reg, status="pending", source=src.describe())

    def _topological(self, members: Iterable[str]) -> tuple[list[str], list[str]]:
        pending = {u: self.results[u] for u in members}
        by_type: dict[str, list[str]] = {}
        for u, r in pending.items():
            by_type.setdefault(r.type, []).append(u)
        deps: dict[str, set[str]] = {}
        for u, r in pending.items():
            deps[u] = {p for t in r.requires for p in by_type.get(t, []) if p != u}
        rdeps: dict[str, set[str]] = {u: set() for u in pending}
        for u, ds in deps.items():
            for d in ds:
                rdeps[d].add(u)
        indeg = {u: len(ds) for u, ds in deps.items()}
        heap = [(pending[u].type, pending[u].id, u) for u, n in indeg.items() if n == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            _, _, u = heapq.heappop(heap)
            order.append(u)
            for v in rdeps[u]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    heapq.heappush(heap, (pending[v].type, pending[v].id, v))
        cyclic = sorted(u for u, n in indeg.items() if n > 0)
        return order, cyclic

    def _cycle_path(self, start: str, members: set[str]) -> str:
        by_type: dict[str, list[str]] = {}
        for u in members:
            by_type.setdefault(self.results[u].type, []).append(u)
        path, node = [start], start
        while True:
            nxt = sorted(p for t in self.results[node].requires for p in by_type.get(t, []))
            if not nxt:
                break
            node = nxt[0]
            if node in path:
                path = path[path.index(node):] + [node]
                break
            path.append(node)
        return " -> ".join(path)

    def _init_all(self, batch: set[str]) -> None:
        self._initializing += 1
        try:
            self._init_batch(batch)
        finally:
            self._initializing -= 1

    def _init_batch(self, batch: set[str]) -> None:
        order, cyclic = self._topological(u for u in batch if self.results[u].status == "pending")
        for u in cyclic:
            r = self.results[u]
            self._fail(u, PluginError(u, f"dependency cycle: {self._cycle_path(u, set(cyclic))}"), r.registration, r.source)
        root, state = Path(self.config.root), Path(self.config.state)
        for uri in order:
            r = self.results[uri]
            reg = r.registration
            assert reg is not None
            failed_dep = self._dependency_problem(reg)
            if failed_dep is not None:
                self._fail(uri, failed_dep, reg, r.source)
                continue
            try:
                cfg = self._decode_config(reg)
            except ConfigError as e:
                self._fail(uri, PluginError(uri, str(e)), reg, r.source)
                continue
            try:
                proot, pstate = root / uri, state / uri
                proot.mkdir(parents=True, exist_ok=True)
                pstate.mkdir(parents=True, exist_ok=True)
                ic = InitContext(
                    registration=reg, config=cfg, root=proot, state=pstate,
                    address=self.config.grpc.address, lookup=self._lookup, results=self.ordered,
                )
                instance = reg.init(ic)
            except PluginSkipped as e:
                self.results[uri] = PluginResult(uri=uri, registration=reg, status="skip", error=e, source=r.source)
                log.info("%s: skipped: %s", uri, e)
                continue
            except Exception as e:  # any failure in a plugin's init is that plugin's error, reported by name
                err = e if isinstance(e, PluginError) else PluginError(uri, f"init failed: {e}" if str(e) else f"init failed: {type(e).__name__}")
                if err is not e:
                    err.__cause__ = e
                    err.detail = traceback.format_exc()  # type: ignore[attr-defined]
                self._fail(uri, err, reg, r.source)
                continue
            self.results[uri] = PluginResult(uri=uri, registration=reg, status="ok", instance=instance, source=r.source)
            self._order.append(uri)
            log.debug("%s: ok", uri)

    def _dependency_problem(self, reg: Registration) -> PluginDependencyError | None:
        for t in reg.requires:
            providers = [r for r in self.results.values() if r.type == t and r.uri != reg.uri]
            if any(p.ok for p in providers):
                continue
            if not providers:
                return PluginDependencyError(reg.uri, f"requires {t}, which no enabled plugin provides")
            p = sorted(providers, key=lambda p: p.uri)[0]
            state = "was skipped" if p.status == "skip" else "failed"
            return PluginDependencyError(reg.uri, f"requires {t}: {p.uri} {state}: {p.reason()}")
        return None

    def _decode_config(self, reg: Registration) -> Any:
        table = self.config.plugin_tables.get(reg.uri)
        where = f'{self.config.source}: plugins."{reg.uri}"'
        if reg.config is None:
            if table:
                raise ConfigError(f"{where}: {reg.uri} takes no configuration")
            return None
        return decode_attrs(reg.config, table or {}, where)

    def _lookup(self, type: str) -> list[tuple[str, Any]]:
        self._demand(type)
        found = [(r.id, r.instance) for r in list(self.results.values()) if r.ok and r.type == type]
        return sorted(found, key=lambda x: x[0])

    # -- queries ---------------------------------------------------------------------------------

    def ordered(self) -> list[PluginResult]:
        """All results: initialised plugins in init order, then the rest by URI (on demand: loads the rest first)."""
        if not self.on_demand:
            return self._loaded_in_order()
        self.load_all()
        with self._mu:
            # the order a host loading everything at once would have initialised them in
            order = self._topological(self._registered)[0]
            first = [self.results[u] for u in order if self.results[u].ok]
            rest = sorted((r for r in self.results.values() if not r.ok), key=lambda r: (r.type, r.id))
            return first + rest

    def _loaded_in_order(self) -> list[PluginResult]:
        first = [self.results[u] for u in self._order]
        rest = sorted((r for u, r in self.results.items() if u not in self._order), key=lambda r: (r.type, r.id))
        return first + rest

    def get(self, type: str) -> Any:
        """The instance of the first ``ok`` plugin of ``type``.

        :raises NotFoundError: none is loaded and ``ok`` (the message says why, when a plugin failed).
        """
        found = self._lookup(type)
        if found:
            return found[0][1]
        failed = [r for r in list(self.results.values()) if r.type == type]
        if failed:
            r = sorted(failed, key=lambda r: r.uri)[0]
            raise NotFoundError(f"plugin {r.uri} is not available: {r.status}: {r.reason()}")
        raise NotFoundError(f"no plugin of type {type} is enabled")

    def get_all(self, type: str) -> dict[str, Any]:
        """``{id: instance}`` of every ``ok`` plugin of ``type``."""
        return dict(self._lookup(type))

    def check_required(self, required: Iterable[str] | None = None) -> None:
        """Raise for the first required plugin that is not ``ok``.

        :raises PluginError: ``required plugin <uri> ...: <reason>``.
        """
        for uri in (self.config.required_plugins if required is None else required):
            r = self.results.get(uri)
            if r is None:
                raise PluginError(uri, "required plugin is not enabled")
            if not r.ok:
                raise PluginError(uri, f"required plugin {r.status}: {r.reason()}")

    # -- shutdown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every initialised instance that has ``close()``, in reverse init order."""
        if self._closed:
            return
        self._closed = True
        for uri in reversed(self._order):
            inst = self.results[uri].instance
            close = getattr(inst, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # keep closing the others
                    log.warning("%s: close failed: %s", uri, e)

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
