"""Our gRPC protocols are wire-compatible with the published ones, and the committed Python is current.

Each .proto (ours and the published copy in tests/data/published_protos/) is compiled with protoc and
loaded into a private descriptor pool (never the default one: kserve's and tritonclient's modules
register the same ``inference.*`` names there); then package, services, methods with their input and
output types, and every message's fields by number, name, type, label (repeated/optional, presence)
and message/enum type are compared. Comments and option spelling may differ; nothing on the wire may.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from grpc_tools import protoc
from tables import named

ROOT = Path(__file__).parents[2]
PUBLISHED = ROOT / "tests" / "data" / "published_protos"
PROTOS = [  # label, ours, the published copy, the generated module
    ("V2 inference",
     "predictor/protos/grpc_predict_v2.proto", "grpc_predict_v2.proto", "grpc_predict_v2_pb2.py"),
    ("ModelMesh runtime SPI",
     "predictor/protos/model-runtime.proto", "model-runtime.proto", "model_runtime_pb2.py"),
]  # fmt: skip


def compiled(include: Path, name: str, tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / f"{Path(name).name}.pb"
    status = protoc.main(["protoc", f"-I{include}", f"--descriptor_set_out={out}", str(include / name)])
    assert status == 0, f"protoc failed on {include / name}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(files) == 1
    return files[0]


def loaded(proto: descriptor_pb2.FileDescriptorProto) -> FileDescriptor:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool.FindFileByName(proto.name)


def enum_shape(enum: EnumDescriptor) -> dict:
    return {"name": enum.full_name, "values": sorted((v.number, v.name) for v in enum.values)}


def message_shape(message: Descriptor) -> dict:
    """Everything about a message that reaches the wire or the generated API."""
    return {
        "name": message.full_name,
        "map_entry": message.GetOptions().map_entry,
        "fields": sorted(
            (
                f.number,
                f.name,
                f.type,
                "repeated" if f.is_repeated else "required" if f.is_required else "optional",
                f.has_presence,
                f.message_type.full_name if f.message_type else "",
                f.enum_type.full_name if f.enum_type else "",
                f.containing_oneof.name if f.containing_oneof else "",
            )
            for f in message.fields
        ),
        "nested": sorted((message_shape(n) for n in message.nested_types), key=lambda m: m["name"]),
        "enums": sorted((enum_shape(e) for e in message.enum_types), key=lambda e: e["name"]),
    }


def file_shape(proto: descriptor_pb2.FileDescriptorProto) -> dict:
    file = loaded(proto)
    return {
        "package": file.package,
        "services": {
            service.full_name: sorted(
                (m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods
            )
            for service in file.services_by_name.values()
        },
        "messages": {name: message_shape(m) for name, m in file.message_types_by_name.items()},
        "enums": {name: enum_shape(e) for name, e in file.enum_types_by_name.items()},
    }


@pytest.mark.parametrize(("label", "ours", "published", "generated"), named(PROTOS))
def test_our_proto_matches_the_published_one(label, ours, published, generated, tmp_path):
    ours_path = ROOT / ours
    mine = file_shape(compiled(ours_path.parent, ours_path.name, tmp_path))
    theirs = file_shape(compiled(PUBLISHED, published, tmp_path))
    assert mine["package"] == theirs["package"]
    assert mine["services"] == theirs["services"]
    assert mine["enums"] == theirs["enums"]
    assert sorted(mine["messages"]) == sorted(theirs["messages"])
    for name, shape in theirs["messages"].items():
        assert mine["messages"][name] == shape, f"{label}: message {name} differs from the published one"


def serialized_in(generated: Path) -> bytes:
    """The FileDescriptorProto a generated _pb2.py registers, read from its source (importing
    grpc_predict_v2_pb2 here would clash with kserve's and tritonclient's registrations)."""
    for node in ast.walk(ast.parse(generated.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError(f"{generated} registers no file descriptor")


def without_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        without_json_names(nested)


@pytest.mark.parametrize(("label", "ours", "published", "generated"), named(PROTOS))
def test_generated_python_is_current(label, ours, published, generated, tmp_path):
    """The committed _pb2.py was generated from the .proto as it is now (predictor/protos/__init__.py
    says how to regenerate)."""
    proto = compiled(ROOT, ours, tmp_path)
    proto.ClearField("source_code_info")  # the Python generator leaves out comments and JSON names
    for message in proto.message_type:
        without_json_names(message)
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        serialized_in(ROOT / "predictor" / "protos" / generated)
    )
    assert committed == proto, f"{generated} lags {ours}: regenerate it (predictor/protos/__init__.py)"
