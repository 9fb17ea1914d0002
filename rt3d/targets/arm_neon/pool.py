"""Pooling and reductions: max/avg pooling (ceil_mode, count_include_pad, dilation), global pool, mean, softmax."""
from __future__ import annotations


import numpy as np
import tvm
from tvm import te, tirx

from ...ir import Node
from ...ir.interpreter import pool_counts, pool_extra_pad
from ..base import Kernel
from .common import make_func, placeholder, schedule_default


def _pool_geometry(node: Node):
    """Attributes, input and output shapes as NC+spatial (a blocked layout's inner block dropped), rank, and the
    end padding that ceil_mode windows reach into."""
    a = node.attrs
    x = node.inputs[0].type.shape
    out = node.output.type.shape
    if a.block:
        x, out = x[:-1], out[:-1]
    return a, x, out, len(x) - 2, pool_extra_pad(a, x[2:], out[2:])


def avg_counts(node: Node) -> np.ndarray:
    """Per output position, how many window elements count in the average (the interpreter's rule)."""
    a, x, out, _, _ = _pool_geometry(node)
    return pool_counts(a, x[2:], out[2:]).astype(np.float32)


def lower_pool(node: Node, target) -> Kernel:
    a, x, out, r, extra = _pool_geometry(node)
    is_max = node.op == "max_pool3d"
    X = placeholder(node.inputs[0], "x")
    fill = tirx.min_value(X.dtype) if is_max else tirx.const(0, X.dtype)
    begins = [0, 0] + [a.pad[i] for i in range(r)]
    tail = (a.block,) if a.block else ()  # a blocked layout's channel block rides along as the last axis
    pshape = list(x[:2]) + [x[2 + i] + a.pad[i] + a.pad[r + i] + extra[i] for i in range(r)] + list(tail)
    out_phys = node.output.type.shape

    def pad_f(*idx):
        conds = [tirx.all(idx[2 + i] >= begins[2 + i], idx[2 + i] < begins[2 + i] + x[2 + i]) for i in range(r)]
        src = [i - b for i, b in zip(idx, begins)] + list(idx[len(begins):])
        return tirx.if_then_else(tirx.all(*conds), X[tuple(src)], fill)
    xp = te.compute(pshape, pad_f, name="pad")
    rk = [te.reduce_axis((0, k), name=f"k{i}") for i, k in enumerate(a.kernel)]

    def window(*idx):
        sp = [idx[2 + i] * a.stride[i] + rk[i] * a.dilation[i] for i in range(r)]
        return xp[tuple(idx[:2]) + tuple(sp) + tuple(idx[2 + r:])]
    if is_max:
        Y = te.compute(out_phys, lambda *idx: te.max(window(*idx), axis=rk), name="pool")
        tensors, args = [X, Y], [node.inputs[0]]
    else:
        cnt = avg_counts(node).astype(node.inputs[0].type.dtype)
        Cnt = te.placeholder(cnt.shape, str(cnt.dtype), name="count")
        S = te.compute(out_phys, lambda *idx: te.sum(window(*idx), axis=rk), name="pool")
        Y = te.compute(out_phys, lambda *idx: S[idx] / Cnt[idx[2:2 + r]], name="out")
        tensors, args = [X, Cnt, Y], [node.inputs[0], cnt]
    sch = tvm.s_tir.Schedule(make_func(tensors, "main"))
    if a.block:
        _schedule_blocked_pool(sch, r, is_max)
        return Kernel(sch.mod["main"], args, f"{node.op}.blocked(vector={a.block})")
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], args, f"{node.op}.direct")


def _schedule_blocked_pool(sch, r: int, is_max: bool) -> None:
    """Vectorize over the channel block, with the window loops outside it; parallel over (n, c block, d)."""
    sch.compute_inline(sch.get_sblock("pad"))
    blk = sch.get_sblock("pool")
    loops = sch.get_loops(blk)
    n, cb, *sp, v = loops[:3 + r]
    red = loops[3 + r:]
    sch.reorder(n, cb, *sp, *red, v)
    sch.parallel(sch.fuse(n, cb, sp[0]) if r == 3 else sch.fuse(n, cb))
    if is_max:  # accumulate in a register, then store
        store = sch.cache_write(blk, 0, "local")
        sch.reverse_compute_at(store, sp[-1])
        sch.vectorize(sch.get_loops(store)[-1])
    else:
        sch.reverse_compute_at(sch.get_sblock("out"), sp[-1])
        sch.vectorize(sch.get_loops(sch.get_sblock("out"))[-1])
        sch.set_scope(blk, 0, "local")
    for k in red:
        sch.unroll(k)
    sch.vectorize(v)
    sch.decompose_reduction(blk, red[0])


def _mean(node: Node, target, axes: list[int], keepdims: bool) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    shape = node.inputs[0].type.shape
    red = [te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes]
    count = float(np.prod([shape[a] for a in axes]))

    def f(*idx):
        src, j, it = [], 0, iter(red)
        for i in range(len(shape)):
            if i in axes:
                src.append(next(it))
                j += keepdims
            else:
                src.append(idx[j])
                j += 1
        return te.sum(X[tuple(src)], axis=red)
    S = te.compute(node.output.type.shape, f, name="sum")
    Y = te.compute(node.output.type.shape, lambda *i: S[i] * tirx.const(1.0 / count, X.dtype), name="out")
    sch = tvm.s_tir.Schedule(make_func([X, Y], "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], [node.inputs[0]], f"{node.op}.direct")


def lower_global_avg_pool(node: Node, target) -> Kernel:
    rank = node.inputs[0].type.rank
    return _mean(node, target, list(range(2, rank - 1 if node.attrs.block else rank)), True)


def lower_reduce_mean(node: Node, target) -> Kernel:
    r = node.inputs[0].type.rank
    axes = sorted(a % r for a in node.attrs.axes) if node.attrs.axes else list(range(r))
    return _mean(node, target, axes, node.attrs.keepdims)


def lower_softmax(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    shape = node.inputs[0].type.shape
    ax = node.attrs.axis % len(shape)
    k1 = te.reduce_axis((0, shape[ax]), name="k1")
    k2 = te.reduce_axis((0, shape[ax]), name="k2")
    red_shape = shape[:ax] + shape[ax + 1:]

    def at(idx, k):
        return tuple(idx[:ax]) + (k,) + tuple(idx[ax:])
    mx = te.compute(red_shape, lambda *i: te.max(X[at(i, k1)], axis=k1), name="max")
    ex = te.compute(shape, lambda *i: tirx.exp(X[i] - mx[i[:ax] + i[ax + 1:]]), name="exp")
    sm = te.compute(red_shape, lambda *i: te.sum(ex[at(i, k2)], axis=k2), name="sum")
    Y = te.compute(shape, lambda *i: ex[i] / sm[i[:ax] + i[ax + 1:]], name="out")
    sch = tvm.s_tir.Schedule(make_func([X, Y], "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], [node.inputs[0]], "softmax.direct")
