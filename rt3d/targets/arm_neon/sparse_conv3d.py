"""Sparse conv3d over a KGS-packed weight (rt3d.ir.sparsity.Packed) for SIMD CPUs: KGS, Vanilla and Filter.

The kernel is generated as TIR (TVMScript) because its reduction bounds are data-dependent: row block k runs over
its own kept columns ``indptr[k] .. indptr[k+1]``. Layout and loop nest (the recipe measured in TVM-NOTES.md):
  * the input is zero-padded once into a flat buffer [N, C (rounded up to gN), phase, D', H'/sh, W'/sw]: a conv
    with spatial strides (sh, sw) gets sh x sw phase planes (padded rows sh*i + ph_h, columns sw*j + ph_w), so
    kernel position (kh, kw) reads phase ((kh*dh) % sh, (kw*dw) % sw) at a constant shift and consecutive output
    positions are consecutive in it (strided vector loads made R(2+1)D's 64->230 1x3x3 stride-2 layer
    run at 0.13 of the dense kernel's GFLOP/s, 0.56 on phase planes); at unit spatial stride one gap of
    max(pad) zeros between rows (and rows of a plane) is both one row's right pad and the next one's left pad;
  * output positions are vectorized ``lanes`` at a time along the flattened (phase) volume j = (d*H' + h)*W' + w
    when the depth stride is 1 (flat3: each kernel position (kd, kh, kw) is a constant shift of a contiguous run),
    along each plane otherwise (flat2);
  * pw mode, for 1x1 spatial kernels without spatial padding (temporal kx1x1 and pointwise convs, most of R(2+1)D's
    and S3D's FLOPs): positions tile the output plane (a 1x1x1 conv's whole volume, depth-strided or not:
    pw_volume), and each parallel unit (n, tile, run of output depths) keeps a ring of the input depths it needs as
    [C, TJ] slabs, filled one new depth per output depth and prefetched one depth ahead. A whole-tensor padded copy
    read back by 8+ row blocks made these layers memory-bound (0.19 of the dense kernel's GFLOP/s on R(2+1)D's
    144->64 3x1x1 layer; 0.70 with the ring, 0.9-1.0 on S3D's 1x1x1 layers);
  * sep mode (sparse_sep_conv3d, made by fuse-sep-convs): a 1xkxk sparse conv and the pw-mode conv that alone
    reads its output, as one kernel: positions tile the first conv's padded plane (its phase planes when it
    strides spatially, as flat2), and each ring slot is filled by computing the first conv (bias, activation) for the
    tile at that depth, one contiguous row per filter, so the intermediate tensor is never written or read back
    (R(2+1)D's 144-channel 16x56x56 one is 29 MB; its temporal convs lost a fifth of their time in the model reading
    it back). At unit stride on a blocked input the first conv reads a copy of the tile's window at that depth
    (every channel's run of padded-plane positions the tile's kernel reaches, built from the blocked input in the
    unit), not a padded copy of the whole input made before the parallel loop: that stage wrote and read back a
    tensor the size of the input (13 MB for R(2+1)D's 64-channel 16x56x56 layer) and took 2-14 % of a pair's time
    in the model (bench/pad_ablation.py); the window, 45 KiB there, is copied about 3x over (the tiles' windows
    overlap) but stays in cache. Scratch builds switching between the two, in the model, 5 interleaved rounds:
    R(2+1)D's 64->144->64 pair 12.47 -> 11.64 ms, its 128->288->128 one 6.28 -> 5.74, S3D's 64->192->192 one
    15.71 -> 14.92 (bench/sep_pairs.py has the pairs);
  * fc mode, a 2-D sparse_conv3d (a pruned fully connected layer, made by eliminate-kgs-columns) or a conv of one
    position per sample (one_position: S3D's classifier): no positions to vectorize, so the vector is a row block's
    gM filters and the column's gN inputs are broadcast; the kept weights stream once per sample (C3D's fc layers:
    7.5 -> 3.3 ms in the model at 26 % kept, bench/results/sparse/e2e_breakdown.md);
  * register tile: the gM filters of a row block x V vectors of positions (24 accumulators for 8 filters); on 16
    registers, passes of 4 filters x 3 vectors over a position tile of up to 2 such tiles (filter_pass, WIDE_TILE);
  * per kept column: one int32 input offset (channel block, kd, kh, kw), then gN channels x gM filters x V vectors
    of FMAs with the weights broadcast from the packed [kept, gN, gM] array;
  * loop nest: parallel over (n, position tile[, row-block chunk]) -> row blocks in the order chosen by
    reorder-kernel-groups -> kept columns -> channel -> filter -> vector; two other orders for the flat modes
    (SparseTile.tiles, .split): a row block through a group of position tiles, which reads its packed weights once
    per group (small inputs, where the weights are what streams), and the reduction split into chunks of channel
    blocks that all row blocks run through in turn, with their accumulators parked in between (inputs whose
    window per tile does not stay in cache while the weights stream past); in the flat modes the position tiles
    left over after an even deal to the threads are run by all of them, each its chunk of the row blocks
    (shared_schedule: 19 tiles on 2 threads are 9.5 tiles each, not 10 and 9);
  * the write-back applies bias, residual and activation and stores row r into output channel perm[r]; positions
    that fall on padding (the flattened layout computes a few) are dropped. Where each vector of a position tile
    lands is computed once per tile, not per row block and filter.
Layouts: input and output are NC(D)HW or channel-blocked NC(D)HW{b}c (in_block / out_block, set by block-layout so
that sparse layers sit between blocked dense convs and pools without layout conversions). A blocked input is read by
the padding stage (or the pw ring fill), which makes the same position-contiguous copy of it: L loads of a position's
b channels and an L x L register transpose per vector (gathering with stride b cost up to a quarter of a layer:
C3D's 64->128 layer 0.61 -> 0.71 of dense, R(2+1)D's 64->144 1x3x3 layer 0.57 -> 0.71); a blocked output is
written per position as one vector of a row block's gM channels when they are consecutive channels of one block
and gM is a power of two (the tile transposed in registers by log2(gM) rounds of zips, 24 shuffles for 8 x 16;
3-4 % of a layer's time over stores of stride b), otherwise with stores of stride b (one channel, consecutive
positions); in the transposed write-back a vector that straddles padding stores each position's channels where
the tile's position table puts it. Asking LLVM for each position's lanes of the gM rows instead gave ~9 shuffles
per stored position on AVX-512, and straddling vectors were stored lane by lane: replacing both took C3D's 64->128
layer from 0.72 to 0.78 and R(2+1)D's 64->144 1x3x3 layer from 0.67 to 0.71 of the dense kernel's GFLOP/s
(bench/sparse_layers.py). The channels past M of the last block are written as zeros. NC(D)HW outputs use masked
vector stores instead. Measured on the whole models (bench/peer_benchmark.py): R(2+1)D-18 KGS 225 -> 184 ms, S3D
134 -> 123 ms, which spent that time on conversions and on pooling plain tensors.
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
from ...ir.graph import sep_nodes
from ...ir.interpreter import node_out_spatial
from ...ir.ops import logical_shape, sep_first_windowed, sep_pair_problem, spatially_pointwise
from ...ir.sparsity import chunk_sizes
from ..base import Kernel
from .common import spatial_5d, threads_split_units, to_5d
from .sparse_direct import direct_default, direct_problem, lower_sparse_direct

# pw mode: the time of one element of a ring fill (its load from the blocked input, its share of the register
# transpose, its store) in MACs of the column loop; fitted to S3D's 832->128 and 832->256 1x1x1 convs on 2x7x7
# (_pw_volume_tile's records: 14 and 29), a rough figure
PW_FILL = 16
RING_FILL = 0.05  # pw mode: the time of filling a ring slot (a copy) next to computing an output depth (estimate)
PF_LOCALITY = 2  # pw mode's prefetch of the next input depth goes to L2 (1 and 3 measured the same)
# input bytes a position tile may read before the reduction is split into channel chunks, and the largest input a
# row block runs through whole (all position tiles): 3/8 of a core's L2 (Target.l2_bytes), 768 KiB of this machine's
# 2 MiB (C3D's 512->512 4x14x14 layer, a 0.9 MB window with the weights streamed past it by every tile: 0.57 of the
# dense kernel's GFLOP/s in the model before, 0.77-0.81 split in two; its 2x7x7 layers 0.87-0.90 before, 0.95-1.00
# with one group of all tiles; bench/sparse_layers.py and the sparse peer.json of commits 6ef8c09 and 5cb8937)
WINDOW_SHARE = 3 / 8
DEFAULT_L2 = 2 << 20  # a target that does not know its L2
PARK_LIMIT = 256 << 10  # bytes of accumulators a thread parks between reduction chunks (on its stack)
# columns a pass of filter_pass runs through before the next pass takes the same ones: a KGS row block touches
# about twice the input rows of a Vanilla one per column range (each (channel, kd, kh) row is kept at a few of its
# kw), which a whole row block's range pushed out of the 32 KiB L1 before the second pass; C3D's 64->128 layer,
# KGS / Vanilla ms (Zen 3, 5 interleaved rounds): whole range 55.1 / 48.1, 12 columns 50.7 / 46.8, 16 53.2 / 45.3
PASS_COLUMNS = 12
# register tiles of positions a flat mode's position tile holds where the filters are split into passes: the
# column's input rows are read once per WIDE_TILE x 24 positions and the passes run over them from L1. A row of 24
# positions is 96 bytes on 2-3 cache lines, and a KGS column (a few kept positions of a (channel, kd, kh) row,
# unlike Vanilla's runs of kw) fetches most of them anew: the L2 -> L1 traffic (about 10 lines per column, an
# estimate: no counters here) bounded the KGS kernel; a row-contiguous KGS mask (kept positions in runs of kw) ran
# 1.06x Vanilla's time where a random one ran 1.16x. Scratch runs (Zen 3, single C3D layers at 26 % kept, 10th
# percentile of 40 interleaved calls, one tile width per run): 256->256 8x28x28 KGS / Vanilla 54.2 / 45.0 ms ->
# 45.3 / 42.3 (split 3), 64->128 49.9 / 45.6 -> 46.0 / 43.9, 512->512 4x14x14 27.1 / 23.3 -> 25.1 / 24.4; 3
# register tiles ran about as 2; reusing the lines across row blocks instead (the reduction split in L1-sized
# chunks that groups of 2-8 row blocks run through) cost more in parked accumulators than it saved
WIDE_TILE = 2
# bytes of packed weights the fc mode prefetches ahead of the column it computes: the stream comes from memory in
# the model (C3D's fc6 and fc7 weights, 35 and 17 MB at 26 % kept, are evicted by the convs before them), where
# the hardware prefetcher alone kept it at 17-19 GB/s against the dense fc kernel's 29; C3D's three fc layers in the
# model (bench/e2e_breakdown.py, two runs each): 3.08 / 3.28 ms -> 2.60 / 2.58 with 4 KiB, 2.81 with 8 KiB;
# prefetchnta instead of prefetcht0 made them 1.5-4x slower
FC_PREFETCH = 4 << 10
# flat3 rows without pad columns (rows of pitch W instead of W + 1: C3D's 14x14 planes compute 826 positions for
# their 784 outputs instead of 884, 28x28 ones 6698 -> 6475 of 6272): a kept column whose kw reads off its row loads
# the tile's inputs with those lanes masked to zero (per tile, a mask per vector and kw; a row block's columns run
# in runs of one kw). Where the tiles compute fewer positions that way (vector_plan). C3D's layers, KGS 8x4 at 26 %,
# Zen 4, 7 interleaved rounds of the kernels alone (scratch over bench/sparse_layers.py's builders), padded ->
# masked: 64->128 56x56 30.11 -> 30.08 ms, 256->256 8x28x28 28.80 -> 27.44, 512->512 4x14x14 17.26 -> 16.56;
# 512->512 2x7x7 2.18 -> 2.25 (whole tiles compute 128 positions either way: it stays padded).
# Spatially strided flat3 convs likewise on phase planes of the input's own columns (column sw * j + phase; a tap
# reads (kw * dw - pad) // sw columns off): R(2+1)D's 1x3x3 stride-2 convs, Zen 4, 11 interleaved rounds of the
# kernels alone (scratch over bench/sparse_layers.py's layers), sparse/dense GFLOP/s padded -> masked: layer4.0
# 256->921 on 4x14x14 (8x8 phase planes -> 8x7, 256 -> 224 positions computed for 196) 0.71 -> 0.77, layer3.0
# 128->460 on 8x28x28 0.77 -> 0.81, layer2.0's 64->230 (alone; fused with its 3x1x1 conv in the model) 0.88 -> 0.91
MASKED_ROWS = True
# flat modes on 32 registers (all gM filters in one pass): position tiles of up to LONG_TILE register tiles of
# vectors, run in passes (_choose_v's reach), where whole tiles of max_v vectors would compute more padding
# positions: a 2x7x7 plane on rows without pad columns (105 positions for 98 outputs) takes 128 in tiles of 2
# vectors, 112 in one tile of 7 (passes of 3, 2, 2). Zen 5, KGS 8x4, kernels alone, 9 interleaved rounds (scratch
# over bench/sparse_layers.py's builders), sparse/dense GFLOP/s tiles of 2 -> one of 7: C3D's 512->512 3x3x3 0.79 ->
# 0.89, R(2+1)D's 512->1152 1x3x3 0.73 -> 0.81, S3D's 160->320 and 192->384 1x3x3 0.66 -> 0.75 and 0.68 -> 0.76
LONG_TILE = 4
PASS_PARKING = 0.05  # share of a long tile's time its passes spend parking accumulators (an estimate: 48 vector
# loads and stores per PASS_COLUMNS columns of 96 FMAs)
# a position tile of v vectors costs (v + SHORT_TILE) vectors' FMAs: a kept column loads gN x v input vectors and
# gM x gN weights for gM x gN x v FMAs, so short tiles load more per FMA (an estimate from the first kernel). The
# flat modes keep it on 16 lanes too: at 0.15 (scratch, Zen 4, the runs below) C3D's conv4b took 16.86 -> 17.22 ms
# in tiles of 2 instead of 3 and its conv5a/b 2.13 / 2.18 -> 2.25 / 2.23 in 7 tiles of one instead of one of 7
SHORT_TILE = 0.5
# the pw mode's penalty on 16 lanes, measured: R(2+1)D's 3x1x1 convs on 4x14x14 (196 positions) run 13 tiles of one
# vector (208 computed) instead of 7 of 2 (224), and S3D's on 14x14 and 28x28 likewise. KGS 8x4, Zen 4, whole
# models built both ways, kernels timed interleaved (scratch, 9-11 rounds): R(2+1)D's four layer3 3x1x1 convs 4.17 ->
# 3.83 ms alone and 5.05 -> 4.66 in the model (layer_mode="in-model"); S3D's 3x1x1 convs of features.10 to .12
# 3.01 -> 2.69 and 2.96 -> 2.77 ms alone in two runs, and its 20 1x1x1 convs whose tile it changes (3 -> 2 vectors)
# 3.96 -> 3.72 and 3.82 -> 3.87; end to end within the noise. 8-lane targets keep SHORT_TILE: not measured there
PW_SHORT_TILE = 0.15


def pw_short_tile(lanes: int) -> float:
    """The pw mode's short-tile penalty on a target with ``lanes`` fp32 lanes (PW_SHORT_TILE on 16 lanes)."""
    return PW_SHORT_TILE if lanes >= 16 else SHORT_TILE


COLUMN_BODY = 96  # FMAs of one kept column (gN x gM x V), unrolled: beyond this LLVM's code for it got 2x slower
# (8x8 groups with V=3 against V=1, measured with `rt3d tune` on a 128->256 C3D layer)


# the flat modes' position tiles left over after an even deal to the threads are shared by row blocks
# (shared_schedule); whole units alone leave a thread idle for a unit's time. KGS 8x4, Zen 3, kernels alone, 11
# interleaved rounds (scratch over bench/sparse_layers.py's builders), whole -> shared, ms (sparse/dense GFLOP/s):
# R(2+1)D's 256->576 1x3x3 on 4x14x14 (19 tiles of 6 vectors) 5.44 -> 5.16 (0.82 -> 0.87), S3D's 160->320 one
# 2.56 -> 2.48 (0.86 -> 0.89), C3D's 512->512 3x3x3 (19 tiles) 26.6 -> 25.2 (1.01 -> 1.07), R(2+1)D's 128->460
# 1x3x3 stride 2 (35 tiles) 5.72 -> 5.38. Not the pw mode, whose units fill their ring: a shared unit fills it on
# every thread (S3D's 832->128 1x1x1 on 2x7x7, 7 tiles: 0.088 -> 0.094 ms; its 480->192 on 4x14x14, 33 tiles:
# 0.491 -> 0.482)
SHARE_REMAINDER = True


def shared_schedule(units: int, cores: int, blocks: int) -> np.ndarray | None:
    """The parallel loop's iterations where the threads share the units that do not divide among them: each of
    ``cores`` threads runs units // cores whole units and its chunk of the row blocks (chunk_sizes, the chunks
    reorder-kernel-groups balanced) of each of the units % cores left over. TVM's parallel loop hands each thread
    one contiguous range of iterations, so thread i's iterations are its whole units, then its chunks. Returns
    (unit, first, end) per iteration, flat int32 (first .. end: positions in the row-block order), or None where the
    units divide evenly (or there are fewer row blocks than threads)."""
    whole, rest = divmod(units, cores)
    if not SHARE_REMAINDER or rest == 0 or not 2 <= cores <= blocks:
        return None
    bounds = np.concatenate([[0], np.cumsum(chunk_sizes(blocks, cores))])
    rows = []
    for i in range(cores):
        rows += [(i * whole + j, 0, blocks) for j in range(whole)]
        rows += [(cores * whole + r, bounds[i], bounds[i + 1]) for r in range(rest)]
    return np.array(rows, np.int32).reshape(-1)


def _parked_bytes(blocks: int, chunks: int, gm: int, tj: int) -> int:
    """Accumulators one thread parks between reduction chunks: a [gM, TJ] tile per row block of its chunk."""
    return max(chunk_sizes(blocks, chunks)) * gm * tj * 4


def register_tile(registers: int) -> int:
    """Accumulators (vector registers) of the micro-kernel on a register file of ``registers`` when it holds all gM
    filters of a row block: 24 of AVX-512's and NEON's 32."""
    return registers - 8


def filter_pass(gm: int, registers: int) -> int:
    """Filters of a row block per pass over its columns: all gM on 32 registers; on AVX2's 16 the largest divisor
    of gM whose tile of 3 position vectors fits next to them and a broadcast (4: 4 x 3 accumulators, the dense
    kernel's 4-broadcasts-per-12-FMAs mix). 8 filters x 1 vector, one broadcast per FMA, capped the kernel at about
    half of the FMA peak on Zen 3 (broadcasts issue at about one per cycle): 4 x 3 in two passes took C3D's 64->128
    layer from 0.80 to 0.97 of the dense kernel's GFLOP/s and R(2+1)D's 144->64 3x1x1 one (pw) to 1.98."""
    if registers >= 32:
        return gm
    return max([d for d in range(1, gm + 1) if gm % d == 0 and 3 * d + 4 <= registers] or [1])


def pass_vectors(v: int, vp: int) -> int:
    """The most vectors per pass a kernel runs for a position tile of ``v`` vectors and a record's ``vp`` (0, or not
    under v: all v in one pass); vp need not divide v (vector_passes)."""
    return vp if 0 < vp < v else v


def vector_passes(v: int, vp: int) -> list[range]:
    """The tile's vectors of each pass for ``v`` vectors in passes of at most pass_vectors(v, vp), as even as they
    go: 7 in passes of 3 as 3, 2, 2, where 3, 3, 1 (a pass of one vector: a broadcast per FMA) took 2-4 % longer
    on the four 2x7x7 layers of LONG_TILE's measurement."""
    vp = pass_vectors(v, vp)
    n = -(-v // vp)
    sizes = [v // n + (i < v % n) for i in range(n)]
    return [range(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(n)]


def pass_filters(gm: int, fm: int) -> int:
    """Filters per pass a kernel runs for a row block of ``gm`` and a record's ``fm`` (0, or one that does not
    divide gm: all gm in one pass)."""
    return fm if 0 < fm < gm and gm % fm == 0 else gm


def max_v(gm: int, gn: int, registers: int) -> int:
    """The most position vectors per register tile: as many as fit next to a pass's filters (filter_pass) and keep
    the unrolled column body short."""
    fm = filter_pass(gm, registers)
    fit = register_tile(registers) // gm if fm == gm else (registers - 1) // (fm + 1)
    return max(1, min(fit, COLUMN_BODY // (fm * gn)))


def _choose_v(gm: int, lanes: int, positions: int, gn: int = 4, registers: int = 32, wide: int = 1,
              outer: int = 0, cores: int = 1, reach: int = 0, short: float = SHORT_TILE) -> int:
    """Vectors per position tile: up to max_v, fewer when the positions are few; with ``wide`` > 1, also up to
    ``wide`` register tiles of max_v vectors (run in passes). With ``outer`` (the flat modes: what the tiles repeat
    over), the tiles are counted as the busiest of ``cores`` threads sees them where the threads split the tiles:
    C3D's 4x14x14 layers have 19 tiles of 3 vectors (one thread runs 10) or 28 of 2 (14 each); KGS 8x4 at 26 %,
    2 threads on Zen 4, 11 interleaved rounds of the kernels alone: 256->512 8.37 -> 7.94 ms, 512->512 15.86 ->
    14.99 (sparse/dense GFLOP/s 0.79 -> 0.84).
    With ``reach``, also tiles of up to ``reach`` vectors run in passes of max_v (the last one shorter), which
    compute fewer padding positions where a plane is small; each pass pays the short-tile penalty, and
    PASS_PARKING for the accumulators the passes park. ``short``: the short-tile penalty (SHORT_TILE, or the pw
    mode's pw_short_tile)."""
    vmax = max_v(gm, gn, registers)
    best, best_cost = 1, None
    for v in list(range(1, vmax + 1)) + [vmax * k for k in range(2, wide + 1)]:
        tiles = -(-positions // (lanes * v))
        if outer and threads_split_units(outer * tiles, cores):
            tiles = -(-outer * tiles // cores) * cores / outer
        # computed positions, with a penalty for short tiles (fewer FMAs per loaded input vector)
        cost = tiles * lanes * v * (1 + short / v)
        if best_cost is None or cost < best_cost - 1e-9:
            best, best_cost = v, cost
    # long tiles only where they compute fewer positions (where they would not, wide tiles of 2 x 3 vectors in
    # passes measured slower than tiles of 2 on R(2+1)D's 256->921 stride-2 layer: bench/sparse_space.py)
    computed = -(-positions // (lanes * best)) * best
    for v in range(vmax + 1, reach + 1):
        tiles = -(-positions // (lanes * v))
        cost = tiles * lanes * (v + short * -(-v // vmax)) * (1 + PASS_PARKING)
        if tiles * v < computed and cost < best_cost - 1e-9:
            best, best_cost = v, cost
    return best


@dataclass(frozen=True)
class SparseTile:
    """Schedule record of the sparse kernel: v position vectors per register tile (gM x v accumulators), the
    number of row-block chunks the threads split (1: threads split the positions only) and, in the flat modes, the
    position tiles a row block runs through before the next row block (tiles > 1: its packed weights are read once
    per group of tiles instead of once per tile) and the number of chunks of channel blocks the reduction is split
    into (split > 1: all row blocks run through one chunk's columns before the next, accumulators parked between).
    In the pw and sep modes, ``runs``: the runs of output depths a position tile's depths are split into, each a
    parallel unit that fills its own ring (0: the heuristic's; a fused pair recomputes the first conv at the depths
    the runs share). In the direct mode (filters vectorized), ``th`` x ``tw`` output positions per register tile
    and ``chunks``; v is 1."""

    v: int
    chunks: int = 1
    tiles: int = 1
    split: int = 1
    runs: int = 0
    th: int = 0  # direct mode (sparse_direct.py): a register tile of th x tw output positions x the gM filters
    tw: int = 0
    fm: int = 0  # position-vectorized modes: filters per pass over a row block's columns (0: all gM at once)
    vp: int = 0  # flat modes: position vectors per pass (0: all v at once; WIDE_TILE)


@dataclass(frozen=True)
class SparsePlan:
    mode: str  # direct (filters vectorized), flat3 (unit depth stride), flat2 (depth stride), pw (1x1 spatial kernel)
    plane: tuple[int, int]  # flat modes: rows x columns of a phase plane of the flat copy (Hf, Wf); direct: OH x OW
    positions: int  # positions along the vectorized dimension
    outer: int  # batch (flat3) or batch x output depths (flat2, pw): what the position tiles repeat over
    default: SparseTile
    masked: bool = False  # flat3 rows without pad columns: the kernel masks the lanes a column reads off its row
    volume: bool = False  # pw mode: the positions run over the whole output volume (pw_volume), outer is the batch

    def units(self, lanes: int, v: int) -> int:
        """Parallel units before row-block chunking: outer x position tiles of lanes x v."""
        return self.outer * -(-self.positions // (lanes * v))


def _shapes(node: Node) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(spatial rank, the input's logical N, C, D, H, W, the output's OD, OH, OW), whatever the layouts."""
    a = node.attrs
    xl = logical_shape(node.inputs[0].type, a.in_block)
    return len(xl) - 2, to_5d(xl), to_5d((0, 0) + tuple(node_out_spatial(node, a.out_block)))[2:]


def window_budget(l2_bytes: int) -> int:
    """See WINDOW_SHARE."""
    return int((l2_bytes or DEFAULT_L2) * WINDOW_SHARE)


def sparse_plan(node: Node, lanes: int, cores: int, l2_bytes: int = 0, registers: int = 32,
                l1_bytes: int = 0) -> SparsePlan:
    """Geometry of the kernel and the heuristic's tile (the default of the tuning space) for a target with ``lanes``
    fp32 lanes, ``cores`` threads, ``l2_bytes`` of L2 per core (0: DEFAULT_L2), ``registers`` vector registers and
    ``l1_bytes`` of L1 (0: sparse_direct.DEFAULT_L1): the direct mode (sparse_direct.py) where a row block's
    filters fill whole vectors and _vector_preferred does not say otherwise, else a position-vectorized one."""
    if not direct_problem(node, lanes) and not _vector_preferred(node, lanes, registers):
        r, (N, *_), (OD, OH, OW) = _shapes(node)
        return SparsePlan("direct", (OH, OW), OH * OW, N * OD,
                          direct_default(node, lanes, cores, registers, l1_bytes))
    return vector_plan(node, lanes, cores, l2_bytes, registers)


def _vector_preferred(node: Node, lanes: int, registers: int) -> bool:
    """Where the direct mode could run, whether a position-vectorized mode is the better default: where a row
    block's filters are one vector (each broadcast input feeds one FMA) on a register file that splits the filters
    into passes (filter_pass: AVX2). Measured on AVX2 (Zen 3, bench/sparse_layers.py and single-layer A/B runs),
    the sparse/dense GFLOP/s ratio of the vector modes (4 filters x 3 vectors, two passes) against the direct mode:
    C3D's 64->128 layer 0.97 / 0.73, 128->256 1.08 / -, 256->256 1.10 / 0.90, 256->512 0.72-0.81 / 0.64, 512->512
    4x14x14 0.89 / 0.66 and 2x7x7 1.07 / 0.81; R(2+1)D's 64->144 1x3x3 0.76 / 0.71, 144->64 3x1x1 (pw) 1.98 / 0.64,
    64->230 1x3x3 stride 2 0.67 / 0.67. The direct mode stays where a row block is several vectors and on NEON
    (32 registers: all filters in one pass), whose FMAs take a lane of a register and need no broadcast."""
    return node.attrs.group[0] == lanes and filter_pass(lanes, registers) < lanes


def masked_rows_problem(node: Node, registers: int) -> str:
    """Why the flat3 mode cannot run ``node`` on rows without pad columns (SparsePlan.masked; '' when it can)."""
    a = node.attrs
    r, (_, _, _, _, W), (_, _, OW) = _shapes(node)
    sd, sh, sw = spatial_5d(a.stride, 1, r)
    if spatially_pointwise(tuple(a.kernel), tuple(a.pad)) or sd != 1:
        return "not the flat3 mode"
    if OW != -(-W // sw) or not (a.pad[r - 1] or a.pad[2 * r - 1]):
        return ("its output rows are not as wide as its phase planes' (W / stride, rounded up)" if sw > 1
                else "its rows are not padded to their own width")
    if filter_pass(a.group[0], registers) != a.group[0] and sw == 1:
        # AVX2 (16 registers: filters in passes): a unit-stride conv's taps kw of one input row read the same cache
        # lines, which the padded rows' column order (channel, kd, kh, kw) fetches once and the runs of one kw up
        # to three times; a strided conv's taps read different phase planes either way. KGS 8x4, Zen 3, kernels
        # alone, 9 interleaved rounds (scratch over bench/sparse_layers.py's layers), sparse/dense GFLOP/s padded
        # -> masked: R(2+1)D's layer4.0 256->921 stride 2 0.61 -> 0.75, layer3.0 128->460 stride 2 0.75 -> 0.79;
        # unit stride: layer2.1 128->288 8x28x28 0.96 -> 0.81, C3D's 512->512 2x7x7 1.04 -> 0.91, 4x14x14 0.99 ->
        # 0.97, 8x28x28 1.08 -> 1.15
        return "a row block's filters run in passes and its taps share input rows (unit column stride)"
    return ""


def pw_volume(node: Node) -> bool:
    """Whether the pw mode tiles ``node``'s whole output volume as one plane (depths one after another) instead of
    each output plane: a spatially pointwise conv of kernel depth 1 without depth padding (any depth stride), whose
    input rows continue across depths (H = sh x OH), in both layouts the volume is one run of positions. A plane's tiles
    alone leave a partial tile per plane and few parallel units: S3D's 1x1x1 convs on 4x14x14 had 9 tiles of 24
    positions per plane (216 computed for 196), each unit one tile through the 4 depths, so one of the 2 threads ran
    5 of the 9 units; the volume is 33 tiles (792 for 784), 17 on the busiest thread. Zen 3, KGS 8x4 at 42 %,
    kernels alone, 11 interleaved rounds (scratch over bench/sparse_layers.py's builders), planes -> volume:
    480->192 4x14x14 0.613 -> 0.503 ms (0.73 -> 0.89 of the dense kernel's GFLOP/s), 512->24 4x14x14 0.131 -> 0.103,
    832->256 2x7x7 0.198 -> 0.189, 256->128 8x28x28 1.60 -> 1.45, 192->64 8x28x28 0.68 -> 0.63. A prefetch of the
    next tile's input (the thread's next unit) measured 2-10 % slower on four of them, 4 % faster on 256->128.
    A depth stride only skips input depths (output row od * OH + oh reads input row sd * od * H + sh * oh): R(2+1)D's
    2x2x2 downsampling convs, Vanilla 8x4 at 31 %, same kind of run (15 rounds), planes -> volume: 128->256 on
    8x28x28 0.245 -> 0.166 ms (0.72 -> 1.07 of the dense kernel's GFLOP/s), 64->128 on 16x56x56 0.469 -> 0.457,
    256->512 on 4x14x14 0.088 -> 0.085."""
    a = node.attrs
    r, (_, _, _, H, _), (_, OH, _) = _shapes(node)
    (KD, _, _), (_, sh, _) = spatial_5d(a.kernel, 1, r), spatial_5d(a.stride, 1, r)
    pd = spatial_5d(a.pad[:r], 0, r)[0] + spatial_5d(a.pad[r:], 0, r)[0]
    return (bool(a.kernel) and spatially_pointwise(tuple(a.kernel), tuple(a.pad)) and KD == 1 and pd == 0
            and H == sh * OH)


def one_position(node: Node) -> bool:
    """Whether a sparse conv has one input and one output position per sample and a kernel of one position without
    padding (S3D's classifier, a 1x1x1 conv after the global average pool): a fully connected layer, lowered as
    one (the fc mode) whatever its layouts, since a single position is stored as its channels in order in the plain
    and the channel-blocked layout alike. The position-vectorized modes would compute a vector of lanes positions
    for it, 1/8 of them used on AVX2 (0.5 of the dense kernel's GFLOP/s in every Zen 3 peer run)."""
    a = node.attrs
    if node.op != "sparse_conv3d" or not a.kernel:  # (a fused pair keeps its own kernel)
        return False
    _, (_, _, D, H, W), (OD, OH, OW) = _shapes(node)
    return D * H * W == 1 and OD * OH * OW == 1 and all(k == 1 for k in a.kernel) and not any(a.pad)


def _pw_volume_tile(J: int, N: int, Cp: int, macs: int, P: int, lanes: int, vmax: int, cores: int,
                    short: float = SHORT_TILE) -> tuple[int, int]:
    """(vectors per tile, row-block chunks) of a pw_volume conv: its parallel units are (sample, tile[, chunk]),
    each filling its tile's slab of all Cp channels and computing ``macs`` per position over its chunk's row
    blocks; the least time on the busiest of ``cores`` threads, with PW_FILL per filled element and the short-tile
    penalty of _choose_v. Chunks (the rule of threads_split_units: fewer than 4 tiles per thread) fill each slab once
    per chunk: S3D's 1x1x1 convs on 2x7x7 (7 tiles of 2 vectors), Zen 3, 42 % kept, kernels alone, 11 interleaved
    rounds (bench/sparse_space.py, scratch), 832->128 0.097 ms in 2 chunks, 0.082 in one; 832->256 0.186 in 2
    chunks of tiles of 2 vectors, 0.191 in one, 0.177 in 2 of 3 vectors."""
    best, best_cost = (1, 1), None
    for v in range(1, vmax + 1):
        tj = lanes * v
        units = N * -(-J // tj)
        for ch in sorted({1, min(cores, P)}):
            cost = -(-units * ch // cores) * tj * (Cp * PW_FILL + macs / ch) * (1 + short / v)
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost = (v, ch), cost
    return best


def computed_positions(plan: SparsePlan, lanes: int) -> int:
    """Positions a plan's default computes, padding included: whole tiles of its vectors."""
    return plan.units(lanes, plan.default.v) * lanes * plan.default.v


def vector_plan(node: Node, lanes: int, cores: int, l2_bytes: int = 0, registers: int = 32,
                masked: bool | None = None) -> SparsePlan:
    """sparse_plan of the position-vectorized modes (flat3, flat2, pw). ``masked``: rows without pad columns
    (SparsePlan.masked) or with; by default without where masked_rows_problem allows it and the tiles then compute
    fewer positions (MASKED_ROWS)."""
    if masked is None:
        padded = vector_plan(node, lanes, cores, l2_bytes, registers, masked=False)
        if not MASKED_ROWS or masked_rows_problem(node, registers):
            return padded
        rows = vector_plan(node, lanes, cores, l2_bytes, registers, masked=True)
        return rows if computed_positions(rows, lanes) < computed_positions(padded, lanes) else padded
    a = node.attrs
    r, (N, C, D, H, W), (OD, OH, OW) = _shapes(node)
    sd, sh, sw = spatial_5d(a.stride, 1, r)
    pb = spatial_5d(a.pad[:r], 0, r)
    pe = spatial_5d(a.pad[r:], 0, r)
    GM = a.group[0]
    if sh == sw == 1:
        # rows of pitch Wf hold W columns then zeros, which are both the right pad of one row and the left pad of
        # the next (column -1 of row h is the last column of row h - 1); so do the rows of a depth plane
        Hf, Wf = max(H + max(pb[1], pe[1]), OH), (W if masked else max(W + max(pb[2], pe[2]), OW))
    else:
        # a phase plane of the flat copy: padded rows sh * i + phase; padded columns sw * j + phase, or on rows
        # without pad columns the input's own columns sw * j + phase (masked: a tap then reads (kw * dw - pad) // sw
        # columns off, and the lanes that fall off the row are masked)
        Hf = -(-(H + pb[1] + pe[1]) // sh)
        Wf = -(-W // sw) if masked else -(-(W + pb[2] + pe[2]) // sw)
    if spatially_pointwise(tuple(a.kernel), tuple(a.pad)):
        # no spatial reach: positions tile the output plane, read from a tile-major copy of the input
        volume = pw_volume(node)
        mode, J, outer = ("pw", OD * OH * OW, N) if volume else ("pw", OH * OW, N * OD)
    else:
        mode, volume = "flat3" if sd == 1 else "flat2", False
        J = ((OD - 1) * Hf * Wf if mode == "flat3" else 0) + (OH - 1) * Wf + OW
        outer = N if mode == "flat3" else N * OD
    fm = filter_pass(GM, registers) % GM  # 0: one pass
    # the flat modes' wide position tiles where the filters already run in passes (see WIDE_TILE); the pw mode's
    # ring rows are whole aligned lines, and 32-register targets (one pass) are not measured with them
    wide = WIDE_TILE if fm and mode != "pw" else 1
    GN, (KD, KH, KW) = a.group[1], spatial_5d(a.kernel, 1, r)
    Cp = -(-C // GN) * GN
    per_n = Cp * sh * sw * (D + pb[0] + pe[0]) * Hf * Wf * 4  # bytes of one sample's padded copy (flat modes)
    budget = window_budget(l2_bytes)
    # the threads split the position tiles unless the input stays in cache (the order below where it does: each
    # row block through all tiles, the threads splitting the row blocks)
    balance = dict(outer=outer, cores=cores) if mode != "pw" and per_n > budget else {}
    vmax = max_v(GM, GN, registers)
    reach = LONG_TILE * vmax if not fm and mode != "pw" else 0  # long tiles (all filters in one pass)
    P = len(a.kept)
    short = pw_short_tile(lanes) if mode == "pw" else SHORT_TILE
    if volume:  # the tiles are the parallel units: tile size and chunks from one cost
        V, ch = _pw_volume_tile(J, N, Cp, sum(a.kept) * GN * GM, P, lanes, vmax, cores, short)
    else:
        V = _choose_v(GM, lanes, J, GN, registers, wide, reach=reach, short=short, **balance)
        if V > vmax and not reach and not threads_split_units(outer * -(-J // (lanes * V)), cores):
            V = _choose_v(GM, lanes, J, GN, registers, short=short, **balance)  # few positions: one register tile
        ch = 1 if threads_split_units(outer * -(-J // (lanes * V)), cores) else min(cores, P)
    vp = vmax if V > vmax else 0
    plan = SparsePlan(mode, (Hf, Wf), J, outer, SparseTile(V, fm=fm, vp=vp), masked=masked, volume=volume)
    tiles = split = 1
    if mode != "pw":
        window = min(per_n, Cp * KD * KH * (lanes * V + KW - 1) * 4)  # the input bytes one position tile reads
        JT = -(-J // (lanes * V))
        if per_n <= budget and JT > 1:
            # the whole input stays in cache: each row block runs through all the tiles, its weights read once
            tiles, ch = JT, min(cores, P)
        elif window > budget and _parked_bytes(P, ch, GM, lanes * V) <= PARK_LIMIT:
            split = -(-window // budget)
    return dataclasses.replace(plan, default=SparseTile(V, max(1, ch), tiles, split, fm=fm, vp=vp))


def sparse_workload_key(node: Node) -> str:
    """Tuning records of a sparse layer (or fused pair) are about its shapes and its kept pattern (which sets the
    work)."""
    a = node.attrs
    h = hashlib.sha1()
    desc = {"op": node.op, "x": node.inputs[0].type.shape, "y": node.output.type.shape, "stride": a.stride,
            "pad": a.pad, "dilation": a.dilation, "kernel": a.kernel, "group": a.group, "kept": a.kept,
            "order": a.order}
    convs = [node]
    if node.op == "sparse_sep_conv3d":
        desc |= {f: getattr(a, f) for f in sorted(a.__dataclass_fields__) if f.startswith("first_")}
        convs = list(sep_nodes(node))
    h.update(json.dumps(desc, sort_keys=True).encode())
    for n in convs:
        h.update(np.ascontiguousarray(n.inputs[2].data).tobytes())
    return f"{node.op}-{h.hexdigest()[:12]}"


@dataclass(frozen=True)
class SepPlan:
    """A fused pair's kernel geometry: the heuristic's tile (its runs of output depths explicit), the second conv's
    output depths, the first conv's (phase) plane whose rows the positions run along, the positions a depth's tiles
    cover and the most vectors per register tile (both convs' row blocks share it)."""

    default: SparseTile
    depths: int
    plane: tuple[int, int]
    positions: int
    vmax: int


def sep_plan(node: Node, lanes: int, cores: int, registers: int = 32) -> SepPlan:
    """The geometry lower_sparse_conv3d gives a sparse_sep_conv3d (its default tile when no record is tuned)."""
    return _sep_plan(*sep_nodes(node), lanes, cores, registers)


def _sep_plan(first: Node, second: Node, lanes: int, cores: int, registers: int = 32) -> SepPlan:
    gm, gn = max(first.attrs.group[0], second.attrs.group[0]), max(first.attrs.group[1], second.attrs.group[1])
    _, (N, *_), (OD, OH, OW) = _shapes(second)
    Hf, Wf = vector_plan(first, lanes, cores, masked=False).plane  # (the first stage computes padded rows)
    J = (OH - 1) * Wf + OW
    V = _choose_v(gm, lanes, J, gn, registers)
    fm = filter_pass(gm, registers) % gm  # 0: one pass (a conv of the pair whose gM it does not divide runs one)
    default = SparseTile(V, runs=depth_split(OD, _depth_runs(OD, N * -(-J // (lanes * V)), cores, fused=True))[0],
                         fm=fm)
    return SepPlan(default, OD, (Hf, Wf), J, max_v(gm, gn, registers))


def depth_split(OD: int, runs: int) -> tuple[int, int]:
    """(runs, depths per run) a kernel makes of ``OD`` output depths asked for in ``runs`` runs: runs of equal
    length, the last one shorter, so 4 runs of 6 depths are 3 of 2."""
    per = -(-OD // min(OD, max(1, runs)))
    return -(-OD // per), per


def _depth_runs(OD: int, tiles: int, cores: int, fused: bool = False, span: int = 1) -> int:
    """pw mode: runs of output depths per position tile, each a parallel unit that fills its own ring of ``span``
    depths: for the least time on the busiest of ``cores`` threads, its units x (the run's output depths + RING_FILL
    per ring fill), more runs only where they save over 1 %. Four units per core instead (the rule before) gave
    R(2+1)D's 3x1x1 convs on 14x14 planes (9 tiles) one run, 5 of the 9 units on one thread, and its 2x7x7 ones (4
    tiles) two; Zen 3, KGS 8x4 at 31 %, kernels alone, 11 interleaved rounds (scratch over bench/sparse_layers.py's
    builders), runs before -> after: 460->256 4x14x14 1.72 -> 1.63 ms, 576->256 4x14x14 1.84 -> 1.83, 288->128
    8x28x28 (33 tiles) 3.61 -> 3.40, 1152->512 2x7x7 1.36 -> 1.23, 921->512 2x7x7 1.12 -> 1.10.
    A fused pair's runs: one per core, since each run also recomputes the first conv at the depths it shares with
    the run before (R(2+1)D's 256->576->256 pair at 4x14x14, bench/sep_pairs.py: 5.29 ms in 2 runs, 4.31 ms in 1)."""
    if fused:
        return min(OD, max(1, -(-cores // tiles)))
    best, best_cost = 1, None
    for runs in sorted({depth_split(OD, r)[0] for r in range(1, OD + 1)}):
        per = depth_split(OD, runs)[1]
        cost = -(-tiles * runs // cores) * (per + RING_FILL * (per + span - 1))
        if best_cost is None or cost < 0.99 * best_cost:
            best, best_cost = runs, cost
    return best


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


def _load_transposed(ind: str, at, L: int) -> tuple[list[str], list[str]]:
    """Lines (at indentation ``ind``) loading the L channels of L positions of a blocked input (``xf[at(t) ..
    at(t) + L]`` for position t) and transposing them in registers; and the names of the L results (channel c's L
    positions). The loads are half vectors paired up, [position k | position k + L/2] of the lower channels and of
    the upper ones, so that one round of the transpose is done by the loads (a 256-bit insert, which need not use
    the shuffle port) and log2(L/2) rounds of interleaves within halves finish it: 48 shuffles instead of 64 for
    16 x 16 (an L x L transpose of whole rows takes log2(L) rounds)."""
    H = L // 2
    lines = []
    for part, c0 in (("a", 0), ("b", H)):
        for k in range(H):
            lo, hi = f"xf[T.Ramp({at(k)} + {c0}, 1, {H})]", f"xf[T.Ramp({at(k + H)} + {c0}, 1, {H})]"
            lines.append(f"{ind}{part}0_{k}: T.let = T.Shuffle([{lo}, {hi}], [{', '.join(map(str, range(L)))}])")
    cols = []
    for part in "ab":
        cur, h2 = [f"{part}0_{k}" for k in range(H)], H // 2
        for s in range(H.bit_length() - 1):
            nxt = [""] * H
            for i in range(h2):
                for j, off in ((2 * i, 0), (2 * i + 1, H // 2)):  # lower / upper quarter of each half, interleaved
                    idx = [(L if k % 2 else 0) + hf * H + off + k // 2 for hf in range(2) for k in range(H)]
                    nxt[j] = f"{part}{s + 1}_{j}"
                    lines.append(f"{ind}{nxt[j]}: T.let = T.Shuffle([{cur[i]}, {cur[i + h2]}], "
                                 f"[{', '.join(map(str, idx))}])")
            cur = nxt
        cols += cur
    return lines, cols


def _zip_transpose(ind: str, rows: list[str], L: int, prefix: str) -> tuple[list[str], list[str]]:
    """Lines (at indentation ``ind``) transposing n rows of L lanes (n a power of two, n <= L; row q holds channel q
    at L positions) with log2(n) rounds of zips, and the names of the n results: result m holds positions
    m * L / n .. (m + 1) * L / n - 1, each as its n channels in order. A zip of two vectors (lanes 0 .. L/2 - 1 or
    L/2 .. L - 1 of both, interleaved) is one instruction on NEON (zip1 / zip2) and on AVX-512 (vpermt2ps); asking
    LLVM for each position's n lanes of the n rows instead gave ~9 shuffles per stored position on AVX-512."""
    lines, cur, h = [], list(rows), len(rows) // 2
    lo = ", ".join(str(x) for k in range(L // 2) for x in (k, L + k))
    hi = ", ".join(str(x) for k in range(L // 2, L) for x in (k, L + k))
    for s in range(len(rows).bit_length() - 1):
        nxt = []
        for j in range(h):
            for part, idx in (("l", lo), ("h", hi)):
                name = f"{prefix}{s}{part}{j}"
                lines.append(f"{ind}{name}: T.let = T.Shuffle([{cur[j]}, {cur[j + h]}], [{idx}])")
                nxt.append(name)
        cur = nxt
    return lines, cur


def _prefetch(element: str, locality: int) -> str:
    """A TVMScript statement prefetching the cache line of buffer element ``element`` for reading (locality 3: into
    L1, as prefetcht0; 2: L2)."""
    return f"T.evaluate(T.call_llvm_intrin(\"void\", \"llvm.prefetch.p0\", T.address_of({element}), 0, {locality}, 1))"


def _channel_store(ind: str, st: str, c: int, CB: int, bi: int, Cp: int) -> list[str]:
    """Lines (at indentation ``ind``) of statement ``st`` for channel c of channel block cb of a copy's CB blocks of
    ``bi``: guarded where the last block's channel c falls past the copy's Cp channels."""
    return [f"{ind}{st}"] if (CB - 1) * bi + c < Cp else [f"{ind}if cb * {bi} + {c} < {Cp}:", f"{ind}    {st}"]


def _pw_fill(dims: dict, bi: int, L: int) -> list[str]:
    """Lines (inside ``for dq``, at 16 spaces) copying padded input depth dq of tile (n, jt) into ring slot
    dq % span: row c of the slot holds channel c at the tile's TJ positions, zeros for depth padding, channels past
    C and positions past J. Blocked input with b == lanes: per channel block and vector of positions, L loads of a
    position's b channels, an L x L transpose in registers and L stores (gathering the strided channel instead made
    a separate copy stage a third of the layer's time); plain input: vector loads (contiguous at unit stride)."""
    N, C, D, H, W, Cp, pd, TJ, J, OW, sh, sw, span = (dims[k] for k in (
        "N", "C", "D", "H", "W", "Cp", "pd", "TJ", "J", "OW", "sh", "sw", "span"))
    skip = dims.get("depth_skip")  # a depth-strided pw volume: (sd, OH of one output depth), else None
    I = " " * 16
    sl = f"dq % {span} * {Cp * TJ}"  # the slot's first element

    def row(R):  # the input row (of the volume's rows of sh: h // sh) that output row R reads
        # output row R = od * OH + oh of a depth-strided volume reads input row sd * od * H + sh * oh
        return R if skip is None else f"(({R}) + ({R}) // {skip[1]} * {(skip[0] - 1) * skip[1]})"

    def pos(j):  # flat input position (h * W + w) of output position j of the plane
        if sh == sw == 1 and skip is None:
            return j
        return f"({row(f'({j}) // {OW}')} * {sh * W} + ({j}) % {OW} * {sw})"

    if bi == L:
        CB, XB = -(-Cp // bi), -(-C // bi)
        lines = [f"{I}if dq >= {pd} and dq < {pd + D}:", f"{I}    for cb in range({CB}):",
                 f"{I}        xb: T.let = ((n * {XB} + cb) * {D} + dq - {pd}) * {H * W * bi}",
                 f"{I}        for l0 in range({TJ // L}):"]
        J8 = I + " " * 12

        def copy(ind, at):
            loads, cols = _load_transposed(ind, at, L)
            for c in range(L):
                st = f"xp[T.Ramp({sl} + (cb * {bi} + {c}) * {TJ} + l0 * {L}, 1, {L})] = {cols[c]}"
                loads += _channel_store(ind, st, c, CB, bi, Cp)
            return loads

        # a vector of positions inside the plane (and, strided, inside one output row) loads at constant offsets
        # from one position; the last ones clamp each lane's position, which LLVM computes as a vector of indices
        # and extracts lane by lane (about 80 of the 180 instructions per vector of a channel block): Zen 3, kernels
        # alone, 11-15 interleaved rounds (scratch over bench/sparse_layers.py's layers): R(2+1)D's 144->64 3x1x1
        # 8.14 -> 7.46 ms, its stem's 45->64 3.26 -> 3.06 and 3.28 -> 3.13; S3D's 192->64 1x1x1 and the 1x1x1
        # stride-2 downsampling convs unchanged (+-2 %)
        one_row = "" if sh == sw == 1 and skip is None else f" and q0 % {OW} + {L} <= {OW}"
        lines += [f"{J8}q0: T.let = jt * {TJ} + l0 * {L}", f"{J8}if q0 + {L} <= {J}{one_row}:",
                  f"{J8}    p0: T.let = {pos('q0')}"]
        lines += copy(J8 + "    ", lambda t: f"xb + (p0 + {t * sw}) * {bi}")
        lines += [f"{J8}else:"] + copy(J8 + "    ", lambda t: f"xb + {pos(f'T.min(q0 + {t}, {J - 1})')} * {bi}")
    else:
        if bi:
            at = (f"x[n, T.min(c, {C - 1}) // {bi}, dq - {pd}, {row(f'T.min(jl // {OW}, {J // OW - 1})')} * {sh}, "
                  f"jl % {OW} * {sw}, T.min(c, {C - 1}) % {bi}]")
        else:
            at = f"xf[((n * {C} + T.min(c, {C - 1})) * {D} + dq - {pd}) * {H * W} + {pos(f'T.min(jl, {J - 1})')}]"
            at = at.replace("jl", f"(jt * {TJ} + l)")
        lines = [f"{I}if dq >= {pd} and dq < {pd + D}:", f"{I}    for c in range({Cp}):",
                 f"{I}        for l in T.vectorized({TJ}):"]
        lines.append(f"{I}            xp[{sl} + c * {TJ} + l] = T.if_then_else(c < {C} and jl < {J}, {at}, "
                     f"T.float32(0))".replace("jl", f"(jt * {TJ} + l)"))
    return lines + _zero_slot(I, sl, Cp * TJ, L)


def _zero_slot(ind: str, sl: str, size: int, L: int) -> list[str]:
    """``else:`` and the lines (at indentation ``ind``) zeroing a ring slot of ``size`` floats (a depth that falls
    on the padding), ``size`` a multiple of L."""
    return [f"{ind}else:", f"{ind}    for e in range({size // L}):", f"{ind}        for v in T.vectorized({L}):",
            f"{ind}            xp[{sl} + e * {L} + v] = T.float32(0)"]


def _flat_pad(g: dict, bi: int, L: int) -> str:
    """The padding stage of the flat modes: the copy xp[n, c, phase, d', i, j] = padded input at depth d', row
    sh * i + phase // sw, column sw * j + phase % sw (zero outside the input), one phase plane [Hf, Wf] per phase.
    A blocked input with b == lanes is copied per (n, channel block, phase, d', i) row with L loads of a position's
    b channels, an L x L register transpose and L stores of a channel's positions (gathering each channel with
    stride b instead cost a quarter of R(2+1)D's 64->144 1x3x3 layer, 3.8 of 15 ms); other inputs with vector
    loads along the row (gathers when sw > 1)."""
    N, C, D, H, W, Cp, Dp, Hf, Wf, sh, sw, pb, r = (g[k] for k in (
        "N", "C", "D", "H", "W", "Cp", "Dp", "Hf", "Wf", "sh", "sw", "pb", "r"))
    NPH, plane = sh * sw, Hf * Wf
    if bi != L:
        cc = "T.min(c, {})".format(C - 1)
        sub = {"xn": "n", "xc": f"{cc} // {bi}" if bi else cc, "xci": f"{cc} % {bi}",
               "xd": f"T.max(T.min(dq - {pb[0]}, {D - 1}), 0)", "xh": f"T.max(T.min(hq, {H - 1}), 0)",
               "xw": f"T.max(T.min((j * {sw} + ph % {sw} - {pb[2]}), {W - 1}), 0)"}
        index = ", ".join(sub[k] for k in ("xn", "xc") + ("xd", "xh", "xw")[3 - r:] + (("xci",) if bi else ()))
        ok = (f"c < {C} and dq >= {pb[0]} and dq < {pb[0] + D} and hq >= 0 and hq < {H} and "
              f"j * {sw} + ph % {sw} >= {pb[2]} and j * {sw} + ph % {sw} < {pb[2] + W}")
        return (f"    for rw in T.parallel({N * Cp * NPH * Dp}):\n"
                f"        n: T.let = rw // {Cp * NPH * Dp}\n        c: T.let = rw // {NPH * Dp} % {Cp}\n"
                f"        ph: T.let = rw // {Dp} % {NPH}\n        dq: T.let = rw % {Dp}\n"
                f"        for i in range({Hf}):\n            hq: T.let = i * {sh} + ph // {sw} - {pb[1]}\n"
                f"            for j in T.vectorized({Wf}):\n"
                f"                xp[rw * {plane} + i * {Wf} + j] = T.if_then_else({ok}, x[{index}], T.float32(0))\n")
    XB, CB = -(-C // bi), -(-Cp // bi)
    I = " " * 16
    lines = [f"    for rw in T.parallel({N * CB * NPH * Dp}):",
             f"        n: T.let = rw // {CB * NPH * Dp}", f"        cb: T.let = rw // {NPH * Dp} % {CB}",
             f"        ph: T.let = rw // {Dp} % {NPH}", f"        dq: T.let = rw % {Dp}",
             f"        w0: T.let = ph % {sw} - {pb[2]}",  # input column of position j: j * sw + w0
             f"        for i in range({Hf}):",
             f"            hq: T.let = i * {sh} + ph // {sw} - {pb[1]}",
             f"            if cb < {XB} and dq >= {pb[0]} and dq < {pb[0] + D} and hq >= 0 and hq < {H}:",
             f"                xb: T.let = (((n * {XB} + cb) * {D} + dq - {pb[0]}) * {H} + hq) * {W * bi}"]

    def row(c):  # start of row i of channel cb * bi + c, phase ph, depth dq in xp
        return f"(((n * {Cp} + cb * {bi} + {c}) * {NPH} + ph) * {Dp} + dq) * {plane} + i * {Wf}"

    for tail in (False, True):
        if tail and not Wf % L:
            continue
        lines.append(f"{I}for j0 in range({Wf // L}, {Wf // L + 1}):" if tail else f"{I}for j0 in range({Wf // L}):")
        J = I + "    "
        loads, cols = _load_transposed(
            J, lambda t: f"xb + T.max(T.min((j0 * {L} + {t}) * {sw} + w0, {W - 1}), 0) * {bi}", L)
        lines += loads
        lines.append(f"{J}wl: T.let = T.Ramp(j0 * {L * sw} + w0, {sw}, {L})")
        lines.append(f"{J}inw: T.let = wl >= T.Broadcast(0, {L}) and wl < T.Broadcast({W}, {L})")
        for c in range(L):
            at = f"{row(c)} + j0 * {L}"
            val = f"T.Select(inw, {cols[c]}, T.Broadcast(T.float32(0), {L}))"
            if tail:
                mask = f"T.Ramp(j0 * {L}, 1, {L}) < T.Broadcast({Wf}, {L})"
                st = (f"T.evaluate(T.call_llvm_intrin(\"void\", \"llvm.masked.store\", {val}, "
                      f"xp.access_ptr(\"w\", offset={at}), {mask}))")
            else:
                st = f"xp[T.Ramp({at}, 1, {L})] = {val}"
            lines += _channel_store(J, st, c, CB, bi, Cp)
    lines.append("            else:")
    for c in range(L):
        lines += _channel_store(I, f"for e in T.vectorized({Wf}):\n{I}        xp[{row(c)} + e] = T.float32(0)", c,
                                CB, bi, Cp)
    return "\n".join(lines) + "\n"


def _packed_arrays(a, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build-time arrays of a packed weight: the values flat, row pointers into the kept columns, the row-block
    order and the output channel of every packed row (-1 for padding rows)."""
    GM, GN = a.group
    P, M = len(a.kept), a.filters
    wk = values.reshape(-1).astype(np.float32) if values.size else np.zeros(GN * GM, np.float32)
    indptr = np.concatenate([[0], np.cumsum(a.kept)]).astype(np.int32)
    order = np.asarray(a.order if a.order else range(P), dtype=np.int32)
    outch = np.asarray(a.perm if a.perm else list(range(M)) + [-1] * (P * GM - M), dtype=np.int32)
    return wk, indptr, order, outch


def _column_loop(ind: str, lo: str, hi: str, xo: str, base: str, acc: str, wk: str, buf: str, cs: int, GN: int,
                 GM: int, V: int, L: int, FM: int = 0, VP: int = 0) -> list[str]:
    """Lines (at indentation ``ind``) of the micro-kernel: for kept columns b in lo .. hi, input offset ``xo`` =
    ``base``, then gN channels x gM filters x V vectors of FMAs into ``acc`` with the weights of ``wk`` broadcast and
    the inputs read from ``buf`` (channels ``cs`` apart). With ``FM`` < gM the columns are run through once per FM
    filters (each pass a loop of its own with constant accumulator rows, which LLVM keeps in registers while the
    other passes' rows wait on the stack): FM x V accumulators instead of gM x V, the passes taking turns every
    PASS_COLUMNS columns; with ``VP`` < V, also once per VP vectors (a wide position tile, WIDE_TILE)."""
    FM, VP = pass_filters(GM, FM), pass_vectors(V, VP)
    G = PASS_COLUMNS if FM < GM or VP < V else 0
    lines = []
    if G:  # the passes take turns every G columns, whose inputs are still in L1 for the next pass
        lines += [f"{ind}for bg in range(({hi} - {lo} + {G - 1}) // {G}):",
                  f"{ind}    b0: T.let = {lo} + bg * {G}"]
        lo, hi, ind = "b0", f"T.min(b0 + {G}, {hi})", ind + "    "
    for vs in vector_passes(V, VP):
        for f0 in range(0, GM, FM):
            p = f"{vs.start * L} + vo * {L} + vi"  # position in the tile
            lines += [f"{ind}for b in range({lo}, {hi}):",
                      f"{ind}    {xo}: T.let = {base}",
                      f"{ind}    for c in T.unroll({GN}):",
                      f"{ind}        for i in T.unroll({FM}):",
                      f"{ind}            for vo in T.unroll({len(vs)}):",
                      f"{ind}                for vi in T.vectorized({L}):",
                      f"{ind}                    {acc}[{f0} + i, {p}] = {acc}[{f0} + i, {p}] + "
                      f"{wk}[(b * {GN} + c) * {GM} + {f0} + i] * {buf}[{xo} + c * {cs} + {p}]"]
    return lines


def masked_shift(kw, dw: int, pad: int, sw: int):
    """On rows without pad columns (SparsePlan.masked), the columns tap ``kw`` reads off the output position's own
    column in its phase plane (the input's column sw * ow + kw * dw - pad; floor division, also on numpy arrays):
    where it is not 0, a tile's lanes at the row's ends are masked."""
    return (kw * dw - pad) // sw


def _masked_columns(ind: str, seg: str, KW: int, dw: int, pad: int, GN: int, GM: int, V: int, L: int,
                    cs: int, VP: int = 0, sw: int = 1, FM: int = 0, bits: bool = False) -> str:
    """The column loop over rows without pad columns (SparsePlan.masked): a row block's columns of one reduction
    chunk in runs of one kw (segment starts cpk[seg + kw]); a run whose kw reads off the row loads the tile's
    inputs with the lanes of the columns outside the row masked to zero (mk<kw>_<vector>, made per tile), the
    others plainly. With ``VP`` < V or ``FM`` < gM, the tile's vectors in passes of VP and the row block's filters
    in passes of FM, taking turns every PASS_COLUMNS columns (as _column_loop). ``sw``: the column stride (phase
    planes: tap kw reads (kw * dw - pad) // sw columns off). ``bits``: the masks are int32 vectors of all-ones and
    zeros, ANDed with the loaded inputs (AVX2), instead of boolean vectors selecting them."""
    VP, FM = pass_vectors(V, VP), pass_filters(GM, FM)
    lines = []
    for w in range(KW):
        shift = masked_shift(w, dw, pad, sw)
        lo, hi, ind_ = f"cpk[{seg} + {w}]", f"cpk[{seg} + {w + 1}]", ind
        if VP < V or FM < GM:
            G = PASS_COLUMNS
            lines += [f"{ind}for bg in range(({hi} - {lo} + {G - 1}) // {G}):", f"{ind}    b0: T.let = {lo} + bg * {G}"]
            lo, hi, ind_ = "b0", f"T.min(b0 + {G}, {hi})", ind + "    "
        for vs in vector_passes(V, VP):
            for f0 in range(0, GM, FM):
                lines += _masked_pass(ind_, lo, hi, shift, GN, GM, vs, L, cs, w, range(f0, f0 + FM), bits)
    return "\n".join(lines) + "\n"


def _masked_pass(ind: str, lo: str, hi: str, shift: int, GN: int, GM: int, vecs: range, L: int, cs: int,
                 w: int, filters: range, bits: bool = False) -> list[str]:
    """_masked_columns' loop over columns lo .. hi of one kw (``w``, reading ``shift`` columns off) for the tile's
    vectors ``vecs`` and the row block's ``filters``."""
    lines = [f"{ind}for b in range({lo}, {hi}):", f"{ind}    xo: T.let = xt + off[b]"]
    for c in range(GN):
        for vo in vecs:
            at = f"xo + {c * cs + vo * L}"
            # (a select over a plain load, which stays in bounds: LLVM makes it a zero-masking load; the
            # llvm.masked.load intrinsic through a pointer kept the accumulators in memory, 2x slower)
            load = f"xp[T.Ramp({at}, 1, {L})]"
            if shift and bits:
                load = (f"T.reinterpret(\"float32x{L}\", T.bitwise_and(T.reinterpret(\"int32x{L}\", {load}), "
                        f"mk{w}_{vo}))")
            elif shift:
                load = f"T.Select(mk{w}_{vo}, {load}, T.Broadcast(T.float32(0), {L}))"
            lines.append(f"{ind}    x{c}_{vo}: T.let = {load}")
        for i in filters:
            for vo in vecs:
                a = f"acc[{i}, T.Ramp({vo * L}, 1, {L})]"
                lines.append(f"{ind}    {a} = {a} + T.Broadcast(wk[(b * {GN} + {c}) * {GM} + {i}], {L}) * x{c}_{vo}")
    return lines


@dataclass
class _FirstStage:
    """The first conv of a fused pair: where it reads its input (xq: at unit stride on a blocked input, the
    parallel unit's copy of the tile's window at the depth it computes, made per depth with the window tables wsrc and
    wok; otherwise a padded copy of the whole input, made before the parallel loop as the flat modes make theirs),
    its build-time arrays and the lines that compute its output for one position tile at one depth into a ring slot
    of the second conv."""

    params: list[str]
    args: list
    prologue: str  # allocation, padding stage and slack of xq
    fill: list[str]  # inside ``for dq`` (16 spaces): slot dq % span of the ring xp <- the first conv at depth dq
    init: list[str]  # once per parallel unit (8 spaces): the ring rows no filter of the first conv writes, zeroed
    impl: str


def _first_stage(pre: Node, target, TJ: int, V: int, Hf: int, Wf: int, ring: dict, fm: int = 0) -> _FirstStage:
    a = pre.attrs
    L = target.vector_lanes
    values, cols = pre.inputs[1].data, pre.inputs[2].data
    if values is None or cols is None:
        raise BuildError(f"sparse_conv3d needs its packed weights as constants with data: {pre}")
    has_bias = len(pre.inputs) == 4
    r, (N, C, D, H, W), (OD, OH, OW) = _shapes(pre)
    _, KH, KW = spatial_5d(a.kernel, 1, r)
    _, dh, dw = spatial_5d(a.dilation, 1, r)
    _, sh, sw = spatial_5d(a.stride, 1, r)
    pb = spatial_5d(a.pad[:r], 0, r)
    GM, GN = a.group
    P, M = len(a.kept), a.filters
    Cp = -(-C // GN) * GN
    plane = Hf * Wf  # one phase plane of the padded copy (sh x sw of them for a strided conv, as the flat modes)
    PS = D * plane  # one phase of one channel (no depth padding: the first conv has no depth reach)
    cs = sh * sw * PS
    xs = Cp * cs
    JT = -(-((OH - 1) * Wf + OW) // TJ)
    q, s = cols // (KH * KW), cols % (KH * KW)
    kh, kw = s // KW * dh, s % KW * dw
    # a unit-stride conv on a blocked input reads a copy of its tile's window instead (see _FirstStage): the
    # positions jt * TJ .. + WL of the padded plane, one row of WLp per channel
    window = sep_first_windowed(a, L)
    if window:
        WLp = -(-(TJ + (KH - 1) * dh * Wf + (KW - 1) * dw) // L) * L
        cs = WLp
    off = (q * GN * cs + (kh % sh * sw + kw % sw) * PS + kh // sh * Wf + kw // sw).astype(np.int32)
    off = off if off.size else np.zeros(1, np.int32)
    wk, indptr, order, outch = _packed_arrays(a, values)
    if window:
        # for each position q of the padded plane a window can cover: the input position it copies (clamped) and
        # whether it is on the input (not a row's padding, not past the plane)
        QM = JT * TJ + WLp
        ii, jj = np.arange(QM) // Wf - pb[1], np.arange(QM) % Wf - pb[2]
        wsrc = (np.clip(ii, 0, H - 1) * W + np.clip(jj, 0, W - 1)).astype(np.int32)
        wok = ((ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)).astype(np.int32)
        prologue = ""
    else:
        max_read = (N - 1) * xs + (D - 1) * plane + (JT - 1) * TJ + TJ - 1 + int(off.max()) + (GN - 1) * cs
        total = max(N * xs, max_read + 1)
        geo = dict(N=N, C=C, D=D, H=H, W=W, Cp=Cp, Dp=D, Hf=Hf, Wf=Wf, sh=sh, sw=sw, pb=pb, r=r)
        prologue = (f"    xq = T.alloc_buffer(({total},), \"float32\")\n"
                    + _flat_pad(geo, a.in_block, L).replace("xp[", "xq[").replace("xp.access_ptr", "xq.access_ptr")
                    + (f"    for e in range({total - N * xs}):\n        xq[{N * xs} + e] = T.float32(0)\n"
                       if total > N * xs else ""))
    span, Cr, pd, Dm = ring["span"], ring["Cp"], ring["pd"], ring["D"]
    if Dm != D or Cr < M:
        raise BuildError(f"fused sparse convs: {pre} does not produce the second conv's input")
    bias = " + bias1[oc1]" if has_bias else ""
    act = _activation(f"(acc1[i, v]{bias})", a.act, tuple(a.act_params), 1)
    I = " " * 16
    sl = f"dq % {span} * {Cr * TJ}"
    fill = [f"{I}if dq >= {pd} and dq < {pd + Dm}:"]
    if window:
        # per channel block and vector of window positions: L loads of a position's L channels (from the clamped
        # input position), the L x L transpose, and L stores of a channel's positions, zero off the input (the
        # condition is not let-bound: TVM's codegen cannot bind a vector of bools loaded from a buffer)
        CB, XB, J4 = -(-Cp // L), -(-C // L), I + " " * 12
        fill += [f"{I}    for cb in range({CB}):",
                 f"{I}        xb: T.let = ((n * {XB} + cb) * {D} + dq - {pd}) * {H * W * L}",
                 f"{I}        for l0 in range({WLp // L}):",
                 f"{J4}q0: T.let = jt * {TJ} + l0 * {L}"]
        loads, wcols = _load_transposed(J4, lambda t: f"xb + wsrc[q0 + {t}] * {L}", L)
        fill += loads
        on = f"wok[T.Ramp(q0, 1, {L})] > T.Broadcast(0, {L})"
        for c in range(L):
            st = (f"xq[T.Ramp((cb * {L} + {c}) * {WLp} + l0 * {L}, 1, {L})] = "
                  f"T.Select({on}, {wcols[c]}, T.Broadcast(T.float32(0), {L}))")
            fill += _channel_store(J4, st, c, CB, L, Cp)
    fill += [f"{I}    xt1: T.let = {'0' if window else f'n * {xs} + (dq - {pd}) * {plane} + jt * {TJ}'}",
             f"{I}    for kk1 in range({P}):",
             f"{I}        k1: T.let = order1[kk1]",
             f"{I}        for i in T.unroll({GM}):",
             f"{I}            for v in T.vectorized({TJ}):",
             f"{I}                acc1[i, v] = T.float32(0)",
             *_column_loop(I + " " * 8, "indptr1[k1]", "indptr1[k1 + 1]", "xo1", "xt1 + off1[b]", "acc1", "wk1", "xq",
                           cs, GN, GM, V, L, fm),
             # row i of the block is channel outch1[..] of the ring slot: one contiguous row per filter
             f"{I}        for i in range({GM}):",
             f"{I}            oc1: T.let = outch1[k1 * {GM} + i]",
             f"{I}            if oc1 >= 0:",
             f"{I}                for v in T.vectorized({TJ}):",
             f"{I}                    xp[{sl} + oc1 * {TJ} + v] = {act}",
             *_zero_slot(I, sl, Cr * TJ, L)]
    init = [f"        xq = T.decl_buffer(({Cp * WLp},), \"float32\")"] if window else []  # the unit's window
    if Cr > M:  # ring rows of the channels past M (the second conv's padded channels) stay zero
        init += [f"        for e in range({span}):", f"            for c in range({M}, {Cr}):",
                 f"                for v in T.vectorized({TJ}):",
                 f"                    xp[e * {Cr * TJ} + c * {TJ} + v] = T.float32(0)"]
    params = [f"wk1: T.Buffer(({wk.size},), \"float32\")", f"off1: T.Buffer(({off.size},), \"int32\")",
              f"indptr1: T.Buffer(({P + 1},), \"int32\")", f"order1: T.Buffer(({P},), \"int32\")",
              f"outch1: T.Buffer(({P * GM},), \"int32\")"]
    args = [wk, off, indptr, order, outch]
    if window:
        params += [f"wsrc: T.Buffer(({QM},), \"int32\")", f"wok: T.Buffer(({QM},), \"int32\")"]
        args += [wsrc, wok]
    if has_bias:
        params.append(f"bias1: T.Buffer(({M},), \"float32\")")
        args.append(pre.inputs[3])
    dens = sum(a.kept) / max(1, P * (Cp // GN) * KH * KW)
    impl = f"{a.sparsity or 'kgs'} {'x'.join(map(str, a.kernel))} kept={dens:.0%}{' windowed' if window else ''}"
    return _FirstStage(params, args, prologue, fill, init, impl)


def lower_sparse_conv3d(node: Node, target, pre: Node | None = None, sep_tile: SparseTile | None = None) -> Kernel:
    """The sparse conv kernel of ``node``; with ``pre``, the fused kernel of the sparse conv ``pre`` followed by
    ``node`` (a pair that rt3d.ir.ops.sep_pair_problem accepts; node's input is pre's output, which the kernel never
    writes): the pw mode's ring slots are filled by computing pre's output for the tile at that depth instead of
    copying it from memory."""
    a = node.attrs
    x = node.inputs[0]
    if pre is not None:
        why = sep_pair_problem(pre.attrs, a, target.vector_lanes) or (
            "not float32" if pre.inputs[0].type.dtype != "float32" else "")
        if why:
            raise BuildError(f"sparse convs {pre.name or pre.output.name} -> {node.name or node.output.name} "
                             f"cannot be fused: {why}")
    if x.type.dtype != "float32":
        raise BuildError(f"sparse_conv3d supports float32 only, got {x.type.dtype}: {node}")
    values, cols = node.inputs[1].data, node.inputs[2].data
    if values is None or cols is None:
        raise BuildError(f"sparse_conv3d needs its packed weights as constants with data: {node}")
    has_res = a.residual
    has_bias = len(node.inputs) - 3 - int(has_res) == 1
    if has_res and node.inputs[-1].type.shape != node.output.type.shape:
        raise BuildError(f"sparse_conv3d residual {node.inputs[-1].type} must have the output's shape: {node}")
    if not a.kernel or (pre is None and one_position(node)):
        return _lower_sparse_fc(node, values, cols, has_bias)
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
    Dp = D + pb[0] + pe[0]
    plan = (sparse_plan(node, L, target.num_cores, target.l2_bytes, target.vector_registers, target.l1_bytes)
            if pre is None else vector_plan(node, L, target.num_cores, target.l2_bytes, target.vector_registers))
    rec = target.tuned.get(sparse_workload_key(node)) if pre is None else None
    if rec is not None and rec.th and not direct_problem(node, L):
        return lower_sparse_direct(node, target, rec)  # a tuned record of the direct mode
    if plan.mode == "direct":
        if rec is None or rec.th:
            return lower_sparse_direct(node, target, plan.default)
        # a tuned record of the position-vectorized modes where the default is direct
        plan = vector_plan(node, L, target.num_cores, target.l2_bytes, target.vector_registers)
    mode, J = plan.mode, plan.positions
    depth_skip = None
    if plan.volume and pre is None:
        # the volume as one plane of OD x OH rows (pw_volume): the kernel reads and writes flat views; a depth
        # stride skips sd - 1 input depths after each output depth's rows (_pw_fill's depth_skip)
        depth_skip = (sd, OH) if sd > 1 else None
        D, H, OD, OH, sd = 1, D * H, 1, OD * OH, 1
        Dp = D
    # the flat copy is split into sh x sw phases (padded rows sh * i + ph_h, columns sw * j + ph_w), so that a
    # spatially strided conv reads consecutive positions of one phase plane; one phase at unit stride
    (Hf, Wf), NPH = plan.plane, sh * sw
    if pre is not None:
        # fused pair: positions run along pre's padded plane (or phase plane: rows of pitch Wf, as its flat modes),
        # one depth at a time; both convs share the position tile (the pair's tuning record or its heuristic's), and
        # the write-back drops the padding columns as flat2 does
        sp = _sep_plan(pre, node, L, target.num_cores, target.vector_registers)
        (Hf, Wf), J, tile = sp.plane, sp.positions, sep_tile or sp.default
    else:
        tile = target.tuned.get(sparse_workload_key(node)) or plan.default
    plane, S = Hf * Wf, KD * KH * KW
    PS = Dp * plane  # one phase of one channel
    cs, xs = NPH * PS, Cp * NPH * PS
    oplane = OH * OW

    V, CH = tile.v, min(max(1, tile.chunks), max(1, P))
    # filters and position vectors per pass over a row block's columns (the pw mode's tiles are one register tile)
    FM, VP = pass_filters(GM, tile.fm), pass_vectors(V, tile.vp if mode != "pw" else 0)
    masked = plan.masked and pre is None and mode == "flat3"
    # AVX2's 16 registers (no mask registers): masks as all-ones / zero vectors ANDed with the inputs
    # (_masked_pass), where LLVM recomputed a select's i1 mask per column (+27 instructions per 48 FMAs in C3D's
    # 512->512 4x14x14 layer forced onto rows without pad columns: 0.83 of the dense kernel's GFLOP/s, 0.97 with the
    # AND in the next scratch run, the padded rows 0.97-0.99 in both)
    bits = masked and target.vector_registers < 32
    # masked rows: zeros before the copy, which the first row's left taps point into (-(-pad // sw) columns)
    FS = -(-pb[2] // sw) if masked else 0
    TJ = L * V
    JT = -(-J // TJ)
    Q = Cp // GN  # channel blocks
    NS = min(max(1, tile.split), Q) if mode != "pw" else 1
    QS = -(-Q // NS)  # channel blocks per reduction chunk
    NS = -(-Q // QS)
    if NS > 1 and _parked_bytes(P, CH, GM, TJ) > PARK_LIMIT:
        NS, QS = 1, Q  # the parked accumulators would not fit a thread's stack
    TG = min(max(1, tile.tiles), JT) if mode != "pw" and NS == 1 else 1
    JG = -(-JT // TG)  # tile groups
    if mode != "pw":
        units = plan.outer * JG
    else:
        # each parallel unit (n, tile, run of output depths) keeps a ring of the input depths it needs, each a
        # [C, TJ] slab (a column's gN channels TJ apart) in slot depth % span; a column finds its depth's slot from
        # its kernel depth (kdo) in a build-time table of the slots' offsets (slots[s0 + kdo], s0 the first depth's
        # slot). Writing every slab twice instead (slots s and s + span, each kernel depth at a constant offset from
        # the first one's slot) cost 3 % of R(2+1)D's 144->64 3x1x1 layer in stores.
        span = (KD - 1) * dd + 1
        cs = TJ
        ODC, ODS = depth_split(OD, tile.runs if tile.runs > 0
                               else _depth_runs(OD, N * JT, target.num_cores, pre is not None, span))
        units = N * JT * ODC
    # build-time arrays: input offset of every kept column, row pointers, order, chunk bounds, output channels
    q, s = cols // S, cols % S
    kd, kh, kw = s // (KH * KW), (s // KW) % KH, s % KW
    if mode == "pw":
        off, kdo = (q * GN * TJ).astype(np.int32), (kd * dd).astype(np.int32)
        # (a table, where the column's ((od * sd + kdo) % span) * Cp * TJ was a division by span per column: 17
        # scalar instructions next to its 48 FMAs on AVX2, and LLVM turned a compare-and-subtract wrap back into a
        # division; Zen 3, kernels alone, 11 interleaved rounds (scratch over bench/sparse_layers.py's layers), KGS
        # 8x4 at 31 %: R(2+1)D's 144->64 3x1x1 layer 10.89 -> 9.65 ms, its stem's 45->64 4.09 -> 3.49)
        slots = (np.arange(2 * span - 1) % span * Cp * TJ).astype(np.int32)
    else:
        # (masked rows hold the input's columns unshifted: tap kw reads column sw * ow + kw * dw - pad, of phase
        # (kw * dw - pad) % sw, in its phase plane (kw * dw - pad) // sw columns off; floor division on numpy ints)
        cw = kw * dw - pb[2] if masked else kw * dw
        off = (q * GN * cs + ((kh * dh) % sh * sw + cw % sw) * PS + kd * dd * plane
               + (kh * dh) // sh * Wf + cw // sw + FS).astype(np.int32)
    wk, indptr, order, outch = _packed_arrays(a, values)
    if masked:
        # each row block's columns in runs of one kw (within each reduction chunk), so that a run's lanes share a
        # mask: cpk[k * (NS * KW + 1) + c * KW + w] is where chunk c's run of kw = w starts
        key = (q // QS) * KW + kw
        perm = np.concatenate([indptr[k] + np.argsort(key[indptr[k]:indptr[k + 1]], kind="stable")
                               for k in range(P)]).astype(np.int64) if cols.size else np.zeros(0, np.int64)
        off, key = off[perm], key[perm]
        wk = np.ascontiguousarray(wk.reshape(-1, GN * GM)[perm]).reshape(-1)
        cpk = np.zeros(P * (NS * KW + 1), np.int32)
        for k in range(P):
            cpk[k * (NS * KW + 1):(k + 1) * (NS * KW + 1)] = indptr[k] + np.searchsorted(
                key[indptr[k]:indptr[k + 1]], np.arange(NS * KW + 1))
        if bits:
            shifts = sorted({masked_shift(w_, dw, pb[2], sw) for w_ in range(KW)} - {0})
            # masks as loads from a table (shift, the vector's first column, lane) of all-ones / zeros: LLVM keeps
            # a load opaque, where a mask it computes is an i1 vector that its code generator sinks into the
            # column loop and recomputes there, per input vector and column, on AVX2 (no mask registers)
            col = (np.arange(Wf)[:, None] + np.arange(L)[None, :]) % Wf
            mtab = np.stack([np.where((col + d >= 0) & (col + d < Wf), -1, 0) for d in shifts]
                            or [np.zeros((Wf, L))]).astype(np.int32).reshape(-1)
    bounds = np.concatenate([[0], np.cumsum(chunk_sizes(P, CH))]).astype(np.int32)
    # reduction chunks: row block k's columns of chunk c (channel blocks c * QS ..) are cp[k * (NS + 1) + c] ..
    # (masked rows: cpk's bounds at kw = 0 instead)
    cp = np.zeros(P * (NS + 1), np.int32)
    for k in range(P if NS > 1 and not masked else 0):
        qk = cols[indptr[k]:indptr[k + 1]] // S  # sorted: columns are packed channel block by channel block
        cp[k * (NS + 1):(k + 1) * (NS + 1)] = indptr[k] + np.searchsorted(qk, np.arange(NS + 1) * QS)
    off = off if off.size else np.zeros(1, np.int32)
    kdo = (kdo if kdo.size else np.zeros(1, np.int32)) if mode == "pw" else None
    stage1 = None if pre is None else _first_stage(pre, target, TJ, V, Hf, Wf,
                                                    dict(span=span, Cp=Cp, pd=pb[0], D=D), tile.fm)
    wmode = "flat2" if stage1 else mode  # the write-back's position geometry

    # the input tile: base index of the tile's first position, and the stride between positions
    if mode == "flat3":
        base = f"n * {xs} + jt * {TJ}"
        max_base = (N - 1) * xs + (JT - 1) * TJ
    elif mode == "pw":
        base = f"od * {sd}"  # the first input depth of output depth od; a column's slot is (base + kdo) % span
        max_base = 0
    else:
        base = f"n * {xs} + od * {sd * plane} + jt * {TJ}"
        max_base = (N - 1) * xs + (OD - 1) * sd * plane + (JT - 1) * TJ
    max_read = max_base + TJ - 1 + int(off.max()) + (GN - 1) * cs
    total = max(FS + N * xs, max_read + 1) if mode != "pw" else 0
    slack = total - FS - N * xs

    # the position tiles left over after an even deal to the threads, shared by row blocks (SHARE_REMAINDER): the
    # parallel loop runs over shared_schedule's table of (unit, row-block range); not where the units are already
    # chunks or groups of tiles
    share = shared_schedule(units, target.num_cores, P) if mode != "pw" and CH == 1 and TG == 1 else None
    if share is not None:
        bounds = share
    jg = "jt" if TG == 1 else "g"  # the parallel unit's position tile, or group of tiles
    u = "u" if share is not None else "t"  # the unit's index (with its chunk ch, where units are chunked)
    if mode == "flat3":
        decode = f"n: T.let = {u} // {JG * CH}\n        {jg}: T.let = {u} // {CH} % {JG}"
    elif mode == "pw":
        decode = (f"n: T.let = {u} // {JT * ODC * CH}\n        jt: T.let = {u} // {ODC * CH} % {JT}\n"
                  f"        oq: T.let = {u} // {CH} % {ODC}")
    else:
        decode = (f"n: T.let = {u} // {OD * JG * CH}\n        od: T.let = {u} // {JG * CH} % {OD}\n"
                  f"        {jg}: T.let = {u} // {CH} % {JG}")
    if share is not None:  # the unit's row blocks: order[rb0 .. rb1]
        decode = (f"u: T.let = bounds[t * 3]\n        {decode}\n        rb0: T.let = bounds[t * 3 + 1]\n"
                  f"        rb1: T.let = bounds[t * 3 + 2]")
    else:
        decode += (f"\n        ch: T.let = t % {CH}\n        rb0: T.let = bounds[ch]\n"
                   "        rb1: T.let = bounds[ch + 1]")

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
        if wmode in ("flat3", "flat2"):
            tl.append(f"{T8}    jl: T.let = jt * {TJ} + l")
            tl.append(f"{T8}    rl: T.let = jl // {Wf}")
            tl.append(f"{T8}    cl: T.let = jl - rl * {Wf}")
            ok = (f"cl < {OW} and rl % {Hf} < {OH} and rl // {Hf} < {OD}" if wmode == "flat3"
                  else f"cl < {OW} and rl < {OH}")
            at = (f"rl // {Hf} * {oplane} + rl % {Hf} * {OW} + cl" if wmode == "flat3"
                  else f"od * {oplane} + rl * {OW} + cl")
        else:
            tl.append(f"{T8}    cl: T.let = jt * {TJ} + l")
            ok, at = f"cl < {oplane}", f"od * {oplane} + cl"  # pw: a tile is a run of the output plane
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
        # registers (zips, so GM a power of two) instead of being stored lane by lane with stride b. run0[k]: its
        # first channel or -1.
        if 2 <= GM <= bo and GM & (GM - 1) == 0:
            for k in range(P):
                rows = outch[k * GM:(k + 1) * GM]
                if rows[0] >= 0 and rows[0] % bo + GM <= bo and (rows == rows[0] + np.arange(GM)).all():
                    run0[k] = rows[0]
        if (run0 >= 0).any():
            I4 = " " * 16
            fast.append(f"{I4}yb0: T.let = (n * {Mb} + c0 // {bo}) * {OD * oplane * bo} + c0 % {bo}")
            n_ = min(GM, L)  # rows per zipped group: a group's n lanes of a position are stored together

            def put(ind: str, at: str, u: str, name: str) -> list[str]:
                if not has_res:
                    return [f"{ind}yf[T.Ramp({at}, 1, {n_})] = {u}"]
                return [f"{ind}{name}: T.let = {u} + rf[T.Ramp({at}, 1, {n_})]",
                        f"{ind}yf[T.Ramp({at}, 1, {n_})] = {_activation(name, a.act, tuple(a.act_params), n_)}"]

            for vo in range(V):
                for q in range(GM):
                    t = f"acc[{q}, T.Ramp({vo * L}, 1, {L})]"
                    t = f"{t} + T.Broadcast(bias[c0 + {q}], {L})" if has_bias else t
                    fast.append(f"{I4}t{vo}_{q}: T.let = {t}")
                # log2(n) rounds of zips turn each group of n rows into n vectors of L / n positions' n channels
                # (consecutive channels of one output block), stored a group of n lanes at a time: at consecutive
                # positions for a full vector, otherwise each group where the position table puts it (a vector that
                # straddles a row end: about 16 in 57 at C3D's 56x56)
                groups = []  # (the group's first lane in the vector, its channel offset, its n lanes)
                for g in range(GM // n_):
                    zl, vecs = _zip_transpose(I4, [f"t{vo}_{g * n_ + j}" for j in range(n_)], L, f"z{vo}{g}_")
                    fast += zl
                    for m, vec in enumerate(vecs):
                        if not has_res:  # the activation on whole vectors, before they are split
                            fast.append(f"{I4}{vec}a: T.let = {_activation(vec, a.act, tuple(a.act_params), L)}")
                        for k in range(L // n_):
                            src_ = vec if has_res else f"{vec}a"
                            u = (src_ if n_ == L else
                                 f"T.Shuffle([{src_}], [{', '.join(str(k * n_ + e) for e in range(n_))}])")
                            groups.append((m * (L // n_) + k, g * n_, u))
                fast.append(f"{I4}if full_{vo}:")
                for e, (lane, c, u) in enumerate(groups):
                    fast += put(I4 + "    ", f"yb0 + (pos[{vo * L}] + {lane}) * {bo} + {c}", u, f"r{vo}_{e}")
                fast.append(f"{I4}else:")
                for e, (lane, c, u) in enumerate(groups):
                    fast.append(f"{I4}    if pos[{vo * L + lane}] >= 0:")
                    fast += put(I4 + "        ", f"yb0 + pos[{vo * L + lane}] * {bo} + {c}", u, f"r{vo}_{e}")
    elif wmode in ("flat3", "flat2"):
        # padded row R of the flattened volume holds output row R % H' of depth R // H' (flat3) or row R (flat2)
        def row_ok(R):
            return f"{R} % {Hf} < {OH} and {R} // {Hf} < {OD}" if wmode == "flat3" else f"{R} < {OH}"

        def out_idx(R, col):
            if wmode == "flat3":
                return f"{R} // {Hf} * {oplane} + {R} % {Hf} * {OW} + {col}"
            return f"od * {oplane} + {R} * {OW} + {col}"

        nseg = 1 + -(-(L - 1) // Wf)  # padded rows one vector can touch
        for vo in range(V):
            tl.append(f"{T8}j0_{vo}: T.let = jt * {TJ} + {vo * L}")
            tl.append(f"{T8}r0_{vo}: T.let = j0_{vo} // {Wf}")
            tl.append(f"{T8}c0_{vo}: T.let = j0_{vo} - r0_{vo} * {Wf}")
            tl.append(f"{T8}full_{vo}: T.let = c0_{vo} + {L} <= {OW} and {row_ok(f'r0_{vo}')}")
            tl.append(f"{T8}o_{vo}: T.let = {out_idx(f'r0_{vo}', f'c0_{vo}')}")
            wb.append(f"{I8}if full_{vo}:")
            wb += store(I8 + "    ", f"ybase + o_{vo}", None, vo)
            wb.append(f"{I8}else:")
            for seg in range(nseg):
                R = f"(r0_{vo} + {seg})"
                sh_ = f"(j0_{vo} - {R} * {Wf})"
                mask = f"T.Ramp({sh_}, 1, {L}) >= T.Broadcast(0, {L}) and T.Ramp({sh_}, 1, {L}) < T.Broadcast({OW}, {L})"
                wb.append(f"{I8}    if {row_ok(R)}:")
                wb += store(I8 + "        ", f"ybase + {out_idx(R, sh_)}", f"({mask})", vo)
    else:
        for vo in range(V):
            tl.append(f"{T8}ow_{vo}: T.let = jt * {TJ} + {vo * L}")
            tl.append(f"{T8}o_{vo}: T.let = od * {oplane} + ow_{vo}")
            idx = f"ybase + o_{vo}"
            wb.append(f"{I8}if ow_{vo} + {L} <= {oplane}:")
            wb += store(I8 + "    ", idx, None, vo)
            wb.append(f"{I8}elif ow_{vo} < {oplane}:")
            wb += store(I8 + "    ", idx, f"(T.Ramp(ow_{vo}, 1, {L}) < T.Broadcast({oplane}, {L}))", vo)

    xin = pre.inputs[0] if pre is not None else x  # the kernel's input tensor
    params = [f"x: T.Buffer({tuple(xin.type.shape)}, \"float32\")",
              f"wk: T.Buffer(({wk.size},), \"float32\")", f"off: T.Buffer(({off.size},), \"int32\")",
              f"indptr: T.Buffer(({P + 1},), \"int32\")", f"order: T.Buffer(({P},), \"int32\")",
              f"bounds: T.Buffer(({bounds.size},), \"int32\")", f"outch: T.Buffer(({P * GM},), \"int32\")"]
    if fast:
        params.append(f"run0: T.Buffer(({P},), \"int32\")")
    if NS > 1 and not masked:
        params.append(f"cp: T.Buffer(({cp.size},), \"int32\")")
    if masked:
        params.append(f"cpk: T.Buffer(({cpk.size},), \"int32\")")
    if bits:
        params.append(f"mtab: T.Buffer(({mtab.size},), \"int32\")")
    if mode == "pw" and span > 1:
        params.append(f"kdo: T.Buffer(({kdo.size},), \"int32\")")
        params.append(f"slots: T.Buffer(({slots.size},), \"int32\")")
    if has_bias:
        params.append(f"bias: T.Buffer(({M},), \"float32\")")
    if stage1:
        params += stage1.params
    if has_res:
        params.append(f"res: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    params.append(f"y: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    ysize = int(np.prod(node.output.type.shape))
    # the padded input row (n, c, d', h') as a vector over w'
    # (inlined, not let-bound: a let inside a vectorized loop would be evaluated for lane 0 only)
    res_alias = f'    rf = T.decl_buffer(({ysize},), "float32", data=res.data)' if has_res else ""
    wb_text = "\n".join(wb)
    osp = OD * oplane
    ybase = f"(n * {Mb} + oc // {bo}) * {osp * bo} + oc % {bo}" if bo else f"(n * {M} + oc) * {osp}"
    rowwise = (f"            for i in range({GM}):\n                oc: T.let = outch[k * {GM} + i]\n"
               f"                if oc >= 0:\n                    ybase: T.let = {ybase}\n{wb_text}")
    if fast:
        write_back = ("            c0: T.let = run0[k]\n            if c0 >= 0:\n"
                      + "\n".join(fast) + "\n            else:\n"
                      + textwrap.indent(rowwise, "    "))
    else:
        write_back = rowwise
    # a blocked output's channels past M are zeros (the layout's contract); no row block writes them
    tail = (f"    for e in T.parallel({N * osp}):\n        for c in range({M % bo}, {bo}):\n"
            f"            yf[((e // {osp} * {Mb} + {Mb - 1}) * {osp} + e % {osp}) * {bo} + c] = T.float32(0)\n"
            if bo and M % bo else "")
    tile_text = "\n".join(tl)
    geo = dict(N=N, C=C, D=D, H=H, W=W, Cp=Cp, Dp=Dp, Hf=Hf, Wf=Wf, sh=sh, sw=sw, r=r,
               pb=(pb[0], pb[1], 0) if masked else pb)  # (masked rows: the columns unshifted)
    pad_stage = "" if mode == "pw" else _flat_pad(geo, bi, L)
    zero_slack = (f"    for e in range({slack}):\n        xp[{FS + N * xs} + e] = T.float32(0)\n" if slack > 0 else "")
    if FS:  # the copy starts FS elements into xp, after zeros
        pad_stage = pad_stage.replace("xp[", "xq[").replace("xp.access_ptr", "xq.access_ptr")
        zero_slack += f"    for e in range({FS}):\n        xp[e] = T.float32(0)\n"
    if masked:
        # per vector of the tile and kw that reads off the row: the lanes whose input column is in the row
        for vo in range(V):
            if bits:  # the vector's first column (mc_: a plain output's write-back names its own c0_)
                tl.append(f"{T8}mc_{vo}: T.let = (jt * {TJ} + {vo * L}) % {Wf}")
            else:
                tl.append(f"{T8}cv_{vo}: T.let = T.Ramp(jt * {TJ} + {vo * L}, 1, {L}) % T.Broadcast({Wf}, {L})")
            for w_ in range(KW):
                d_ = masked_shift(w_, dw, pb[2], sw)
                if d_ and bits:
                    at = f"({shifts.index(d_) * Wf} + mc_{vo}) * {L}"
                    tl.append(f"{T8}mk{w_}_{vo}: T.let = mtab[T.Ramp({at}, 1, {L})]")
                elif d_:
                    tl.append(f"{T8}mk{w_}_{vo}: T.let = cv_{vo} + T.Broadcast({d_}, {L}) >= T.Broadcast(0, {L}) "
                              f"and cv_{vo} + T.Broadcast({d_}, {L}) < T.Broadcast({Wf}, {L})")
        tile_text = "\n".join(tl)
    head = f"        xt: T.let = {base}\n{tile_text}"
    zero = (f"            for i in T.unroll({GM}):\n                for v in T.vectorized({TJ}):\n"
            "                    acc[i, v] = T.float32(0)\n")
    if mode != "pw":
        column_base = "xt + off[b]"
    else:
        column_base = "slots[s0 + kdo[b]] + off[b]" if span > 1 else "off[b]"
        head += f"\n        s0: T.let = xt % {span}" if span > 1 else ""
    def columns(lo: str, hi: str, chunk: str = "0") -> str:
        if masked:
            return _masked_columns(" " * 12, f"k * {NS * KW + 1} + {chunk} * {KW}", KW, dw, pb[2], GN, GM, V, L, cs,
                                   VP, sw, FM, bits)
        return "\n".join(_column_loop(" " * 12, lo, hi, "xo", column_base, "acc", "wk", "xp", cs, GN, GM, V, L,
                                      FM, VP)) + "\n"

    inner = zero + columns("indptr[k]", "indptr[k + 1]") + "\n" + write_back
    if NS > 1:
        # the reduction split into chunks of QS channel blocks: every row block runs through one chunk's columns
        # before the next chunk, so the tile's input window of one chunk stays in cache; accumulators are parked
        # between chunks (one [gM, TJ] tile per row block of the unit)
        RB = max(chunk_sizes(P, CH))
        pk = f"pk + i * {TJ} + v"
        body = (f"{head}\n        park = T.decl_buffer(({RB * GM * TJ},), \"float32\", scope=\"local\")\n"
                f"        for sc in range({NS}):\n"
                f"            for kk in range(rb0, rb1):\n"
                f"                k: T.let = order[kk]\n"
                f"                pk: T.let = (kk - rb0) * {GM * TJ}\n"
                f"                if sc == 0:\n" + textwrap.indent(zero, " " * 8)
                + f"                else:\n                    for i in T.unroll({GM}):\n"
                f"                        for v in T.vectorized({TJ}):\n"
                f"                            acc[i, v] = park[{pk}]\n"
                + textwrap.indent(columns(f"cp[k * {NS + 1} + sc]", f"cp[k * {NS + 1} + sc + 1]", "sc"),
                                  " " * 4)
                + f"\n                if sc < {NS - 1}:\n                    for i in T.unroll({GM}):\n"
                f"                        for v in T.vectorized({TJ}):\n"
                f"                            park[{pk}] = acc[i, v]\n"
                f"                else:\n" + textwrap.indent(write_back, " " * 8))
    elif TG == 1:
        body = (f"{head}\n        for kk in range(rb0, rb1):\n            k: T.let = order[kk]\n"
                f"{{prefetch}}{inner}")
    else:
        # row block outside the group's tiles: its packed weights stay in cache while it runs through them (the
        # tile's position table is rebuilt per row block: this order is for small inputs with long row blocks)
        body = (f"        for kk in range(rb0, rb1):\n            k: T.let = order[kk]\n"
                f"            for jj in range(T.min({TG}, {JT} - g * {TG})):\n"
                f"                jt: T.let = g * {TG} + jj\n"
                + textwrap.indent(head, " " * 8) + "\n" + textwrap.indent(inner, " " * 4))
    prefetch = ""
    if mode == "pw" and bi == L and sh == sw == 1 and not stage1 and ODS > 1:  # (a unit of one depth: no next)
        # while this depth computes, prefetch the input depth the next one adds to the ring (spread over the row
        # blocks, a few lines each): the ring fill then reads from cache instead of waiting on memory
        XB, HWb, LPB = -(-C // bi), H * W * bi, TJ * bi // 16
        # whole channel blocks per row block, LPB lines each at constant offsets: a division of the line number by
        # LPB per line (25 scalar instructions per prefetch) was 8 % of the stem's 45->64 3x1x1 layer; Zen 3, kernels
        # alone, 11 interleaved rounds (scratch over bench/sparse_layers.py's layers): 3.42 -> 3.18 ms, S3D's 192->64
        # 1x1x1 0.690 -> 0.656, R(2+1)D's 144->64 3x1x1 8.85 -> 8.72
        per = -(-XB // max(1, -(-P // CH)))
        prefetch = (f"            if pf:\n                for cb in range((kk - rb0) * {per}, "
                    f"T.min((kk - rb0) * {per} + {per}, {XB})):\n"
                    f"                    pa: T.let = pfb + cb * {D * HWb}\n"
                    f"                    for li in T.unroll({LPB}):\n                        "
                    + _prefetch(f"xf[pa + T.min(jt * {TJ * bi} + li * 16, {HWb - 1})]", PF_LOCALITY) + "\n")
    body = body.replace("{prefetch}", prefetch)
    if mode == "pw":
        dims = dict(N=N, C=C, D=D, H=H, W=W, Cp=Cp, pd=pb[0], TJ=TJ, J=J, OW=OW, sh=sh, sw=sw, span=span,
                    depth_skip=depth_skip)
        first = f"T.if_then_else(od == oq * {ODS}, od * {sd}, T.max(od * {sd}, (od - 1) * {sd} + {span}))"
        body = "\n".join([f"        xp = T.decl_buffer(({span * Cp * TJ},), \"float32\")"]
                         + (stage1.init if stage1 else [])
                         + [f"        for od in range(oq * {ODS}, T.min(oq * {ODS} + {ODS}, {OD})):",
                          f"            d0: T.let = {first}",
                          f"            for di in range(od * {sd} + {span} - d0):",
                          "                dq: T.let = d0 + di"]
                         + (stage1.fill if stage1 else _pw_fill(dims, bi, L))
                         + ([f"            nd: T.let = (od + 1) * {sd} + {span - 1}",
                             f"            pf: T.let = od + 1 < oq * {ODS} + {ODS} and nd >= {pb[0]} and "
                             f"nd < {pb[0] + D}",
                             f"            pfb: T.let = (n * {-(-C // bi)} * {D} + nd - {pb[0]}) * {H * W * bi}"]
                            if prefetch else [])
                         + [textwrap.indent(body, "    ")])
        xp_decl = stage1.prologue if stage1 else ""
    else:
        xp_decl = f"    xp = T.alloc_buffer(({total},), \"float32\")\n"
        if FS:
            xp_decl += f"    xq = T.decl_buffer(({total - FS},), \"float32\", data=xp.data, elem_offset={FS})\n"
    acc1 = (f"        acc1 = T.decl_buffer(({pre.attrs.group[0]}, {TJ}), \"float32\", scope=\"local\")\n"
            if stage1 else "")
    src = f'''
@T.prim_func
def main({", ".join(params)}):
    T.func_attr({{"tirx.noalias": True, "global_symbol": "main"}})
    yf = T.decl_buffer(({ysize},), "float32", data=y.data)
    xf = T.decl_buffer(({int(np.prod(xin.type.shape))},), "float32", data=x.data)
{res_alias}
{xp_decl}{pad_stage}{zero_slack}{tail}    for t in T.parallel({bounds.size // 3 if share is not None else units * CH}):
        {decode}
        acc = T.decl_buffer(({GM}, {TJ}), "float32", scope="local")
{acc1}{body}
'''
    try:
        func = tvm.script.from_source(src)
    except Exception as e:  # a generator bug, not a user error: keep the source for the report
        raise BuildError(f"sparse_conv3d kernel generation failed for {node}: {e}\n{src}") from None
    args = [xin, wk, off, indptr, order, bounds, outch] + ([run0] if fast else []) + (
        [cpk] if masked else [cp] if NS > 1 else []) + ([mtab] if bits else [])
    if mode == "pw" and span > 1:
        args += [kdo, slots]
    if has_bias:
        args.append(node.inputs[3])
    if stage1:
        args += stage1.args
    if has_res:
        args.append(node.inputs[-1])
    dens = sum(a.kept) / max(1, P * -(-C // GN) * S)
    layout = f"{'b' if bi else 'p'}->{'b' if bo else 'p'}"
    runs = ODC if mode == "pw" else 1
    knobs = "".join(f", {k}={n}" for k, n in (("passes", GM // FM * -(-V // VP)), ("chunks", CH), ("tiles", TG),
                                               ("split", NS), ("runs", runs)) if n > 1)
    knobs += (", masked" if masked else "") + (", shared" if share is not None else "")
    impl = (f"sparse_conv3d.{mode}({a.sparsity or 'kgs'}, {layout}, group={GM}x{GN}, kept={dens:.0%}, "
            f"tile={FM}x{V}x{L}{knobs})")
    if stage1:
        impl = f"sparse_conv3d.sep({stage1.impl} -> {impl[len('sparse_conv3d.pw('):]}"
    return Kernel(func, args, impl)


def _lower_sparse_fc(node: Node, values: np.ndarray, cols: np.ndarray, has_bias: bool) -> Kernel:
    """A 2-D sparse_conv3d: a fully connected layer y[n, :] = x[n, :] @ W.T over the packed weight (a column is a
    block of gN inputs). Parallel over row blocks (in the order reorder-kernel-groups dealt them to the threads);
    per kept column the gN inputs are broadcast against the column's [gN, gM] weights, a vector of gM filters each,
    so the packed array is read once, front to back, per sample: at batch 1 the layer is bound by that stream."""
    a, x, has_res = node.attrs, node.inputs[0], node.attrs.residual
    # (a conv of one position per sample, one_position: its channels in order, plain or blocked; a blocked
    # output's channels past M are written as zeros, the layout's contract)
    N, K = x.type.shape[0], (logical_shape(x.type, a.in_block)[1] if a.kernel else x.type.shape[1])
    KX, MY = int(np.prod(x.type.shape[1:])), int(np.prod(node.output.type.shape[1:]))  # elements per sample
    M, (GM, GN), P = a.filters, a.group, len(a.kept)
    Kp = -(-K // GN) * GN
    wk, indptr, order, outch = _packed_arrays(a, values)
    off = (cols * GN).astype(np.int32) if cols.size else np.zeros(1, np.int32)  # first input of each column
    val = "acc[i]" + (" + bias[oc]" if has_bias else "") + (f" + rf[n * {MY} + oc]" if has_res else "")
    ahead = max(1, FC_PREFETCH // (GN * GM * 4))  # columns
    prefetch = _prefetch(f"wk[T.min((b + {ahead}) * {GN * GM}, {wk.size - 1})]", 3)
    params = [f"x: T.Buffer({tuple(x.type.shape)}, \"float32\")", f"wk: T.Buffer(({wk.size},), \"float32\")",
              f"off: T.Buffer(({off.size},), \"int32\")", f"indptr: T.Buffer(({P + 1},), \"int32\")",
              f"order: T.Buffer(({P},), \"int32\")", f"outch: T.Buffer(({P * GM},), \"int32\")"]
    params += [f"bias: T.Buffer(({M},), \"float32\")"] if has_bias else []
    params += [f"res: T.Buffer({tuple(node.output.type.shape)}, \"float32\")"] if has_res else []
    params.append(f"y: T.Buffer({tuple(node.output.type.shape)}, \"float32\")")
    res_alias = f'    rf = T.decl_buffer(({N * MY},), "float32", data=res.data)\n' if has_res else ""
    tail = (f"    for e in range({N * (MY - M)}):\n"
            f"        yf[e // {MY - M} * {MY} + {M} + e % {MY - M}] = T.float32(0)\n" if MY > M else "")
    src = f'''
@T.prim_func
def main({", ".join(params)}):
    T.func_attr({{"tirx.noalias": True, "global_symbol": "main"}})
    xf = T.decl_buffer(({N * KX},), "float32", data=x.data)
    yf = T.decl_buffer(({N * MY},), "float32", data=y.data)
{res_alias}{tail}    xp = T.alloc_buffer(({N * Kp},), "float32")
    for e in range({N * Kp}):
        xp[e] = T.if_then_else(e % {Kp} < {K}, xf[e // {Kp} * {KX} + T.min(e % {Kp}, {K - 1})], T.float32(0))
    for kk in T.parallel({P}):
        k: T.let = order[kk]
        acc = T.decl_buffer(({GM},), "float32", scope="local")
        for n in range({N}):
            for i in T.vectorized({GM}):
                acc[i] = T.float32(0)
            for b in range(indptr[k], indptr[k + 1]):
                xo: T.let = n * {Kp} + off[b]
                {prefetch}
                for c in T.unroll({GN}):
                    for i in T.vectorized({GM}):
                        acc[i] = acc[i] + wk[(b * {GN} + c) * {GM} + i] * xp[xo + c]
            for i in range({GM}):
                oc: T.let = outch[k * {GM} + i]
                if oc >= 0:
                    s_: T.let = {val}
                    yf[n * {MY} + oc] = {_activation("s_", a.act, tuple(a.act_params), 1)}
'''
    try:
        func = tvm.script.from_source(src)
    except Exception as err:  # a generator bug, not a user error: keep the source for the report
        raise BuildError(f"sparse_conv3d (fully connected) kernel generation failed for {node}: {err}\n{src}") from None
    args = [x, wk, off, indptr, order, outch] + ([node.inputs[3]] if has_bias else []) + (
        [node.inputs[-1]] if has_res else [])
    dens = sum(a.kept) / max(1, P * -(-K // GN))
    return Kernel(func, args, f"sparse_conv3d.fc({a.sparsity or 'kgs'}, group={GM}x{GN}, kept={dens:.0%})")


def lower_sparse_sep_conv3d(node: Node, target) -> Kernel:
    """A sparse_sep_conv3d: the second conv's kernel with the first one computed into its ring (see
    lower_sparse_conv3d's ``pre``)."""
    first, second = sep_nodes(node)
    return lower_sparse_conv3d(second, target, pre=first, sep_tile=target.tuned.get(sparse_workload_key(node)))
