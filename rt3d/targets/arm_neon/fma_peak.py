"""The machine's fp32 FMA peak, measured with a kernel rt3d builds with TVM.

Each core runs ``chains`` independent accumulators of ``lanes`` floats, all in registers, updated by fused
multiply-adds with one broadcast operand per step: the inner loop is nothing but FMAs. GFLOP/s of real kernels are
reported as a share of this number.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from .common import make_func


def fma_peak_kernel(cores: int, lanes: int, chains: int = 24, steps: int = 256, rounds: int = 256):
    """acc[p, j, :] += a[p, :] * b[k, j] for every (round, k): ``chains`` accumulators and one multiplicand vector
    stay in registers, ``b`` (steps x chains floats) stays in L1 and is broadcast from memory, as in the conv kernels.
    """
    A = te.placeholder((cores, lanes), "float32", name="a")
    B = te.placeholder((steps, chains), "float32", name="b")
    r = te.reduce_axis((0, rounds), name="r")
    k = te.reduce_axis((0, steps), name="k")
    acc = te.compute((cores, chains, lanes), lambda p, j, v: te.sum(A[p, v] * B[k, j], axis=[r, k]),
                     name="acc")
    out = te.compute((cores, chains, lanes), lambda p, j, v: acc[p, j, v], name="out")
    sch = tvm.s_tir.Schedule(make_func([A, B, out], "main"))
    blk = sch.get_sblock("acc")
    p, j, v, rr, kk = sch.get_loops(blk)
    sch.reorder(p, rr, kk, j, v)
    sch.parallel(p)
    sch.reverse_compute_at(sch.get_sblock("out"), p)
    sch.set_scope(blk, 0, "local")
    sch.unroll(j)
    sch.vectorize(v)
    sch.decompose_reduction(blk, rr)
    return sch.mod["main"]


def measure_fma_peak(target, repeat: int = 20) -> dict:
    """Peak fp32 GFLOP/s of ``target`` (a runnable CPU Target) on all its cores, best of ``repeat`` runs."""
    cores, lanes = target.num_cores, target.vector_lanes
    steps, rounds, chains = 256, 1024, 24
    func = fma_peak_kernel(cores, lanes, chains, steps, rounds)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target.tvm()).jit()
    dev = tvm.cpu()
    a = tvm.runtime.tensor(np.full((cores, lanes), 1.0, np.float32), dev)
    b = tvm.runtime.tensor(np.full((steps, chains), 1e-7, np.float32), dev)
    out = tvm.runtime.empty((cores, chains, lanes), "float32", dev)
    t = lib.time_evaluator("main", dev, number=3, repeat=repeat)(a, b, out)
    flops = 2.0 * cores * chains * lanes * steps * rounds
    best = min(t.results)
    return {"gflops": flops / best / 1e9, "per_core_gflops": flops / best / 1e9 / cores, "cores": cores,
            "lanes": lanes, "chains": 24}
