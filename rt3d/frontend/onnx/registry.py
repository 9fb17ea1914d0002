"""One converter per ONNX op, with versions chosen by opset (as in TVM's Relax ONNX frontend)."""
from __future__ import annotations

from typing import Callable

SUPPORTED_OPSETS = range(6, 22)  # ai.onnx opsets the converters are written against (tested: 6, 11 to 21)

# op_type -> sorted list of (since_version, converter)
CONVERTERS: dict[str, list[tuple[int, Callable]]] = {}


def converter(op_type: str, since: int = 1):
    """Register ``fn(ctx, node) -> list of outputs`` for ``op_type`` from opset ``since`` on."""
    def wrap(fn):
        CONVERTERS.setdefault(op_type, []).append((since, fn))
        CONVERTERS[op_type].sort(key=lambda t: t[0])
        return fn
    return wrap


def lookup(op_type: str, opset: int) -> Callable | None:
    best = None
    for since, fn in CONVERTERS.get(op_type, []):
        if since <= opset:
            best = fn
    return best


def supported_ops() -> list[str]:
    return sorted(CONVERTERS)
