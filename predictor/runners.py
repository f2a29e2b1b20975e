"""Runners: one loaded model in one form, called with torch tensors in the config's input order.

* ``TorchScriptRunner`` — ``model.pt`` through ``torch.jit.load`` (eager).
* ``ExportRunner`` — ``model.pt2`` (a ``torch.export`` program) as its unlifted module (eager).
* ``PackageRunner`` — an AOTInductor package built by ``predictor.compiler`` (inductor or zentorch),
  loaded through torch's C++ package loader: milliseconds, and without importing ``torch._inductor``.

Also here: the numpy <-> torch conversions at the edge of the runner and the mapping of whatever the
model returns (a tensor, a tuple, a dict) onto the outputs config.pbtxt declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.utils._pytree as pytree

from predictor import datatypes
from predictor.backends import EAGER, ZENTORCH, load_zentorch_kernels
from predictor.config import ModelConfig, TensorSpec


class Runner(Protocol):
    backend: str
    record: dict[str, Any] | None  # how a compiled package was built (compile seconds, zentorch kernels)

    def run(self, inputs: list[torch.Tensor]) -> Any: ...


class InferenceError(RuntimeError):
    """The model itself failed or returned something config.pbtxt does not describe (HTTP 500)."""


class TorchScriptRunner:
    backend = EAGER
    record: dict[str, Any] | None = None

    def __init__(self, path: Path):
        self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.forward = self.module.forward  # skips nn.Module's hook machinery: TorchScript has no hooks

    def run(self, inputs: list[torch.Tensor]) -> Any:
        with torch.inference_mode():
            return self.forward(*inputs)


class ExportRunner:
    backend = EAGER
    record: dict[str, Any] | None = None

    def __init__(self, path: Path):
        self.module = torch.export.load(str(path)).module()

    def run(self, inputs: list[torch.Tensor]) -> Any:
        with torch.inference_mode():
            return self.module(*inputs)


class PackageRunner:
    def __init__(self, path: Path, backend: str, instances: int, record: dict[str, Any] | None = None):
        if backend == ZENTORCH:
            load_zentorch_kernels()
        self.backend = backend
        self.record = record
        # (package, model name inside it, run single-threaded, concurrent runners, device index -1 = CPU)
        self.loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, instances, -1)
        self.out_spec = pytree.treespec_loads(self.loader.get_call_spec()[1])

    def run(self, inputs: list[torch.Tensor]) -> Any:
        with torch.inference_mode():
            return pytree.tree_unflatten(self.loader.run(inputs), self.out_spec)


def resident_bytes(runner: Runner, model_file: Path) -> int:
    """What a loaded model holds: the bytes of its parameters and buffers (each storage counted once).

    Counted from the module rather than from the process's RSS: RSS moves with every allocation of
    every thread (requests to other models, the allocator's caches) and rarely shrinks after an unload,
    so a delta measured while other models serve says little about this one. A compiled package keeps
    its weights inside the package, out of reach: the model file's size stands in for them.
    """
    module = getattr(runner, "module", None)
    if module is None:
        return model_file.stat().st_size if model_file.exists() else 0
    storages: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def load_eager(model_file: Path) -> Runner:
    return ExportRunner(model_file) if model_file.suffix == ".pt2" else TorchScriptRunner(model_file)


def to_torch(array: np.ndarray, datatype: str) -> torch.Tensor:
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    if datatype == "BF16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def to_numpy(tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16), "BF16"
    dtype = datatypes.BY_TORCH.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is None:
        raise InferenceError(f"the model returned a {tensor.dtype} tensor, which has no V2 datatype")
    return tensor.numpy(), dtype.name


def match_outputs(config: ModelConfig, result: Any) -> list[np.ndarray]:
    """Line the model's result up with the declared outputs and check their datatypes."""
    if isinstance(result, torch.Tensor):
        result = [result]
    if isinstance(result, dict):
        missing = [spec.name for spec in config.outputs if spec.name not in result]
        if missing:
            raise InferenceError(
                f"the model's result has no {missing[0]!r}; it returned keys {sorted(result)}"
            )
        tensors = [result[spec.name] for spec in config.outputs]
    elif isinstance(result, list | tuple):
        if len(result) != len(config.outputs):
            raise InferenceError(
                f"the model returned {len(result)} tensors; config.pbtxt has {len(config.outputs)} outputs"
            )
        tensors = list(result)
    else:
        raise InferenceError(f"the model returned a {type(result).__name__}, expected tensors")
    arrays = []
    for spec, tensor in zip(config.outputs, tensors, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise InferenceError(f"output {spec.name!r}: the model returned a {type(tensor).__name__}")
        array, datatype = to_numpy(tensor)
        if datatype != spec.datatype:
            raise InferenceError(
                f"output {spec.name!r}: the model returned {datatype}, config.pbtxt declares {spec.datatype}"
            )
        arrays.append(array)
    return arrays


def run_model(runner: Runner, config: ModelConfig, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    inputs = [to_torch(a, spec.datatype) for a, spec in zip(arrays, config.inputs, strict=True)]
    try:
        result = runner.run(inputs)
    except Exception as exc:
        raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
    return match_outputs(config, result)


def example_inputs(
    specs: Sequence[TensorSpec], batch_size: int | None, unknown: int = 1, seed: int | None = None
) -> list[np.ndarray]:
    """Inputs shaped like ``specs``: ``unknown`` stands in for -1 dims and a None batch size means no batch
    dimension. Zeros without a seed (valid for nearly any model: pixels, embedding indices, masks);
    with one, floats are reproducible noise, which shows differences between backends."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        dims = spec.reshape if spec.reshape is not None else spec.dims
        shape = tuple(unknown if d == -1 else d for d in dims)
        if batch_size is not None:
            shape = (batch_size, *shape)
        dtype = datatypes.BY_NAME[spec.datatype]
        if seed is not None and spec.datatype in ("FP16", "FP32", "FP64"):
            arrays.append(rng.standard_normal(shape).astype(dtype.numpy))
        elif seed is not None and spec.datatype == "BF16":
            arrays.append(datatypes.bf16_from_floats(rng.standard_normal(shape)))
        else:
            arrays.append(np.zeros(shape, dtype=dtype.numpy))
    return arrays


def check_outputs(config: ModelConfig, outputs: Sequence[np.ndarray], batch_size: int) -> None:
    """Warm-up check: output shapes agree with config.pbtxt (so a wrong config fails at load, not later)."""
    for spec, array in zip(config.outputs, outputs, strict=True):
        expected = spec.reshape if spec.reshape is not None else spec.dims
        shape = array.shape[1:] if config.batched else array.shape
        if config.batched and (array.ndim == 0 or array.shape[0] != batch_size):
            raise InferenceError(
                f"output {spec.name!r}: shape {list(array.shape)} lacks the batch dimension {batch_size}"
            )
        if len(shape) != len(expected) or any(d not in (-1, s) for s, d in zip(shape, expected, strict=True)):
            raise InferenceError(
                f"output {spec.name!r}: the model returned shape {list(array.shape)}, config.pbtxt declares "
                f"{list(expected)}{' after the batch dimension' if config.batched else ''}"
            )
