"""Sparse conv3d vectorized over a row block's filters: the "direct" mode of the sparse kernel (KGS, Vanilla, Filter).

Where a row block's gM filters fill whole vectors (gM a multiple of the lanes: 8x4 groups on AVX2's 8 lanes and on
NEON's 4, the paper's own mapping of a kernel group onto SIMD lanes), the sparse kernel is the dense one's register
tile restricted to the kept columns: th x tw output positions x gM/lanes vectors of filters stay in registers, and
per kept column (channel block, kernel position) and per channel of it, the column's weight vectors are loaded once
and each position's input is broadcast against them. The input is read in the channel-blocked layout NC(D)HW{b}c
the dense kernels use (zero-padded once, or not copied at all without padding), so a column's input is a constant
offset from the tile's and a position's a constant offset from the column's: strides and dilations cost nothing,
and a tile's input window (all channels x the kernel's reach x th x tw positions) stays in L1 while the row blocks'
packed weights stream past, as the dense kernel's do. The position-vectorized modes of sparse_conv3d.py keep a
window of lanes x V positions per tile instead, which on 16 registers (V = 1) is read from L2 for every row block.

Loop nest: parallel over (n, output depth, row of tiles, tile[, row-block chunk]) -> row blocks in the order chosen
by reorder-kernel-groups -> kept columns -> channel -> filter vector -> position. The write-back adds the bias (a
per-packed-row array made at build time, so the permutation costs nothing), the residual and the activation and
stores each position's filter vectors whole where a row block's filters are consecutive channels of whole output
blocks (the usual case), lane by lane otherwise.
"""
from __future__ import annotations

import numpy as np
import tvm

from ...errors import BuildError
from ...ir import Node
from ...ir.ops import filters_fill_vectors
from ..base import Kernel
from .common import spatial_5d, threads_split_units

DEFAULT_L1 = 32 << 10  # a target that does not know its L1
L1_SHARE = 1 / 2  # of the L1 a tile's input window may fill before the reduction is split into channel chunks


def direct_problem(node: Node, lanes: int) -> str:
    """Why the direct mode cannot run ``node`` on a target with ``lanes`` lanes ('' when it can)."""
    a = node.attrs
    gm, gn = a.group
    if not a.kernel:
        return "a fully connected layer"
    if not filters_fill_vectors(a.group, lanes):
        return (f"group {gm}x{gn}: {gm} filters are not whole vectors of {lanes}, or {gn} channels neither divide "
                f"nor are divided by blocks of {lanes}")
    if a.in_block not in (0, lanes) or a.out_block not in (0, lanes):
        return f"layouts {a.in_block}/{a.out_block} are not blocked by {lanes}"
    if node.inputs[0].type.dtype != "float32":
        return "not float32"
    if len(node.inputs) - 3 - int(a.residual) == 1 and node.inputs[3].data is None:
        return "a bias that is not a constant"
    return ""


def _geometry(node: Node):
    from .sparse_conv3d import _shapes
    a = node.attrs
    r, (N, C, D, H, W), (OD, OH, OW) = _shapes(node)
    return (r, (N, C, D, H, W), (OD, OH, OW), spatial_5d(a.kernel, 1, r), spatial_5d(a.stride, 1, r),
            spatial_5d(a.dilation, 1, r), spatial_5d(a.pad[:r], 0, r), spatial_5d(a.pad[r:], 0, r))


def direct_budget(gm: int, lanes: int, registers: int) -> int:
    """The most output positions of a register tile: gm/lanes accumulators each, next to the column's gm/lanes
    weight vectors, a broadcast and two registers of slack: 12 on AVX2's 16 registers and on NEON's 32 (24
    accumulators). With 13 or 14 positions on AVX2, LLVM spilled accumulators inside the column loop."""
    vm = gm // lanes
    return max(1, (registers - vm - 1) // vm - 2)


def direct_tiles(oh: int, ow: int, budget: int, reach: tuple[int, int] = (3, 3),
                 stride: tuple[int, int] = (1, 1)) -> list[tuple[int, int]]:
    """(th, tw) register tiles of at most ``budget`` positions for an oh x ow output plane, best first: the most
    positions per tile on average (the last row and column of tiles may be shorter), then the fewest input
    positions read per output position (a kernel of ``reach`` rows x columns at ``stride``), then fewer rows.
    On a budget of 12 and a 3x3 kernel: 3 x 4 tiles (3x4 measured 94, 86, 77, 96 GFLOP/s on C3D's four largest
    sparse layers where rows of 12 took 93, 78, 66, 88 and rows of 14, which spilled, 93, 79, 80, 93)."""
    def score(t):
        th, tw = t
        tiles = -(-oh // th) * -(-ow // tw)
        window = ((th - 1) * stride[0] + reach[0]) * ((tw - 1) * stride[1] + reach[1])
        return (-round(oh * ow / tiles, 6), window / (th * tw), th)
    out = [(th, tw) for th in range(1, min(oh, budget) + 1) for tw in range(1, min(ow, budget // th) + 1)]
    return sorted(out, key=score)


def node_tiles(node: Node, lanes: int, registers: int) -> list[tuple[int, int]]:
    """direct_tiles for a sparse conv's output plane, kernel and strides on a target with ``lanes`` and
    ``registers``."""
    _, _, (_, OH, OW), (_, KH, KW), (_, sh, sw), (_, dh, dw), *_ = _geometry(node)
    reach = ((KH - 1) * dh + 1, (KW - 1) * dw + 1)
    return direct_tiles(OH, OW, direct_budget(node.attrs.group[0], lanes, registers), reach, (sh, sw))


def window_bytes(node: Node, lanes: int, th: int, tw: int) -> int:
    """The input bytes one register tile reads: all (padded) channel blocks x the kernel's reach over th x tw output
    positions, whole blocks of ``lanes`` channels per position."""
    _, (N, C, *_), _, (KD, KH, KW), (sd, sh, sw), (dd, dh, dw), *_ = _geometry(node)
    gn = node.attrs.group[1]
    cbp = -(-(-(-C // gn) * gn) // lanes)
    rows, cols = (th - 1) * sh + (KH - 1) * dh + 1, (tw - 1) * sw + (KW - 1) * dw + 1
    return cbp * ((KD - 1) * dd + 1) * rows * cols * lanes * 4


def direct_default(node: Node, lanes: int, cores: int, registers: int, l1_bytes: int = 0):
    """The heuristic's SparseTile for the direct mode: the register tile of direct_tiles (3 x 4 positions on AVX2
    and NEON for 3x3 kernels); row blocks split among the threads only where the tiles are fewer than 4 per core; the
    reduction split into chunks of channel blocks where the tile's input window exceeds L1_SHARE of the L1 (every
    row block reads all of it while the packed weights stream past)."""
    from .sparse_conv3d import SparseTile
    _, (N, C, *_), (OD, OH, OW), *_ = _geometry(node)
    th, tw = node_tiles(node, lanes, registers)[0]
    units = N * OD * (OH // th) * (OW // tw)
    chunks = 1 if threads_split_units(units, cores) else min(cores, len(node.attrs.kept))
    budget = (l1_bytes or DEFAULT_L1) * L1_SHARE
    split = max(1, -(-window_bytes(node, lanes, th, tw) // int(budget)))
    return SparseTile(1, max(1, chunks), split=split, th=th, tw=tw)


def lower_sparse_direct(node: Node, target, tile) -> Kernel:
    """The direct-mode kernel of a sparse_conv3d (see the module docstring) with the register tile ``tile``."""
    from .sparse_conv3d import _activation, _packed_arrays
    a = node.attrs
    L = target.vector_lanes
    why = direct_problem(node, L)
    if why:
        raise BuildError(f"sparse_conv3d direct mode: {why}: {node}")
    values, cols = node.inputs[1].data, node.inputs[2].data
    has_res = a.residual
    has_bias = len(node.inputs) - 3 - int(has_res) == 1
    r, (N, C, D, H, W), (OD, OH, OW), (KD, KH, KW), (sd, sh, sw), (dd, dh, dw), pb, pe = _geometry(node)
    GM, GN = a.group
    VM = GM // L
    P, M = len(a.kept), a.filters
    S = KD * KH * KW
    th, tw = min(tile.th, OH), min(tile.tw, OW)
    if th < 1 or tw < 1:
        raise BuildError(f"sparse_conv3d direct mode: an empty register tile {tile}: {node}")
    TT = th * tw
    b = L  # the padded copy's channel block (the input's own when blocked)
    bi, bo = a.in_block, a.out_block
    Cp = -(-C // GN) * GN
    CB, CBp = -(-C // b), -(-Cp // b)
    Dp, Hp, Wp = D + pb[0] + pe[0], H + pb[1] + pe[1], W + pb[2] + pe[2]
    BS = Dp * Hp * Wp * b  # one channel block of one sample in the copy
    copy = bool(not bi or any(pb) or any(pe) or CBp != CB)
    total = N * CBp * BS
    if total >= 2 ** 31:
        raise BuildError(f"sparse_conv3d direct mode: input of {total} elements exceeds 32-bit indexing: {node}")
    HT, WT = -(-OH // th), -(-OW // tw)  # tiles per column and row; the last ones may be shorter
    th_last, tw_last = OH - (HT - 1) * th, OW - (WT - 1) * tw
    CH = min(max(1, tile.chunks), P)
    units = N * OD * HT * WT
    Q = Cp // GN  # channel blocks of the packing
    NS = min(max(1, tile.split), Q)
    QS = -(-Q // NS)  # channel blocks per reduction chunk
    NS = -(-Q // QS)

    # build-time arrays: each kept column's input offset (channel block, kernel position), the packed rows' bias
    q, s = cols // S, cols % S
    kd, kh, kw = s // (KH * KW), (s // KW) % KH, s % KW
    ch0 = q * GN
    off = ((ch0 // b) * BS + ((kd * dd * Hp + kh * dh) * Wp + kw * dw) * b + ch0 % b).astype(np.int32)
    off = off if off.size else np.zeros(1, np.int32)
    wk, indptr, order, outch = _packed_arrays(a, values)
    from ...ir.sparsity import chunk_sizes
    bounds = np.concatenate([[0], np.cumsum(chunk_sizes(P, CH))]).astype(np.int32)
    # reduction chunks: row block k's columns of chunk c (channel blocks c * QS ..) are cp[k * (NS + 1) + c] ..
    # (a row block's columns are packed channel block by channel block)
    cp = np.zeros(P * (NS + 1), np.int32)
    for k in range(P if NS > 1 else 0):
        qk = cols[indptr[k]:indptr[k + 1]] // S
        cp[k * (NS + 1):(k + 1) * (NS + 1)] = indptr[k] + np.searchsorted(qk, np.arange(NS + 1) * QS)
    bias_r = np.zeros(P * GM, np.float32)
    if has_bias:
        real = outch >= 0
        bias_r[real] = np.asarray(node.inputs[3].data, np.float32)[outch[real]]
    # row blocks whose filters are consecutive channels from the start of an output block (padding rows past M
    # only at the end) store whole vectors; run0[k] is the first channel, -1 for the lane-by-lane stores
    run0 = np.full(P, -1, np.int32)
    if bo:
        for k in range(P):
            rows = outch[k * GM:(k + 1) * GM]
            c0 = rows[0]
            want = c0 + np.arange(GM)
            if c0 >= 0 and c0 % L == 0 and np.all((rows == want) | ((rows < 0) & (want >= M))):
                run0[k] = c0

    def cofs(c: int) -> int:  # channel c of a column, from its first channel
        return (c // b) * BS + c % b

    xbuf = "xp" if copy else "xf"
    oplane = OD * OH * OW
    MB = -(-M // bo) if bo else M
    lo, hi = (f"cp[k * {NS + 1} + sc]", f"cp[k * {NS + 1} + sc + 1]") if NS > 1 else ("indptr[k]", "indptr[k + 1]")

    def columns(I: str, h: int, w: int) -> list[str]:
        """The kept columns of row block k into the accumulators of an h x w tile."""
        lines = [f"{I}for b_ in range({lo}, {hi}):", f"{I}    xo: T.let = xt + off[b_]"]
        for c in range(GN):
            for i in range(VM):
                lines.append(f"{I}    w{c}_{i}: T.let = wk[T.Ramp((b_ * {GN} + {c}) * {GM} + {i * L}, 1, {L})]")
            for p in range(h * w):
                at = cofs(c) + ((p // w) * sh * Wp + (p % w) * sw) * b
                x = f"T.Broadcast({xbuf}[xo + {at}], {L})"
                for i in range(VM):
                    lines.append(f"{I}    acc[{p}, T.Ramp({i * L}, 1, {L})] = acc[{p}, T.Ramp({i * L}, 1, {L})] "
                                 f"+ w{c}_{i} * {x}")
        return lines

    def write_back(I: str, h: int, w: int) -> list[str]:
        """Row block k's h x w tile of outputs: bias, residual, activation, stores."""
        def ypos(p: int) -> str:  # position p of the tile in its output plane
            return f"yp + {(p // w) * OW + p % w}"
        wb = []
        if (run0 >= 0).any():
            wb += [f"{I}c0: T.let = run0[k]", f"{I}if c0 >= 0:"]
            for i in range(VM):
                J = I + "    "
                if P * GM > MB * bo:  # a filter vector may lie wholly past the last output block
                    wb.append(f"{J}if c0 + {i * L} < {MB * bo}:")
                    J += "    "
                wb.append(f"{J}yb{i}: T.let = (n * {MB} + c0 // {bo} + {i}) * {oplane * bo}")
                if has_bias:
                    wb.append(f"{J}bv{i}: T.let = bias_r[T.Ramp(k * {GM} + {i * L}, 1, {L})]")
                for p in range(h * w):
                    e = f"acc[{p}, T.Ramp({i * L}, 1, {L})]"
                    if has_bias:
                        e = f"{e} + bv{i}"
                    at = f"yb{i} + ({ypos(p)}) * {bo}"
                    if has_res:
                        e = f"{e} + rf[T.Ramp({at}, 1, {L})]"
                    wb.append(f"{J}v{i}_{p}: T.let = {e}")
                    val = _activation(f"v{i}_{p}", a.act, tuple(a.act_params), L)
                    if M % L:
                        val = (f"T.Select(T.Ramp(c0 + {i * L}, 1, {L}) < T.Broadcast({M}, {L}), {val}, "
                               f"T.Broadcast(T.float32(0), {L}))")
                    wb.append(f"{J}yf[T.Ramp({at}, 1, {L})] = {val}")
            wb.append(f"{I}else:")
            I = I + "    "
        # lane by lane: row i of the block is channel outch[k * GM + i] (all unrolled: acc stays in registers)
        for i in range(GM):
            wb += [f"{I}oc{i}: T.let = outch[k * {GM} + {i}]", f"{I}if oc{i} >= 0:"]
            J = I + "    "
            if bo:
                wb.append(f"{J}ys{i}: T.let = (n * {MB} + oc{i} // {bo}) * {oplane * bo} + oc{i} % {bo}")
            else:
                wb.append(f"{J}ys{i}: T.let = (n * {M} + oc{i}) * {oplane}")
            for p in range(h * w):
                at = f"ys{i} + ({ypos(p)}) * {bo or 1}"
                e = f"acc[{p}, {i}]"
                if has_bias:
                    e = f"{e} + bias_r[k * {GM} + {i}]"
                if has_res:
                    e = f"{e} + rf[{at}]"
                wb.append(f"{J}s{i}_{p}: T.let = {e}")
                wb.append(f"{J}yf[{at}] = {_activation(f's{i}_{p}', a.act, tuple(a.act_params), 1)}")
        return wb

    def each_vector(I: str, n: int, fmt: str) -> list[str]:
        return [I + fmt.format(a=f"acc[{p}, T.Ramp({i * L}, 1, {L})]", e=(p * VM + i) * L)
                for p in range(n) for i in range(VM)]

    def tile_loop(I: str, h: int, w: int) -> list[str]:
        """Every row block of the unit over an h x w tile."""
        n = h * w
        zero = "{a} = T.Broadcast(T.float32(0), %d)" % L
        if NS == 1:
            return ([f"{I}for kk in range(bounds[ch], bounds[ch + 1]):", f"{I}    k: T.let = order[kk]"]
                    + each_vector(I + "    ", n, zero) + columns(I + "    ", h, w) + write_back(I + "    ", h, w))
        # the reduction split into chunks of QS channel blocks: every row block runs through one chunk's columns
        # before the next chunk, so that the tile's input window of one chunk stays in L1; each row block's
        # accumulators are parked in between
        J = I + "        "
        return ([f"{I}for sc in range({NS}):", f"{I}    for kk in range(bounds[ch], bounds[ch + 1]):",
                 f"{J}k: T.let = order[kk]", f"{J}pk: T.let = (kk - bounds[ch]) * {TT * GM}", f"{J}if sc == 0:"]
                + each_vector(J + "    ", n, zero) + [f"{J}else:"]
                + each_vector(J + "    ", n, "{a} = park[T.Ramp(pk + {e}, 1, %d)]" % L)
                + columns(J, h, w) + [f"{J}if sc < {NS - 1}:"]
                + each_vector(J + "    ", n, "park[T.Ramp(pk + {e}, 1, %d)] = {a}" % L) + [f"{J}else:"]
                + write_back(J + "    ", h, w))

    # full tiles, and the shorter last ones of a row (tw_last) and of a column (th_last)
    variants = [(th, tw, "ht < {} and wt < {}".format(HT - 1, WT - 1))]
    if tw_last != tw:
        variants.append((th, tw_last, f"ht < {HT - 1}"))
    if th_last != th:
        variants.append((th_last, tw, f"wt < {WT - 1}"))
    if th_last != th and tw_last != tw:
        variants.append((th_last, tw_last, "True"))
    body = []
    I = " " * 8
    if NS > 1:
        RB = max(chunk_sizes(P, CH))
        body.append(f'{I}park = T.decl_buffer(({RB * TT * GM},), "float32", scope="local")')
    if len(variants) == 1:
        body += tile_loop(I, th, tw)
    else:
        variants[0] = (th, tw, " and ".join(c for c, full in ((f"ht < {HT - 1}", th_last != th),
                                                             (f"wt < {WT - 1}", tw_last != tw)) if full))
        for j, (h, w, cond) in enumerate(variants):
            last = j == len(variants) - 1
            body.append(f"{I}{'if' if j == 0 else 'else' if last else 'elif'}{'' if last else ' ' + cond}:")
            body += tile_loop(I + "    ", h, w)
    body = "\n".join(body)

    # the padded, channel-blocked copy of the input: rows (n, channel block, depth, row) of Wp x b floats
    pad_stage = ""
    if copy:
        rows = N * CBp * Dp * Hp
        if bi:
            src = (f"xf[(((n * {CB} + cb) * {D} + dq - {pb[0]}) * {H} + hq - {pb[1]}) * {W * b} "
                   f"+ T.max(T.min(wq - {pb[2]}, {W - 1}), 0) * {b} + ci]")
            ok_c = f"cb < {CB}"
            cond_lane = f"wq >= {pb[2]} and wq < {pb[2] + W}"
        else:  # plain NC(D)HW input: a position's b channels gathered (the copy is made blocked)
            src = (f"xf[((n * {C} + T.min(cb * {b} + ci, {C - 1})) * {D} + dq - {pb[0]}) * {H * W} "
                   f"+ (hq - {pb[1]}) * {W} + T.max(T.min(wq - {pb[2]}, {W - 1}), 0)]")
            ok_c = "True"
            cond_lane = f"wq >= {pb[2]} and wq < {pb[2] + W} and cb * {b} + ci < {C}"
        pad_stage = (
            f"    for rw in T.parallel({rows}):\n"
            f"        n: T.let = rw // {CBp * Dp * Hp}\n        cb: T.let = rw // {Dp * Hp} % {CBp}\n"
            f"        dq: T.let = rw // {Hp} % {Dp}\n        hq: T.let = rw % {Hp}\n"
            f"        if {ok_c} and dq >= {pb[0]} and dq < {pb[0] + D} and hq >= {pb[1]} and hq < {pb[1] + H}:\n"
            f"            for wq in range({Wp}):\n"
            f"                for ci in T.vectorized({b}):\n"
            f"                    xp[(rw * {Wp} + wq) * {b} + ci] = T.if_then_else({cond_lane}, {src}, "
            f"T.float32(0))\n"
            f"        else:\n"
            f"            for e in T.vectorized({Wp * b}):\n"
            f"                xp[rw * {Wp * b} + e] = T.float32(0)\n")
    tail = ""
    if bo and M % bo:  # a blocked output's channels past M are zeros (the layout's contract)
        tail = (f"    for e in T.parallel({N * oplane}):\n        for c in range({M % bo}, {bo}):\n"
                f"            yf[((e // {oplane} * {MB} + {MB - 1}) * {oplane} + e % {oplane}) * {bo} + c] = "
                f"T.float32(0)\n")

    params = [f"x: T.Buffer({tuple(node.inputs[0].type.shape)}, \"float32\")",
              f"wk: T.Buffer(({wk.size},), \"float32\")", f"off: T.Buffer(({off.size},), \"int32\")",
              f"indptr: T.Buffer(({P + 1},), \"int32\")", f"order: T.Buffer(({P},), \"int32\")",
              f"bounds: T.Buffer(({CH + 1},), \"int32\")", f"outch: T.Buffer(({P * GM},), \"int32\")"]
    args = [node.inputs[0], wk, off, indptr, order, bounds, outch]
    if (run0 >= 0).any():
        params.append(f"run0: T.Buffer(({P},), \"int32\")")
        args.append(run0)
    if NS > 1:
        params.append(f"cp: T.Buffer(({cp.size},), \"int32\")")
        args.append(cp)
    if has_bias:
        params.append(f"bias_r: T.Buffer(({P * GM},), \"float32\")")
        args.append(bias_r)
    if has_res:
        params.append(f"res: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
        args.append(node.inputs[-1])
    params.append(f"y: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    ysize = int(np.prod(node.output.type.shape))
    xsize = int(np.prod(node.inputs[0].type.shape))
    res_alias = f'    rf = T.decl_buffer(({ysize},), "float32", data=res.data)\n' if has_res else ""
    xp_decl = f'    xp = T.alloc_buffer(({total},), "float32")\n' if copy else ""
    src = f'''
@T.prim_func
def main({", ".join(params)}):
    T.func_attr({{"tirx.noalias": True, "global_symbol": "main"}})
    yf = T.decl_buffer(({ysize},), "float32", data=y.data)
    xf = T.decl_buffer(({xsize},), "float32", data=x.data)
{res_alias}{xp_decl}{pad_stage}{tail}    for t in T.parallel({units * CH}):
        n: T.let = t // {OD * HT * WT * CH}
        od: T.let = t // {HT * WT * CH} % {OD}
        ht: T.let = t // {WT * CH} % {HT}
        wt: T.let = t // {CH} % {WT}
        ch: T.let = t % {CH}
        xt: T.let = n * {CBp * BS} + ((od * {sd} * {Hp} + ht * {th * sh}) * {Wp} + wt * {tw * sw}) * {b}
        yp: T.let = od * {OH * OW} + ht * {th * OW} + wt * {tw}
        acc = T.decl_buffer(({TT}, {GM}), "float32", scope="local")
{body}
'''
    try:
        func = tvm.script.from_source(src)
    except Exception as e:  # a generator bug, not a user error: keep the source for the report
        raise BuildError(f"sparse_conv3d (direct) kernel generation failed for {node}: {e}\n{src}") from None
    dens = sum(a.kept) / max(1, P * -(-C // GN) * S)
    layout = f"{'b' if bi else 'p'}->{'b' if bo else 'p'}"
    knobs = "".join(f", {k}={n}" for k, n in (("chunks", CH), ("split", NS)) if n > 1)
    impl = (f"sparse_conv3d.direct({a.sparsity or 'kgs'}, {layout}, group={GM}x{GN}, kept={dens:.0%}, "
            f"tile={th}x{tw}x{GM}{knobs})")
    return Kernel(func, args, impl)
