"""The machine's fp32 FMA peak, measured with a kernel rt3d builds with TVM.

Each core runs ``rows x vecs`` independent accumulators of ``lanes`` floats, all in registers, updated by fused
multiply-adds as in the dense conv kernels' register tile: per step ``rows`` broadcast operands, each against
``vecs`` multiplicand vectors, so the inner loop is nothing but FMAs and their broadcasts. GFLOP/s of real kernels
are reported as a share of this number.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from .common import make_func


def peak_tile(registers: int) -> tuple[int, int]:
    """(rows, vecs) of the accumulator tile for a register file of ``registers`` vectors: 3 multiplicand vectors,
    a broadcast and as many rows of 3 accumulators as fit, at most 8 (24 chains cover the FMA latency x throughput
    of the cores measured). 32 registers: 8 x 3; AVX2's 16: 4 x 3. The kernel this replaced held 24 chains with one
    broadcast each: on AVX2's 16 registers they spilled and the "peak" read 66 GFLOP/s on a machine whose convs
    ran at 150."""
    vecs = 3
    return max(1, min(8, (registers - vecs - 1) // vecs)), vecs


def fma_peak_kernel(cores: int, lanes: int, rows: int = 8, vecs: int = 3, steps: int = 256, rounds: int = 256):
    """acc[p, i, j, :] += a[p, j, :] * b[k, i] for every (round, k): ``rows x vecs`` accumulators and ``vecs``
    multiplicand vectors stay in registers, ``b`` (steps x rows floats) stays in L1 and is broadcast from memory, as
    in the conv kernels."""
    A = te.placeholder((cores, vecs, lanes), "float32", name="a")
    B = te.placeholder((steps, rows), "float32", name="b")
    r = te.reduce_axis((0, rounds), name="r")
    k = te.reduce_axis((0, steps), name="k")
    acc = te.compute((cores, rows, vecs, lanes), lambda p, i, j, v: te.sum(A[p, j, v] * B[k, i], axis=[r, k]),
                     name="acc")
    out = te.compute((cores, rows, vecs, lanes), lambda p, i, j, v: acc[p, i, j, v], name="out")
    sch = tvm.s_tir.Schedule(make_func([A, B, out], "main"))
    blk = sch.get_sblock("acc")
    p, i, j, v, rr, kk = sch.get_loops(blk)
    sch.reorder(p, rr, kk, i, j, v)
    sch.parallel(p)
    sch.reverse_compute_at(sch.get_sblock("out"), p)
    sch.set_scope(blk, 0, "local")
    sch.unroll(i)
    sch.unroll(j)
    sch.vectorize(v)
    sch.decompose_reduction(blk, rr)
    return sch.mod["main"]


def measure_fma_peak(target, repeat: int = 20) -> dict:
    """Peak fp32 GFLOP/s of ``target`` (a runnable CPU Target) on all its cores, best of ``repeat`` runs."""
    cores, lanes = target.num_cores, target.vector_lanes
    (rows, vecs), steps, rounds = peak_tile(target.vector_registers), 256, 1024
    func = fma_peak_kernel(cores, lanes, rows, vecs, steps, rounds)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target.tvm()).jit()
    dev = tvm.cpu()
    a = tvm.runtime.tensor(np.full((cores, vecs, lanes), 1.0, np.float32), dev)
    b = tvm.runtime.tensor(np.full((steps, rows), 1e-7, np.float32), dev)
    out = tvm.runtime.empty((cores, rows, vecs, lanes), "float32", dev)
    t = lib.time_evaluator("main", dev, number=3, repeat=repeat)(a, b, out)
    flops = 2.0 * cores * rows * vecs * lanes * steps * rounds
    best = min(t.results)
    return {"gflops": flops / best / 1e9, "per_core_gflops": flops / best / 1e9 / cores, "cores": cores,
            "lanes": lanes, "chains": rows * vecs}
