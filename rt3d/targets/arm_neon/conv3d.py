"""Dense conv3d for SIMD CPUs (NEON on arm64, AVX-512 on the host): direct convolution vectorized over blocks of
``lanes`` output channels, weights packed at build time to [M/lanes, C, KD, KH, KW, lanes], a register tile of
``th x tw`` output positions, parallel over (n, channel block, output depth), epilogue (bias, residual, activation)
fused per tile. Grouped convolutions take a simpler generic path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx

from ...ir import Node
from ...ir.ops import epilogue_inputs
from ..base import Kernel
from .common import activation, broadcast_index, make_func, placeholder, schedule_default, spatial_5d, to_5d


@dataclass(frozen=True)
class ConvTile:
    """Register tile of the blocked kernel: th output rows x tw output columns x lanes output channels."""

    th: int
    tw: int


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def default_tile(oh: int, ow: int, lanes: int) -> ConvTile:
    """Keep th*tw accumulators (plus a weight vector) within the 32 SIMD registers, without partial tiles."""
    budget = 24 if lanes >= 8 else 16
    tw = _largest_divisor(ow, 8)
    th = _largest_divisor(oh, max(1, budget // tw))
    return ConvTile(th, tw)


class _Geometry:
    def __init__(self, node: Node):
        a = node.attrs
        x, w = node.inputs[0], node.inputs[1]
        self.rank = x.type.rank
        r = self.rank - 2
        self.x5 = to_5d(x.type.shape)
        self.w5 = to_5d(w.type.shape)
        self.out = node.output.type.shape
        self.o5 = to_5d(self.out)
        self.stride = spatial_5d(a.stride, 1, r)
        self.dil = spatial_5d(a.dilation, 1, r)
        self.pb = spatial_5d(a.pad[:r], 0, r)
        self.pe = spatial_5d(a.pad[r:], 0, r)

    def x_at(self, X, n, c, d, h, w):
        return X[(n, c, d, h, w)[5 - self.rank:] if self.rank == 5 else (n, c) + (d, h, w)[5 - self.rank:]]

    def out_index5(self, idx):
        """Map an index of the real-rank output to (n, m, d, h, w)."""
        idx = list(idx)
        zero = tirx.const(0, "int32")
        return idx[:2] + [zero] * (5 - self.rank) + idx[2:]


def _padded_input(g: _Geometry, X: te.Tensor) -> te.Tensor:
    N, C, D, H, W = g.x5
    shape = (N, C, D + g.pb[0] + g.pe[0], H + g.pb[1] + g.pe[1], W + g.pb[2] + g.pe[2])
    if not any(g.pb + g.pe) and g.rank == 5:
        return X

    def f(n, c, d, h, w):
        conds = [tirx.all(i >= b, i < b + s) for i, b, e, s in zip((d, h, w), g.pb, g.pe, (D, H, W)) if b or e]
        val = g.x_at(X, n, c, d - g.pb[0], h - g.pb[1], w - g.pb[2])
        if not conds:
            return val
        return tirx.if_then_else(tirx.all(*conds) if len(conds) > 1 else conds[0], val, tirx.const(0, X.dtype))
    return te.compute(shape, f, name="pad")


def _epilogue_tensors(node: Node, X):
    has_bias, has_res = epilogue_inputs(node.attrs, len(node.inputs))
    B = placeholder(node.inputs[2], "bias") if has_bias else None
    R = placeholder(node.inputs[-1], "residual") if has_res else None
    return B, R


def _epilogue(node: Node, acc, m, out_idx, B, R):
    if B is not None:
        acc = acc + B[m]
    if R is not None:
        acc = acc + R[tuple(broadcast_index(R, out_idx))]
    return activation(acc, node.attrs.act, node.attrs.act_params)


def lower_conv3d(node: Node, target) -> Kernel:
    if node.attrs.groups == 1 and node.inputs[1].data is not None:
        return lower_blocked(node, target)
    return lower_generic(node, target)


def pack_weights(w: np.ndarray, lanes: int) -> np.ndarray:
    """[M, C, KD, KH, KW] -> [ceil(M/lanes), C, KD, KH, KW, lanes], zero-filled past M."""
    m = w.shape[0]
    mo = -(-m // lanes)
    full = np.zeros((mo * lanes,) + w.shape[1:], dtype=w.dtype)
    full[:m] = w
    return np.ascontiguousarray(full.reshape((mo, lanes) + w.shape[1:]).transpose(0, 2, 3, 4, 5, 1))


def lower_blocked(node: Node, target, tile: ConvTile | None = None) -> Kernel:
    g = _Geometry(node)
    L = target.vector_lanes
    N, C, _, _, _ = g.x5
    M, _, KD, KH, KW = g.w5
    _, _, OD, OH, OW = g.o5
    tile = tile or default_tile(OH, OW, L)
    wp = pack_weights(node.inputs[1].data.reshape(g.w5), L)
    Mo = wp.shape[0]
    X = placeholder(node.inputs[0], "x")
    Wp = te.placeholder(wp.shape, wp.dtype, name="w_packed")
    B, R = _epilogue_tensors(node, X)
    xp = _padded_input(g, X)
    rc, rd, rh, rw = (te.reduce_axis((0, e), name=nm) for e, nm in ((C, "rc"), (KD, "rd"), (KH, "rh"), (KW, "rw")))
    (sd, sh, sw), (dd, dh, dw) = g.stride, g.dil
    conv = te.compute(
        (N, Mo, OD, OH, OW, L),
        lambda n, mo, d, h, w, v: te.sum(
            xp[n, rc, d * sd + rd * dd, h * sh + rh * dh, w * sw + rw * dw] * Wp[mo, rc, rd, rh, rw, v],
            axis=[rc, rd, rh, rw]),
        name="conv")

    def out_f(*idx):
        n, m, d, h, w = g.out_index5(idx)
        return _epilogue(node, conv[n, m // L, d, h, w, m % L], m, idx, B, R)
    Y = te.compute(g.out, out_f, name="out")
    args = [X, Wp] + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    blk = sch.get_sblock("conv")
    n, mo, d, h, w, v, c, kd, kh, kw = sch.get_loops(blk)
    ho, hi = sch.split(h, [None, tile.th])
    wo, wi = sch.split(w, [None, tile.tw])
    sch.reorder(n, mo, d, ho, wo, c, kd, kh, kw, hi, wi, v)
    outer = sch.fuse(n, mo, d)
    sch.parallel(outer)
    sch.reverse_compute_at(sch.get_sblock("out"), wo)
    if xp is not X:
        if any(g.pb + g.pe):
            pad = sch.get_sblock("pad")
            pl = sch.get_loops(pad)
            sch.parallel(sch.fuse(*pl[:3]))
        else:
            sch.compute_inline(sch.get_sblock("pad"))
    sch.unroll(kw)
    sch.unroll(hi)
    sch.unroll(wi)
    sch.vectorize(v)
    sch.decompose_reduction(blk, c)
    args_v = [node.inputs[0], wp] + [v for v in node.inputs[2:]]
    return Kernel(sch.mod["main"], args_v, f"conv3d.direct_blocked(lanes={L}, tile={tile.th}x{tile.tw})")


def lower_generic(node: Node, target) -> Kernel:
    """Any groups, weights known or not: a plain direct convolution, parallel over (n, m, d)."""
    g = _Geometry(node)
    a = node.attrs
    N, C, _, _, _ = g.x5
    M, Cg, KD, KH, KW = g.w5
    _, _, OD, OH, OW = g.o5
    Mg = M // a.groups
    X = placeholder(node.inputs[0], "x")
    W = placeholder(node.inputs[1], "w")
    W5 = W if len(W.shape) == 5 else te.compute(
        g.w5, lambda m, c, kd, kh, kw: W[(m, c) + (kd, kh, kw)[5 - g.rank:]], name="w5")
    B, R = _epilogue_tensors(node, X)
    xp = _padded_input(g, X)
    rc, rd, rh, rw = (te.reduce_axis((0, e), name=nm) for e, nm in ((Cg, "rc"), (KD, "rd"), (KH, "rh"), (KW, "rw")))
    (sd, sh, sw), (dd, dh, dw) = g.stride, g.dil
    conv = te.compute(
        (N, M, OD, OH, OW),
        lambda n, m, d, h, w: te.sum(
            xp[n, (m // Mg) * Cg + rc, d * sd + rd * dd, h * sh + rh * dh, w * sw + rw * dw] * W5[m, rc, rd, rh, rw],
            axis=[rc, rd, rh, rw]),
        name="conv")

    def out_f(*idx):
        n, m, d, h, w = g.out_index5(idx)
        return _epilogue(node, conv[n, m, d, h, w], m, idx, B, R)
    Y = te.compute(g.out, out_f, name="out")
    args = [X, W] + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    schedule_default(sch, target.vector_lanes)
    return Kernel(sch.mod["main"], list(node.inputs), f"conv3d.direct_generic(groups={a.groups})")
