"""OpenCL conv3d: dense (register tile of filters x output columns per thread) and KGS sparse (ELL-packed columns).

Dense: every thread computes ``tm`` filters x ``tw`` consecutive output columns of one output row, accumulating in
registers over (channels, kernel positions); threads are grouped into work-groups of ``target.gpu_threads``.

Sparse: the packed KGS weight (``rt3d.ir.sparsity.Packed``) is re-laid out at build time as ELL: every row block's
kept (channel block, position) columns padded with zero columns to the longest row block, so the column loop has one
trip count and no per-thread bookkeeping (GPUs prefer it; the padding costs the imbalance between row blocks). A
thread computes the gM filters of one row block x ``tw`` output columns (one filter when reorder-kernel-groups
permuted the filters), reading only its row block's kept columns.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from ...errors import BuildError
from ...ir import Node
from ..arm_neon.common import dtype_of, epilogue, make_func, placeholder
from ..arm_neon.conv3d import _Geometry, direct_conv
from ..base import Kernel
from .schedule import bind_threads


def _round(e, dtype: str):
    return e if dtype_of(e) == dtype else e.astype(dtype)


def _f32(e):
    """Operands widened to float32, so that conv sums accumulate in float32 (float16 tensors included)."""
    return _round(e, "float32")


def _tile(m: int, ow: int) -> tuple[int, int]:
    return (4 if m >= 4 else 1), (2 if ow >= 2 else 1)


def lower_conv3d(node: Node, target) -> Kernel:
    g = _Geometry(node)
    if g.in_block or g.out_block:
        raise BuildError(f"target '{target.name}' computes plain NCDHW layouts (no block-layout pass): {node}")
    a = node.attrs
    if a.pool:
        raise BuildError(f"target '{target.name}': its conv3d kernel computes no fused pool (pool={list(a.pool)}; "
                         f"run without the fuse-pool pass): {node}")
    M, OW = g.w5[0], g.o5[4]
    X, Wt, B, R, conv = direct_conv(node, g, acc_dtype="float32")
    odt = node.output.type.dtype

    def out_f(*idx):
        n, m, d, h, w = g.out_index5(idx)
        return _round(epilogue(node, conv[n, m, d, h, w], m, idx, B, R), odt)
    Y = te.compute(g.out, out_f, name="out")
    args = [X, Wt] + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    for name in ("pad", "w5"):
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001  (no such stage)
            pass
    tm, tw = _tile(M, OW)
    blk = sch.get_sblock("conv")
    n, m, d, h, w, *red = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, tm])
    wo, wi = sch.split(w, [None, tw])
    sch.reorder(n, mo, d, h, wo, *red, mi, wi)
    tx = bind_threads(sch, [n, mo, d, h, wo], target.gpu_threads)
    sch.reverse_compute_at(sch.get_sblock("out"), tx)
    sch.set_scope(blk, 0, "local")
    sch.unroll(mi)
    sch.unroll(wi)
    sch.decompose_reduction(blk, red[0])
    return Kernel(sch.mod["main"], list(node.inputs),
                  f"conv3d.gpu(tile={tm}x{tw}, wg={target.gpu_threads}, groups={a.groups})")


def ell(values: np.ndarray, cols: np.ndarray, kept: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Packed KGS columns as ELL: values [P, Kmax, gN, gM] and columns [P, Kmax] (q*S + s), zero-padded."""
    p, kmax = len(kept), max(1, max(kept) if kept else 1)
    gn, gm = values.shape[1], values.shape[2]
    v = np.zeros((p, kmax, gn, gm), np.float32)
    c = np.zeros((p, kmax), np.int32)
    start = 0
    for b, k in enumerate(kept):
        v[b, :k] = values[start:start + k]
        c[b, :k] = cols[start:start + k]
        start += k
    return v, c


def lower_sparse_conv3d(node: Node, target) -> Kernel:
    a = node.attrs
    x = node.inputs[0]
    if x.type.shape and len(x.type.shape) != 2 + len(a.kernel):
        raise BuildError(f"target '{target.name}' computes plain NCDHW layouts: {node}")
    values, cols = node.inputs[1].data, node.inputs[2].data
    if values is None or cols is None:
        raise BuildError(f"sparse_conv3d needs its packed weight at build time: {node}")
    gm, gn = a.group
    M = a.filters
    r = len(a.kernel)
    ks = tuple(a.kernel)
    S = int(np.prod(ks))
    vals, ecols = ell(values, cols, a.kept)
    vals = vals.astype(values.dtype)  # float16 under to-fp16
    P, K = ecols.shape
    rows = np.asarray(a.perm if a.perm else tuple(range(M)) + (-1,) * (P * gm - M), np.int64)
    row_of = np.zeros(M, np.int32)
    for rr, f in enumerate(rows):
        if f >= 0:
            row_of[f] = rr
    xs = x.type.shape
    N, C = xs[:2]
    Q = -(-C // gn)
    sp_in = xs[2:]
    sp_out = node.output.type.shape[2:]
    pb, pe = a.pad[:r], a.pad[r:]
    X = placeholder(x, "x")
    V = te.placeholder(vals.shape, str(vals.dtype), name="ell_values")
    Cc = te.placeholder(ecols.shape, "int32", name="ell_cols")
    Row = te.placeholder(row_of.shape, "int32", name="row_of")
    has_res = bool(a.residual)
    has_bias = len(node.inputs) - 3 - int(has_res) == 1  # inputs: x, values, cols, [bias], [residual]
    B = placeholder(node.inputs[3], "bias") if has_bias else None
    R = placeholder(node.inputs[-1], "residual") if has_res else None
    padded = (N, Q * gn) + tuple(sp_in[i] + pb[i] + pe[i] for i in range(r))

    def pad_f(n, c, *sp):
        conds = [c < C] + [tirx.all(sp[i] >= pb[i], sp[i] < pb[i] + sp_in[i]) for i in range(r) if pb[i] or pe[i]]
        src = (n, tirx.min(c, C - 1)) + tuple(sp[i] - pb[i] for i in range(r))
        return tirx.if_then_else(tirx.all(*conds), X[src], tirx.const(0, X.dtype))
    xp = te.compute(padded, pad_f, name="pad")
    j = te.reduce_axis((0, K), name="j")
    ci = te.reduce_axis((0, gn), name="ci")

    # without a filter permutation, the filters of a row block are consecutive: one thread computes all gm of them
    # (they share the block's columns, so every input value and column index it loads serves gm filters), as the
    # dense kernel's 4-filter tile does; with one, row_of maps a filter to its row, one filter per thread
    tm = gm if not a.perm and M % gm == 0 else 1

    def acc_f(n, m, *o):
        row = Row[m] if tm == 1 else m
        blk = row // gm
        col = Cc[blk, j]
        q, s = col // S, col % S
        pos, rest = [], s
        for i in range(r - 1, -1, -1):  # s = ((kd * KH) + kh) * KW + kw
            pos.insert(0, rest % ks[i])
            rest = rest // ks[i]
        sp = tuple(o[i] * a.stride[i] + pos[i] * a.dilation[i] for i in range(r))
        return te.sum(_f32(V[blk, j, ci, row % gm]) * _f32(xp[(n, q * gn + ci) + sp]), axis=[j, ci])
    acc = te.compute((N, M) + tuple(sp_out), acc_f, name="conv")
    odt = node.output.type.dtype

    def out_f(*idx):
        return _round(epilogue(node, acc[idx], idx[1], idx, B, R), odt)
    Y = te.compute(node.output.type.shape, out_f, name="out")
    args = [X, V, Cc] + ([Row] if tm == 1 else []) + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    sch.compute_inline(sch.get_sblock("pad"))
    tw = 2 if sp_out and sp_out[-1] >= 2 else 1  # no spatial dims (a fully connected layer): one output
    blk = sch.get_sblock("conv")
    loops = sch.get_loops(blk)
    spatial, red = loops[:2 + r], loops[2 + r:]
    mo, mi = sch.split(spatial[1], [None, tm])
    if r:
        wo, wi = sch.split(spatial[-1], [None, tw])
        outer, inner = [spatial[0], mo, *spatial[2:-1], wo], [mi, wi]
    else:  # a fully connected layer: (n, m) alone
        outer, inner = [spatial[0], mo], [mi]
    sch.reorder(*outer, *red, *inner)
    tx = bind_threads(sch, outer, target.gpu_threads)
    sch.reverse_compute_at(sch.get_sblock("out"), tx)
    sch.set_scope(blk, 0, "local")
    for loop in inner:
        sch.unroll(loop)
    sch.decompose_reduction(blk, red[0])
    extra = [node.inputs[i] for i in range(3, len(node.inputs))]
    return Kernel(sch.mod["main"], [x, vals, ecols] + ([row_of] if tm == 1 else []) + extra,
                  f"sparse_conv3d.gpu_ell({a.sparsity}, {P} row blocks x {K} columns, tile={tm}x{tw})")
