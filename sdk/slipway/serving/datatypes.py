"""The one table of tensor datatypes: numpy dtype names <-> Open Inference Protocol v2 names.

Requests and metadata carry v2 names (FP32); Triton's model config spells the same types with a prefix
(TYPE_FP32), so those names are derived here rather than tabled again. numpy-only, so the monitor and the
client can import it without the server's heavy dependencies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMPY_TO_V2: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {v2: np.dtype(name) for name, v2 in NUMPY_TO_V2.items()}
TRITON_PREFIX = "TYPE_"


def triton_type(datatype: str) -> str:
    """The model-config name of a v2 datatype: FP32 -> TYPE_FP32."""
    return TRITON_PREFIX + datatype


def from_triton_type(name: str) -> str | None:
    """The v2 datatype of a model-config name (TYPE_FP32 -> FP32); None for a type not in the table."""
    datatype = name.removeprefix(TRITON_PREFIX)
    return datatype if name.startswith(TRITON_PREFIX) and datatype in V2_TO_NUMPY else None
