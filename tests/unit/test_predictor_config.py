"""config.pbtxt through the protobuf schema: what parses, what the checks refuse and why, how version
policies pick versions, and how requests are matched against the declared signature."""

import numpy as np
import pytest

from predictor.config import (
    DynamicBatching,
    PredictorConfigError,
    TensorSpec,
    VersionPolicy,
    parse_model_config,
)
from predictor.protocol import ProtocolError, Tensor
from predictor.signature import bind_inputs, check_requested_outputs

FULL = """
name: "resnet"
platform: "pytorch_torchscript"
backend: "pytorch"
max_batch_size: 16
input [
  { name: "image" data_type: TYPE_FP32 dims: [3, 8, 8] },
  { name: "mask" data_type: TYPE_BOOL dims: [-1] }
]
output [{ name: "logits" data_type: TYPE_BF16 dims: [10] reshape: { shape: [2, 5] } }]
version_policy: { latest: { num_versions: 2 } }
dynamic_batching { max_queue_delay_microseconds: 1500 preferred_batch_size: [8, 4] }
instance_group [{ count: 2 kind: KIND_CPU }, { kind: KIND_AUTO }]
parameters { key: "backend" value { string_value: "zentorch" } }
parameters { key: "note" value { string_value: "kept" } }
"""

MINIMAL = """input [{ name: "x" data_type: TYPE_INT64 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]
"""


def test_a_full_triton_style_config_parses_into_typed_fields():
    config = parse_model_config(FULL, "resnet")
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "resnet",
        "pytorch_torchscript",
        "zentorch",
        16,
    )
    assert config.inputs == (TensorSpec("image", "FP32", (3, 8, 8)), TensorSpec("mask", "BOOL", (-1,)))
    assert config.outputs == (TensorSpec("logits", "BF16", (10,), (2, 5)),)
    assert config.version_policy == VersionPolicy("latest", num_versions=2)
    assert config.dynamic_batching == DynamicBatching(0.0015, (4, 8))
    assert config.instance_count == 3
    assert config.model_filename == "model.pt"
    assert config.parameters == {"backend": "zentorch", "note": "kept"}
    assert config.document["dynamic_batching"]["max_queue_delay_microseconds"] == "1500"


def test_defaults_fill_in_name_backend_policy_and_one_instance():
    config = parse_model_config(MINIMAL, "tiny")
    assert (config.name, config.backend, config.max_batch_size, config.instance_count) == (
        "tiny",
        "auto",
        0,
        1,
    )
    assert config.version_policy == VersionPolicy("latest", num_versions=1)
    assert config.dynamic_batching is None and config.model_filename is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: 2\nsurprise: 1\n" + MINIMAL, 'has no field named "surprise"'),
        ('input [{ name: "x" data_type: TYPE_FP99 }]', "TYPE_FP99"),
        ('name: "other"\n' + MINIMAL, "does not match the model directory 'tiny'"),
        ('platform: "onnxruntime_onnx"\n' + MINIMAL, "platform 'onnxruntime_onnx' is not served"),
        ('backend: "tensorrt"\n' + MINIMAL, "backend 'tensorrt'"),
        (
            'parameters { key: "backend" value { string_value: "cuda" } }\n' + MINIMAL,
            "choose one of auto, eager",
        ),
        ("max_batch_size: -1\n" + MINIMAL, "max_batch_size must be >= 0"),
        ('output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]', "at least one input"),
        (MINIMAL + 'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]', "input 'x' is declared twice"),
        (
            'input [{ name: "x" dims: [1] }]\noutput [{ name: "y" data_type: TYPE_FP32 dims: [1] }]',
            "needs a data_type",
        ),
        (MINIMAL.replace("dims: [4]", "dims: [0]"), "dims must be positive or -1"),
        (MINIMAL.replace("TYPE_INT64", "TYPE_STRING"), "TYPE_STRING cannot be fed"),
        (MINIMAL.replace("dims: [4]", "dims: [4] reshape: { shape: [3] }"), "does not hold dims [4]"),
        ("version_policy: { specific: { versions: [0] } }\n" + MINIMAL, "positive version numbers"),
        ("version_policy: { latest: { num_versions: 0 } }\n" + MINIMAL, "num_versions must be >= 1"),
        ("dynamic_batching { }\n" + MINIMAL, "needs max_batch_size >= 1"),
        (
            "max_batch_size: 4\ndynamic_batching { preferred_batch_size: [8] }\n" + MINIMAL,
            "within 1..max_batch_size",
        ),
        ("instance_group [{ kind: KIND_GPU }]\n" + MINIMAL, "KIND_GPU is not available"),
        ('default_model_filename: "../model.pt"\n' + MINIMAL, "must be a plain file name"),
    ],
    ids=[
        "unknown-field",
        "unknown-datatype",
        "name-mismatch",
        "unserved-platform",
        "unserved-backend",
        "unknown-backend-parameter",
        "negative-max-batch-size",
        "no-input",
        "input-twice",
        "no-data-type",
        "zero-dim",
        "string-input",
        "reshape-mismatch",
        "version-0",
        "zero-latest-versions",
        "batching-without-batch-size",
        "preferred-batch-too-big",
        "gpu-instance",
        "model-file-a-path",
    ],
)
def test_configs_that_cannot_be_served_are_refused_with_the_reason(text, message):
    with pytest.raises(PredictorConfigError, match=r"tiny/config\.pbtxt") as error:
        parse_model_config(text, "tiny", origin="tiny/config.pbtxt")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("policy", "available", "expected"),
    [
        (VersionPolicy("latest", num_versions=1), [1, 3, 2], (3,)),
        (VersionPolicy("latest", num_versions=2), [1, 3, 2], (2, 3)),
        (VersionPolicy("latest", num_versions=5), [7], (7,)),
        (VersionPolicy("latest", num_versions=1), [], ()),
        (VersionPolicy("all"), [4, 1, 9], (1, 4, 9)),
        (VersionPolicy("specific", versions=(2, 9)), [1, 2, 3], (2,)),
    ],
    ids=["latest-1", "latest-2", "latest-more-than-there-are", "latest-of-none", "all", "specific"],
)
def test_version_policy_selects_versions_like_triton(policy, available, expected):
    assert policy.select(available) == expected


SIGNATURE = parse_model_config(FULL, "resnet")


def _tensor(name, datatype, shape, dtype=np.float32):
    return Tensor(name, datatype, np.zeros(shape, dtype=dtype))


def test_matching_inputs_bind_in_config_order_with_their_batch_size():
    bound = bind_inputs(
        SIGNATURE, [_tensor("mask", "BOOL", (2, 5), np.bool_), _tensor("image", "FP32", (2, 3, 8, 8))]
    )
    assert [a.shape for a in bound.arrays] == [(2, 3, 8, 8), (2, 5)]
    assert bound.batch_size == 2 and bound.key == ((3, 8, 8), (5,))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([_tensor("image", "FP32", (1, 3, 8, 8))], "missing input 'mask'"),
        ([_tensor("image", "FP32", (1, 3, 8, 8)), _tensor("extra", "FP32", (1,))], "has no input 'extra'"),
        (
            [_tensor("image", "FP64", (1, 3, 8, 8)), _tensor("mask", "BOOL", (1, 2))],
            "FP64 does not match the model's FP32",
        ),
        (
            [_tensor("image", "FP32", (1, 3, 8, 9)), _tensor("mask", "BOOL", (1, 2))],
            "does not match [batch, 3, 8, 8]",
        ),
        ([_tensor("image", "FP32", (17, 3, 8, 8)), _tensor("mask", "BOOL", (17, 2))], "max_batch_size 16"),
        ([_tensor("image", "FP32", (0, 3, 8, 8)), _tensor("mask", "BOOL", (0, 2))], "1 <= batch"),
        (
            [_tensor("image", "FP32", (2, 3, 8, 8)), _tensor("mask", "BOOL", (3, 2))],
            "disagree on the batch size",
        ),
        ([_tensor("image", "FP32", (1, 3, 8, 8)), _tensor("image", "FP32", (1, 3, 8, 8))], "given twice"),
    ],
    ids=[
        "missing-input",
        "extra-input",
        "wrong-datatype",
        "wrong-shape",
        "batch-past-max",
        "empty-batch",
        "batch-sizes-disagree",
        "input-twice",
    ],
)
def test_requests_that_do_not_fit_the_signature_are_refused(tensors, message):
    with pytest.raises(ProtocolError) as error:
        bind_inputs(SIGNATURE, tensors)
    assert message in str(error.value)


def test_unbatched_models_take_the_declared_shape_and_reshape_applies():
    config = parse_model_config(MINIMAL.replace("dims: [4]", "dims: [4] reshape: { shape: [2, 2] }"), "tiny")
    bound = bind_inputs(config, [Tensor("x", "INT64", np.arange(4))])
    assert bound.arrays[0].tolist() == [[0, 1], [2, 3]] and bound.batch_size == 0
    with pytest.raises(ProtocolError, match=r"does not match \[4\]"):
        bind_inputs(config, [Tensor("x", "INT64", np.arange(4).reshape(1, 4))])


def test_unknown_requested_outputs_are_refused():
    check_requested_outputs(SIGNATURE, ["logits"])
    with pytest.raises(ProtocolError, match="has no output 'probs'; its outputs are 'logits'"):
        check_requested_outputs(SIGNATURE, ["probs"])
