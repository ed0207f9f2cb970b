"""OCI runtime specs from image configs: command, user and groups, env, cwd, mounts, namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hoist.errors import InvalidArgumentError
from hoist.oci_spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    ImageConfig,
    SpecOptions,
    User,
    generate_spec,
    resolve_user,
    scoped_path,
)

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
broken line
odd:x:notanumber:0::/:/bin/sh
"""
GROUP = """root:x:0:
wheel:x:10:root,app
app:x:1000:
extra:x:2000:app
audio:x:29:daemon
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


def test_image_config_from_a_config_blob_and_from_its_config_object():
    blob = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/srv", "User": "app"}}  # fmt: skip
    img = ImageConfig.from_json(blob)
    assert img == ImageConfig(entrypoint=["/bin/app"], cmd=["--serve"], env=["A=1"], working_dir="/srv", user="app")
    assert ImageConfig.from_json(blob["config"]) == img
    assert ImageConfig.from_json({"rootfs": {}, "config": None}) == ImageConfig()
    with pytest.raises(InvalidArgumentError, match="image config: Cmd: expected a list of strings"):
        ImageConfig.from_json({"config": {"Cmd": "echo hi"}})


@pytest.mark.parametrize(
    "image, options, args",
    [
        (ImageConfig(cmd=["sh"]), SpecOptions(), ["sh"]),
        (ImageConfig(entrypoint=["/app"], cmd=["--a"]), SpecOptions(), ["/app", "--a"]),
        (ImageConfig(entrypoint=["/app"], cmd=["--a"]), SpecOptions(args=["--b", "c"]), ["/app", "--b", "c"]),
        (ImageConfig(entrypoint=["/app"], cmd=["--a"]), SpecOptions(args=[]), ["/app"]),
        (ImageConfig(entrypoint=["/app"], cmd=["--a"]), SpecOptions(entrypoint=["/other"]), ["/other"]),
        (ImageConfig(cmd=["sh"]), SpecOptions(entrypoint=["env"], args=["-i"]), ["env", "-i"]),
    ],
)
def test_args(image, options, args):
    assert generate_spec(image, options)["process"]["args"] == args


def test_no_command_is_an_error():
    with pytest.raises(InvalidArgumentError, match="no command to run"):
        generate_spec(ImageConfig())
    with pytest.raises(InvalidArgumentError, match="contains NUL"):
        generate_spec(ImageConfig(cmd=["a\x00b"]))


def test_env_merges_and_fills_path_and_home(rootfs):
    spec = generate_spec(ImageConfig(cmd=["sh"], env=["A=1", "B=2"], user="app"), SpecOptions(env=["B=3", "C=4"]), rootfs=rootfs)
    assert spec["process"]["env"] == [f"PATH={DEFAULT_PATH}", "A=1", "B=3", "C=4", "HOME=/home/app"]
    spec = generate_spec(ImageConfig(cmd=["sh"], env=["PATH=/bin", "HOME=/h"]))
    assert spec["process"]["env"] == ["PATH=/bin", "HOME=/h"]
    with pytest.raises(InvalidArgumentError, match="environment variable 'NOEQUALS': expected KEY=VALUE"):
        generate_spec(ImageConfig(cmd=["sh"]), SpecOptions(env=["NOEQUALS"]))


@pytest.mark.parametrize(
    "user, expected",
    [
        ("", User(uid=0, gid=0, additional_gids=(10,), name="root", home="/root")),
        ("root", User(uid=0, gid=0, additional_gids=(10,), name="root", home="/root")),
        ("app", User(uid=1000, gid=1000, additional_gids=(10, 2000), name="app", home="/home/app")),
        ("1000", User(uid=1000, gid=1000, additional_gids=(10, 2000), name="app", home="/home/app")),
        ("app:extra", User(uid=1000, gid=2000, additional_gids=(10,), name="app", home="/home/app")),
        ("app:29", User(uid=1000, gid=29, additional_gids=(10, 2000), name="app", home="/home/app")),
        ("4242", User(uid=4242, gid=0)),
        ("4242:4343", User(uid=4242, gid=4343)),
        ("daemon", User(uid=1, gid=1, additional_gids=(29,), name="daemon", home="/usr/sbin")),
        ("2147483647", User(uid=2147483647, gid=0)),
    ],
)
def test_resolve_user(rootfs, user, expected):
    assert resolve_user(user, rootfs) == expected


@pytest.mark.parametrize(
    "user, message",
    [
        ("nosuch", "user 'nosuch': no such user in the image's /etc/passwd"),
        ("app:nogroup", "group 'nogroup': no such group in the image's /etc/group"),
        ("2147483648", "uid 2147483648: out of range"),
        ("4294967296", "uid 4294967296: out of range"),
        ("-1", "uid -1: out of range"),
        ("0:-1", "gid -1: out of range"),
        ("0:4294967296", "gid 4294967296: out of range"),
        ("app:", "empty group"),
        (":0", "empty user name"),
        ("odd", "invalid uid 'notanumber'"),
    ],
)
def test_resolve_user_rejects(rootfs, user, message):
    with pytest.raises(InvalidArgumentError, match=message):
        resolve_user(user, rootfs)


def test_numeric_users_work_without_passwd_and_names_do_not(tmp_path):
    assert resolve_user("1000:1000", tmp_path) == User(uid=1000, gid=1000)
    assert resolve_user("7", None) == User(uid=7, gid=0)
    with pytest.raises(InvalidArgumentError, match="no such user in the image's /etc/passwd \\(the image has none\\)"):
        resolve_user("app", tmp_path)


def test_passwd_symlinked_out_of_the_image_is_read_inside_it(tmp_path):
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "passwd").write_text("hostuser:x:0:0::/:/bin/sh\n")
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    os.symlink(str(outside / "passwd"), image / "etc" / "passwd")
    with pytest.raises(InvalidArgumentError, match="no such user"):
        resolve_user("hostuser", image)
    os.unlink(image / "etc" / "passwd")
    os.symlink("../../../../../../../etc/../host-etc/passwd", image / "etc" / "passwd")
    with pytest.raises(InvalidArgumentError, match="no such user"):
        resolve_user("hostuser", image)


def test_passwd_that_is_a_fifo_is_ignored(tmp_path):
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")
    assert resolve_user("5", tmp_path) == User(uid=5, gid=0)


def test_scoped_path(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink("/a", tmp_path / "abs")
    os.symlink("../../../../a/b", tmp_path / "a" / "up")
    os.symlink("loop", tmp_path / "loop")
    assert scoped_path(tmp_path, "/abs/b/c") == tmp_path / "a" / "b" / "c"
    assert scoped_path(tmp_path, "/a/up") == tmp_path / "a" / "b"
    assert scoped_path(tmp_path, "/../../etc/passwd") == tmp_path / "etc" / "passwd"
    with pytest.raises(InvalidArgumentError, match="too many levels of symbolic links"):
        scoped_path(tmp_path, "/loop/x")


@pytest.mark.parametrize(
    "image_dir, cwd, expected",
    [("", None, "/"), ("/srv", None, "/srv"), ("srv/x/..", None, "/srv"), ("/srv", "/tmp", "/tmp"), ("", "/a//b/", "/a/b")],
)
def test_cwd(image_dir, cwd, expected):
    assert generate_spec(ImageConfig(cmd=["sh"], working_dir=image_dir), SpecOptions(cwd=cwd))["process"]["cwd"] == expected


@pytest.mark.parametrize("cwd, message", [
    ("relative", "must be an absolute path"),
    ("/proc/self/fd/7", "inside /proc, refused"),
    ("/proc", "inside /proc, refused"),
    ("/x/../proc/1/cwd", "inside /proc, refused"),
    ("/sys/fs", "inside /sys, refused"),
])  # fmt: skip
def test_bad_cwd(cwd, message):
    with pytest.raises(InvalidArgumentError, match=message):
        generate_spec(ImageConfig(cmd=["sh"]), SpecOptions(cwd=cwd))


def test_default_spec_shape(rootfs):
    spec = generate_spec(ImageConfig(cmd=["sh"]), SpecOptions(hostname="web-1"), rootfs=rootfs)
    assert spec["ociVersion"] == "1.0.2"
    assert spec["hostname"] == "web-1"
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/acpi"} <= set(spec["linux"]["maskedPaths"])
    assert {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} <= set(spec["linux"]["readonlyPaths"])
    assert sorted(d["path"] for d in spec["linux"]["devices"]) == ["/dev/full", "/dev/null", "/dev/random", "/dev/tty", "/dev/urandom", "/dev/zero"]
    proc = spec["process"]
    assert proc["user"] == {"uid": 0, "gid": 0, "additionalGids": [10]}
    assert proc["noNewPrivileges"] is False and proc["terminal"] is False
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert proc["capabilities"]["effective"] == list(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["bounding"]


def test_options_change_the_spec(rootfs):
    spec = generate_spec(
        ImageConfig(cmd=["sh"], user="app"),
        SpecOptions(readonly_rootfs=True, no_new_privileges=True, network="none", terminal=True),
        rootfs=rootfs,
    )
    assert spec["root"]["readonly"] is True
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["process"]["terminal"] is True and "TERM=xterm" in spec["process"]["env"]
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 2000]}
    assert spec["process"]["capabilities"]["effective"] == [] and spec["process"]["capabilities"]["permitted"] == []
    assert "hostname" not in spec


@pytest.mark.parametrize("options, message", [
    (SpecOptions(hostname="a/b"), "hostname 'a/b'"),
    (SpecOptions(hostname="x" * 65), "hostname"),
    (SpecOptions(network="bridge"), "network 'bridge': expected host or none"),
])  # fmt: skip
def test_bad_options(options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        generate_spec(ImageConfig(cmd=["sh"]), options)
