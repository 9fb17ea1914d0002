"""Converters for the network ops: convolution, normalization, activations, pooling, dense layers, softmax."""
from __future__ import annotations

import numpy as np

from ...ir.ops import (AxisAttrs, BatchNormAttrs, ClipAttrs, ConvAttrs, DenseAttrs, LeakyReluAttrs, PoolAttrs,
                       ReduceAttrs, ReshapeAttrs, TransposeAttrs)
from ...ir.sparsity import outside_mask
from .registry import converter


def _auto_pads(ctx, in_sizes, kernel, strides, dilations) -> list[int]:
    mode = ctx.attr("auto_pad", "NOTSET")
    r = len(in_sizes)
    if mode in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * r)))
        if len(pads) != 2 * r:
            raise ctx.fail(f"pads has {len(pads)} entries, expected {2 * r}")
        return pads
    if mode == "VALID":
        return [0] * (2 * r)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(f"unknown auto_pad '{mode}'")
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _spatial(ctx, x):
    r = x.type.rank - 2
    if r < 1 or r > 3:
        raise ctx.fail(f"expected a 3-D to 5-D input, got {x.type}")
    return r


def _annotated_sparsity(ctx, node, w) -> str:
    """The sparsity the model's metadata declares for this conv's weight, checked against its zeros ('' if none)."""
    entry = ctx.sparsity.get(node.input[1])
    if entry is None:
        return ""
    if w.data is None or len(w.type.shape) < 3:
        raise ctx.fail(f"weight '{node.input[1]}' is annotated {entry[0]} but is not a constant conv weight")
    return _check_annotation(ctx, node.input[1], w.data)


def _annotated_fc_sparsity(ctx, node, w: np.ndarray) -> str:
    """The same for a fully connected layer's weight ``w`` [out, in] (the mask is of that layout, whatever the
    initializer's)."""
    return _check_annotation(ctx, node.input[1], w) if node.input[1] in ctx.sparsity else ""


def _check_annotation(ctx, name: str, w: np.ndarray) -> str:
    sp, keep = ctx.sparsity[name]
    try:
        stray = outside_mask(w, sp, keep)
    except ValueError as e:
        raise ctx.fail(f"the {sp} mask of weight '{name}' (shape {keep.shape}) does not fit the weight "
                       f"{w.shape}: {e}") from e
    if stray:
        raise ctx.fail(f"weight '{name}' is annotated {sp} but {stray} weights in its pruned groups are not zero")
    return str(sp)


@converter("Conv", since=1)
def conv(ctx, node):
    x, w = ctx.value(0), ctx.value(1)
    r = _spatial(ctx, x)
    kernel = list(ctx.attr("kernel_shape", w.type.shape[2:]))
    strides = list(ctx.attr("strides", [1] * r))
    dil = list(ctx.attr("dilations", [1] * r))
    pads = _auto_pads(ctx, x.type.shape[2:], kernel, strides, dil)
    attrs = ConvAttrs(stride=tuple(strides), pad=tuple(pads), dilation=tuple(dil), groups=int(ctx.attr("group", 1)),
                      sparsity=_annotated_sparsity(ctx, node, w))
    ins = [x, w] + ([ctx.value(2)] if ctx.has_input(2) else [])
    return [ctx.add("conv3d", ins, attrs)]


@converter("BatchNormalization", since=1)
def batch_norm(ctx, node):
    if ctx.attr("training_mode", 0):
        raise ctx.fail("training_mode=1 is not supported; export the model in eval mode")
    if len([o for o in node.output if o]) > 1:
        raise ctx.fail("only the inference output Y is supported (running mean/var outputs are used)")
    ins = [ctx.value(i) for i in range(5)]
    return [ctx.add("batch_norm", ins, BatchNormAttrs(epsilon=float(ctx.attr("epsilon", 1e-5))))]


@converter("Relu", since=1)
def relu(ctx, node):
    return [ctx.add("relu", [ctx.value(0)])]


@converter("Sigmoid", since=1)
def sigmoid(ctx, node):
    return [ctx.add("sigmoid", [ctx.value(0)])]


@converter("LeakyRelu", since=1)
def leaky_relu(ctx, node):
    return [ctx.add("leaky_relu", [ctx.value(0)], LeakyReluAttrs(alpha=float(ctx.attr("alpha", 0.01))))]


@converter("Clip", since=1)
def clip_v1(ctx, node):
    attrs = ClipAttrs(min=float(ctx.attr("min", -np.inf)), max=float(ctx.attr("max", np.inf)))
    return [ctx.add("clip", [ctx.value(0)], attrs)]


@converter("Clip", since=11)
def clip_v11(ctx, node):
    lo = ctx.require_static(1, "min") if ctx.has_input(1) else np.array(-np.inf)
    hi = ctx.require_static(2, "max") if ctx.has_input(2) else np.array(np.inf)
    return [ctx.add("clip", [ctx.value(0)], ClipAttrs(min=float(lo), max=float(hi)))]


def _pool_common(ctx, node, kind: str):
    x = ctx.value(0)
    r = _spatial(ctx, x)
    if len([o for o in node.output if o]) > 1:
        raise ctx.fail("the Indices output of MaxPool is not supported")
    if ctx.attr("storage_order", 0):
        raise ctx.fail("storage_order=1 is not supported")
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides", [1] * r))
    dil = list(ctx.attr("dilations", [1] * r))
    pads = _auto_pads(ctx, x.type.shape[2:], kernel, strides, dil)
    attrs = PoolAttrs(kernel=tuple(kernel), stride=tuple(strides), pad=tuple(pads), dilation=tuple(dil),
                      ceil_mode=bool(ctx.attr("ceil_mode", 0)),
                      count_include_pad=bool(ctx.attr("count_include_pad", 0)))
    return [ctx.add(kind, [x], attrs)]


@converter("MaxPool", since=1)
def max_pool(ctx, node):
    return _pool_common(ctx, node, "max_pool3d")


@converter("AveragePool", since=1)
def avg_pool(ctx, node):
    return _pool_common(ctx, node, "avg_pool3d")


@converter("GlobalAveragePool", since=1)
def global_avg_pool(ctx, node):
    return [ctx.add("global_avg_pool", [ctx.value(0)])]


def _reduce_mean(ctx, axes):
    x = ctx.value(0)
    if axes is None or len(axes) == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return [x]
        axes = []
    return [ctx.add("reduce_mean", [x], ReduceAttrs(axes=tuple(int(a) for a in axes),
                                                    keepdims=bool(ctx.attr("keepdims", 1))))]


@converter("ReduceMean", since=1)
def reduce_mean_v1(ctx, node):
    return _reduce_mean(ctx, ctx.attr("axes"))


@converter("ReduceMean", since=18)
def reduce_mean_v18(ctx, node):
    axes = ctx.require_static(1, "axes") if ctx.has_input(1) else None
    return _reduce_mean(ctx, None if axes is None else axes.tolist())


@converter("Gemm", since=1)
def gemm(ctx, node):
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    a = ctx.value(0)
    if a.type.rank != 2:
        raise ctx.fail(f"Gemm input A must be 2-D, got {a.type}")
    if ctx.attr("transA", 0):
        a = ctx.add("transpose", [a], TransposeAttrs(perm=(1, 0)))
    b = ctx.static(1)
    c = ctx.static(2) if ctx.has_input(2) else None
    if b is not None:  # the usual case: a fully connected layer with constant weights
        w = (b if ctx.attr("transB", 0) else b.T) * np.float32(alpha)
        ins = [a, ctx.const(node.input[1], w.astype(np.float32))]
        attrs = DenseAttrs(sparsity=_annotated_fc_sparsity(ctx, node, w))
        n = w.shape[0]
        if c is not None and c.size in (1, n) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            ins.append(ctx.const(node.input[2], np.broadcast_to(c.reshape(-1) * np.float32(beta), (n,))
                                 .astype(np.float32)))
            return [ctx.add("dense", ins, attrs)]
        y = ctx.add("dense", ins, attrs)
    else:
        bv = ctx.value(1)
        if ctx.attr("transB", 0):
            bv = ctx.add("transpose", [bv], TransposeAttrs(perm=(1, 0)))
        y = ctx.add("matmul", [a, bv])
        if alpha != 1.0:
            y = ctx.add("mul", [y, ctx.const("alpha", np.array(alpha, np.float32))])
    if ctx.has_input(2):
        cv = ctx.value(2)
        if beta != 1.0:
            cv = ctx.add("mul", [cv, ctx.const("beta", np.array(beta, np.float32))])
        y = ctx.add("add", [y, cv])
    return [y]


@converter("MatMul", since=1)
def matmul(ctx, node):
    a = ctx.value(0)
    b = ctx.static(1)
    if b is not None and b.ndim == 2 and a.type.rank >= 2:
        # a fully connected layer, over the leading axes too (a Linear applied per time step): rows of a 2-D dense
        w = np.ascontiguousarray(b.T)
        shape = a.type.shape
        if a.type.rank > 2:
            a = ctx.add("reshape", [a], ReshapeAttrs(shape=(int(np.prod(shape[:-1])), shape[-1])))
        y = ctx.add("dense", [a, ctx.const(node.input[1], w)],
                    DenseAttrs(sparsity=_annotated_fc_sparsity(ctx, node, w)))
        if len(shape) > 2:
            y = ctx.add("reshape", [y], ReshapeAttrs(shape=tuple(shape[:-1]) + (w.shape[0],)))
        return [y]
    return [ctx.add("matmul", [a, ctx.value(1)])]


def _softmax(ctx, axis: int, legacy: bool):
    x = ctx.value(0)
    r = x.type.rank
    axis = axis % r
    if not legacy or axis == r - 1:
        return [ctx.add("softmax", [x], AxisAttrs(axis=axis))]
    # opset < 13: softmax over the input coerced to 2-D at `axis`
    shape = x.type.shape
    flat = ctx.add("reshape", [x], ReshapeAttrs(shape=(int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))))
    y = ctx.add("softmax", [flat], AxisAttrs(axis=1))
    return [ctx.add("reshape", [y], ReshapeAttrs(shape=shape))]


@converter("Softmax", since=1)
def softmax_v1(ctx, node):
    return _softmax(ctx, int(ctx.attr("axis", 1)), legacy=True)


@converter("Softmax", since=13)
def softmax_v13(ctx, node):
    return _softmax(ctx, int(ctx.attr("axis", -1)), legacy=False)
