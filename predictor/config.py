"""``config.pbtxt``: parsed with the real protobuf schema (``model_config.proto``), then checked.

The protobuf text parser rejects unknown fields and bad enum values with a line and column; the checks
here catch what the schema cannot say (a batch size of -3, an input twice, a GPU instance group on a
CPU server). The result is a frozen ``ModelConfig`` that the rest of the predictor trusts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import json_format, text_format

from predictor import datatypes
from predictor.model_config_pb2 import DataType as DataTypeEnum
from predictor.model_config_pb2 import ModelConfig as ModelConfigProto
from predictor.model_config_pb2 import ModelInput, ModelInstanceGroup, ModelOutput

BACKENDS = ("auto", "eager", "inductor", "zentorch")
# platform -> the model file a version directory holds
PLATFORM_FILES = {
    "pytorch_torchscript": "model.pt",
    "pytorch_libtorch": "model.pt",  # Triton's name for the same TorchScript format
    "pytorch_export": "model.pt2",
}
MODEL_FILE_NAMES = ("model.pt", "model.pt2")  # tried in this order when the config names neither
EXPORT_FILE_NAME = "model.pt2"  # beside a TorchScript model.pt: the same model as compilers prefer it


class PredictorConfigError(ValueError):
    """config.pbtxt cannot be served as written; the message names the file and the field."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # V2 name, e.g. "FP32"
    dims: tuple[int, ...]  # per example, without the batch dimension; -1 = any size
    reshape: tuple[int, ...] | None = None  # the shape the model sees, when it differs from dims

    def metadata(self, batched: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [-1, *self.dims] if batched else list(self.dims),
        }


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> tuple[int, ...]:
        """The versions to serve out of those present on disk, ascending."""
        present = sorted(set(available))
        if self.kind == "all":
            return tuple(present)
        if self.kind == "specific":
            return tuple(v for v in present if v in self.versions)
        return tuple(present[-self.num_versions :]) if present else ()


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    name: str
    platform: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    version_policy: VersionPolicy = VersionPolicy()
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = 1
    model_filename: str | None = None  # None: whichever of MODEL_FILE_NAMES exists
    parameters: Mapping[str, str] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as JSON, for /config

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def parse_model_config(text: str, directory_name: str, origin: str = "config.pbtxt") -> ModelConfig:
    """Parse and check a config.pbtxt for the model living in ``directory_name``."""
    try:
        proto = text_format.Parse(text, ModelConfigProto())
    except text_format.ParseError as exc:
        raise PredictorConfigError(f"{origin}: {exc}") from None
    return _check(proto, directory_name, origin)


def _check(proto: ModelConfigProto, directory_name: str, origin: str) -> ModelConfig:
    def fail(message: str) -> PredictorConfigError:
        return PredictorConfigError(f"{origin}: {message}")

    name = proto.name or directory_name
    if name != directory_name:
        raise fail(f"name {proto.name!r} does not match the model directory {directory_name!r}")
    if proto.platform and proto.platform not in PLATFORM_FILES:
        raise fail(f"platform {proto.platform!r} is not served here; use one of {', '.join(PLATFORM_FILES)}")
    if proto.backend not in ("", "pytorch"):
        raise fail(f'backend {proto.backend!r} is not served here; leave it empty or write "pytorch"')
    parameters = {key: value.string_value for key, value in proto.parameters.items()}
    backend = parameters.get("backend", "auto")
    if backend not in BACKENDS:
        raise fail(f"parameters backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if proto.max_batch_size < 0:
        raise fail(f"max_batch_size must be >= 0, got {proto.max_batch_size}")
    inputs = _tensors(proto.input, "input", fail)
    outputs = _tensors(proto.output, "output", fail)
    for spec in inputs:
        if spec.datatype == "BYTES":
            raise fail(f"input {spec.name!r}: TYPE_STRING cannot be fed to a torch model")
    model_filename = proto.default_model_filename or PLATFORM_FILES.get(proto.platform)
    if model_filename is not None and (
        "/" in model_filename or "\\" in model_filename or model_filename in (".", "..")
    ):
        raise fail(f"default_model_filename {model_filename!r} must be a plain file name")
    return ModelConfig(
        name=name,
        platform=proto.platform,
        backend=backend,
        max_batch_size=proto.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        version_policy=_version_policy(proto, fail),
        dynamic_batching=_dynamic_batching(proto, fail),
        instance_count=_instance_count(proto, fail),
        model_filename=model_filename,
        parameters=parameters,
        document=json_format.MessageToDict(proto, preserving_proto_field_name=True),
    )


def _tensors(
    protos: Sequence[ModelInput] | Sequence[ModelOutput],
    kind: str,
    fail: Callable[[str], PredictorConfigError],
) -> tuple[TensorSpec, ...]:
    if not protos:
        raise fail(f"at least one {kind} is required")
    specs = []
    seen = set()
    for proto in protos:
        if not proto.name:
            raise fail(f"every {kind} needs a name")
        if proto.name in seen:
            raise fail(f"{kind} {proto.name!r} is declared twice")
        seen.add(proto.name)
        type_name = datatypes_name(proto.data_type)
        if type_name is None:
            raise fail(f"{kind} {proto.name!r} needs a data_type (TYPE_FP32, TYPE_INT64, ...)")
        dims = tuple(proto.dims)
        if any(d == 0 or d < -1 for d in dims):
            raise fail(f"{kind} {proto.name!r}: dims must be positive or -1, got {list(dims)}")
        reshape = tuple(proto.reshape.shape) if proto.HasField("reshape") else None
        if reshape is not None and -1 not in dims and math.prod(reshape) != math.prod(dims):
            raise fail(f"{kind} {proto.name!r}: reshape {list(reshape)} does not hold dims {list(dims)}")
        specs.append(TensorSpec(proto.name, type_name, dims, reshape))
    return tuple(specs)


def datatypes_name(enum_value: int) -> str | None:
    """V2 datatype name of a ModelConfig DataType enum value; None for TYPE_INVALID."""
    dtype = datatypes.BY_CONFIG_NAME.get(DataTypeEnum.Name(enum_value))
    return dtype.name if dtype else None


def _version_policy(proto: ModelConfigProto, fail: Callable[[str], PredictorConfigError]) -> VersionPolicy:
    if not proto.HasField("version_policy"):
        return VersionPolicy()
    choice = proto.version_policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = tuple(proto.version_policy.specific.versions)
        if not versions or any(v <= 0 for v in versions):
            raise fail("version_policy specific needs positive version numbers")
        return VersionPolicy("specific", versions=versions)
    count = proto.version_policy.latest.num_versions if choice == "latest" else 1
    if count < 1:
        raise fail("version_policy latest num_versions must be >= 1")
    return VersionPolicy("latest", num_versions=count)


def _dynamic_batching(
    proto: ModelConfigProto, fail: Callable[[str], PredictorConfigError]
) -> DynamicBatching | None:
    if not proto.HasField("dynamic_batching"):
        return None
    if proto.max_batch_size < 1:
        raise fail("dynamic_batching needs max_batch_size >= 1")
    preferred = tuple(sorted(set(proto.dynamic_batching.preferred_batch_size)))
    bad = [p for p in preferred if not 1 <= p <= proto.max_batch_size]
    if bad:
        raise fail(f"preferred_batch_size {bad} must lie within 1..max_batch_size ({proto.max_batch_size})")
    return DynamicBatching(proto.dynamic_batching.max_queue_delay_microseconds / 1e6, preferred)


def _instance_count(proto: ModelConfigProto, fail: Callable[[str], PredictorConfigError]) -> int:
    total = 0
    for group in proto.instance_group:
        if group.kind == ModelInstanceGroup.KIND_GPU:
            raise fail("instance_group kind KIND_GPU is not available: this predictor runs on CPU")
        if group.count < 0:
            raise fail(f"instance_group count must be >= 1, got {group.count}")
        total += group.count or 1
    return total or 1
