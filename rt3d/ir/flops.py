"""rt3d's FLOPs counter: multiply-accumulates of the compute ops of an IR graph (conv3d, dense, matmul).

Counts follow the common convention of published model tables (fvcore, torchvision): one MAC per weight
application; bias, activation, pooling and normalization are not counted.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node


def node_macs(node: Node) -> int:
    if node.op == "conv3d":
        w = node.inputs[1].type.shape
        return int(np.prod(node.output.type.shape, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if node.op == "sparse_conv3d":  # the kept weights only
        from .sparsity import block_macs
        a = node.attrs
        s = int(np.prod(a.kernel, dtype=np.int64))
        cols = node.inputs[2].data
        per = (block_macs(cols, a.kept, tuple(a.group), a.filters, node.inputs[0].type.shape[1], s)
               if cols is not None else sum(a.kept) * a.group[0] * a.group[1])
        return int(np.prod(node.output.type.shape[2:], dtype=np.int64)) * node.output.type.shape[0] * per
    if node.op == "dense":
        return int(np.prod(node.output.type.shape, dtype=np.int64)) * node.inputs[0].type.shape[1]
    if node.op == "matmul":
        return int(np.prod(node.output.type.shape, dtype=np.int64)) * node.inputs[0].type.shape[-1]
    return 0


def graph_macs(graph: Graph) -> int:
    """Total multiply-accumulates of one forward pass."""
    return sum(node_macs(n) for n in graph.nodes)
