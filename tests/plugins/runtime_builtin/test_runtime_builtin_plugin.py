"""``hoist.runtime.v1.builtin`` loaded by the plugin host from a config file, then running a task."""

from __future__ import annotations

import textwrap

from hoist import config as hconfig
from hoist.host import PluginHost
from hoist.oci_spec import ImageConfig, SpecOptions, generate_spec
from hoist.runtime import IO, PLUGIN_TYPE, Bundle, Runtime


def test_the_plugin_loads_with_its_config_and_runs_a_task(tmp_path, rootfs):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""
        version = 1
        root = "{tmp_path / 'root'}"
        state = "{tmp_path / 'state'}"
        enabled_plugins = ["hoist.runtime.v1.builtin"]
        required_plugins = ["hoist.runtime.v1.builtin"]
        [plugins."hoist.runtime.v1.builtin"]
        kill_timeout = 2.5
    """))
    host = PluginHost(hconfig.load(path))
    [result] = host.load()
    assert (result.uri, result.status) == ("hoist.runtime.v1.builtin", "ok")
    runtime = host.get(PLUGIN_TYPE)
    assert isinstance(runtime, Runtime)
    assert runtime.config.kill_timeout == 2.5
    spec = generate_spec(ImageConfig(cmd=["echo", "from the plugin"]), SpecOptions(), rootfs=rootfs)
    task = runtime.create("p", Bundle(spec=spec, rootfs=rootfs), IO(stdout=str(tmp_path / "out")))
    assert task.bundle == tmp_path / "state" / "hoist.runtime.v1.builtin" / "tasks" / "default" / "p"
    task.start()
    assert task.wait(30).status == 0
    task.delete()
    host.close()
    assert (tmp_path / "out").read_text() == "from the plugin\n"
