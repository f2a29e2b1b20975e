"""The tensor datatypes of the Open Inference Protocol and how each one is stored.

One table links the three names a datatype goes by — the V2 wire name (``FP32``), the model-config
enum (``TYPE_FP32``) and the torch dtype — with the numpy dtype the codec keeps the values in. numpy has
no bfloat16, so BF16 values travel as their raw 16-bit patterns in a ``uint16`` array and are converted
to and from floats only at the JSON boundary; torch reinterprets the same bits without a copy. BYTES
(``TYPE_STRING`` in configs) is an object array of ``bytes``: the codec handles it, torch models cannot
take it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataType:
    name: str  # V2 wire name
    config_name: str  # ModelConfig enum name
    numpy: np.dtype  # storage dtype inside the codec
    torch: str | None  # attribute of the torch module, None where torch has no such dtype

    @property
    def itemsize(self) -> int:
        """Bytes per element in the binary extension; 0 for BYTES, whose elements are length-prefixed."""
        return 0 if self.name == "BYTES" else self.numpy.itemsize


_TABLE = (
    DataType("BOOL", "TYPE_BOOL", np.dtype(np.bool_), "bool"),
    DataType("UINT8", "TYPE_UINT8", np.dtype(np.uint8), "uint8"),
    DataType("UINT16", "TYPE_UINT16", np.dtype("<u2"), "uint16"),
    DataType("UINT32", "TYPE_UINT32", np.dtype("<u4"), "uint32"),
    DataType("UINT64", "TYPE_UINT64", np.dtype("<u8"), "uint64"),
    DataType("INT8", "TYPE_INT8", np.dtype(np.int8), "int8"),
    DataType("INT16", "TYPE_INT16", np.dtype("<i2"), "int16"),
    DataType("INT32", "TYPE_INT32", np.dtype("<i4"), "int32"),
    DataType("INT64", "TYPE_INT64", np.dtype("<i8"), "int64"),
    DataType("FP16", "TYPE_FP16", np.dtype("<f2"), "float16"),
    DataType("FP32", "TYPE_FP32", np.dtype("<f4"), "float32"),
    DataType("FP64", "TYPE_FP64", np.dtype("<f8"), "float64"),
    DataType("BF16", "TYPE_BF16", np.dtype("<u2"), "bfloat16"),
    DataType("BYTES", "TYPE_STRING", np.dtype(object), None),
)

BY_NAME: dict[str, DataType] = {d.name: d for d in _TABLE}
BY_CONFIG_NAME: dict[str, DataType] = {d.config_name: d for d in _TABLE}
BY_TORCH: dict[str, DataType] = {d.torch: d for d in _TABLE if d.torch}
NAMES = ", ".join(BY_NAME)


def lookup(name: object) -> DataType:
    """The datatype called ``name`` on the wire (any JSON value may arrive there); KeyError names the
    valid choices."""
    dtype = BY_NAME.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise KeyError(f"unknown datatype {name!r}; expected one of {NAMES}")
    return dtype


def bf16_from_floats(values: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 (nearest, ties to even) and return their bit patterns as uint16."""
    floats = np.ascontiguousarray(values, dtype=np.float32)
    bits = floats.view(np.uint32)
    nan = np.isnan(floats)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def bf16_to_floats(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns to float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
