"""Tensor types of the IR: a static shape and a dtype."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# short name used in the text form <-> numpy dtype name
DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32",
          "i8": "int8", "u8": "uint8", "bool": "bool"}
_SHORT = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorType:
    """A tensor's static shape and element type, e.g. ``TensorType((1, 3, 16, 112, 112), "float32")``."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in _SHORT:
            raise ValueError(f"unsupported dtype '{self.dtype}'")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{_SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), str(array.dtype))

    @staticmethod
    def short_to_dtype(short: str) -> str:
        if short not in DTYPES:
            raise ValueError(f"unknown dtype '{short}'")
        return DTYPES[short]
