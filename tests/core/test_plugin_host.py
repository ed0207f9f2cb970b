"""The plugin host: discovery of enabled plugins only, init order, skip/error cascades, config decoding, close."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from hoist import config as hconfig
from hoist.errors import ConfigError, NotFoundError, PluginError
from hoist.host import PluginHost

TEMPLATE = """
import attrs
from hoist.plugin import Registration, hookimpl
from hoist.errors import PluginSkipped

EVENTS = __import__("builtins").__dict__.setdefault("_hoist_test_events", [])

@attrs.frozen(kw_only=True)
class Cfg:
    size: int = 1
    name: str = "x"
    flags: list[str] = attrs.field(factory=list)

class Inst:
    def __init__(self, uri, ic):
        self.uri, self.ic = uri, ic
    def close(self):
        EVENTS.append(("close", self.uri))

def _init(ic):
    EVENTS.append(("init", "{uri}"))
    {body}
    return Inst("{uri}", ic)

@hookimpl
def hoist_register_plugins(register):
    register(Registration(type="{type}", id="{id}", requires={requires!r}, config={config}, init=_init))
"""


class Fakes:
    """Writes plugin modules into a temp dir on sys.path and builds hosts over them as builtins."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "mods"
        self.dir.mkdir()
        self.tmp = tmp
        self.builtins: dict[str, str] = {}
        self.n = 0

    def add(self, uri: str, requires: tuple[str, ...] = (), body: str = "pass", config: str = "Cfg",
            source: str | None = None) -> str:
        self.n += 1
        mod = f"hoist_fake_{self.n}_{abs(hash(self.dir)) % 10**8}"
        type_, _, id_ = uri.rpartition(".")
        text = source if source is not None else TEMPLATE.format(uri=uri, type=type_, id=id_, requires=requires,
                                                                 body=body, config=config)
        (self.dir / f"{mod}.py").write_text(textwrap.dedent(text))
        self.builtins[uri] = mod
        return mod

    def host(self, enabled: list[str] | None = None, tables: str = "", required: list[str] | None = None,
             builtins: dict[str, str] | None = None) -> PluginHost:
        enabled = list(self.builtins) if enabled is None else enabled
        text = f"""
            root = "{self.tmp / 'root'}"
            state = "{self.tmp / 'state'}"
            enabled_plugins = {enabled!r}
            required_plugins = {required or []!r}
        """
        path = self.tmp / "config.toml"
        path.write_text(textwrap.dedent(text).replace("'", '"') + textwrap.dedent(tables))
        return PluginHost(hconfig.load(path), builtins=self.builtins if builtins is None else builtins)


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    import builtins

    monkeypatch.setattr(builtins, "_hoist_test_events", [], raising=False)
    f = Fakes(tmp_path)
    monkeypatch.syspath_prepend(str(f.dir))
    return f


def events():
    import builtins

    return builtins._hoist_test_events


def statuses(host):
    return {r.uri: (r.status, r.reason()) for r in host.ordered()}


def test_init_order_is_topological_with_type_id_ties_not_install_order(fakes):
    # Added in reverse of the expected order; requires point at types.
    fakes.add("t.svc.v1.zeta", requires=("t.store.v1",))
    fakes.add("t.svc.v1.alpha", requires=("t.store.v1", "t.meta.v1"))
    fakes.add("t.store.v1.local", requires=("t.meta.v1",))
    fakes.add("t.meta.v1.sqlite")
    fakes.add("t.aaa.v1.free")
    host = fakes.host()
    host.load()
    order = [uri for kind, uri in events() if kind == "init"]
    assert order == ["t.aaa.v1.free", "t.meta.v1.sqlite", "t.store.v1.local", "t.svc.v1.alpha", "t.svc.v1.zeta"]
    assert [r.uri for r in host.ordered()] == order
    assert all(r.status == "ok" for r in host.ordered())


def test_cycle_is_an_error_naming_the_cycle_and_others_still_load(fakes):
    fakes.add("t.a.v1.one", requires=("t.b.v1",))
    fakes.add("t.b.v1.two", requires=("t.a.v1",))
    fakes.add("t.c.v1.free")
    host = fakes.host()
    host.load()
    st = statuses(host)
    assert st["t.c.v1.free"] == ("ok", "")
    assert st["t.a.v1.one"] == ("error", "dependency cycle: t.a.v1.one -> t.b.v1.two -> t.a.v1.one")
    assert st["t.b.v1.two"][0] == "error" and "dependency cycle" in st["t.b.v1.two"][1]


def test_skip_and_error_cascade_to_dependents_only(fakes):
    fakes.add("t.snap.v1.overlay", body="raise PluginSkipped('overlay mounts are not supported here')")
    fakes.add("t.user.v1.needsnap", requires=("t.snap.v1",))
    fakes.add("t.store.v1.broken", body="raise RuntimeError('disk on fire')")
    fakes.add("t.svc.v1.needstore", requires=("t.store.v1",))
    fakes.add("t.svc.v1.independent")
    host = fakes.host()
    host.load()
    st = statuses(host)
    assert st["t.snap.v1.overlay"] == ("skip", "overlay mounts are not supported here")
    assert st["t.user.v1.needsnap"] == (
        "error", "requires t.snap.v1: t.snap.v1.overlay was skipped: overlay mounts are not supported here")
    assert st["t.store.v1.broken"] == ("error", "init failed: disk on fire")
    assert st["t.svc.v1.needstore"] == ("error", "requires t.store.v1: t.store.v1.broken failed: init failed: disk on fire")
    assert st["t.svc.v1.independent"] == ("ok", "")


def test_missing_dependency_type_is_named(fakes):
    fakes.add("t.svc.v1.lonely", requires=("t.nothing.v1",))
    host = fakes.host()
    host.load()
    assert statuses(host)["t.svc.v1.lonely"] == ("error", "requires t.nothing.v1, which no enabled plugin provides")


def test_required_plugin_failure_stops_with_its_message(fakes):
    fakes.add("t.store.v1.broken", body="raise RuntimeError('disk on fire')")
    host = fakes.host(required=["t.store.v1.broken"])
    host.load()
    with pytest.raises(PluginError, match=r"^t\.store\.v1\.broken: required plugin error: init failed: disk on fire$"):
        host.check_required()


def test_only_enabled_plugins_are_imported(fakes):
    mod = fakes.add("t.bomb.v1.unused", source="raise SystemError('imported although not enabled')\n")
    fakes.add("t.ok.v1.used")
    host = fakes.host(enabled=["t.ok.v1.used"])
    host.load()
    assert mod not in sys.modules
    assert statuses(host) == {"t.ok.v1.used": ("ok", "")}


def test_plugin_whose_import_raises_is_an_error_and_others_load(fakes):
    fakes.add("t.bad.v1.imp", source="import nonexistent_module_for_hoist_tests\n")
    fakes.add("t.ok.v1.fine")
    host = fakes.host()
    host.load()
    st = statuses(host)
    assert st["t.bad.v1.imp"][0] == "error"
    assert "ModuleNotFoundError: No module named 'nonexistent_module_for_hoist_tests'" in st["t.bad.v1.imp"][1]
    assert st["t.ok.v1.fine"] == ("ok", "")


def test_uninstalled_plugin_is_reported_by_uri(fakes):
    fakes.add("t.ok.v1.fine")
    host = fakes.host(enabled=["t.ok.v1.fine", "hoist.nothing.v1.here"])
    host.load()
    assert statuses(host)["hoist.nothing.v1.here"] == (
        "error", "not installed (no builtin and no entry point named hoist.nothing.v1.here in group hoist.plugins)")


def test_misspelled_hookimpl_is_an_error(fakes):
    fakes.add("t.typo.v1.x", source="""
        from hoist.plugin import hookimpl
        @hookimpl
        def hoist_register_plugin(register):
            pass
    """)
    host = fakes.host()
    host.load()
    status, reason = statuses(host)["t.typo.v1.x"]
    assert status == "error"
    assert "unknown hook 'hoist_register_plugin'" in reason


def test_registration_under_another_uri_or_twice_is_an_error(fakes):
    fakes.add("t.a.v1.claimed", source="""
        from hoist.plugin import Registration, hookimpl
        @hookimpl
        def hoist_register_plugins(register):
            register(Registration(type="t.a.v1", id="other", init=lambda ic: 1))
    """)
    fakes.add("t.b.v1.twice", source="""
        from hoist.plugin import Registration, hookimpl
        @hookimpl
        def hoist_register_plugins(register):
            register(Registration(type="t.b.v1", id="twice", init=lambda ic: 1))
            register(Registration(type="t.b.v1", id="twice", init=lambda ic: 2))
    """)
    host = fakes.host()
    host.load()
    st = statuses(host)
    assert st["t.a.v1.claimed"] == ("error", "registered as t.a.v1.other, but is installed as t.a.v1.claimed")
    assert st["t.b.v1.twice"] == ("error", "must register exactly one plugin, registered 2")


def test_duplicate_uri_from_builtin_and_entry_point(fakes):
    # hoist.runtime.v1.builtin is installed as an entry point; a builtin with the same URI collides.
    mod = fakes.add("hoist.runtime.v1.builtin")
    host = fakes.host(enabled=["hoist.runtime.v1.builtin"])
    host.load()
    status, reason = statuses(host)["hoist.runtime.v1.builtin"]
    assert status == "error"
    assert reason == (f"duplicate plugin URI: provided by builtin {mod} and "
                      "hoist-runtime-builtin (hoist_runtime_builtin.plugin)")


def test_plugin_config_is_decoded_and_wrong_keys_fail_only_that_plugin(fakes):
    fakes.add("t.a.v1.good")
    fakes.add("t.b.v1.unknown")
    fakes.add("t.c.v1.mistyped")
    fakes.add("t.d.v1.noconfig", config="None")
    fakes.add("t.e.v1.dependent", requires=("t.c.v1",))
    host = fakes.host(tables="""
        [plugins."t.a.v1.good"]
        size = 7
        flags = ["a", "b"]
        [plugins."t.b.v1.unknown"]
        sise = 7
        [plugins."t.c.v1.mistyped"]
        size = "seven"
        [plugins."t.d.v1.noconfig"]
        anything = 1
    """)
    host.load()
    cfgfile = fakes.tmp / "config.toml"
    st = statuses(host)
    assert host.get("t.a.v1").ic.config.size == 7
    assert host.get("t.a.v1").ic.config.flags == ["a", "b"]
    assert st["t.b.v1.unknown"] == ("error", f'{cfgfile}: plugins."t.b.v1.unknown".sise: unknown key (known keys: flags, name, size)')
    assert st["t.c.v1.mistyped"] == ("error", f"{cfgfile}: plugins.\"t.c.v1.mistyped\".size: expected an integer, got a string 'seven'")
    assert st["t.d.v1.noconfig"] == ("error", f'{cfgfile}: plugins."t.d.v1.noconfig": t.d.v1.noconfig takes no configuration')
    assert st["t.e.v1.dependent"][0] == "error" and "t.c.v1.mistyped failed" in st["t.e.v1.dependent"][1]


def test_table_for_plugin_not_enabled_is_a_config_error(fakes):
    fakes.add("t.a.v1.on")
    fakes.add("t.b.v1.off")
    host = fakes.host(enabled=["t.a.v1.on"], tables='[plugins."t.b.v1.off"]\nsize = 2\n')
    with pytest.raises(ConfigError, match=r'config\.toml: plugins\."t\.b\.v1\.off": plugin t\.b\.v1\.off is not in enabled_plugins$'):
        host.load()


def test_init_context_dirs_and_lookups(fakes, tmp_path):
    fakes.add("t.store.v1.a")
    fakes.add("t.store.v1.b")
    fakes.add("t.user.v1.u", requires=("t.store.v1",))
    host = fakes.host()
    host.load()
    ic = host.get("t.user.v1").ic
    assert ic.root == tmp_path / "root" / "t.user.v1.u" and ic.root.is_dir()
    assert ic.state == tmp_path / "state" / "t.user.v1.u" and ic.state.is_dir()
    assert ic.get("t.store.v1").uri == "t.store.v1.a"
    assert ic.get_by_id("t.store.v1", "b").uri == "t.store.v1.b"
    assert sorted(ic.get_all("t.store.v1")) == ["a", "b"]
    assert [r.uri for r in ic.plugin_results()] == ["t.store.v1.a", "t.store.v1.b", "t.user.v1.u"]


def test_close_in_reverse_init_order(fakes):
    fakes.add("t.a.v1.first")
    fakes.add("t.b.v1.second", requires=("t.a.v1",))
    fakes.add("t.c.v1.third", requires=("t.b.v1",))
    with fakes.host() as host:
        host.load()
    closes = [uri for kind, uri in events() if kind == "close"]
    assert closes == ["t.c.v1.third", "t.b.v1.second", "t.a.v1.first"]


def test_on_demand_host_loads_required_plugins_then_each_type_on_first_use(fakes):
    from hoist.host import plugins_on_demand

    fakes.add("t.meta.v1.sqlite")
    fakes.add("t.store.v1.local", requires=("t.meta.v1",))
    snap = fakes.add("t.snap.v1.native")
    svc = fakes.add("t.svc.v1.grpc", requires=("t.store.v1", "t.snap.v1"))
    with plugins_on_demand():
        host = fakes.host(required=["t.store.v1.local"])
    assert host.on_demand
    loaded = host.load()
    # the required plugin and what it requires; nothing else is even imported
    assert [r.uri for r in loaded] == ["t.meta.v1.sqlite", "t.store.v1.local"]
    assert snap not in sys.modules and svc not in sys.modules
    host.check_required()
    assert host.get("t.snap.v1").uri == "t.snap.v1.native"
    assert svc not in sys.modules
    assert [uri for kind, uri in events() if kind == "init"] == ["t.meta.v1.sqlite", "t.store.v1.local", "t.snap.v1.native"]
    assert host.get_all("t.nothing.v1") == {}
    # every result: the rest loads, listed in the order a host loading everything at once uses
    assert [r.uri for r in host.ordered()] == ["t.meta.v1.sqlite", "t.snap.v1.native", "t.store.v1.local", "t.svc.v1.grpc"]
    assert all(r.ok for r in host.ordered())
    host.close()
    closes = [uri for kind, uri in events() if kind == "close"]
    assert closes == ["t.svc.v1.grpc", "t.snap.v1.native", "t.store.v1.local", "t.meta.v1.sqlite"]


def test_on_demand_host_reports_failures_as_a_full_load_does(fakes):
    from hoist.host import plugins_on_demand

    fakes.add("t.store.v1.broken", body="raise RuntimeError('disk on fire')")
    fakes.add("t.svc.v1.needstore", requires=("t.store.v1",))
    fakes.add("t.a.v1.one", requires=("t.b.v1",))
    fakes.add("t.b.v1.two", requires=("t.a.v1",))
    fakes.add("t.c.v1.free")
    eager = fakes.host()
    eager.load()
    with plugins_on_demand():
        lazy = fakes.host(required=["t.store.v1.broken"])
    lazy.load()
    with pytest.raises(PluginError, match=r"^t\.store\.v1\.broken: required plugin error: init failed: disk on fire$"):
        lazy.check_required()
    with pytest.raises(NotFoundError, match=r"plugin t\.b\.v1\.two is not available: error: dependency cycle"):
        lazy.get("t.b.v1")
    assert statuses(lazy) == statuses(eager)
    assert [r.uri for r in lazy.ordered()] == [r.uri for r in eager.ordered()]


def test_hosts_load_everything_at_once_unless_asked(fakes):
    from hoist.host import plugins_on_demand

    fakes.add("t.a.v1.one")
    assert not fakes.host().on_demand
    with plugins_on_demand():
        assert fakes.host().on_demand
        assert not PluginHost(hconfig.Config(), on_demand=False).on_demand
    fakes.host().load()
    assert [uri for kind, uri in events() if kind == "init"] == ["t.a.v1.one"]
