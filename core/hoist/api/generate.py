"""Regenerate the Python bindings of Hoist's ``.proto`` files (``python -m hoist.api.generate``).

The ``.proto`` files live next to their generated modules under ``core/hoist/api/containerd/``;
they are compiled with ``core/`` as the import root, so a proto imports
``hoist/api/containerd/types/descriptor.proto`` and the generated Python imports
``hoist.api.containerd.types.descriptor_pb2`` — never a top-level ``containerd`` package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hoist.errors import HoistError

API_DIR = Path(__file__).resolve().parent
IMPORT_ROOT = API_DIR.parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def proto_files() -> list[Path]:
    """Every ``.proto`` file of Hoist's API, sorted, as paths relative to the import root."""
    return sorted(p.relative_to(IMPORT_ROOT) for p in API_DIR.rglob("*.proto"))


def include_dirs() -> list[Path]:
    """The ``-I`` roots: Hoist's import root, protobuf's well-known types, googleapis' ``google/rpc``."""
    import grpc_tools
    import google.rpc.status_pb2

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    googleapis = Path(google.rpc.status_pb2.__file__).resolve().parents[2]
    if not (googleapis / "google" / "rpc" / "status.proto").is_file():
        raise HoistError(f"google/rpc/status.proto not found under {googleapis}: reinstall googleapis-common-protos")
    return [IMPORT_ROOT, well_known, googleapis]


def generated_files(root: Path) -> list[Path]:
    """Generated modules under ``root/hoist/api``, relative to ``root``, sorted."""
    base = root / "hoist" / "api"
    return sorted(
        p.relative_to(root) for p in base.rglob("*") if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    )


def generate(out: Path = IMPORT_ROOT) -> list[Path]:
    """Compile every proto into ``out`` (``out/hoist/api/...``) and return the files written.

    Package ``__init__.py`` files are created next to the generated modules where missing.

    :raises HoistError: protoc rejected a file (its diagnostics are in the message).
    """
    from grpc_tools import protoc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc"]
    args += [f"-I{d}" for d in include_dirs()]
    args += [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    args += [str(p) for p in proto_files()]
    rc = protoc.main(args)
    if rc != 0:
        raise HoistError(f"protoc failed with exit status {rc} compiling {API_DIR}")
    for proto in proto_files():
        stub = out / proto.with_name(proto.stem + "_pb2_grpc.py")
        if stub.exists() and "\nclass " not in stub.read_text():
            stub.unlink()  # a file of plain messages has no services to stub
        pkg = out / proto.parent
        while pkg != out and pkg.is_relative_to(out / "hoist" / "api"):
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated protocol buffer modules."""\n')
            pkg = pkg.parent
    return generated_files(out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: regenerate in place, or into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m hoist.api.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMPORT_ROOT, help="output root (default: the source tree)")
    ns = parser.parse_args(argv)
    try:
        written = generate(ns.out)
    except HoistError as err:
        print(f"generate: {err}", file=sys.stderr)
        return 1
    print(f"generated {len(written)} files under {ns.out / 'hoist' / 'api'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
