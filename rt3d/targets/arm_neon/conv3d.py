"""Dense conv3d for SIMD CPUs (NEON on arm64, AVX-512 or AVX2 on the host).

Direct convolution vectorized over ``lanes`` output channels. Input and output are each plain NC(D)HW or
channel-blocked NC(D)HW{lanes}c (chosen by the block-layout pass). Weights are packed at build time; a register tile
of th x tw output positions x tm channel vectors stays in registers through the whole reduction; the loop nest is
parallel over (n, channel-block group, output depth), or for temporal kernels with large input planes over bands of
output rows, each band through all output depths (ConvTile.rows); bias, residual and activation are applied per tile.
Grouped convolutions take a simpler generic path.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import te, tirx

from ...ir import Node
from ...ir.interpreter import conv_out_spatial
from ...ir.ops import logical_shape
from ..base import Kernel
from .common import epilogue, epilogue_placeholders, make_func, placeholder, schedule_default, spatial_5d, to_5d


@dataclass(frozen=True)
class ConvTile:
    """Schedule record of the blocked kernel: a register tile of th output rows x tw output columns x tm vectors of
    output channels; ``ur`` also unrolls the innermost reduction loop (input channels of a block, or kernel width)."""

    th: int
    tw: int
    tm: int = 1
    ur: int = 0
    rows: int = 0  # > 0: the parallel loop runs over bands of this many output rows, each band through all output
    # depths in turn, so that the input rows a band reads stay in cache from one output depth to the next (a
    # temporal kernel reads KD input planes per output depth, each of them again for the next ones)


def workload_key(node: Node) -> str:
    """What a tuning record is about: op, shapes and the attributes that change the kernel (not the epilogue)."""
    a = node.attrs
    desc = {"op": node.op, "x": node.inputs[0].type.shape, "w": node.inputs[1].type.shape, "stride": a.stride,
            "pad": a.pad, "dilation": a.dilation, "in_block": a.in_block, "out_block": a.out_block,
            "dtype": node.inputs[0].type.dtype}
    if a.pool:  # the records of a conv without one stay valid
        desc["pool"] = a.pool
    return "conv3d-" + hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


# Temporal kx1x1 kernels whose input planes for one output depth exceed this many L2 caches run in bands of output
# rows (ConvTile.rows). On a Zen 4 (1 MiB L2), 2 threads, 2-3 fresh processes, medians of interleaved rounds: S3D's
# 192->192 3x1x1 on 8x56x56 (7 MiB of planes per output depth) 37.8 -> 31.6 ms, R(2+1)D's 144->64 3x1x1 on 16x56x56
# (5.3 MiB) 21.2 -> 18.4 ms; its 230->128 3x1x1 on 8x28x28 (2.2 MiB) 8.0 -> 8.1 ms, no gain.
BAND_L2S = 4
# From this many taps a temporal kernel takes a column tile (th rows x 1 column): S3D's stem, 7x1x1 stride 2 on
# 16x112x112, spilled 65 stack accesses per 56 FMAs in its inner loop with a 1x7x4 tile (3-tap kernels: 10-12, counted
# in the assembly) and ran 56-105 ms with it; 7x1x4 in bands of 7 rows ran 37.5-39.1 ms (same measurements). 3-tap
# kernels ran slower in columns (R(2+1)D's 144->64: 27.6 against 18.4 ms).
LONG_TEMPORAL = 5


def temporal_footprint(node: Node, itemsize: int = 4) -> int:
    """Bytes of input one output depth of a temporal kx1x1 conv reads: kd planes of every input channel (0 for any
    other conv)."""
    w = node.inputs[1].type.shape
    if len(w) != 5 or w[2] <= 1 or w[3] != 1 or w[4] != 1:
        return 0
    x = logical_shape(node.inputs[0].type, node.attrs.in_block)
    return w[2] * x[1] * x[-2] * x[-1] * itemsize


def default_tile(node: Node, oh: int, ow: int, lanes: int, registers: int = 32, l2_bytes: int = 0) -> ConvTile:
    """A register tile of th x tw positions x tm channel vectors that divides the output plane and fits a register
    file of ``registers`` vectors (accumulators, the tile's weight vectors and a broadcast); temporal kernels whose
    input planes per output depth overflow BAND_L2S x ``l2_bytes`` also run in bands of output rows.

    Chosen from measurements of the zoo models' heaviest layers (bench/tile_sweep.py, results in
    bench/results/tile_sweep.json): with 32 registers up to 28 accumulators; temporal kx1x1 kernels reuse each
    broadcast over 4 channel vectors, strided kernels on blocked inputs over 3, the rest over 2 when the reduction is
    long. With 16 (AVX2) see _tile_16.
    """
    w = node.inputs[1].type.shape
    m, kh, kw = w[0], w[-2] if len(w) >= 4 else 1, w[-1]
    kd = w[2] if len(w) == 5 else 1
    red = int(np.prod(w[1:]))
    blocks = -(-m // lanes)
    stride_hw = tuple(node.attrs.stride[-2:])
    temporal = kd > 1 and kh == 1 and kw == 1
    if registers < 32:
        return _tile_16(oh, ow, blocks, temporal, bool(node.attrs.in_block), registers)
    if temporal and blocks >= 4 and _largest_divisor(ow, 7) >= 4:
        tile = ConvTile(1, _largest_divisor(ow, 7), 4)
        if kd >= LONG_TEMPORAL and _largest_divisor(oh, 7) >= 4:
            tile = ConvTile(_largest_divisor(oh, 7), 1, 4)
        banded = l2_bytes and not node.attrs.pool and temporal_footprint(node) > BAND_L2S * l2_bytes
        return replace(tile, rows=tile.th) if banded else tile
    if stride_hw != (1, 1) and node.attrs.in_block and blocks >= 3 and ow % 4 == 0:
        return ConvTile(1, 4, 3)
    tm = 2 if (blocks > 1 and red >= 64) else 1
    if tm == 2 and blocks % 2 and blocks % 3 == 0 and node.attrs.in_block and ow % 8 == 0:
        # an odd number of channel blocks: two vectors per tile would compute a padded block of zero filters (9 -> 10),
        # three divide them and a row of 8 positions keeps 24 accumulators, with the in-block channels unrolled
        # (R(2+1)D's 64->144 1x3x3 convs, 9 blocks: 1x14x2 299, 1x8x3 331, unrolled 336 GFLOP/s in
        # bench/results/tile_sweep.json; the tuner picked the same tile, bench/results/tune/r2plus1d_18.md)
        return ConvTile(1, 8, 3, 1)
    # AVX-512's 32 vector registers hold 28 accumulators plus two weight vectors and a broadcast (NEON also has 32;
    # not yet measured there). A plain NCDHW input, e.g. the 3-channel clip, measured best with 16.
    budget = (28 if node.attrs.in_block else 16) if tm == 2 else 18
    best = None
    for th in (1, 2, 4):
        for tw in range(1, min(ow, 14) + 1):
            if oh % th or ow % tw or th * tw * tm > budget:
                continue
            score = (th * tw * tm, -th)
            if best is None or score > best[0]:
                best = (score, ConvTile(th, tw, tm))
    return best[1]


def build_tile(node: Node, target) -> ConvTile:
    """The tile a build for ``target`` gives ``node``: its tuning record, else default_tile for the target's lanes,
    registers and L2 on the conv's own output plane."""
    sp = conv_out_spatial(node)
    return target.tuned.get(workload_key(node)) or default_tile(
        node, sp[-2] if len(sp) >= 2 else 1, sp[-1], target.vector_lanes, target.vector_registers, target.l2_bytes)


def _tile_16(oh: int, ow: int, blocks: int, temporal: bool, in_block: bool, registers: int) -> ConvTile:
    """The register tile for 16 vector registers (AVX2), from bench/tile_sweep.py on a Zen 3 (8 lanes): 12
    accumulators over 3 channel vectors in a row of 4 (1x4x3) led on most 3x3x3 and 1x3x3 layers, strided ones
    included (R(2+1)D's 64->230 stride 2: 94 GFLOP/s, the next tile 80), even where 3 vectors do not divide the
    channel blocks; 2x2x3 on 14x14 planes; temporal kx1x1 kernels, bound by their input's memory traffic, did best
    reusing a broadcast over 4 vectors (1x2x4); the plain 3-channel stem with 1x4x2. Tiles made for 32 registers
    (1x14x2) spilled: C3D's dense convs ran at 65 instead of 100 GFLOP/s."""
    prefs = [(1, 2, 4)] if temporal else []
    prefs += [(1, 4, 3), (2, 2, 3)] if in_block else [(1, 4, 2), (2, 2, 2)]
    for th, tw, tm in prefs:
        if blocks >= tm and oh % th == 0 and ow % tw == 0 and th * tw * tm <= registers - tm - 1:
            return ConvTile(th, tw, tm)
    best = None  # otherwise the most positions of one channel vector (7x7 planes: a row of 7)
    for th in (1, 2):
        for tw in range(1, min(ow, 14) + 1):
            if oh % th == 0 and ow % tw == 0 and th * tw <= registers - 2:
                if best is None or (th * tw, -th) > best[0]:
                    best = ((th * tw, -th), ConvTile(th, tw, 1))
    return best[1]


class _Geometry:
    def __init__(self, node: Node):
        a = node.attrs
        x, w = node.inputs[0], node.inputs[1]
        self.in_block, self.out_block = a.in_block, a.out_block
        self.xshape = x.type.shape
        xl = logical_shape(x.type, a.in_block)
        self.rank = len(xl)
        r = self.rank - 2
        self.x5 = to_5d(xl)
        self.w5 = to_5d(w.type.shape)
        self.out = node.output.type.shape
        self.o5 = to_5d((self.x5[0], w.type.shape[0]) + conv_out_spatial(node))
        self.pool = spatial_5d(a.pool, 1, r) if a.pool else None
        self.stride = spatial_5d(a.stride, 1, r)
        self.dil = spatial_5d(a.dilation, 1, r)
        self.pb = spatial_5d(a.pad[:r], 0, r)
        self.pe = spatial_5d(a.pad[r:], 0, r)

    def spatial(self, d, h, w):
        return (d, h, w)[5 - self.rank:] if self.rank < 5 else (d, h, w)

    def out_index5(self, idx):
        """Map an index of the plain real-rank output to (n, m, d, h, w)."""
        idx = list(idx)
        zero = tirx.const(0, "int32")
        return idx[:2] + [zero] * (5 - self.rank) + idx[2:]


def _padded_input(g: _Geometry, X: te.Tensor) -> te.Tensor:
    """The input padded in D, H, W, in its own layout: [N, C, D', H', W'] or [N, C/b, D', H', W', b]."""
    N, C, D, H, W = g.x5
    sp = (D + g.pb[0] + g.pe[0], H + g.pb[1] + g.pe[1], W + g.pb[2] + g.pe[2])
    lead = (N, g.xshape[1])
    tail = (g.in_block,) if g.in_block else ()

    def f(n, c, d, h, w, *i):
        conds = [tirx.all(v >= b, v < b + s) for v, b, e, s in zip((d, h, w), g.pb, g.pe, (D, H, W)) if b or e]
        val = X[(n, c) + g.spatial(d - g.pb[0], h - g.pb[1], w - g.pb[2]) + tuple(i)]
        if not conds:
            return val
        return tirx.if_then_else(tirx.all(*conds) if len(conds) > 1 else conds[0], val, tirx.const(0, X.dtype))
    return te.compute(lead + sp + tail, f, name="pad")


def lower_conv3d(node: Node, target) -> Kernel:
    if node.attrs.groups == 1 and node.inputs[1].data is not None:
        return lower_blocked(node, target)
    from ...errors import BuildError
    if node.attrs.in_block or node.attrs.out_block:
        raise BuildError(f"blocked layouts need groups=1 and constant weights: {node}")
    if node.attrs.pool:
        raise BuildError(f"a fused pool needs groups=1 and constant weights (pool={list(node.attrs.pool)}): {node}")
    return lower_generic(node, target)


def pack_weights(w: np.ndarray, lanes: int, tm: int = 1, in_block: int = 0) -> np.ndarray:
    """[M, C, KD, KH, KW] -> [ceil(M/(lanes*tm))*tm, C, KD, KH, KW, lanes] (or, for a blocked input,
    [.., ceil(C/b), KD, KH, KW, b, lanes]), zero-filled past M and C."""
    m, c = w.shape[:2]
    mo = -(-m // (lanes * tm)) * tm
    cp = -(-c // in_block) * in_block if in_block else c
    full = np.zeros((mo * lanes, cp) + w.shape[2:], dtype=w.dtype)
    full[:m, :c] = w
    full = full.reshape((mo, lanes, cp) + w.shape[2:])  # [Mo, L, C, KD, KH, KW]
    if in_block:
        full = full.reshape((mo, lanes, cp // in_block, in_block) + w.shape[2:])  # [Mo, L, Cb, b, K...]
        return np.ascontiguousarray(full.transpose(0, 2, 4, 5, 6, 3, 1))
    return np.ascontiguousarray(full.transpose(0, 2, 3, 4, 5, 1))


def lower_blocked(node: Node, target, tile: ConvTile | None = None) -> Kernel:
    """Direct convolution vectorized over ``lanes`` output channels; input and output plain or blocked."""
    g = _Geometry(node)
    L = target.vector_lanes
    if g.out_block and g.out_block != L:
        from ...errors import BuildError
        raise BuildError(f"target '{target.name}' blocks channels by {L}, node asks for {g.out_block}: {node}")
    N, C, _, _, _ = g.x5
    M, _, KD, KH, KW = g.w5
    _, _, OD, OH, OW = g.o5
    tile = tile or build_tile(node, target)
    wp = pack_weights(node.inputs[1].data.reshape(g.w5), L, tile.tm, g.in_block)
    Mo = wp.shape[0]
    X = placeholder(node.inputs[0], "x")
    Wp = te.placeholder(wp.shape, wp.dtype, name="w_packed")
    B, R = epilogue_placeholders(node)
    if B is not None and (g.out_block or g.pool):  # bias padded to whole blocks so that the epilogue reads in bounds
        bias = np.zeros(-(-M // L) * L, np.float32)
        bias[:M] = node.inputs[2].data
        B = te.placeholder(bias.shape, "float32", name="bias")
    xp = _padded_input(g, X)
    (sd, sh, sw), (dd, dh, dw) = g.stride, g.dil
    rd, rh, rw = (te.reduce_axis((0, e), name=nm) for e, nm in ((KD, "rd"), (KH, "rh"), (KW, "rw")))
    if g.in_block:
        b = g.in_block
        rco, rci = te.reduce_axis((0, wp.shape[1]), name="rco"), te.reduce_axis((0, b), name="rci")
        conv = te.compute(
            (N, Mo, OD, OH, OW, L),
            lambda n, mo, d, h, w, v: te.sum(
                xp[n, rco, d * sd + rd * dd, h * sh + rh * dh, w * sw + rw * dw, rci] * Wp[mo, rco, rd, rh, rw, rci, v],
                axis=[rco, rd, rh, rw, rci]),
            name="conv")
    else:
        rc = te.reduce_axis((0, C), name="rc")
        conv = te.compute(
            (N, Mo, OD, OH, OW, L),
            lambda n, mo, d, h, w, v: te.sum(
                xp[n, rc, d * sd + rd * dd, h * sh + rh * dh, w * sw + rw * dw] * Wp[mo, rc, rd, rh, rw, v],
                axis=[rc, rd, rh, rw]),
            name="conv")

    if g.pool:
        # the epilogue per register tile into a buffer of one row of windows, then the max over each window
        E = te.compute((N, -(-M // L), OD, OH, OW, L),
                       lambda n, mo, d, h, w, v: epilogue(node, conv[n, mo, d, h, w, v], mo * L + v, (), B, None),
                       name="out")
        Y = te.compute(g.out, _window_max(g, E, L), name="pool")
    elif g.out_block:
        def out_f(n, mo, *rest):
            *sp, v = rest
            d, h, w = ([tirx.const(0, "int32")] * (5 - g.rank)) + list(sp)
            return epilogue(node, conv[n, mo, d, h, w, v], mo * L + v, (n, mo, *rest), B, R)
        Y = te.compute(g.out, out_f, name="out")
    else:
        def out_f(*idx):
            n, m, d, h, w = g.out_index5(idx)
            return epilogue(node, conv[n, m // L, d, h, w, m % L], m, idx, B, R)
        Y = te.compute(g.out, out_f, name="out")
    args = [X, Wp] + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    blk = sch.get_sblock("conv")
    loops = sch.get_loops(blk)
    n, mo, d, h, w, v = loops[:6]
    red = loops[6:]
    mo, mi = sch.split(mo, [None, tile.tm])
    rows, windows = h, []
    if g.pool:
        # a parallel unit is a depth of windows; each row of windows is computed in rows of register tiles, then
        # pooled while it is in cache (the register tile's rows divide the window's)
        kd, kh, _ = g.pool
        tile = replace(tile, th=math.gcd(tile.th, kh))
        d, dk = sch.split(d, [None, kd])
        h, rows = sch.split(h, [None, kh])
        windows = [h, dk]
    ho, hi = sch.split(rows, [None, tile.th])
    wo, wi = sch.split(w, [None, tile.tw])
    band_rows = max(1, tile.rows // tile.th) * tile.th if tile.rows and not g.pool else 0  # whole register tiles
    if band_rows:
        band, ho = sch.split(ho, [None, band_rows // tile.th])
        sch.reorder(n, mo, band, d, ho, wo, *red, hi, wi, mi, v)
        sch.parallel(sch.fuse(n, mo, band))
    else:
        sch.reorder(n, mo, d, *windows, ho, wo, *red, hi, wi, mi, v)
        sch.parallel(sch.fuse(n, mo, d))
    sch.reverse_compute_at(sch.get_sblock("out"), wo)
    if g.pool:
        sch.reverse_compute_at(sch.get_sblock("pool"), h)
    sch.set_scope(blk, 0, "local")
    if xp is not X:
        pad = sch.get_sblock("pad")
        pl = sch.get_loops(pad)
        sch.parallel(sch.fuse(*pl[:3]))
        if g.in_block:
            sch.vectorize(pl[-1])
    if g.out_block or g.pool:
        sch.vectorize(sch.get_loops(sch.get_sblock("out"))[-1])
    if g.pool and g.out_block:
        sch.vectorize(sch.get_loops(sch.get_sblock("pool"))[-1])
    sch.unroll(hi)
    sch.unroll(wi)
    sch.unroll(mi)
    if tile.ur:
        sch.unroll(red[-1])
    sch.vectorize(v)
    sch.decompose_reduction(blk, red[0])
    args_v = [node.inputs[0], wp]
    if B is not None:
        args_v.append(bias if g.out_block or g.pool else node.inputs[2])
    if R is not None:
        args_v.append(node.inputs[-1])
    layout = f"{'b' if g.in_block else 'p'}->{'b' if g.out_block else 'p'}"
    pool = f", max_pool={'x'.join(map(str, node.attrs.pool))}" if g.pool else ""
    bands = f", bands of {band_rows} rows" if band_rows else ""
    return Kernel(sch.mod["main"], args_v,
                  f"conv3d.direct({layout}, lanes={L}, tile={tile.th}x{tile.tw}x{tile.tm}"
                  f"{', unroll' if tile.ur else ''}{bands}{pool})")


def _window_max(g: _Geometry, E: te.Tensor, L: int):
    """The compute of a fused pool's output (blocked or plain) from E, the epilogue's [N, M/L, D, H, W, L]: the max
    of each disjoint window, written out as a chain (a window has a few elements: 4 or 8 for C3D's pools)."""
    pd, ph, pw = g.pool
    offsets = [(i, j, k) for i in range(pd) for j in range(ph) for k in range(pw)]

    def window(n, mo, v, d, h, w):
        vals = [E[n, mo, d * pd + i, h * ph + j, w * pw + k, v] for i, j, k in offsets]
        out = vals[0]
        for x in vals[1:]:
            out = tirx.max(out, x)
        return out
    if g.out_block:
        def f(n, mo, *rest):
            *sp, v = rest
            d, h, w = ([tirx.const(0, "int32")] * (5 - g.rank)) + list(sp)
            return window(n, mo, v, d, h, w)
    else:
        def f(*idx):
            n, m, d, h, w = g.out_index5(idx)
            return window(n, m // L, m % L, d, h, w)
    return f


def direct_conv(node: Node, g: _Geometry, acc_dtype: str | None = None):
    """The plain NCDHW direct convolution (any groups) as TE: (X, W, bias, residual, conv). With ``acc_dtype``
    the operands are widened to it before they are multiplied (float16 tensors summed in float32)."""
    a = node.attrs
    M, Cg, KD, KH, KW = g.w5
    _, _, OD, OH, OW = g.o5
    N = g.x5[0]
    Mg = M // a.groups
    X = placeholder(node.inputs[0], "x")
    W = placeholder(node.inputs[1], "w")
    W5 = W if len(W.shape) == 5 else te.compute(
        g.w5, lambda m, c, kd, kh, kw: W[(m, c) + (kd, kh, kw)[5 - g.rank:]], name="w5")
    B, R = epilogue_placeholders(node)
    xp = _padded_input(g, X)
    rc, rd, rh, rw = (te.reduce_axis((0, e), name=nm) for e, nm in ((Cg, "rc"), (KD, "rd"), (KH, "rh"), (KW, "rw")))
    (sd, sh, sw), (dd, dh, dw) = g.stride, g.dil

    def widen(e):
        return e if acc_dtype is None or acc_dtype == str(X.dtype) else e.astype(acc_dtype)
    conv = te.compute(
        (N, M, OD, OH, OW),
        lambda n, m, d, h, w: te.sum(
            widen(xp[n, (m // Mg) * Cg + rc, d * sd + rd * dd, h * sh + rh * dh, w * sw + rw * dw])
            * widen(W5[m, rc, rd, rh, rw]), axis=[rc, rd, rh, rw]),
        name="conv")
    return X, W, B, R, conv


def lower_generic(node: Node, target) -> Kernel:
    """Any groups, weights known or not: a plain direct convolution, parallel over (n, m, d)."""
    g = _Geometry(node)
    a = node.attrs
    X, W, B, R, conv = direct_conv(node, g)

    def out_f(*idx):
        n, m, d, h, w = g.out_index5(idx)
        return epilogue(node, conv[n, m, d, h, w], m, idx, B, R)
    Y = te.compute(g.out, out_f, name="out")
    args = [X, W] + [t for t in (B, R) if t is not None] + [Y]
    sch = tvm.s_tir.Schedule(make_func(args, "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], list(node.inputs), f"conv3d.direct_generic(groups={a.groups})")
