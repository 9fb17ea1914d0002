"""Passes that turn structured weight sparsity into less work (paper section 5).

detect-sparsity        annotate each conv3d and fully connected (dense) layer whose zeros follow a Filter / Vanilla /
                       KGS pattern (any ONNX model); a dense weight [N, K] is a conv weight without kernel positions.
eliminate-kgs-columns  replace an annotated conv3d by sparse_conv3d over a packed weight: for every row block of gM
                       filters only its kept (channel block, kernel position) columns, as a dense [kept, gN, gM]
                       array plus a column list, so the kernel's inner loop is a dense gM x gN x vector micro-kernel.
                       An annotated dense layer becomes a 2-D sparse_conv3d (columns: blocks of gN inputs), whose
                       kernel streams only the kept weights: at batch 1 the layer is bound by reading its weights
                       (C3D's fc6 and fc7 hold 200 MB in fp32).
fuse-sep-convs         make one sparse_sep_conv3d of a 1xkxk sparse conv and the kx1x1 sparse conv that alone reads
                       its output (R(2+1)D, S3D), where that output would not stay in cache: the fused kernel
                       computes the first conv's output for a position tile into the second one's depth ring.
reorder-kernel-groups  choose the filter permutation and the row-block order of each sparse_conv3d: filters with the
                       same kept pattern share row blocks (Filter pruning leaves whole blocks empty), row blocks are
                       dealt to thread chunks of equal work, and consecutive blocks share columns (input reuse).
                       The permutation is compensated in the kernel's output write (row r stores channel perm[r]),
                       so every consumer (next conv, residual add, concat, graph output) sees the original order.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..ir import Graph
from ..ir.ops import (SparseConvAttrs, filters_fill_vectors, sep_attrs, sep_first_windowed, sep_pair_problem,
                      spatially_pointwise)
from ..ir.sparsity import Packed, Sparsity, block_macs, chunk_sizes, detect, pack, unpack
from .base import Pass, PassReport, register_pass


def _pattern_perm(w: np.ndarray, group: tuple[int, int]) -> tuple[int, ...] | None:
    """Filters sorted by their kept (channel block, position) pattern, all-zero filters last; None if that is the
    identity."""
    m, n = w.shape[:2]
    gn = group[1]
    q = -(-n // gn)
    full = np.zeros((m, q * gn, int(np.prod(w.shape[2:]))), w.dtype)
    full[:, :n] = w.reshape(m, n, -1)
    pat = np.any(full.reshape(m, q, gn, -1) != 0, axis=2).reshape(m, -1)
    keys = [(not pat[f].any(), pat[f].tobytes()) for f in range(m)]
    perm = tuple(sorted(range(m), key=lambda f: keys[f]))
    return None if perm == tuple(range(m)) else perm


def best_packing(w: np.ndarray, group: tuple[int, int], perm: tuple[int, ...] = ()) -> tuple[Packed, int, str]:
    """The packing of ``w`` (with ``perm``, or with filters regrouped by pattern when that computes fewer MACs),
    its MACs per output position, and what was done."""
    s = int(np.prod(w.shape[2:]))
    packed = pack(w, group, perm)
    macs = block_macs(packed.cols, packed.kept, group, w.shape[0], w.shape[1], s)
    alt = _pattern_perm(w, group)
    if alt is not None and alt != perm:
        cand = pack(w, group, alt)
        cand_macs = block_macs(cand.cols, cand.kept, group, w.shape[0], w.shape[1], s)
        if cand_macs < macs:
            return cand, cand_macs, f"filters regrouped by pattern: {macs / max(cand_macs, 1):.2f}x fewer MACs"
    return packed, macs, "filter order kept"


def _no_spatial_reach(node) -> bool:
    """The sparse kernel's pw mode: each output position reads its own input position only."""
    kernel = node.attrs.kernel if node.op == "sparse_conv3d" else tuple(node.inputs[1].type.shape[2:])
    return spatially_pointwise(tuple(kernel), tuple(node.attrs.pad))


SPARSE_SOURCES = ("conv3d", "dense")  # the ops detect-sparsity annotates and eliminate-kgs-columns makes sparse


def _sparse_weight_ok(node) -> str:
    """Why a conv3d or dense layer cannot be made sparse ('' if it can)."""
    a = node.attrs
    if node.inputs[1].data is None:
        return "its weight is not a constant with data"
    if node.op == "dense":
        return "" if node.inputs[0].type.rank == 2 else f"its input {node.inputs[0].type} is not 2-D"
    if a.groups != 1:
        return f"groups={a.groups} (only groups=1 has a sparse kernel)"
    if a.in_block or a.out_block:
        return "it is already in a blocked layout (run before block-layout)"
    if a.pool:
        return "it has a fused pool (run before fuse-pool)"
    return ""


@register_pass
@dataclass(frozen=True)
class DetectSparsity(Pass):
    """Annotate conv3d and dense nodes with the scheme and group size their zero weights follow."""

    name: ClassVar[str] = "detect-sparsity"
    min_pruned: float = 0.1  # a layer with fewer zero weights than this is left dense

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        found = 0
        for node in graph:
            if node.op not in SPARSE_SOURCES or node.attrs.sparsity or _sparse_weight_ok(node):
                continue
            w = node.inputs[1].data
            sp = detect(w, min_pruned=self.min_pruned)
            if sp is None:
                continue
            node.attrs = replace(node.attrs, sparsity=str(sp))
            found += 1
            report.note(f"%{node.output.name}: {sp}, {np.mean(w == 0):.0%} of the weights are zero")
        report.note(f"{found} sparse layer(s) found")
        return graph


@register_pass
@dataclass(frozen=True)
class EliminateKgsColumns(Pass):
    """conv3d{sparsity=...} (or dense{sparsity=...}) -> sparse_conv3d over the packed kept columns."""

    name: ClassVar[str] = "eliminate-kgs-columns"
    max_density: float = 0.85  # above this share of kept MACs the dense kernel is faster: keep it
    filter_group: str = "8x4"  # packing group for Filter sparsity (which has no group of its own)
    cost_model: bool = True  # also keep layers the sparse kernel is predicted to run slower than dense
    lanes: int = 0  # the target's fp32 vector lanes (0: unknown), which decide the sparse kernel's mode

    @staticmethod
    def predicted_speedup(node, packed, density: float, lanes: int = 0, group: tuple[int, int] = (8, 4)) -> float:
        """Dense time / sparse time predicted from per-layer measurements (bench/results, and A/B runs of single
        layers): with a spatial kernel the sparse kernel reaches about 0.6-0.7 of the dense kernel's GFLOP/s when a
        row block keeps >= 64 columns, less in proportion below that (the tile's zeroing and write-back are paid per
        row block); spatially strided convs alike since they read phase planes (0.56 on R(2+1)D's 64->230 1x3x3
        stride-2 layer with 45 columns per row block). Without spatial reach (1x1 spatial kernels: temporal kx1x1
        and pointwise convs, the kernel's pw mode) it reaches 0.6-1.0 (0.7 on R(2+1)D's 144->64 3x1x1 layer at
        56x56, 0.9-1.0 on S3D's 1x1x1 layers), less with fewer than 8 columns per row block. A fully connected
        layer reads each kept weight once per sample: the time of both kernels is that of streaming their weights.
        Where a row block's filters fill whole vectors (the direct mode: 8x4 groups on AVX2's 8 lanes and NEON's 4)
        the sparse kernel is the dense one's register tile over the kept columns, and reached 0.64-0.86 of the
        dense kernel's GFLOP/s with 15 to 45 columns per row block on S3D's small 1x3x3 layers (AVX2, 8 lanes),
        0.75-0.95 with hundreds on C3D's: 0.7, less in proportion below 8 columns. On AVX2 those layers now run the
        position-vectorized modes in passes of 4 filters (sparse_conv3d.filter_pass), which measured 0.68-1.77 on
        the benchmark models' layers (bench/results/sparse/layers.json): the 0.7 stays as the cautious side."""
        if node.op == "dense":
            return 0.9 / max(density, 1e-9)
        cols = sum(packed.kept) / max(1, len(packed.kept))
        if filters_fill_vectors(group, lanes):
            return 0.7 * min(1.0, cols / 8) / max(density, 1e-9)
        eff = 0.7 * min(1.0, cols / 8) if _no_spatial_reach(node) else 0.6 * min(1.0, cols / 64)
        return eff / max(density, 1e-9)

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        done = 0
        for node in graph:
            if node.op not in SPARSE_SOURCES or not node.attrs.sparsity:
                continue
            why = _sparse_weight_ok(node)
            sp = Sparsity.parse(node.attrs.sparsity)
            group = sp.group if sp.scheme != "filter" else tuple(int(v) for v in self.filter_group.split("x"))
            w = node.inputs[1].data
            packed, macs, _ = best_packing(w, group)
            s = int(np.prod(w.shape[2:]))
            dens = macs / (w[0].size * w.shape[0])
            if not why and dens > self.max_density:
                why = f"{dens:.0%} of the MACs are kept (> max_density {self.max_density:.0%}): dense is faster"
            if not why and self.cost_model:
                gain = self.predicted_speedup(node, packed, dens, self.lanes, group)
                if gain < 1.1:
                    why = (f"predicted {gain:.2f}x over dense at {dens:.0%} kept MACs "
                           f"({sum(packed.kept) / len(packed.kept):.0f} columns per row block): dense is faster")
            if why:
                report.note(f"kept %{node.output.name} dense: {why}")
                continue
            a = node.attrs
            values = graph.add_const(f"{node.inputs[1].name}.kgs", packed.values)
            cols = graph.add_const(f"{node.inputs[1].name}.cols", packed.cols)
            geo = (dict(stride=a.stride, pad=a.pad, dilation=a.dilation) if node.op == "conv3d"
                   else dict(stride=(), pad=(), dilation=()))  # fully connected: no spatial dims
            node.op = "sparse_conv3d"
            node.attrs = SparseConvAttrs(act=a.act, act_params=a.act_params, residual=a.residual, **geo,
                                         kernel=tuple(w.shape[2:]),
                                         filters=w.shape[0], sparsity=a.sparsity, group=group, kept=packed.kept,
                                         perm=packed.perm)
            node.inputs = [node.inputs[0], values, cols] + node.inputs[2:]
            graph.retype(node)
            done += 1
            report.note(f"%{node.output.name}: {a.sparsity}, {len(packed.kept)} row blocks, "
                        f"{min(packed.kept)}..{max(packed.kept)} of {-(-w.shape[1] // group[1]) * s} columns kept, "
                        f"{dens:.0%} of the MACs")
        graph.remove_unused()
        report.note(f"{done} layer(s) made sparse")
        return graph


def _balanced_order(kept: tuple[int, ...], cols: list[set], threads: int) -> tuple[int, ...]:
    """Row blocks dealt to ``threads`` contiguous chunks of (nearly) equal kept work, each chunk ordered so that
    consecutive blocks share as many columns as possible."""
    sizes = chunk_sizes(len(kept), threads)
    chunks: list[list[int]] = [[] for _ in sizes]
    work = [0] * len(chunks)
    for b in sorted(range(len(kept)), key=lambda i: -kept[i]):  # longest first into the least-loaded open chunk
        c = min((i for i in range(len(chunks)) if len(chunks[i]) < sizes[i]), key=lambda i: work[i])
        chunks[c].append(b)
        work[c] += kept[b]
    order: list[int] = []
    for chunk in chunks:
        rest = sorted(chunk, key=lambda i: -kept[i])
        seq = [rest.pop(0)] if rest else []
        while rest:
            last = cols[seq[-1]]
            nxt = max(rest, key=lambda i: len(cols[i] & last))
            rest.remove(nxt)
            seq.append(nxt)
        order += seq
    return tuple(order)


@register_pass
@dataclass(frozen=True)
class ReorderKernelGroups(Pass):
    """Filter permutation and row-block order of every sparse_conv3d (see the module docstring)."""

    name: ClassVar[str] = "reorder-kernel-groups"
    threads: int = 1  # thread chunks to balance the row blocks for (rt3d.build passes the target's cores)

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        for node in graph:
            if node.op != "sparse_conv3d":
                continue
            a = node.attrs
            values, cols = node.inputs[1], node.inputs[2]
            if values.data is None or cols.data is None:
                report.note(f"kept %{node.output.name} as is: packed weights have no data")
                continue
            wshape = (a.filters, node.inputs[0].type.shape[1]) + tuple(a.kernel)
            w = unpack(values.data, cols.data, a.kept, a.perm, wshape)
            packed, _, how = best_packing(w, tuple(a.group), a.perm)
            col_sets, b = [], 0
            for k in packed.kept:
                col_sets.append(set(packed.cols[b:b + k].tolist()))
                b += k
            order = _balanced_order(packed.kept, col_sets, self.threads)
            node.inputs = [node.inputs[0], graph.add_const(values.name, packed.values),
                           graph.add_const(cols.name, packed.cols)] + node.inputs[3:]
            node.attrs = replace(a, kept=packed.kept, perm=packed.perm, order=order)
            graph.retype(node)
            report.note(f"%{node.output.name}: {how}; row blocks ordered for {self.threads} thread chunk(s)"
                        f"{self._balance(order, packed.kept, self.threads)}")
        graph.remove_unused()
        return graph

    @staticmethod
    def _balance(order, kept, threads) -> str:
        if threads <= 1 or len(order) < 2:
            return ""
        work, i = [], 0
        for sz in chunk_sizes(len(order), threads):
            work.append(sum(kept[b] for b in order[i:i + sz]))
            i += sz
        return f" (work per chunk {min(work)}..{max(work)} columns)"


@register_pass
@dataclass(frozen=True)
class FuseSepConvs(Pass):
    """Fuse a sparse conv into the sparse conv that alone reads its output, as one sparse_sep_conv3d, when the
    pair is one the fused kernel supports (rt3d.ir.ops.sep_pair_problem) and worth it: the first conv's packed
    weights fit the share of the L2 a tile's working set gets (every position tile at every depth reads all of
    them; the unfused kernel's plan can stream them past many tiles instead), and, where the fused kernel makes a
    padded copy of the whole input (a spatially strided first conv, or a plain input: see _FirstStage in
    rt3d/targets/arm_neon/sparse_conv3d.py), the intermediate tensor is at least twice the L2 (it would go to
    memory and come back; the second conv's ring fill is where R(2+1)D's temporal convs lost a fifth of their time
    in the model). bench/sep_pairs.py times pairs fused and not on this machine's 2 MiB L2: R(2+1)D's 64->144->64
    pair at 16x56x56, its downsampling 64->230->128 one (stride 2) and S3D's 64->192->192 one at 8x56x56 are faster
    fused, R(2+1)D's 256->576->256 pair at 4x14x14 (1.6 MB of weights) and its 128->460->256 stride-2 one (2.9 MB in
    between, a padded copy) slower. A first conv that reads its tile's window (unit stride, blocked input) made the
    pairs with small intermediates faster fused as well (scratch runs, 7-9 interleaved rounds, unfused / fused ms):
    S3D's 96->128->128 pair at 8x28x28 (3.2 MB in between) 3.15 / 2.95, its 32->96->96 one 1.22 / 1.13, its
    160->320->320 one at 2x7x7 0.29 / 0.27; its 96->208->208 one at 4x14x14 0.86 / 0.88."""

    name: ClassVar[str] = "fuse-sep-convs"
    lanes: int = 16  # the target's fp32 vector lanes: a blocked input of the first conv must be blocked by them
    l2: int = 0  # bytes of one core's L2 (0: 2 MiB)
    cost_model: bool = True  # false: fuse every pair the kernel supports (tests)

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        l2 = self.l2 or (2 << 20)
        users = graph.users()
        done = 0
        for node in graph:
            prod = node.inputs[0].node if node.op == "sparse_conv3d" else None
            if prod is None or prod.op != "sparse_conv3d" or prod not in graph.nodes:
                continue
            pair = f"%{prod.output.name} -> %{node.output.name}"
            mid = prod.output
            mid_bytes = int(np.prod(mid.type.shape)) * 4
            w_bytes = sum(v.data.nbytes for v in prod.inputs[1:3] if v.data is not None)
            why = ("the intermediate has other users" if len(users.get(mid, [])) != 1 or mid in graph.outputs
                   else sep_pair_problem(prod.attrs, node.attrs, self.lanes))
            windowed = sep_first_windowed(prod.attrs, self.lanes)
            if not why and self.cost_model and mid_bytes < 2 * l2 and not windowed:
                why = (f"the intermediate ({mid_bytes / 2**20:.1f} MiB) stays in cache and the fused kernel would "
                       "copy the whole input padded")
            if not why and self.cost_model and w_bytes > l2 * 3 // 8:
                why = f"the first conv's packed weights ({w_bytes >> 10} KiB) do not fit 3/8 of the L2"
            if why:
                report.note(f"{pair} not fused: {why}")
                continue
            node.attrs = sep_attrs(prod.attrs, node.attrs, first_bias=len(prod.inputs) == 4)
            node.op = "sparse_sep_conv3d"
            node.inputs = list(prod.inputs) + node.inputs[1:]
            node.name = f"{prod.name}+{node.name}"
            graph.nodes.remove(prod)
            graph.retype(node)
            done += 1
            report.note(f"{pair}: fused ({mid_bytes / 2**20:.1f} MiB not written)")
        report.note(f"{done} pair(s) fused")
        return graph
