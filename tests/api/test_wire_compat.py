"""Hoist's protos against containerd's own (Debian's golang-github-containerd-containerd-dev): same wire.

containerd's ``.proto`` files are compiled with ``grpc_tools.protoc`` into a descriptor set, and every
message, enum and service that Hoist's generated modules define is compared with it field by field
and method by method.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from hoist.api import generate

GOCODE = Path("/usr/share/gocode/src")
CONTAINERD_API = GOCODE / "github.com/containerd/containerd/api"
GOGO_PROTOBUF = GOCODE / "github.com/gogo/protobuf"
GOGO_GOOGLEAPIS = GOCODE / "github.com/gogo/googleapis"

# Hoist's proto file (relative to core/) -> containerd's (relative to the gocode tree).
FILES = {
    "hoist/api/containerd/types/descriptor.proto": "types/descriptor.proto",
    "hoist/api/containerd/types/mount.proto": "types/mount.proto",
    "hoist/api/containerd/types/platform.proto": "types/platform.proto",
    "hoist/api/containerd/services/content/v1/content.proto": "services/content/v1/content.proto",
    "hoist/api/containerd/services/images/v1/images.proto": "services/images/v1/images.proto",
    "hoist/api/containerd/services/namespaces/v1/namespace.proto": "services/namespaces/v1/namespace.proto",
    "hoist/api/containerd/services/leases/v1/leases.proto": "services/leases/v1/leases.proto",
    "hoist/api/containerd/services/version/v1/version.proto": "services/version/v1/version.proto",
    "hoist/api/containerd/services/introspection/v1/introspection.proto": "services/introspection/v1/introspection.proto",
    "hoist/api/containerd/services/snapshots/v1/snapshots.proto": "services/snapshots/v1/snapshots.proto",
    "hoist/api/containerd/services/diff/v1/diff.proto": "services/diff/v1/diff.proto",
}


@pytest.fixture(scope="module")
def containerd_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """containerd's protos compiled by protoc: ``{file name: FileDescriptorProto}``, imports included."""
    out = tmp_path_factory.mktemp("containerd-protos") / "set.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    names = [f"github.com/containerd/containerd/api/{p}" for p in FILES.values()]
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{GOCODE}",
            f"-I{GOGO_PROTOBUF}",
            f"-I{GOGO_GOOGLEAPIS}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *names,
        ]
    )
    assert rc == 0, "protoc could not compile containerd's protos"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file}


def hoist_file(name: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto that Hoist's generated module for ``name`` registered."""
    module = importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    return fdp


def messages(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message of a file, nested ones included, by full name."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def visit(prefix: str, msgs) -> None:
        for m in msgs:
            full = f"{prefix}.{m.name}"
            found[full] = m
            visit(full, m.nested_type)

    visit(fdp.package, fdp.message_type)
    return found


def enums(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
    found = {f"{fdp.package}.{e.name}": e for e in fdp.enum_type}
    for full, m in messages(fdp).items():
        found.update({f"{full}.{e.name}": e for e in m.enum_type})
    return found


def field_facts(field: descriptor_pb2.FieldDescriptorProto) -> tuple:
    return (field.number, field.name, field.type, field.label, field.type_name)


def test_hoist_covers_every_proto_file_it_ships() -> None:
    # Every containerd-package proto Hoist ships is compared; Hoist's own services (hoist/api/hoist/...) are not containerd's.
    shipped = [str(p) for p in generate.proto_files() if not str(p).startswith("hoist/api/hoist/")]
    assert sorted(shipped) == sorted(FILES)


@pytest.mark.parametrize("hoist_name", sorted(FILES))
def test_same_package_messages_fields_enums_and_services(hoist_name: str, containerd_set) -> None:
    ours = hoist_file(hoist_name)
    theirs = containerd_set[f"github.com/containerd/containerd/api/{FILES[hoist_name]}"]
    assert ours.package == theirs.package
    assert ours.syntax == theirs.syntax == "proto3"

    our_msgs, their_msgs = messages(ours), messages(theirs)
    assert sorted(our_msgs) == sorted(their_msgs)
    for full, msg in our_msgs.items():
        their = their_msgs[full]
        assert [field_facts(f) for f in msg.field] == [field_facts(f) for f in their.field], full
        assert msg.options.map_entry == their.options.map_entry, full
        assert [o.name for o in msg.oneof_decl] == [o.name for o in their.oneof_decl], full

    our_enums, their_enums = enums(ours), enums(theirs)
    assert sorted(our_enums) == sorted(their_enums)
    for full, enum in our_enums.items():
        assert [(v.name, v.number) for v in enum.value] == [(v.name, v.number) for v in their_enums[full].value]

    def methods(fdp):
        return {
            s.name: [(m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in s.method]
            for s in fdp.service
        }

    assert methods(ours) == methods(theirs)


def test_imported_messages_resolve_to_the_same_types(containerd_set) -> None:
    """Every message type a field refers to is defined identically in both trees (e.g. google.rpc.Status)."""
    ours = {}
    for name in FILES:
        module = importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
        for dep in module.DESCRIPTOR.dependencies:
            fdp = descriptor_pb2.FileDescriptorProto()
            dep.CopyToProto(fdp)
            ours.update(messages(fdp))
    theirs = {}
    for fdp in containerd_set.values():
        theirs.update(messages(fdp))
    for full in ("google.rpc.Status", "google.protobuf.Timestamp", "google.protobuf.FieldMask", "google.protobuf.Any"):
        assert [field_facts(f) for f in ours[full].field] == [field_facts(f) for f in theirs[full].field], full


def test_generated_modules_import_only_under_hoist_api() -> None:
    root = generate.IMPORT_ROOT
    for rel in generate.generated_files(root):
        if rel.suffix != ".py":
            continue
        for line in (root / rel).read_text().splitlines():
            if line.startswith(("import ", "from ")):
                module = line.split()[1]
                assert module.split(".")[0] in {"google", "grpc", "hoist", "warnings"}, f"{rel}: {line}"
                assert not module.startswith("containerd"), f"{rel}: {line}"
