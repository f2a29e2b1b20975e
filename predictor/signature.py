"""Match request tensors against a model's declared inputs and outputs.

Everything a client can get wrong about a model — input names, datatypes, shapes, batch size, output
names — is caught here, before any model code runs, and reported as a ``ProtocolError`` (HTTP 400)
that names the model's expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictor.config import ModelConfig, TensorSpec
from predictor.protocol import ProtocolError, Tensor


@dataclass
class BoundInputs:
    arrays: list[np.ndarray]  # in the config's input order, reshaped to what the model sees
    batch_size: int  # 0 for models without a batch dimension

    @property
    def key(self) -> tuple[tuple[int, ...], ...]:
        """Requests with equal keys can share a batch: same per-example shapes."""
        return tuple(a.shape[1:] for a in self.arrays)


def bind_inputs(config: ModelConfig, tensors: Sequence[Tensor]) -> BoundInputs:
    by_name = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise ProtocolError(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    expected = {spec.name for spec in config.inputs}
    unknown = [name for name in by_name if name not in expected]
    if unknown:
        raise ProtocolError(
            f"model {config.name!r} has no input {unknown[0]!r}; its inputs are {_names(config.inputs)}"
        )
    arrays = []
    batch_sizes = set()
    for spec in config.inputs:
        given = by_name.get(spec.name)
        if given is None:
            raise ProtocolError(f"missing input {spec.name!r} of model {config.name!r}")
        if given.datatype != spec.datatype:
            raise ProtocolError(
                f"input {spec.name!r}: datatype {given.datatype} does not match the model's {spec.datatype}"
            )
        shape = given.shape
        if config.batched:
            if len(shape) != len(spec.dims) + 1 or not 1 <= shape[0] <= config.max_batch_size:
                raise ProtocolError(
                    f"input {spec.name!r}: shape {list(shape)} does not match {_expected(spec, True)} "
                    f"with 1 <= batch <= max_batch_size {config.max_batch_size}"
                )
            batch_sizes.add(shape[0])
            per_example = shape[1:]
        else:
            per_example = shape
        if not _fits(per_example, spec.dims):
            raise ProtocolError(
                f"input {spec.name!r}: shape {list(shape)} does not match {_expected(spec, config.batched)}"
            )
        data = given.data
        if spec.reshape is not None:
            data = data.reshape((shape[0], *spec.reshape) if config.batched else spec.reshape)
        arrays.append(data)
    if len(batch_sizes) > 1:
        raise ProtocolError(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    return BoundInputs(arrays, batch_sizes.pop() if batch_sizes else 0)


def check_requested_outputs(config: ModelConfig, names: Sequence[str]) -> None:
    known = {spec.name for spec in config.outputs}
    for name in names:
        if name not in known:
            raise ProtocolError(
                f"model {config.name!r} has no output {name!r}; its outputs are {_names(config.outputs)}"
            )


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _expected(spec: TensorSpec, batched: bool) -> str:
    return "[" + ", ".join((["batch"] if batched else []) + [str(d) for d in spec.dims]) + "]"


def _names(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(repr(s.name) for s in specs)
