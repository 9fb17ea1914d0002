"""block-layout: run convolutions and the ops between them in the channel-blocked layout NC(D)HW{b}c.

A blocked tensor is [N, ceil(C/b), *spatial, b]: the b channels of one position share a SIMD register, so a conv
kernel reads its input one cache line per position and writes its output with whole-vector stores. The pass:
  * makes every conv3d with groups=1 and constant weights, and every sparse_conv3d, write a blocked output, and read
    a blocked input unless the input has fewer than b channels (a 3-channel clip stays plain rather than being padded
    to b);
  * keeps layout-agnostic consumers blocked: activations, elementwise ops between blocked tensors of one shape,
    pooling, global pooling, and channel concat when every part is a whole number of blocks;
  * inserts to_blocked / from_blocked only where a value crosses between the two layouts (each at most once).
``b`` should be the target's vector width (rt3d.build fills it in); b=0 leaves the graph as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..ir import Graph, Node, Value
from ..ir.ops import LayoutAttrs
from .base import Pass, PassReport, register_pass

_AGNOSTIC = {"relu", "clip", "leaky_relu", "sigmoid"}
_ELEMENTWISE = {"add", "sub", "mul", "div"}


@register_pass
@dataclass(frozen=True)
class BlockLayout(Pass):
    name: ClassVar[str] = "block-layout"
    block: int = 16

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        b = self.block
        if b <= 0:
            report.note("block=0: layout unchanged")
            return graph
        channels: dict[Value, int] = {}  # blocked value -> its logical channel count
        plain_of: dict[Value, Value] = {}
        blocked_of: dict[Value, Value] = {}
        new_nodes: list[Node] = []
        counts = {"blocked": 0, "to_blocked": 0, "from_blocked": 0}

        def plain(v: Value) -> Value:
            if v not in channels:
                return v
            if v not in plain_of:
                n = graph.make_node("from_blocked", [v], LayoutAttrs(block=b, channels=channels[v]),
                                    name=f"unblock %{v.name}")
                new_nodes.append(n)
                plain_of[v] = n.output
                counts["from_blocked"] += 1
            return plain_of[v]

        def blocked(v: Value) -> Value:
            if v in channels:
                return v
            if v not in blocked_of:
                n = graph.make_node("to_blocked", [v], LayoutAttrs(block=b, channels=v.type.shape[1]),
                                    name=f"block %{v.name}")
                new_nodes.append(n)
                blocked_of[v] = n.output
                channels[n.output] = v.type.shape[1]
                counts["to_blocked"] += 1
            return blocked_of[v]

        for node in graph.nodes:
            logical = node.output.type.shape[1] if node.output.type.rank >= 2 else 0
            out_blocked = False
            conv = node.op == "conv3d" and node.attrs.groups == 1 and node.inputs[1].data is not None
            if (conv or node.op == "sparse_conv3d") and node.inputs[0].type.rank >= 3:
                cin = node.inputs[0].type.shape[1]
                in_block = b if (cin >= b or node.inputs[0] in channels) else 0
                x = blocked(node.inputs[0]) if in_block else plain(node.inputs[0])
                ins = [x] + node.inputs[1:]
                if node.attrs.residual:
                    ins[-1] = blocked(ins[-1])
                node.inputs = ins
                node.attrs = replace(node.attrs, in_block=in_block, out_block=b)
                out_blocked = True
            elif node.op in ("max_pool3d", "avg_pool3d", "global_avg_pool") and node.inputs[0] in channels:
                node.attrs = replace(node.attrs, block=b)
                out_blocked = True
            elif node.op in _AGNOSTIC and node.inputs[0] in channels:
                out_blocked = True
            elif node.op in _ELEMENTWISE and all(v in channels for v in node.inputs) \
                    and node.inputs[0].type == node.inputs[1].type \
                    and channels[node.inputs[0]] == channels[node.inputs[1]]:
                out_blocked = True
            elif node.op == "concat" and node.attrs.axis == 1 and all(v in channels for v in node.inputs) \
                    and all(channels[v] % b == 0 for v in node.inputs):
                out_blocked = True
            else:
                node.inputs = [plain(v) for v in node.inputs]
            graph.retype(node)
            new_nodes.append(node)
            if out_blocked:
                channels[node.output] = logical
                counts["blocked"] += 1
        graph.outputs = [plain(v) for v in graph.outputs]  # may append from_blocked nodes to new_nodes
        graph.nodes = new_nodes
        report.note(f"{counts['blocked']} node(s) blocked by {b}, {counts['to_blocked']} to_blocked, "
                    f"{counts['from_blocked']} from_blocked")
        return graph
