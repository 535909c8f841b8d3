"""Check and decode request tensors against the model's config before anything reaches ONNX Runtime.

Every refusal is an `InvalidInputError` (HTTP 400, gRPC INVALID_ARGUMENT) whose message names the model, the
tensor and what was expected, so a client can fix its request; the server keeps serving. NaN and Inf in float
inputs pass, as in Triton, unless the model config opts in to refusing them (`reject_non_finite`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slipway.core.errors import InvalidInputError
from slipway.serving.loader import REJECT_NON_FINITE_PARAMETER, LoadedModel, TensorInfo

# numpy kinds a JSON/typed value list may have for each target kind (ints are fine for float tensors).
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
MAX_DIMS = 16


@dataclass
class RequestTensor:
    """One input as it arrived: raw bytes (binary extension, gRPC raw contents) or a value list (JSON, typed)."""

    name: str
    datatype: str
    shape: Sequence[Any]
    data: bytes | memoryview | Sequence[Any] | np.ndarray | None


def _check_shape(model: LoadedModel, info: TensorInfo, shape: Sequence[Any]) -> tuple[int, ...]:
    where = f"model {model.name!r} input {info.name!r}"
    if not isinstance(shape, list | tuple) or len(shape) > MAX_DIMS:
        raise InvalidInputError(
            f"{where}: shape must be a list of at most {MAX_DIMS} integers, got {shape!r}"
        )
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInputError(f"{where}: shape {list(shape)} must hold non-negative integers")
    dims = tuple(int(d) for d in shape)
    expected = model.protocol_shape(info)
    if len(dims) != len(expected):
        raise InvalidInputError(f"{where}: shape {list(dims)} has rank {len(dims)}, expected {expected}")
    start = 0
    if model.batched:
        batch = dims[0]
        if batch < 1 or batch > model.max_batch_size:
            raise InvalidInputError(
                f"{where}: batch size {batch} must lie in 1..{model.max_batch_size} (max_batch_size)"
            )
        start = 1
    for got, want in zip(dims[start:], expected[start:], strict=True):
        if want != -1 and got != want:
            raise InvalidInputError(f"{where}: shape {list(dims)} does not match expected {expected}")
        if got == 0:
            raise InvalidInputError(f"{where}: shape {list(dims)} has an empty dimension")
    return dims


def _from_values(where: str, info: TensorInfo, values: Any, count: int) -> np.ndarray:
    """A JSON or typed value list to an array, refusing strings, nulls, ragged lists and out-of-range ints."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidInputError(f"{where}: data is not a regular list of numbers ({err})") from None
    target = info.dtype.kind
    if arr.size and arr.dtype.kind not in _ACCEPTED_KINDS.get(target, ""):
        raise InvalidInputError(
            f"{where}: data holds {arr.dtype.kind!r}-kind values, expected {info.datatype}"
        )
    if arr.size != count:
        raise InvalidInputError(f"{where}: data has {arr.size} elements, shape needs {count}")
    if target in "iu" and arr.size:
        limits = np.iinfo(info.dtype)
        if arr.min() < limits.min or arr.max() > limits.max:
            raise InvalidInputError(f"{where}: values out of range for {info.datatype}")
    return arr.astype(info.dtype, copy=False)


def decode_tensor(model: LoadedModel, tensor: RequestTensor) -> np.ndarray:
    """One checked input array, shaped as requested; raw bytes are viewed with frombuffer, never copied per element."""
    info = model.inputs.get(tensor.name)
    if info is None:
        raise InvalidInputError(
            f"model {model.name!r} has no input tensor {tensor.name!r}; expected {sorted(model.inputs)}"
        )
    where = f"model {model.name!r} input {info.name!r}"
    if tensor.datatype != info.datatype:
        raise InvalidInputError(
            f"{where}: datatype {tensor.datatype!r} does not match the model's {info.datatype}"
        )
    dims = _check_shape(model, info, tensor.shape)
    count = math.prod(dims)
    data = tensor.data
    if data is None:
        raise InvalidInputError(f"{where}: no data (send 'data' or binary_data_size bytes)")
    if isinstance(data, bytes | bytearray | memoryview):
        want = count * info.dtype.itemsize
        if len(data) != want:
            raise InvalidInputError(
                f"{where}: {len(data)} bytes of data, but shape {list(dims)} {info.datatype} needs {want}"
            )
        arr = np.frombuffer(data, dtype=info.dtype).reshape(dims)
    else:
        arr = _from_values(where, info, data, count).reshape(dims)
    if model.reject_non_finite and info.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InvalidInputError(
            f"{where}: {bad} NaN or Inf value(s); refused because the model config sets parameter "
            f"{REJECT_NON_FINITE_PARAMETER}=true"
        )
    return arr


def decode_inputs(model: LoadedModel, tensors: Sequence[RequestTensor]) -> dict[str, np.ndarray]:
    """All inputs of a request, checked: each named once, all present, one common batch size."""
    arrays: dict[str, np.ndarray] = {}
    for tensor in tensors:
        if tensor.name in arrays:
            raise InvalidInputError(f"model {model.name!r}: input {tensor.name!r} given twice")
        arrays[tensor.name] = decode_tensor(model, tensor)
    missing = sorted(set(model.inputs) - set(arrays))
    if missing:
        raise InvalidInputError(f"model {model.name!r}: missing input tensor(s) {missing}")
    if model.batched and len({a.shape[0] for a in arrays.values()}) > 1:
        sizes = {k: a.shape[0] for k, a in arrays.items()}
        raise InvalidInputError(f"model {model.name!r}: inputs disagree on batch size {sizes}")
    return arrays


def check_outputs(model: LoadedModel, names: Sequence[str]) -> list[str]:
    """Requested output names, or every output when none is named; unknown names are refused."""
    if not names:
        return list(model.outputs)
    unknown = [n for n in names if n not in model.outputs]
    if unknown:
        raise InvalidInputError(
            f"model {model.name!r} has no output tensor {unknown[0]!r}; expected {sorted(model.outputs)}"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"model {model.name!r}: an output is requested twice in {list(names)}")
    return list(names)


def batch_size(model: LoadedModel, arrays: dict[str, np.ndarray]) -> int:
    """Rows a request contributes to a batch (1 for a model without a batch axis)."""
    if not model.batched:
        return 1
    return int(next(iter(arrays.values())).shape[0])
