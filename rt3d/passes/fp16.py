"""to-fp16: store every float32 tensor of the graph (inputs, weights, activations, outputs) as float16.

The GPU target's 16-bit mode (the paper runs its GPU kernels in 16-bit floats): half the memory traffic and, on
mobile GPUs, twice the arithmetic rate. The kernels multiply in float16 and accumulate conv/dense sums in float32
(then round the result to float16), which keeps long reductions accurate. Integer tensors (index lists) are left
alone. Module.run casts float32 inputs to float16 and returns float16 outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Graph, TensorType
from .base import Pass, PassReport, register_pass


@register_pass
@dataclass(frozen=True)
class ToFp16(Pass):
    name: ClassVar[str] = "to-fp16"

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        changed, weights = 0, 0
        for v in graph.values():
            if v.type.dtype != "float32":
                continue
            v.type = TensorType(v.type.shape, "float16")
            if v.data is not None:
                v.data = v.data.astype(np.float16)
                weights += v.data.size
            changed += 1
        report.note(f"{changed} tensors stored as float16 ({weights} weights, {2 * weights / 1e6:.2f} MB)")
        return graph
