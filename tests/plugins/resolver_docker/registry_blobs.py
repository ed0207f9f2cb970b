"""Helpers shared by the resolver's tests against the real registry: push a blob, read a stream, trust a CA."""

from __future__ import annotations

from pathlib import Path

from support.registry import Registry

from hoist.content import Descriptor, Digest

MiB = 1 << 20


def push_blob(reg: Registry, repo: str, data: bytes) -> Descriptor:
    """Upload ``data`` to ``repo`` in one monolithic PUT; its descriptor."""
    digest = Digest.from_bytes(data)
    with reg.client() as c:
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["location"]
        r = c.put(loc + ("&" if "?" in loc else "?") + f"digest={digest}", content=data,
                  headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
    return Descriptor(media_type="application/octet-stream", digest=digest, size=len(data))


def read_all(stream) -> bytes:  # type: ignore[no-untyped-def]
    """Everything a fetch stream yields, read with ``readinto`` into 1 MiB buffers (the stream is closed)."""
    with stream as s:
        out = bytearray()
        buf = bytearray(MiB)
        while n := s.readinto(buf):
            out += memoryview(buf)[:n]
        return bytes(out)


def hosts_dir(tmp_path: Path, host: str, ca: Path | None) -> Path:
    """A ``certs.d`` tree whose ``hosts.toml`` for ``host`` says HTTPS with ``ca``."""
    root = tmp_path / "certs.d"
    d = root / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(f'server = "https://{host}"\nca = "{ca}"\n')
    return root
