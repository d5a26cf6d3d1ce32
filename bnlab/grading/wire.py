"""The one format in which data crosses from a graded notebook's process to the grader: plain JSON.

Everything a submission's code returns is converted to plain values (numbers, strings, lists, dicts and numpy
arrays) in the submission's process, encoded as JSON, and decoded in the grader. JSON cannot carry code, so a
submission cannot make the grader run anything by what it returns (pickle could). Decoding accepts numeric and
boolean arrays only, of a bounded size.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

__all__ = ["to_plain", "encode", "decode", "dumps", "loads", "Opaque"]

_ARRAY_DTYPES = {"float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"}
_MAX_ARRAY_BYTES = 64 * 1024 * 1024
_MAX_DEPTH = 20


class Opaque(str):
    """Stands for a value that does not cross the process boundary (a cache object, a module): its type name."""


def to_plain(value: Any, _depth: int = 0) -> Any:
    """Convert a value returned by a submission into plain data: arrays, numbers, strings, lists, dicts.

    torch tensors become numpy arrays (detached copies), tuples become lists, numpy scalars become Python
    numbers, and anything else becomes an :class:`Opaque` naming its type. Runs in the submission's process.
    """
    if _depth > _MAX_DEPTH:
        return Opaque("deeply nested value")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if type(value) in (bool, int, float, str, type(None)) else _builtin(value)
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            return Opaque(type(value).__name__)
        return {"b": bool, "f": float}.get(value.dtype.kind, int)(value)  # longdouble.item() stays longdouble
    if isinstance(value, np.ndarray):
        return _plain_array(value) if value.dtype.kind in "biuf" else Opaque(f"ndarray of {value.dtype}")
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        try:
            return np.array(value.detach().cpu().numpy(), copy=True)
        except Exception:  # a tensor numpy cannot hold (bfloat16, sparse): say what it was
            return Opaque(f"torch tensor of {getattr(value, 'dtype', '?')}")
    if isinstance(value, (list, tuple)):
        return [to_plain(item, _depth + 1) for item in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_plain(v, _depth + 1) for k, v in value.items()}
    return Opaque(type(value).__name__)


def _plain_array(array: np.ndarray) -> np.ndarray:
    """A copy in native byte order and a dtype the wire carries: a big-endian or long-double result is a result
    like any other, not a reason to fail. Long doubles become float64, integer types the wire does not carry
    int64."""
    native = np.dtype(array.dtype.type)  # the same type in this machine's byte order
    if native.name not in _ARRAY_DTYPES:
        native = np.dtype(np.float64 if array.dtype.kind == "f" else np.int64)
    return np.array(array, dtype=native, copy=True)


def _builtin(value: Any) -> Any:
    """Subclasses of bool/int/float/str (which could override comparisons) become the plain built-in value."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return Opaque(type(value).__name__)


def encode(value: Any) -> Any:
    """Plain data -> a JSON-serializable structure (arrays as base64 with dtype and shape)."""
    if isinstance(value, Opaque):
        return {"__opaque__": str(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {"__ndarray__": base64.b64encode(array.tobytes()).decode("ascii"),
                "dtype": array.dtype.name, "shape": list(array.shape)}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
    return {"__opaque__": type(value).__name__}


def decode(value: Any, _depth: int = 0) -> Any:
    """Inverse of :func:`encode`; refuses anything else, so untrusted input cannot become code or huge arrays."""
    if _depth > _MAX_DEPTH + 5:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        if "__ndarray__" in value:
            dtype, shape = value["dtype"], tuple(int(s) for s in value["shape"])
            if dtype not in _ARRAY_DTYPES or any(s < 0 for s in shape):
                raise ValueError(f"refusing array of dtype {dtype!r} and shape {shape}")
            raw = base64.b64decode(value["__ndarray__"], validate=True)
            if len(raw) > _MAX_ARRAY_BYTES or len(raw) != math.prod(shape) * np.dtype(dtype).itemsize:
                raise ValueError("array data does not match its shape")
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if "__float__" in value:
            return float(value["__float__"])
        if "__opaque__" in value:
            return Opaque(str(value["__opaque__"]))
        if "__dict__" in value:
            return {str(k): decode(v, _depth + 1) for k, v in value["__dict__"].items()}
    raise ValueError(f"unexpected value in grading data: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Plain data -> UTF-8 JSON bytes."""
    return json.dumps(encode(value), allow_nan=False).encode()


def loads(data: bytes) -> Any:
    """UTF-8 JSON bytes -> plain data, validated by :func:`decode`."""
    return decode(json.loads(data.decode()))
