"""GPU schedules shared by the OpenCL lowerings: one kernel per function, the output's spatial loops bound to
work-groups x threads, everything else computed per thread in registers (no intermediate global buffers, so every
function is exactly one OpenCL kernel with the function's own parameters)."""
from __future__ import annotations

from ..arm_neon.common import inline_injective, n_spatial


def bind_threads(sch, loops, threads: int):
    """Fuse ``loops`` and split them over work-groups of ``threads``; returns the thread loop."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = int(sch.get(fused).extent)
    t = max(1, min(threads, extent))
    bx, tx = sch.split(fused, [None, t])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return tx


def schedule_gpu_default(sch, threads: int, root_name: str = "root") -> None:
    root = sch.get_sblock(root_name)
    outputs = sch.get_output_blocks(root)
    if len(outputs) != 1:
        raise ValueError(f"a GPU kernel needs exactly one output stage, got {len(outputs)}")
    out_name = sch.get(outputs[0]).name_hint
    inline_injective(sch, root)
    out = sch.get_sblock(out_name)
    loops = sch.get_loops(out)
    n = n_spatial(sch, out)
    if n == 0:
        loops = [sch.add_unit_loop(out)]
        n = 1
    tx = bind_threads(sch, loops[:n], threads)
    # producers that could not be inlined (reductions feeding the output): per thread, in registers
    for b in reversed(sch.get_child_blocks(root)):
        if sch.get(b).name_hint == out_name:
            continue
        sch.compute_at(b, tx)
        sch.set_scope(b, 0, "local")
