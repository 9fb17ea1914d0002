"""Converters for tensor and shape ops. Shape arithmetic on static inputs is folded at import time."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ...ir.ops import AxisAttrs, PadAttrs, ReshapeAttrs, TransposeAttrs
from .registry import converter

_NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _binary(ctx, node):
    a, b = ctx.static(0), ctx.static(1)
    if a is not None and b is not None:
        out = _NP_BINARY[node.op_type](a, b)
        if node.op_type == "Div" and np.issubdtype(a.dtype, np.integer):
            out = np.trunc(a / b).astype(a.dtype)
        return [np.asarray(out).astype(np.result_type(a, b))]
    return [ctx.add(node.op_type.lower(), [ctx.value(0), ctx.value(1)])]


for _op in _NP_BINARY:
    converter(_op, since=1)(_binary)


@converter("Identity", since=1)
def identity(ctx, node):
    return [ctx.env[node.input[0]]]


@converter("Dropout", since=1)
def dropout(ctx, node):
    if len([o for o in node.output if o]) > 1:
        raise ctx.fail("the mask output of Dropout is not supported (inference only)")
    if ctx.has_input(2) and ctx.static(2) is not None and bool(ctx.static(2)):
        raise ctx.fail("training_mode=true is not supported; export in eval mode")
    return [ctx.env[node.input[0]]]


@converter("Constant", since=1)
def constant(ctx, node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        v = ctx.attr(key)
        if v is not None:
            dtype = np.float32 if "float" in key else (np.int64 if "int" in key else None)
            return [np.asarray(v, dtype=dtype)]
    raise ctx.fail("Constant without a supported value attribute (value, value_float(s), value_int(s))")


@converter("Shape", since=1)
def shape(ctx, node):
    v = ctx.env[node.input[0]]
    s = np.asarray(v.shape if isinstance(v, np.ndarray) else v.type.shape, dtype=np.int64)
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return [s[start:end]]


@converter("Cast", since=1)
def cast(ctx, node):
    to = helper.tensor_dtype_to_np_dtype(ctx.attr("to"))
    x = ctx.static(0)
    if x is not None:
        return [x.astype(to)]
    v = ctx.value(0)
    if np.dtype(to) != np.dtype(v.type.dtype):
        raise ctx.fail(f"casting a run-time tensor from {v.type.dtype} to {np.dtype(to)} is not supported")
    return [v]


@converter("Gather", since=1)
def gather(ctx, node):
    data = ctx.require_static(0, "data")
    idx = ctx.require_static(1, "indices")
    return [np.take(data, idx, axis=int(ctx.attr("axis", 0)))]


def _reshape_to(ctx, x, shape):
    if isinstance(x, np.ndarray):
        return x.reshape(shape)
    if tuple(shape) == x.type.shape:
        return x
    return ctx.add("reshape", [x], ReshapeAttrs(shape=tuple(int(d) for d in shape)))


def _squeeze_shape(ctx, in_shape, axes, unsqueeze: bool):
    if unsqueeze:
        out = list(in_shape)
        r = len(in_shape) + len(axes)
        for a in sorted(int(a) % r for a in axes):
            out.insert(a, 1)
        return out
    r = len(in_shape)
    axes = [int(a) % r for a in axes] if axes is not None else [i for i, d in enumerate(in_shape) if d == 1]
    for a in axes:
        if in_shape[a] != 1:
            raise ctx.fail(f"cannot squeeze axis {a} of size {in_shape[a]}")
    return [d for i, d in enumerate(in_shape) if i not in axes]


def _shape_of(x):
    return x.shape if isinstance(x, np.ndarray) else x.type.shape


@converter("Unsqueeze", since=1)
def unsqueeze_v1(ctx, node):
    x = ctx.env[node.input[0]]
    return [_reshape_to(ctx, x, _squeeze_shape(ctx, _shape_of(x), ctx.attr("axes"), True))]


@converter("Unsqueeze", since=13)
def unsqueeze_v13(ctx, node):
    x = ctx.env[node.input[0]]
    axes = ctx.require_static(1, "axes").tolist()
    return [_reshape_to(ctx, x, _squeeze_shape(ctx, _shape_of(x), axes, True))]


@converter("Squeeze", since=1)
def squeeze_v1(ctx, node):
    x = ctx.env[node.input[0]]
    return [_reshape_to(ctx, x, _squeeze_shape(ctx, _shape_of(x), ctx.attr("axes"), False))]


@converter("Squeeze", since=13)
def squeeze_v13(ctx, node):
    x = ctx.env[node.input[0]]
    axes = ctx.require_static(1, "axes").tolist() if ctx.has_input(1) else None
    return [_reshape_to(ctx, x, _squeeze_shape(ctx, _shape_of(x), axes, False))]


@converter("Concat", since=1)
def concat(ctx, node):
    axis = int(ctx.attr("axis"))
    if ctx.all_static():
        return [np.concatenate([ctx.static(i) for i in range(len(node.input))], axis=axis)]
    ins = [ctx.value(i) for i in range(len(node.input)) if ctx.has_input(i)]
    if len(ins) == 1:
        return ins
    return [ctx.add("concat", ins, AxisAttrs(axis=axis % ins[0].type.rank))]


@converter("Flatten", since=1)
def flatten(ctx, node):
    x = ctx.env[node.input[0]]
    shape = _shape_of(x)
    axis = int(ctx.attr("axis", 1)) % (len(shape) + 1) if shape else 0
    return [_reshape_to(ctx, x, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))]


@converter("Reshape", since=5)
def reshape(ctx, node):
    x = ctx.env[node.input[0]]
    target = ctx.require_static(1, "shape").astype(np.int64).tolist()
    in_shape = _shape_of(x)
    allowzero = ctx.attr("allowzero", 0)
    out = [in_shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ctx.fail(f"shape {target} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(in_shape))
        if known == 0 or total % known:
            raise ctx.fail(f"cannot reshape {list(in_shape)} to {target}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != int(np.prod(in_shape)):
        raise ctx.fail(f"cannot reshape {list(in_shape)} to {target}")
    return [_reshape_to(ctx, x, out)]


@converter("Transpose", since=1)
def transpose(ctx, node):
    x = ctx.env[node.input[0]]
    r = len(_shape_of(x))
    perm = tuple(int(p) for p in ctx.attr("perm", list(range(r))[::-1]))
    if isinstance(x, np.ndarray):
        return [np.transpose(x, perm)]
    if perm == tuple(range(r)):
        return [x]
    return [ctx.add("transpose", [x], TransposeAttrs(perm=perm))]


def _pad(ctx, pads, mode, value, axes=None):
    x = ctx.value(0)
    r = x.type.rank
    pads = [int(p) for p in pads]
    if axes is not None:  # opset 18: pads only for the listed axes
        full = [0] * (2 * r)
        n = len(axes)
        for j, a in enumerate(int(a) % r for a in axes):
            full[a], full[r + a] = pads[j], pads[n + j]
        pads = full
    if len(pads) != 2 * r:
        raise ctx.fail(f"pads has {len(pads)} entries, expected {2 * r}")
    if any(p < 0 for p in pads):
        raise ctx.fail(f"negative pads {pads} (cropping) are not supported")
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.fail(f"pad mode '{mode}' is not supported (constant, reflect, edge)")
    return [ctx.add("pad", [x], PadAttrs(pads=tuple(pads), mode=mode, value=float(value)))]


@converter("Pad", since=1)
def pad_v2(ctx, node):
    pads = ctx.attr("pads", ctx.attr("paddings"))
    return _pad(ctx, pads, ctx.attr("mode", "constant"), ctx.attr("value", 0.0))


@converter("Pad", since=11)
def pad_v11(ctx, node):
    pads = ctx.require_static(1, "pads").tolist()
    value = ctx.require_static(2, "constant_value") if ctx.has_input(2) else 0.0
    axes = ctx.require_static(3, "axes").tolist() if ctx.has_input(3) else None
    return _pad(ctx, pads, ctx.attr("mode", "constant"), float(np.asarray(value).reshape(-1)[0]) if
                np.asarray(value).size else 0.0, axes)


