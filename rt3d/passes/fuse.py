"""fuse: conv3d/dense + per-channel bias add + residual add + activation into one node's epilogue.

The epilogue computes act(op(x) + bias + residual). Rewrites, applied until nothing changes:
  add(conv, const shaped like a per-channel bias)  -> conv with that bias (summed with any existing one)
  add(conv, tensor of the output's shape)          -> conv{residual=true}(..., tensor)
  relu/clip/leaky_relu/sigmoid(conv)               -> conv{act=...}
each only when the conv's output has no other user. A fused node moves to where the add was, so the residual
operand is always computed before it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..ir import Graph
from ..ir.ops import epilogue_inputs
from .base import Pass, PassReport, register_pass

_ACTS = {"relu": lambda a: (), "sigmoid": lambda a: (), "clip": lambda a: (a.min, a.max),
         "leaky_relu": lambda a: (a.alpha,)}


def _bias_like(v, out_shape) -> np.ndarray | None:
    """The per-channel vector if ``v`` is a constant broadcasting only along the channel axis, else None."""
    if v.data is None:
        return None
    m = out_shape[1]
    shape = v.type.shape
    if len(shape) > len(out_shape):
        return None
    full = (1,) * (len(out_shape) - len(shape)) + shape
    if all(d == 1 for i, d in enumerate(full) if i != 1) and full[1] in (1, m):
        return np.broadcast_to(v.data.reshape(-1), (m,)).astype(v.type.dtype)
    return None


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    name: ClassVar[str] = "fuse"
    residual: bool = True
    activation: bool = True

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        counts = {"bias": 0, "residual": 0, "activation": 0}
        changed = True
        while changed:
            changed = False
            users = graph.users()
            for node in graph:
                if node.op not in ("conv3d", "dense") or node not in graph.nodes:
                    continue
                outs = users.get(node.output, [])
                if len(outs) != 1 or node.output in graph.outputs:
                    continue
                kind = self._fuse_one(graph, node, outs[0])
                if kind:
                    counts[kind] += 1
                    changed = True
                    break
        report.note(", ".join(f"{v} {k}" for k, v in counts.items()) + " fused")
        return graph

    def _fuse_one(self, graph: Graph, node, user) -> str:
        a = node.attrs
        if user.op == "add" and a.act == "none" and not a.residual:
            other = user.inputs[1] if user.inputs[0] is node.output else user.inputs[0]
            if other is node.output:
                return ""
            bias = _bias_like(other, node.output.type.shape)
            if bias is not None and user.output.type == node.output.type:
                has_bias, _ = epilogue_inputs(a, len(node.inputs))
                if has_bias:
                    bias = (node.inputs[2].data + bias).astype(bias.dtype)
                b = graph.add_const(f"{node.output.name}.bias", bias)
                node.inputs = node.inputs[:2] + [b]
                self._absorb(graph, node, user)
                return "bias"
            if self.residual and other.type == node.output.type and not getattr(a, "pool", ()):
                # (a residual is per conv position; a fused pool's output has fewer)
                node.inputs = node.inputs + [other]
                node.attrs = replace(a, residual=True)
                self._absorb(graph, node, user)
                return "residual"
        if self.activation and user.op in _ACTS and a.act == "none":
            node.attrs = replace(a, act=user.op, act_params=tuple(float(p) for p in _ACTS[user.op](user.attrs)))
            self._absorb(graph, node, user)
            return "activation"
        return ""

    @staticmethod
    def _absorb(graph: Graph, node, user) -> None:
        """Replace ``user`` by ``node``: node moves to user's position, user's output becomes node's."""
        graph.nodes.remove(node)
        graph.nodes[graph.nodes.index(user)] = node
        graph.replace_uses(user.output, node.output)
