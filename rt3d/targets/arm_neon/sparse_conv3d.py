"""Sparse conv3d over a KGS-packed weight (rt3d.ir.sparsity.Packed) for SIMD CPUs: KGS, Vanilla and Filter.

The kernel is generated as TIR (TVMScript) because its reduction bounds are data-dependent: row block k runs over
its own kept columns ``indptr[k] .. indptr[k+1]``. Layout and loop nest (the recipe measured in TVM-NOTES.md):
  * the input is zero-padded once into a flat buffer [N, C (rounded up to gN), D', H', W'];
  * output positions are vectorized ``lanes`` at a time along the flattened padded volume j = (d*H' + h)*W' + w
    when the conv has unit stride (so each kernel position (kd, kh, kw) is a constant shift of a contiguous run),
    along each padded plane when only the depth stride is > 1, and along output rows (strided loads) otherwise;
  * register tile: the gM filters of a row block x V vectors of positions (24 accumulators for 8 filters);
  * per kept column: one int32 input offset (channel block, kd, kh, kw), then gN channels x gM filters x V vectors
    of FMAs with the weights broadcast from the packed [kept, gN, gM] array;
  * loop nest: parallel over (n, position tile[, row-block chunk]) -> row blocks in the order chosen by
    reorder-kernel-groups -> kept columns -> channel -> filter -> vector;
  * the write-back applies bias, residual and activation and stores row r into output channel perm[r]; positions
    that fall on padding (the flattened layout computes a few) are dropped. Where each vector of a position tile
    lands is computed once per tile, not per row block and filter.
Layouts: input and output are NC(D)HW or channel-blocked NC(D)HW{b}c (in_block / out_block, set by block-layout so
that sparse layers sit between blocked dense convs and pools without layout conversions). A blocked input is read by
the padding stage, which makes the same flat padded copy of it; a blocked output is written per position as one
vector of a row block's gM channels when they are consecutive channels of one block (the tile transposed in registers
with shuffles; 3-4 % of a layer's time over stores of stride b), otherwise with stores of stride b (one channel,
consecutive positions); vectors that straddle padding go lane by lane from the tile's position table, and the
channels past M of the last block are written as zeros. NC(D)HW outputs use masked vector stores instead. Measured
on the whole models (bench/peer_benchmark.py): R(2+1)D-18 KGS 225 -> 184 ms, S3D 134 -> 123 ms, which spent that time on
conversions and on pooling plain tensors.
Every scalar the kernel names is a ``T.let`` (an SSA value): a plain ``x = ...`` in TVMScript is a mutable binding
that TVM 0.27 lowers to a workspace allocation, so each use was a memory load and each column's input base was
recomputed from the index array three times (measured on a C3D layer: 0.56 -> 0.64 of the dense kernel's GFLOP/s).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import textwrap
from dataclasses import dataclass

import numpy as np
import tvm

from ...errors import BuildError
from ...ir import Node
from ...ir.interpreter import node_out_spatial
from ...ir.ops import logical_shape
from ...ir.sparsity import chunk_sizes
from ..base import Kernel
from .common import spatial_5d, to_5d

REGISTER_TILE = 24  # accumulators (vector registers) of the micro-kernel; AVX-512 and NEON both have 32
COLUMN_BODY = 96  # FMAs of one kept column (gN x gM x V), unrolled: beyond this LLVM's code for it got 2x slower
# (8x8 groups with V=3 against V=1, measured with `rt3d tune` on a 128->256 C3D layer)


def _choose_v(gm: int, lanes: int, positions: int, gn: int = 4) -> int:
    """Vectors per register tile: as many as fit next to gm filters and keep the unrolled column body short,
    fewer when the positions are few."""
    vmax = max(1, min(REGISTER_TILE // gm, COLUMN_BODY // (gm * gn)))
    best, best_cost = 1, None
    for v in range(1, vmax + 1):
        tiles = -(-positions // (lanes * v))
        # computed positions, with a penalty for short tiles (fewer FMAs per loaded input vector)
        cost = tiles * lanes * v * (1 + 0.5 / v)
        if best_cost is None or cost < best_cost - 1e-9:
            best, best_cost = v, cost
    return best


@dataclass(frozen=True)
class SparseTile:
    """Schedule record of the sparse kernel: v position vectors per register tile (gM x v accumulators) and the
    number of row-block chunks the threads split (1: threads split the positions only)."""

    v: int
    chunks: int = 1


@dataclass(frozen=True)
class SparsePlan:
    mode: str  # flat3 (unit stride), flat2 (depth stride only) or rows (spatial stride)
    positions: int  # positions along the vectorized dimension
    outer: int  # batch x planes (flat2) or x rows (rows): what the position tiles repeat over
    default: SparseTile

    def units(self, lanes: int, v: int) -> int:
        """Parallel units before row-block chunking: outer x position tiles of lanes x v."""
        return self.outer * -(-self.positions // (lanes * v))


def _shapes(node: Node) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(spatial rank, the input's logical N, C, D, H, W, the output's OD, OH, OW), whatever the layouts."""
    a = node.attrs
    xl = logical_shape(node.inputs[0].type, a.in_block)
    return len(xl) - 2, to_5d(xl), to_5d((0, 0) + tuple(node_out_spatial(node, a.out_block)))[2:]


def sparse_plan(node: Node, lanes: int, cores: int) -> SparsePlan:
    """Geometry of the kernel and the heuristic's tile (the default of the tuning space)."""
    a = node.attrs
    r, (N, C, D, H, W), (OD, OH, OW) = _shapes(node)
    sd, sh, sw = spatial_5d(a.stride, 1, r)
    pb = spatial_5d(a.pad[:r], 0, r)
    pe = spatial_5d(a.pad[r:], 0, r)
    Hp, Wp = H + pb[1] + pe[1], W + pb[2] + pe[2]
    GM = a.group[0]
    if sh == 1 and sw == 1:
        mode = "flat3" if sd == 1 else "flat2"
        J = ((OD - 1) * Hp * Wp if mode == "flat3" else 0) + (OH - 1) * Wp + OW
        outer = N if mode == "flat3" else N * OD
    else:
        mode, J, outer = "rows", OW, N * OD * OH
    V = _choose_v(GM, lanes, J, a.group[1])
    plan = SparsePlan(mode, J, outer, SparseTile(V))
    P = len(a.kept)
    ch = min(cores, P) if plan.units(lanes, V) < 4 * cores else 1
    return dataclasses.replace(plan, default=SparseTile(V, max(1, ch)))


def sparse_workload_key(node: Node) -> str:
    """Tuning records of a sparse layer are about its shapes and its kept pattern (which sets the work)."""
    a = node.attrs
    h = hashlib.sha1()
    h.update(json.dumps({"op": node.op, "x": node.inputs[0].type.shape, "y": node.output.type.shape,
                         "stride": a.stride, "pad": a.pad, "dilation": a.dilation, "kernel": a.kernel,
                         "group": a.group, "kept": a.kept, "order": a.order}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(node.inputs[2].data).tobytes())
    return "sparse_conv3d-" + h.hexdigest()[:12]


def _activation(expr: str, act: str, params: tuple, lanes: int) -> str:
    """The activation applied to ``expr``, a vector of ``lanes`` float32 (a scalar for lanes=1)."""
    def b(x):
        return f"T.Broadcast(T.float32({float(x)!r}), {lanes})" if lanes > 1 else f"T.float32({float(x)!r})"
    if act == "relu":
        return f"T.max({expr}, {b(0)})"
    if act == "clip":
        lo, hi = params
        if np.isfinite(lo):
            expr = f"T.max({expr}, {b(lo)})"
        if np.isfinite(hi):
            expr = f"T.min({expr}, {b(hi)})"
        return expr
    if act == "leaky_relu":
        return f"T.Select({expr} >= {b(0)}, {expr}, {expr} * {b(params[0])})"
    if act == "sigmoid":
        return f"T.sigmoid({expr})"
    return expr


def lower_sparse_conv3d(node: Node, target) -> Kernel:
    a = node.attrs
    x = node.inputs[0]
    if x.type.dtype != "float32":
        raise BuildError(f"sparse_conv3d supports float32 only, got {x.type.dtype}: {node}")
    values, cols = node.inputs[1].data, node.inputs[2].data
    if values is None or cols is None:
        raise BuildError(f"sparse_conv3d needs its packed weights as constants with data: {node}")
    has_res = a.residual
    has_bias = len(node.inputs) - 3 - int(has_res) == 1
    if has_res and node.inputs[-1].type.shape != node.output.type.shape:
        raise BuildError(f"sparse_conv3d residual {node.inputs[-1].type} must have the output's shape: {node}")
    L = target.vector_lanes
    bi, bo = a.in_block, a.out_block
    r, (N, C, D, H, W), (OD, OH, OW) = _shapes(node)
    KD, KH, KW = spatial_5d(a.kernel, 1, r)
    sd, sh, sw = spatial_5d(a.stride, 1, r)
    dd, dh, dw = spatial_5d(a.dilation, 1, r)
    pb = spatial_5d(a.pad[:r], 0, r)
    pe = spatial_5d(a.pad[r:], 0, r)
    M = a.filters
    Mb = -(-M // bo) if bo else M  # output channel blocks (blocked) or channels
    GM, GN = a.group
    P = len(a.kept)
    Cp = -(-C // GN) * GN
    Dp, Hp, Wp = D + pb[0] + pe[0], H + pb[1] + pe[1], W + pb[2] + pe[2]
    plane, S = Hp * Wp, KD * KH * KW
    cs, xs = Dp * plane, Cp * Dp * plane
    oplane = OH * OW

    plan = sparse_plan(node, L, target.num_cores)
    mode, J = plan.mode, plan.positions
    tile = target.tuned.get(sparse_workload_key(node)) or plan.default
    V, CH = tile.v, min(max(1, tile.chunks), max(1, P))
    TJ = L * V
    JT = -(-J // TJ)
    units = plan.units(L, V)
    # build-time arrays: input offset of every kept column, row pointers, order, chunk bounds, output channels
    q, s = cols // S, cols % S
    kd, kh, kw = s // (KH * KW), (s // KW) % KH, s % KW
    off = (q * GN * cs + kd * dd * plane + kh * dh * Wp + kw * dw).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(a.kept)]).astype(np.int32)
    order = np.asarray(a.order if a.order else range(P), dtype=np.int32)
    bounds = np.concatenate([[0], np.cumsum(chunk_sizes(P, CH))]).astype(np.int32)
    outch = np.asarray(a.perm if a.perm else list(range(M)) + [-1] * (P * GM - M), dtype=np.int32)
    wk = values.reshape(-1).astype(np.float32) if values.size else np.zeros(GN * GM, np.float32)
    off = off if off.size else np.zeros(1, np.int32)

    # the input tile: base index of the tile's first position, and the stride between positions
    if mode == "flat3":
        base = f"n * {xs} + jt * {TJ}"
        max_base = (N - 1) * xs + (JT - 1) * TJ
    elif mode == "flat2":
        base = f"n * {xs} + od * {sd * plane} + jt * {TJ}"
        max_base = (N - 1) * xs + (OD - 1) * sd * plane + (JT - 1) * TJ
    else:
        base = f"n * {xs} + od * {sd * plane} + oh * {sh * Wp} + jt * {TJ * sw}"
        max_base = (N - 1) * xs + (OD - 1) * sd * plane + (OH - 1) * sh * Wp + (JT - 1) * TJ * sw
    pstep = 1 if mode != "rows" else sw
    max_read = max_base + (TJ - 1) * pstep + (Cp - 1) * cs + (KD - 1) * dd * plane + (KH - 1) * dh * Wp + (KW - 1) * dw
    total = max(N * xs, max_read + 1)
    slack = total - N * xs

    if mode == "flat3":
        decode = f"n: T.let = t // {JT * CH}\n        jt: T.let = t // {CH} % {JT}\n        ch: T.let = t % {CH}"
    elif mode == "flat2":
        decode = f"n: T.let = t // {OD * JT * CH}\n        od: T.let = t // {JT * CH} % {OD}\n        jt: T.let = t // {CH} % {JT}\n        ch: T.let = t % {CH}"
    else:
        decode = (f"n: T.let = t // {OD * OH * JT * CH}\n        od: T.let = t // {OH * JT * CH} % {OD}\n"
                  f"        oh: T.let = t // {JT * CH} % {OH}\n        jt: T.let = t // {CH} % {JT}\n        ch: T.let = t % {CH}")

    x_index = ("xn", "xc") + ("xd", "xh", "xw")[3 - r:] + (("xci",) if bi else ())
    ostep = bo or 1  # distance between consecutive positions of one channel in the output

    def value(vo: int, idx: str, mask: str | None) -> str:
        """Vector vo of filter row i after the epilogue's bias and residual."""
        e = f"acc[i, T.Ramp({vo * L}, 1, {L})]"
        if has_bias:
            e = f"({e} + T.Broadcast(bias[oc], {L}))"
        if has_res:
            if mask is None:
                e = f"({e} + rf[T.Ramp({idx}, {ostep}, {L})])"
            else:
                e = (f"({e} + T.call_llvm_intrin(\"float32x{L}\", \"llvm.masked.load\", "
                     f"rf.access_ptr(\"r\", offset={idx}), {mask}, T.Broadcast(T.float32(0), {L})))")
        return e

    def store(ind: str, idx: str, mask: str | None, vo: int) -> list[str]:
        """Lines (at indentation ``ind``) storing vector vo of filter row i at flat output index idx."""
        v = value(vo, idx, mask)
        name = f"val_{len(wb)}"
        act = _activation(name, a.act, tuple(a.act_params), L)
        lines = [f"{ind}{name}: T.let = {v}"]
        if mask is None:
            lines.append(f"{ind}yf[T.Ramp({idx}, {ostep}, {L})] = {act}")
        else:
            lines.append(f"{ind}T.evaluate(T.call_llvm_intrin(\"void\", \"llvm.masked.store\", {act}, "
                         f"yf.access_ptr(\"w\", offset={idx}), {mask}))")
        return lines

    def store_lanes(ind: str, vo: int) -> list[str]:
        """Lines storing the lanes of vector vo of filter row i that land on an output position, one at a time
        (blocked output: the tile's position table says where each lane goes, -1 for none)."""
        e = f"acc[i, {vo * L} + l]"
        if has_bias:
            e = f"({e} + bias[oc])"
        if has_res:
            e = f"({e} + rf[ybase + p_ * {bo}])"
        return [f"{ind}for l in range({L}):",
                f"{ind}    p_: T.let = pos[{vo * L} + l]",
                f"{ind}    if p_ >= 0:",
                f"{ind}        s_: T.let = {e}",
                f"{ind}        yf[ybase + p_ * {bo}] = {_activation('s_', a.act, tuple(a.act_params), 1)}"]

    wb: list[str] = []  # per filter row, after the reduction
    fast: list[str] = []  # per row block of consecutive channels (blocked output), after the reduction
    run0 = np.full(P, -1, np.int32)
    tl: list[str] = []  # per position tile: where each vector lands (the same for every row block and filter)
    I8, T8 = " " * 20, " " * 8
    if bo:
        # blocked output: position p of channel oc is element ((n * Mb + oc // b) * positions + p) * b + oc % b, so
        # a vector of consecutive positions is a store with stride b; a vector that is not all on output positions
        # stores its lanes one by one from the tile's position table
        tl.append(f"{T8}pos = T.decl_buffer(({TJ},), \"int32\", scope=\"local\")")
        tl.append(f"{T8}for l in range({TJ}):")
        if mode in ("flat3", "flat2"):
            tl.append(f"{T8}    jl: T.let = jt * {TJ} + l")
            tl.append(f"{T8}    rl: T.let = jl // {Wp}")
            tl.append(f"{T8}    cl: T.let = jl - rl * {Wp}")
            ok = (f"cl < {OW} and rl % {Hp} < {OH} and rl // {Hp} < {OD}" if mode == "flat3"
                  else f"cl < {OW} and rl < {OH}")
            at = (f"rl // {Hp} * {oplane} + rl % {Hp} * {OW} + cl" if mode == "flat3"
                  else f"od * {oplane} + rl * {OW} + cl")
        else:
            tl.append(f"{T8}    cl: T.let = jt * {TJ} + l")
            ok, at = f"cl < {OW}", f"od * {oplane} + oh * {OW} + cl"
        tl.append(f"{T8}    pos[l] = T.if_then_else({ok}, {at}, -1)")
        for vo in range(V):
            first, last = f"pos[{vo * L}]", f"pos[{vo * L + L - 1}]"
            tl.append(f"{T8}full_{vo}: T.let = {first} >= 0 and {last} == {first} + {L - 1}")
            wb.append(f"{I8}if full_{vo}:")
            wb += store(I8 + "    ", f"ybase + pos[{vo * L}] * {bo}", None, vo)
            wb.append(f"{I8}else:")
            wb += store_lanes(I8 + "    ", vo)
        # a row block whose rows are GM consecutive channels of one output block (the usual case: the permutation
        # moves whole row blocks) stores each position's GM channels as one vector: the tile is transposed in
        # registers (shuffles) instead of being stored lane by lane with stride b. run0[k]: its first channel or -1.
        if 2 <= GM <= bo:
            for k in range(P):
                rows = outch[k * GM:(k + 1) * GM]
                if rows[0] >= 0 and rows[0] % bo + GM <= bo and (rows == rows[0] + np.arange(GM)).all():
                    run0[k] = rows[0]
        if (run0 >= 0).any():
            I4 = " " * 16
            fast.append(f"{I4}yb0: T.let = (n * {Mb} + c0 // {bo}) * {OD * oplane * bo} + c0 % {bo}")
            for vo in range(V):
                fast.append(f"{I4}if full_{vo}:")
                for q in range(GM):
                    t = f"acc[{q}, T.Ramp({vo * L}, 1, {L})]"
                    t = f"{t} + T.Broadcast(bias[c0 + {q}], {L})" if has_bias else t
                    fast.append(f"{I4}    t{q}: T.let = {t}")
                rows = ", ".join(f"t{q}" for q in range(GM))
                for ln in range(L):  # lane ln of every row: the GM channels of one position
                    at = f"yb0 + (pos[{vo * L}] + {ln}) * {bo}"
                    u = f"T.Shuffle([{rows}], [{', '.join(str(ln + L * q) for q in range(GM))}])"
                    if has_res:
                        u = f"{u} + rf[T.Ramp({at}, 1, {GM})]"
                    fast.append(f"{I4}    u{ln}: T.let = {u}")
                    act = _activation(f"u{ln}", a.act, tuple(a.act_params), GM)
                    fast.append(f"{I4}    yf[T.Ramp({at}, 1, {GM})] = {act}")
                fast.append(f"{I4}else:")
                fast.append(f"{I4}    for i in range({GM}):")
                fast.append(f"{I4}        oc: T.let = c0 + i")
                fast.append(f"{I4}        ybase: T.let = {{ybase}}")
                fast += store_lanes(I4 + "        ", vo)
    elif mode in ("flat3", "flat2"):
        # padded row R of the flattened volume holds output row R % H' of depth R // H' (flat3) or row R (flat2)
        def row_ok(R):
            return f"{R} % {Hp} < {OH} and {R} // {Hp} < {OD}" if mode == "flat3" else f"{R} < {OH}"

        def out_idx(R, col):
            if mode == "flat3":
                return f"{R} // {Hp} * {oplane} + {R} % {Hp} * {OW} + {col}"
            return f"od * {oplane} + {R} * {OW} + {col}"

        nseg = 1 + -(-(L - 1) // Wp)  # padded rows one vector can touch
        for vo in range(V):
            tl.append(f"{T8}j0_{vo}: T.let = jt * {TJ} + {vo * L}")
            tl.append(f"{T8}r0_{vo}: T.let = j0_{vo} // {Wp}")
            tl.append(f"{T8}c0_{vo}: T.let = j0_{vo} - r0_{vo} * {Wp}")
            tl.append(f"{T8}full_{vo}: T.let = c0_{vo} + {L} <= {OW} and {row_ok(f'r0_{vo}')}")
            tl.append(f"{T8}o_{vo}: T.let = {out_idx(f'r0_{vo}', f'c0_{vo}')}")
            wb.append(f"{I8}if full_{vo}:")
            wb += store(I8 + "    ", f"ybase + o_{vo}", None, vo)
            wb.append(f"{I8}else:")
            for seg in range(nseg):
                R = f"(r0_{vo} + {seg})"
                sh_ = f"(j0_{vo} - {R} * {Wp})"
                mask = f"T.Ramp({sh_}, 1, {L}) >= T.Broadcast(0, {L}) and T.Ramp({sh_}, 1, {L}) < T.Broadcast({OW}, {L})"
                wb.append(f"{I8}    if {row_ok(R)}:")
                wb += store(I8 + "        ", f"ybase + {out_idx(R, sh_)}", f"({mask})", vo)
    else:
        for vo in range(V):
            tl.append(f"{T8}ow_{vo}: T.let = jt * {TJ} + {vo * L}")
            tl.append(f"{T8}o_{vo}: T.let = od * {oplane} + oh * {OW} + ow_{vo}")
            idx = f"ybase + o_{vo}"
            wb.append(f"{I8}if ow_{vo} + {L} <= {OW}:")
            wb += store(I8 + "    ", idx, None, vo)
            wb.append(f"{I8}elif ow_{vo} < {OW}:")
            wb += store(I8 + "    ", idx, f"(T.Ramp(ow_{vo}, 1, {L}) < T.Broadcast({OW}, {L}))", vo)

    params = [f"x: T.Buffer({tuple(x.type.shape)}, \"float32\")",
              f"wk: T.Buffer(({wk.size},), \"float32\")", f"off: T.Buffer(({off.size},), \"int32\")",
              f"indptr: T.Buffer(({P + 1},), \"int32\")", f"order: T.Buffer(({P},), \"int32\")",
              f"bounds: T.Buffer(({CH + 1},), \"int32\")", f"outch: T.Buffer(({P * GM},), \"int32\")"]
    if fast:
        params.append(f"run0: T.Buffer(({P},), \"int32\")")
    if has_bias:
        params.append(f"bias: T.Buffer(({M},), \"float32\")")
    if has_res:
        params.append(f"res: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    params.append(f"y: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    ysize = int(np.prod(node.output.type.shape))
    # the padded input row (n, c, d', h') as a vector over w'
    # (inlined, not let-bound: a let inside a vectorized loop would be evaluated for lane 0 only)
    xc, dq = f"(rw // {Dp} % {Cp})", f"(rw % {Dp})"
    cc = f"T.min({xc}, {C - 1})"
    sub = {"xn": f"rw // {Cp * Dp}", "xc": f"{cc} // {bi}" if bi else cc, "xci": f"{cc} % {bi}",
           "xd": f"T.max(T.min({dq} - {pb[0]}, {D - 1}), 0)",
           "xh": f"T.max(T.min(hp - {pb[1]}, {H - 1}), 0)", "xw": f"T.max(T.min(wp - {pb[2]}, {W - 1}), 0)"}
    in_range = " and ".join([f"{xc} < {C}", f"{dq} >= {pb[0]}", f"{dq} < {pb[0] + D}",
                             f"hp >= {pb[1]}", f"hp < {pb[1] + H}", f"wp >= {pb[2]}", f"wp < {pb[2] + W}"])
    res_alias = f'    rf = T.decl_buffer(({ysize},), "float32", data=res.data)' if has_res else ""
    wb_text = "\n".join(wb)
    osp = OD * oplane
    ybase = f"(n * {Mb} + oc // {bo}) * {osp * bo} + oc % {bo}" if bo else f"(n * {M} + oc) * {osp}"
    rowwise = (f"            for i in range({GM}):\n                oc: T.let = outch[k * {GM} + i]\n"
               f"                if oc >= 0:\n                    ybase: T.let = {ybase}\n{wb_text}")
    if fast:
        write_back = (f"            c0: T.let = run0[k]\n            if c0 >= 0:\n"
                      + "\n".join(fast).replace("{ybase}", ybase) + "\n            else:\n"
                      + textwrap.indent(rowwise, "    "))
    else:
        write_back = rowwise
    # a blocked output's channels past M are zeros (the layout's contract); no row block writes them
    tail = (f"    for e in T.parallel({N * osp}):\n        for c in range({M % bo}, {bo}):\n"
            f"            yf[((e // {osp} * {Mb} + {Mb - 1}) * {osp} + e % {osp}) * {bo} + c] = T.float32(0)\n"
            if bo and M % bo else "")
    tile_text = "\n".join(tl)
    x_load = ", ".join(sub[k] for k in x_index)
    zero_slack = (f"    for e in range({slack}):\n        xp[{N * xs} + e] = T.float32(0)\n" if slack > 0 else "")
    src = f'''
@T.prim_func
def main({", ".join(params)}):
    T.func_attr({{"tirx.noalias": True, "global_symbol": "main"}})
    yf = T.decl_buffer(({ysize},), "float32", data=y.data)
{res_alias}
    xp = T.alloc_buffer(({total},), "float32")
    for rw in T.parallel({N * Cp * Dp}):
        for hp in range({Hp}):
            for wp in T.vectorized({Wp}):
                xp[rw * {plane} + hp * {Wp} + wp] = T.if_then_else({in_range}, x[{x_load}], T.float32(0))
{zero_slack}{tail}    for t in T.parallel({units * CH}):
        {decode}
        acc = T.decl_buffer(({GM}, {TJ}), "float32", scope="local")
        xt: T.let = {base}
{tile_text}
        for kk in range(bounds[ch], bounds[ch + 1]):
            k: T.let = order[kk]
            for i in T.unroll({GM}):
                for v in T.vectorized({TJ}):
                    acc[i, v] = T.float32(0)
            for b in range(indptr[k], indptr[k + 1]):
                xo: T.let = xt + off[b]
                for c in T.unroll({GN}):
                    for i in T.unroll({GM}):
                        for vo in T.unroll({V}):
                            for vi in T.vectorized({L}):
                                acc[i, vo * {L} + vi] = acc[i, vo * {L} + vi] + wk[(b * {GN} + c) * {GM} + i] * xp[xo + c * {cs} + (vo * {L} + vi) * {pstep}]
{write_back}
'''
    try:
        func = tvm.script.from_source(src)
    except Exception as e:  # a generator bug, not a user error: keep the source for the report
        raise BuildError(f"sparse_conv3d kernel generation failed for {node}: {e}\n{src}") from None
    args = [x, wk, off, indptr, order, bounds, outch] + ([run0] if fast else [])
    if has_bias:
        args.append(node.inputs[3])
    if has_res:
        args.append(node.inputs[-1])
    dens = sum(a.kept) / max(1, P * -(-C // GN) * S)
    layout = f"{'b' if bi else 'p'}->{'b' if bo else 'p'}"
    impl = (f"sparse_conv3d.{mode}({a.sparsity or 'kgs'}, {layout}, group={GM}x{GN}, kept={dens:.0%}, "
            f"tile={GM}x{V}x{L}{', chunks=' + str(CH) if CH > 1 else ''})")
    return Kernel(func, args, impl)
