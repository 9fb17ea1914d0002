"""fold-constants: evaluate nodes whose inputs are all constants, with the reference interpreter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir import Graph
from ..ir.interpreter import evaluate_node
from .base import Pass, PassReport, register_pass


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    name: ClassVar[str] = "fold-constants"
    max_elements: int = 1 << 26  # do not materialize constants larger than this

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        folded = 0
        for node in graph:
            if not node.inputs or not all(v.is_const for v in node.inputs):
                continue
            if any(v.data is None for v in node.inputs):
                report.note(f"%{node.output.name}: inputs are constants without data; not folded")
                continue
            if node.output.type.size > self.max_elements:
                report.note(f"%{node.output.name}: result of {node.output.type.size} elements is too large to fold")
                continue
            data = evaluate_node(node, [v.data for v in node.inputs])
            const = graph.add_const(f"{node.output.name}.folded", data.astype(node.output.type.dtype))
            graph.replace_uses(node.output, const)
            graph.nodes.remove(node)
            folded += 1
        if folded:
            graph.remove_unused()
        report.note(f"folded {folded} node(s)")
        return graph
