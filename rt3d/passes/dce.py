"""dce: remove nodes and constants that no graph output depends on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir import Graph
from .base import Pass, PassReport, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    name: ClassVar[str] = "dce"

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        consts = len(graph.consts)
        removed = graph.remove_unused()
        report.note(f"removed {removed} node(s), {consts - len(graph.consts)} constant(s)")
        return graph
