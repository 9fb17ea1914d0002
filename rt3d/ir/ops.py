"""The op table: one entry per IR op, with its typed attributes, arity and shape inference.

Spatial ops (conv3d, pools) are rank-generic: a 4-D NCHW tensor is the D=1 case of NCDHW, and their tuple
attributes have one entry per spatial dim. Convolution and dense carry a fused epilogue
``act(op(x) + bias + residual)`` that the fusion pass fills in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from .types import TensorType

ACTIVATIONS = ("none", "relu", "clip", "leaky_relu", "sigmoid")


class ShapeError(ValueError):
    """Shape inference failed; the caller adds which node."""


@dataclass(frozen=True)
class NoAttrs:
    pass


@dataclass(frozen=True)
class Epilogue:
    """Mixin fields of ops with a fused epilogue: act(y + bias + residual)."""

    act: str = "none"
    act_params: tuple[float, ...] = ()
    residual: bool = False


@dataclass(frozen=True)
class ConvAttrs(Epilogue):
    stride: tuple[int, ...] = (1, 1, 1)
    pad: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # all begins, then all ends (ONNX order)
    dilation: tuple[int, ...] = (1, 1, 1)
    groups: int = 1
    # channel blocking of the input / output tensors: 0 is NC(D)HW; b is NC(D)HW{b}c, physically
    # [N, ceil(C/b), *spatial, b] with zero-filled channels past C (set by the block-layout pass)
    in_block: int = 0
    out_block: int = 0
    # structured sparsity of the weights, e.g. "kgs(8x4)" (rt3d.ir.sparsity.Sparsity), set by the pruning stage
    # or the detect-sparsity pass; "" when dense or unknown
    sparsity: str = ""
    # max pooling over disjoint windows of this shape (stride = window, no padding) after the epilogue, so that the
    # output is the pooled tensor and the conv's own never reaches memory (set by the fuse-pool pass; () when none)
    pool: tuple[int, ...] = ()


@dataclass(frozen=True)
class SparseConvAttrs(Epilogue):
    """A conv3d whose weight is packed by KGS column elimination (rt3d.ir.sparsity.Packed)."""

    stride: tuple[int, ...] = (1, 1, 1)
    pad: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    dilation: tuple[int, ...] = (1, 1, 1)
    kernel: tuple[int, ...] = (1, 1, 1)  # spatial kernel size
    filters: int = 0  # M, output channels
    sparsity: str = ""  # the scheme the weights came with, e.g. "kgs(8x4)"
    group: tuple[int, ...] = (8, 4)  # packing group (gM, gN)
    kept: tuple[int, ...] = ()  # kept (channel block, position) columns of each row block
    order: tuple[int, ...] = ()  # the order row blocks are computed in (empty: 0, 1, ...)
    perm: tuple[int, ...] = ()  # the filter each packed row computes, -1 for padding (empty: identity)
    # channel blocking of the input / output (see ConvAttrs); a blocked input holds ceil(C/b)*b channels, the
    # zero-filled tail included, and the packed columns address them as channels
    in_block: int = 0
    out_block: int = 0


@dataclass(frozen=True)
class SparseSepConvAttrs(SparseConvAttrs):
    """Two sparse convs as one op: the first (the ``first_*`` fields, reading the input in layout ``in_block``)
    produces a tensor in layout ``mid_block`` that only the second (the inherited fields, writing ``out_block``)
    reads; the kernel never writes it. Made by the fuse-sep-convs pass from R(2+1)D's (2+1)D and S3D's separable
    convs (a 1xkxk conv, then a kx1x1 one). Inputs: x, values1, cols1, bias1 (when first_bias), values2, cols2,
    bias2?, residual?"""

    first_filters: int = 0
    first_kernel: tuple[int, ...] = (1, 1, 1)
    first_stride: tuple[int, ...] = (1, 1, 1)
    first_pad: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    first_dilation: tuple[int, ...] = (1, 1, 1)
    first_group: tuple[int, ...] = (8, 4)
    first_kept: tuple[int, ...] = ()
    first_order: tuple[int, ...] = ()
    first_perm: tuple[int, ...] = ()
    first_act: str = "none"
    first_act_params: tuple[float, ...] = ()
    first_sparsity: str = ""
    first_bias: bool = False
    mid_block: int = 0


# the first conv's attributes a SparseSepConvAttrs keeps as first_<name> (its layouts are in_block and mid_block)
_FIRST = ("filters", "kernel", "stride", "pad", "dilation", "group", "kept", "order", "perm", "act", "act_params",
          "sparsity")


def sep_parts(a: SparseSepConvAttrs) -> tuple[SparseConvAttrs, SparseConvAttrs]:
    """The attributes of the two sparse convs a sparse_sep_conv3d computes."""
    first = SparseConvAttrs(**{f: getattr(a, f"first_{f}") for f in _FIRST}, in_block=a.in_block,
                            out_block=a.mid_block)
    second = SparseConvAttrs(**{f.name: getattr(a, f.name) for f in fields(SparseConvAttrs)})
    return first, dataclasses.replace(second, in_block=a.mid_block)


def sep_attrs(first: SparseConvAttrs, second: SparseConvAttrs, first_bias: bool) -> SparseSepConvAttrs:
    """The attributes of one sparse_sep_conv3d computing ``first`` (with a bias input when ``first_bias``), then
    ``second`` on its output: the inverse of sep_parts."""
    return SparseSepConvAttrs(**{f.name: getattr(second, f.name) for f in fields(SparseConvAttrs)}
                              | {f"first_{f}": getattr(first, f) for f in _FIRST}
                              | {"in_block": first.in_block, "mid_block": second.in_block, "first_bias": first_bias})


def sep_split_inputs(a: SparseSepConvAttrs, inputs: list) -> tuple[list, list]:
    """A sparse_sep_conv3d's inputs split into the first conv's (x, values, cols, bias?) and the second's
    (values, cols, bias?, residual?: its input, the intermediate tensor, is not among them)."""
    k = 3 + int(a.first_bias)
    return list(inputs[:k]), list(inputs[k:])


@dataclass(frozen=True)
class DenseAttrs(Epilogue):
    # structured sparsity of the weight [N, K] (as a conv's with no kernel positions), set by detect-sparsity
    sparsity: str = ""


@dataclass(frozen=True)
class BatchNormAttrs:
    epsilon: float = 1e-5


@dataclass(frozen=True)
class ClipAttrs:
    min: float = float("-inf")
    max: float = float("inf")


@dataclass(frozen=True)
class LeakyReluAttrs:
    alpha: float = 0.01


@dataclass(frozen=True)
class PoolAttrs:
    kernel: tuple[int, ...] = (1, 1, 1)
    stride: tuple[int, ...] = (1, 1, 1)
    pad: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    dilation: tuple[int, ...] = (1, 1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = False
    block: int = 0  # channel blocking of input and output (see ConvAttrs)


@dataclass(frozen=True)
class BlockAttrs:
    block: int = 0


@dataclass(frozen=True)
class LayoutAttrs:
    block: int = 16
    channels: int = 0  # logical channel count (from_blocked drops the zero-filled tail)


@dataclass(frozen=True)
class AxisAttrs:
    axis: int = 1


@dataclass(frozen=True)
class ReduceAttrs:
    axes: tuple[int, ...] = ()
    keepdims: bool = True


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...] = ()


@dataclass(frozen=True)
class PadAttrs:
    pads: tuple[int, ...] = ()
    mode: str = "constant"
    value: float = 0.0


@dataclass(frozen=True)
class OpDef:
    """One IR op: name, attribute class, allowed input counts and a shape function."""

    name: str
    attrs: type
    arity: Callable[[object], int | tuple[int, ...]]  # allowed input counts given the attrs; -1: any (>= 1)
    infer: Callable[[list[TensorType], object], TensorType]
    elementwise: bool = False
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register(name: str, attrs: type = NoAttrs, arity: int | Callable = 1, elementwise: bool = False, doc: str = ""):
    def wrap(infer):
        ar = arity if callable(arity) else (lambda _a, n=arity: n)
        OPS[name] = OpDef(name, attrs, ar, infer, elementwise, doc)
        return infer
    return wrap


def get_op(name: str) -> OpDef:
    if name not in OPS:
        raise KeyError(f"unknown IR op '{name}'; known: {', '.join(sorted(OPS))}")
    return OPS[name]


def attr_fields(attrs) -> list[str]:
    return [f.name for f in fields(attrs)]


# ---- helpers -------------------------------------------------------------------------------------------------

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def _window_out(size: int, k: int, s: int, pb: int, pe: int, d: int, ceil: bool) -> int:
    span = size + pb + pe - d * (k - 1) - 1
    _check(span >= 0, f"window {k} (dilation {d}) larger than padded input {size + pb + pe}")
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:  # last window must start inside the input or left pad
        out -= 1
    return out


def _spatial_attrs(a, rank: int, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(a, n)
        want = 2 * rank if n in ("pad",) else rank
        _check(len(v) == want, f"attribute '{n}' has {len(v)} entries, expected {want} for {rank} spatial dims")


def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast") from None


def _epilogue_check(a: Epilogue) -> None:
    _check(a.act in ACTIVATIONS, f"unknown activation '{a.act}'")
    want = {"none": 0, "relu": 0, "sigmoid": 0, "clip": 2, "leaky_relu": 1}[a.act]
    _check(len(a.act_params) == want, f"activation '{a.act}' takes {want} parameters, got {len(a.act_params)}")


def epilogue_inputs(a: Epilogue, n_inputs: int) -> tuple[bool, bool]:
    """(has_bias, has_residual) of a conv3d/dense node with n_inputs inputs."""
    return n_inputs - 2 - int(a.residual) == 1, a.residual


# ---- ops -----------------------------------------------------------------------------------------------------

def _conv_arity(a) -> tuple[int, ...]:
    extra = int(isinstance(a, SparseConvAttrs))  # values + cols instead of one weight
    return (2 + extra + a.residual, 3 + extra + a.residual)


def logical_shape(t: TensorType, block: int) -> tuple[int, ...]:
    """The NC(D)HW shape of a tensor in layout NC(D)HW{block}c (channels rounded up to the block)."""
    if not block:
        return t.shape
    return (t.shape[0], t.shape[1] * block) + t.shape[2:-1]


def filters_fill_vectors(group: tuple[int, ...], lanes: int) -> bool:
    """Whether a packing group's gM filters are whole vectors of ``lanes`` and its gN channels sit within (or span
    whole) channel blocks of ``lanes``: the sparse kernel's direct mode, which eliminate-kgs-columns' cost model
    predicts apart (rt3d/targets/arm_neon/sparse_direct.py)."""
    gm, gn = group
    return lanes > 0 and gm % lanes == 0 and (lanes % gn == 0 or gn % lanes == 0)


def spatially_pointwise(kernel: tuple[int, ...], pad: tuple[int, ...]) -> bool:
    """Whether an output position of a conv reads only its own position along H and W (W alone for a 1-D conv): a
    1x1 spatial kernel without spatial padding, e.g. temporal kx1x1 and pointwise convs. ``pad`` is (begin..., end...).
    The sparse conv3d kernel's pw mode and the cost model that predicts its speed (passes/sparse.py) both ask this."""
    r = len(kernel)
    inner = min(r, 2)
    return (all(k == 1 for k in kernel[r - inner:]) and not any(pad[r - inner:r])
            and not any(pad[2 * r - inner:2 * r]))


def sep_pair_problem(first: "SparseConvAttrs", second: "SparseConvAttrs", lanes: int) -> str:
    """Why two sparse convs, ``first`` feeding ``second``, cannot be one sparse_sep_conv3d ("" when they can): the
    first must be a 3-D conv without reach or stride along depth (1xkxk, any spatial stride), reading a plain input
    or one blocked by ``lanes`` channels, with no residual; the second a kx1x1 (or 1x1x1) conv at unit spatial
    stride (any temporal stride). These are R(2+1)D's (2+1)D and S3D's separable convs, the downsampling ones too;
    what the fused kernel (targets/arm_neon/sparse_conv3d.py) supports."""
    if len(first.kernel) != 3 or len(second.kernel) != 3:
        return "not 3-D convs"
    if first.kernel[0] != 1 or first.pad[0] or first.pad[3] or first.stride[0] != 1:
        return (f"the first conv ({'x'.join(map(str, first.kernel))}, stride {list(first.stride)}) reaches or "
                "strides along depth")
    if spatially_pointwise(tuple(first.kernel), tuple(first.pad)):
        return "the first conv is spatially pointwise"
    if first.in_block not in (0, lanes):
        return f"the first conv's input is blocked by {first.in_block} channels, not {lanes}"
    if first.residual:
        return "the first conv adds a residual"
    if not spatially_pointwise(tuple(second.kernel), tuple(second.pad)) or tuple(second.stride[1:]) != (1, 1):
        return "the second conv is not a kx1x1 conv at unit spatial stride"
    return ""


def sep_first_windowed(first: "SparseConvAttrs", lanes: int) -> bool:
    """Whether the first conv of a fused pair reads a copy of its position tile's window (unit spatial stride, an
    input blocked by ``lanes`` channels) rather than a padded copy of the whole input. The fused kernel
    (targets/arm_neon/sparse_conv3d.py) builds its input that way and fuse-sep-convs weighs the pair by it."""
    return tuple(first.stride[-2:]) == (1, 1) and first.in_block == lanes


def blocked_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    if not block:
        return tuple(shape)
    return (shape[0], -(-shape[1] // block)) + tuple(shape[2:]) + (block,)


def _check_block(t: TensorType, block: int, what: str) -> None:
    if block:
        _check(t.rank >= 4 and t.shape[-1] == block, f"{what} {t} is not in a layout blocked by {block}")


@register("conv3d", ConvAttrs, arity=_conv_arity, doc="conv3d(x, w, bias?, residual?): N-D convolution, NC(D)HW")
def _conv(ts: list[TensorType], a: ConvAttrs) -> TensorType:
    x, w = ts[0], ts[1]
    _check_block(x, a.in_block, "input")
    xl = logical_shape(x, a.in_block)
    _check(len(xl) in (3, 4, 5), f"input must be 3-D to 5-D, got {x}")
    _check(w.rank == len(xl), f"weight rank {w.rank} differs from input rank {len(xl)}")
    r = len(xl) - 2
    _spatial_attrs(a, r, ("stride", "pad", "dilation"))
    cin = w.shape[1] * a.groups
    if a.in_block:
        _check(a.groups == 1, "blocked layouts need groups=1")
        _check(x.shape[1] == -(-cin // a.in_block), f"blocked input {x} does not hold {cin} channels")
    else:
        _check(a.groups >= 1 and xl[1] % a.groups == 0 and w.shape[0] % a.groups == 0,
               f"groups={a.groups} does not divide channels {xl[1]} and filters {w.shape[0]}")
        _check(cin == xl[1], f"weight {w} expects {cin} input channels, input has {xl[1]}")
    _epilogue_check(a)
    out = [xl[0], w.shape[0]] + [
        _window_out(xl[2 + i], w.shape[2 + i], a.stride[i], a.pad[i], a.pad[r + i], a.dilation[i], False)
        for i in range(r)]
    has_bias, has_res = epilogue_inputs(a, len(ts))
    if a.pool:
        _check(len(a.pool) == r and all(p >= 1 for p in a.pool), f"pool={list(a.pool)} needs {r} windows >= 1")
        _check(all(o % p == 0 for o, p in zip(out[2:], a.pool)),
               f"pool={list(a.pool)} windows do not tile the conv's output {out[2:]}")
        _check(not has_res, "a conv with a fused pool takes no residual")
        out = out[:2] + [o // p for o, p in zip(out[2:], a.pool)]
    out = blocked_shape(tuple(out), a.out_block)
    if has_bias:
        _check(ts[2].shape == (w.shape[0],), f"bias {ts[2]} must be [{w.shape[0]}]")
    if has_res:
        _check(broadcast(tuple(out), ts[-1].shape) == tuple(out), f"residual {ts[-1]} does not match output {out}")
    return TensorType(tuple(out), x.dtype)


@register("sparse_conv3d", SparseConvAttrs, arity=_conv_arity,
          doc="sparse_conv3d(x, values, cols, bias?, residual?): conv3d over a KGS-packed weight, NC(D)HW or blocked; "
              "on a 2-D input [N, K] a fully connected layer")
def _sparse_conv(ts: list[TensorType], a: SparseConvAttrs) -> TensorType:
    x, values, cols = ts[0], ts[1], ts[2]
    _check_block(x, a.in_block, "input")
    xl = logical_shape(x, a.in_block)
    # 2-D: a fully connected layer (a conv with no spatial dims), made sparse from a dense node
    _check(len(xl) in (2, 3, 4, 5), f"input must be 2-D to 5-D, got {x}")
    r = len(xl) - 2
    _spatial_attrs(a, r, ("stride", "pad", "dilation", "kernel"))
    _check(r or not (a.in_block or a.out_block), f"a 2-D sparse_conv3d (fully connected) has no blocked layout: {x}")
    _check(len(a.group) == 2 and min(a.group) >= 1, f"group must be (gM, gN), got {list(a.group)}")
    gm, gn = a.group
    _check(values.rank == 3 and values.shape[1:] == (gn, gm), f"values {values} must be [kept, {gn}, {gm}]")
    _check(cols.rank == 1 and cols.dtype == "int32" and cols.shape[0] == values.shape[0],
           f"cols {cols} must be i32[{values.shape[0]}]")
    p = -(-a.filters // gm)
    _check(a.filters >= 1 and len(a.kept) == p, f"kept has {len(a.kept)} row blocks, {a.filters} filters need {p}")
    _check(sum(a.kept) == values.shape[0], f"kept columns sum to {sum(a.kept)}, values hold {values.shape[0]}")
    _check(not a.order or sorted(a.order) == list(range(p)), f"order must be a permutation of {p} row blocks")
    _check(not a.perm or (len(a.perm) == p * gm and sorted(f for f in a.perm if f >= 0) == list(range(a.filters))),
           f"perm must list each of the {a.filters} filters once over {p * gm} rows")
    _epilogue_check(a)
    out = blocked_shape((xl[0], a.filters) + tuple(
        _window_out(xl[2 + i], a.kernel[i], a.stride[i], a.pad[i], a.pad[r + i], a.dilation[i], False)
        for i in range(r)), a.out_block)
    has_bias, has_res = epilogue_inputs(a, len(ts) - 1)
    if has_bias:
        _check(ts[3].shape == (a.filters,), f"bias {ts[3]} must be [{a.filters}]")
    if has_res:
        _check(broadcast(out, ts[-1].shape) == out, f"residual {ts[-1]} does not match output {list(out)}")
    return TensorType(out, x.dtype)


def _sep_arity(a: SparseSepConvAttrs) -> tuple[int, ...]:
    n = 5 + int(a.first_bias) + int(a.residual)
    return (n, n + 1)


@register("sparse_sep_conv3d", SparseSepConvAttrs, arity=_sep_arity,
          doc="sparse_sep_conv3d(x, values1, cols1, bias1?, values2, cols2, bias2?, residual?): two sparse convs, "
              "the intermediate tensor never written (fuse-sep-convs)")
def _sparse_sep_conv(ts: list[TensorType], a: SparseSepConvAttrs) -> TensorType:
    first, second = sep_parts(a)
    t1, t2 = sep_split_inputs(a, ts)
    mid = _sparse_conv(t1, first)
    return _sparse_conv([mid] + t2, second)


@register("to_blocked", LayoutAttrs, arity=1, doc="NC(D)HW -> NC(D)HW{b}c, zero-filling channels up to a multiple of b")
def _to_blocked(ts, a):
    x = ts[0]
    _check(x.rank >= 3 and a.block > 0, f"cannot block {x} by {a.block}")
    _check(a.channels == x.shape[1], f"channels={a.channels} but the input has {x.shape[1]}")
    return TensorType(blocked_shape(x.shape, a.block), x.dtype)


@register("from_blocked", LayoutAttrs, arity=1, doc="NC(D)HW{b}c -> NC(D)HW, keeping the first `channels` channels")
def _from_blocked(ts, a):
    x = ts[0]
    _check_block(x, a.block, "input")
    _check(0 < a.channels <= x.shape[1] * a.block and a.channels > (x.shape[1] - 1) * a.block,
           f"channels={a.channels} does not fit {x}")
    return TensorType((x.shape[0], a.channels) + x.shape[2:-1], x.dtype)


@register("dense", DenseAttrs, arity=lambda a: (2 + a.residual, 3 + a.residual),
          doc="dense(x[M,K], w[N,K], bias?, residual?) = x @ w.T + bias")
def _dense(ts, a):
    x, w = ts[0], ts[1]
    _check(x.rank == 2 and w.rank == 2, f"dense needs 2-D input and weight, got {x} and {w}")
    _check(x.shape[1] == w.shape[1], f"input {x} and weight {w} disagree on K")
    _epilogue_check(a)
    out = (x.shape[0], w.shape[0])
    has_bias, has_res = epilogue_inputs(a, len(ts))
    if has_bias:
        _check(ts[2].shape == (w.shape[0],), f"bias {ts[2]} must be [{w.shape[0]}]")
    if has_res:
        _check(broadcast(out, ts[-1].shape) == out, f"residual {ts[-1]} does not match output {list(out)}")
    return TensorType(out, x.dtype)


@register("matmul", arity=2, doc="numpy-style (batched) matrix product")
def _matmul(ts, a):
    x, y = ts
    _check(x.rank >= 1 and y.rank >= 1, "matmul of scalars")
    xs, ys = x.shape if x.rank > 1 else (1,) + x.shape, y.shape if y.rank > 1 else y.shape + (1,)
    _check(xs[-1] == ys[-2], f"matmul inner dims differ: {x} @ {y}")
    out = broadcast(xs[:-2], ys[:-2]) + (xs[-2], ys[-1])
    if x.rank == 1:
        out = out[:-2] + out[-1:]
    if y.rank == 1:
        out = out[:-1]
    return TensorType(out, x.dtype)


@register("batch_norm", BatchNormAttrs, arity=5, doc="batch_norm(x, scale, bias, mean, var), inference mode")
def _bn(ts, a):
    x = ts[0]
    _check(x.rank >= 2, f"batch_norm input must have a channel axis, got {x}")
    for t, n in zip(ts[1:], ("scale", "bias", "mean", "var")):
        _check(t.shape == (x.shape[1],), f"{n} {t} must be [{x.shape[1]}]")
    return x


def _same(ts, a):
    return ts[0]


for _name, _attrs in (("relu", NoAttrs), ("sigmoid", NoAttrs), ("clip", ClipAttrs), ("leaky_relu", LeakyReluAttrs)):
    register(_name, _attrs, arity=1, elementwise=True, doc=f"elementwise {_name}")(_same)


def _binary(ts, a):
    _check(ts[0].dtype == ts[1].dtype, f"dtypes differ: {ts[0]} and {ts[1]}")
    return TensorType(broadcast(ts[0].shape, ts[1].shape), ts[0].dtype)


for _name in ("add", "sub", "mul", "div"):
    register(_name, arity=2, elementwise=True, doc=f"elementwise {_name} with numpy broadcasting")(_binary)


def _pool(ts, a: PoolAttrs):
    x = ts[0]
    _check_block(x, a.block, "input")
    xl = logical_shape(x, a.block)
    _check(len(xl) in (3, 4, 5), f"pool input must be 3-D to 5-D, got {x}")
    r = len(xl) - 2
    _spatial_attrs(a, r, ("kernel", "stride", "pad", "dilation"))
    out = xl[:2] + tuple(
        _window_out(xl[2 + i], a.kernel[i], a.stride[i], a.pad[i], a.pad[r + i], a.dilation[i], a.ceil_mode)
        for i in range(r))
    return TensorType(blocked_shape(out, a.block), x.dtype)


register("max_pool3d", PoolAttrs, arity=1, doc="max pooling over spatial dims")(_pool)
register("avg_pool3d", PoolAttrs, arity=1, doc="average pooling over spatial dims")(_pool)


@register("global_avg_pool", BlockAttrs, arity=1, doc="mean over all spatial dims, kept as size 1")
def _gap(ts, a):
    x = ts[0]
    _check_block(x, a.block, "input")
    xl = logical_shape(x, a.block)
    _check(len(xl) >= 3, f"global_avg_pool needs spatial dims, got {x}")
    return TensorType(blocked_shape(xl[:2] + (1,) * (len(xl) - 2), a.block), x.dtype)


def _norm_axes(axes, rank):
    out = []
    for ax in axes:
        _check(-rank <= ax < rank, f"axis {ax} out of range for rank {rank}")
        out.append(ax % rank)
    return out


@register("reduce_mean", ReduceAttrs, arity=1, doc="mean over axes")
def _reduce(ts, a):
    x = ts[0]
    axes = _norm_axes(a.axes, x.rank) if a.axes else list(range(x.rank))
    shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if a.keepdims else \
        [d for i, d in enumerate(x.shape) if i not in axes]
    return TensorType(tuple(shape), x.dtype)


@register("concat", AxisAttrs, arity=lambda a: -1, doc="concatenate along axis (any number of inputs)")
def _concat(ts, a):
    _check(len(ts) >= 1, "concat needs inputs")
    r = ts[0].rank
    ax = _norm_axes([a.axis], r)[0]
    for t in ts[1:]:
        _check(t.rank == r and all(t.shape[i] == ts[0].shape[i] for i in range(r) if i != ax),
               f"concat inputs {ts[0]} and {t} differ off axis {a.axis}")
    shape = list(ts[0].shape)
    shape[ax] = sum(t.shape[ax] for t in ts)
    return TensorType(tuple(shape), ts[0].dtype)


@register("reshape", ReshapeAttrs, arity=1, doc="reshape to a static shape")
def _reshape(ts, a):
    _check(int(np.prod(a.shape, dtype=np.int64)) == ts[0].size, f"cannot reshape {ts[0]} to {list(a.shape)}")
    return TensorType(a.shape, ts[0].dtype)


@register("transpose", TransposeAttrs, arity=1, doc="permute axes")
def _transpose(ts, a):
    _check(sorted(a.perm) == list(range(ts[0].rank)), f"perm {list(a.perm)} is not a permutation of {ts[0].rank} axes")
    return TensorType(tuple(ts[0].shape[p] for p in a.perm), ts[0].dtype)


@register("softmax", AxisAttrs, arity=1, doc="softmax along axis")
def _softmax(ts, a):
    _norm_axes([a.axis], ts[0].rank)
    return ts[0]


@register("pad", PadAttrs, arity=1, doc="pad with pads = all begins then all ends")
def _pad(ts, a):
    x = ts[0]
    _check(len(a.pads) == 2 * x.rank, f"pads has {len(a.pads)} entries, expected {2 * x.rank}")
    _check(a.mode in ("constant", "reflect", "edge"), f"unknown pad mode '{a.mode}'")
    shape = tuple(x.shape[i] + a.pads[i] + a.pads[x.rank + i] for i in range(x.rank))
    _check(all(d >= 0 for d in shape), f"negative padded shape {list(shape)}")
    return TensorType(shape, x.dtype)
