"""fold-bn: fold an inference batch_norm into the conv3d (5-D weights) or dense layer that feeds it.

W'[m] = W[m] * s[m] / sqrt(var[m] + eps);  b'[m] = (b[m] - mean[m]) * s[m] / sqrt(var[m] + eps) + beta[m].
A batch_norm that cannot be folded stays (it lowers to a scale-and-shift kernel) and the report says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Graph
from ..ir.ops import epilogue_inputs
from .base import Pass, PassReport, register_pass


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    name: ClassVar[str] = "fold-bn"

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        folded = 0
        users = graph.users()
        for bn in graph:
            if bn.op != "batch_norm":
                continue
            why = self._why_not(graph, bn, users)
            if why:
                report.note(f"kept batch_norm %{bn.output.name}: {why}")
                continue
            conv = bn.inputs[0].node
            s, beta, mean, var = (v.data.astype(np.float64) for v in bn.inputs[1:])
            scale = s / np.sqrt(var + bn.attrs.epsilon)
            w = conv.inputs[1]
            has_bias, _ = epilogue_inputs(conv.attrs, len(conv.inputs))
            old_b = conv.inputs[2].data.astype(np.float64) if has_bias else np.zeros_like(scale)
            new_w = (w.data * scale.reshape((-1,) + (1,) * (w.type.rank - 1))).astype(w.type.dtype)
            new_b = ((old_b - mean) * scale + beta).astype(w.type.dtype)
            wc = graph.add_const(f"{w.name}.bn", new_w)
            bc = graph.add_const(f"{conv.output.name}.bias", new_b)
            conv.inputs = [conv.inputs[0], wc, bc]
            graph.replace_uses(bn.output, conv.output)
            graph.nodes.remove(bn)
            folded += 1
        graph.remove_unused()
        report.note(f"folded {folded} batch_norm(s)")
        return graph

    @staticmethod
    def _why_not(graph, bn, users) -> str:
        prod = bn.inputs[0].node
        if prod is None or prod.op not in ("conv3d", "dense"):
            return "its input is not produced by conv3d or dense"
        if len(users.get(prod.output, [])) != 1 or prod.output in graph.outputs:
            return f"%{prod.output.name} has other users"
        if prod.attrs.act != "none" or prod.attrs.residual or getattr(prod.attrs, "pool", ()):
            return f"%{prod.output.name} already has a fused epilogue"
        if prod.inputs[1].data is None or any(v.data is None for v in bn.inputs[1:]):
            return "weights or statistics are not constants with data"
        if prod.op == "dense" and bn.inputs[0].type.rank != 2:
            return "dense output is not 2-D"
        return ""
