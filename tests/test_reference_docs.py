"""The generated reference pages match the code: every config key and every command, documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from hoist import config as hconfig
from hoist.docsgen import cli_reference, config_reference, field_docs, registrations

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("page, generate", [("config.md", config_reference), ("cli.md", cli_reference)])
def test_reference_page_is_up_to_date(page, generate):
    on_disk = (REPO / "docs" / "reference" / page).read_text()
    assert on_disk == generate(), f"docs/reference/{page} is stale: run `make docs`"


def config_classes():
    yield "config", hconfig.Config
    yield "grpc", hconfig.GrpcConfig
    for uri, reg, _ in registrations():
        if reg.config is not None:
            yield uri, reg.config


@pytest.mark.parametrize("where, cls", list(config_classes()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_key_has_a_description(where, cls):
    docs = field_docs(cls)
    missing = [f.name for f in attrs.fields(cls) if not docs.get(f.name)]
    assert missing == [], f"{where}: no :ivar: description for {missing}"


def test_generator_command_line():
    r = subprocess.run([sys.executable, "-m", "hoist.docsgen", "nonsense"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr == "usage: python -m hoist.docsgen config|cli\n"
    c = subprocess.run([sys.executable, "-m", "hoist.docsgen", "config"], capture_output=True, text=True, timeout=60)
    assert c.returncode == 0 and c.stdout == config_reference()
