"""fuse-pool: a max pool over disjoint windows into the dense conv3d that alone feeds it (ConvAttrs.pool).

The conv's kernel then pools each row of windows while it is in cache and writes only the pooled tensor: C3D's
stem writes 51 MB at 16x112x112 that pool1 (1x2x2) read back from memory, a sixth of the stem's time in the model.
Fuses max_pool3d(conv3d) where the pool's windows tile the conv's output exactly (kernel = stride, no padding, no
dilation) and both sit in the same layout; says why it kept each other pool that reads a conv. Runs after
block-layout on the CPU targets (their dense conv kernel computes the fused pool; sparse convs are not fused).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..ir import Graph
from ..ir.interpreter import conv_out_spatial
from .base import Pass, PassReport, register_pass
from .fuse import Fuse


def pool_problem(conv, pool, graph: Graph, users: dict) -> str:
    """Why ``pool`` cannot be fused into ``conv``, the node producing its input ('' when it can)."""
    a, p = conv.attrs, pool.attrs
    if conv.op != "conv3d":
        return f"its input comes from {conv.op}, not a dense conv3d"
    if len(users.get(conv.output, [])) != 1 or conv.output in graph.outputs:
        return "the conv's output has other users"
    if a.groups != 1 or conv.inputs[1].data is None:
        return "the conv is grouped or its weights are not constants"
    if a.residual:
        return "the conv adds a residual"
    if a.pool:
        return "the conv already pools"
    if tuple(p.kernel) != tuple(p.stride) or any(p.pad) or any(d != 1 for d in p.dilation):
        return (f"windows {list(p.kernel)} at stride {list(p.stride)}, pad {list(p.pad)}, dilation "
                f"{list(p.dilation)} are not disjoint and unpadded")
    sp = conv_out_spatial(conv)
    if any(o % k for o, k in zip(sp, p.kernel)):
        return f"windows {list(p.kernel)} do not tile the conv's output {list(sp)}"
    if p.block != a.out_block:
        return f"layouts differ (conv block {a.out_block}, pool block {p.block})"
    return ""


@register_pass
@dataclass(frozen=True)
class FusePool(Pass):
    name: ClassVar[str] = "fuse-pool"

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        fused = 0
        producers = {n.output: n for n in graph.nodes}
        users = graph.users()
        for pool in list(graph.nodes):
            conv = producers.get(pool.inputs[0]) if pool.op == "max_pool3d" else None
            if conv is None:
                continue
            why = pool_problem(conv, pool, graph, users)
            if why:
                if conv.op == "conv3d":
                    report.note(f"kept %{pool.output.name}: {why}")
                continue
            conv.attrs = replace(conv.attrs, pool=tuple(pool.attrs.kernel))
            conv.output.type = pool.output.type
            Fuse._absorb(graph, conv, pool)
            fused += 1
        report.note(f"{fused} pool(s) fused")
        return graph
