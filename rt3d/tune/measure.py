"""Local measurement of one conv kernel under a given schedule record."""
from __future__ import annotations

import numpy as np
import tvm

from ..ir import Node
from ..ir.flops import node_macs
from ..targets.arm_neon.conv3d import ConvTile, lower_blocked


def measure_conv(node: Node, tile: ConvTile, target, repeat: int = 5, min_repeat_ms: int = 40) -> tuple[float, float]:
    """(median ms, GFLOP/s) of ``node`` lowered with ``tile`` on this machine, on random data."""
    k = lower_blocked(node, target, tile=tile)
    lib = tvm.compile(tvm.IRModule({"main": k.func}), target=target.tvm()).jit()
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal(node.inputs[0].type.shape).astype("float32"))]
    for a in k.args[1:]:
        arr = a if isinstance(a, np.ndarray) else a.data if a.data is not None else \
            rng.standard_normal(a.type.shape).astype("float32")
        args.append(tvm.runtime.tensor(np.ascontiguousarray(arr)))
    out = tvm.runtime.empty(node.output.type.shape, "float32", dev)
    r = lib.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)(*args, out)
    ms = float(np.median(r.results)) * 1e3
    return ms, 2 * node_macs(node) / (ms * 1e6)
