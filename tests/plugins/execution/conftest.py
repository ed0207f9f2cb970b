"""Fixtures for the execution service: a plugin host with every part a container needs, on temp dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hoist import config as hconfig
from hoist.client import Client
from hoist.fetch import fetch
from hoist.remotes import ResolverOptions

#: Core plugins the service needs, known as builtins whatever hoist.builtins lists today.
BUILTINS: dict[str, str] = {
    "hoist.metadata.v1.sqlite": "hoist.metadata.plugin",
    "hoist.snapshotter.v1.native": "hoist.snapshotters.native",
    "hoist.snapshotter.v1.overlayfs": "hoist.snapshotters.overlay",
}
PLUGINS = (
    "hoist.content.v1.local",
    "hoist.resolver.v1.docker",
    "hoist.metadata.v1.sqlite",
    "hoist.snapshotter.v1.native",
    "hoist.snapshotter.v1.overlayfs",
    "hoist.runtime.v1.builtin",
    "hoist.service.v1.execution",
)


def config_text(base: Path, *, plugins: tuple[str, ...] = PLUGINS, extra: str = "") -> str:
    """A config with ``plugins`` on ``base/root`` and ``base/state``; ``extra`` is appended (plugin tables)."""
    names = ", ".join(f'"{p}"' for p in plugins)
    return (
        "version = 1\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        f"enabled_plugins = [{names}]\n"
        'required_plugins = ["hoist.service.v1.execution"]\n'
        '[plugins."hoist.content.v1.local"]\nfsync = false\n'
        '[plugins."hoist.runtime.v1.builtin"]\nkill_timeout = 1.0\n'
        + extra
    )


@pytest.fixture(autouse=True)
def _builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    import hoist.builtins

    for uri, module in BUILTINS.items():
        monkeypatch.setitem(hoist.builtins.BUILTINS, uri, module)


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """``open_client(extra="", plugins=PLUGINS) -> Client`` embedded on ``tmp_path``; all are closed afterwards.

    Containers left over are deleted first.
    """
    opened: list[Client] = []

    def _open(extra: str = "", plugins: tuple[str, ...] = PLUGINS) -> Client:
        path = tmp_path / f"config-{len(opened)}.toml"
        path.write_text(config_text(tmp_path, plugins=plugins, extra=extra))
        c = Client.open(config=hconfig.load(path))
        opened.append(c)
        return c

    yield _open
    for c in reversed(opened):
        try:
            svc = c.plugins_of("hoist.service.v1").get("execution")
            if svc is not None:
                for ns in svc.metadata.list_namespaces():
                    for ctr in svc.list(namespace=ns):
                        svc.delete(ctr.id, force=True, namespace=ns)
        finally:
            c.close()


@pytest.fixture
def pull(registry) -> Callable[[Client, str], str]:
    """``pull(client, "test/busybox:1") -> image name``: fetch a standard image from the test registry."""

    def _pull(client: Client, name: str) -> str:
        ref = registry.ref(name)
        fetch(client, ref, resolver_options=ResolverOptions(plain_http=True))
        return ref

    return _pull
