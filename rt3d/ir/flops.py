"""rt3d's FLOPs counter: multiply-accumulates of the compute ops of an IR graph (conv3d, dense, matmul).

Counts follow the common convention of published model tables (fvcore, torchvision): one MAC per weight
application; bias, activation, pooling and normalization are not counted.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node, sep_nodes
from .interpreter import conv_out_spatial


def node_macs(node: Node) -> int:
    if node.op == "conv3d":
        w = node.inputs[1].type.shape
        # the conv's own positions (a fused pool's windows each computed whole); blocked outputs: real channels only
        positions = node.output.type.shape[0] * int(np.prod(conv_out_spatial(node), dtype=np.int64))
        return positions * w[0] * int(np.prod(w[1:], dtype=np.int64))
    if node.op == "sparse_conv3d":  # kept MACs: the nonzero weights of the packed array, applied per position
        a = node.attrs
        values = node.inputs[1]
        per = (int(np.count_nonzero(values.data)) if values.data is not None
               else int(np.prod(values.type.shape, dtype=np.int64)))
        out = node.output.type.shape
        spatial = out[2:-1] if node.attrs.out_block else out[2:]
        return int(np.prod(spatial, dtype=np.int64)) * out[0] * per
    if node.op == "sparse_sep_conv3d":
        return sum(node_macs(n) for n in sep_nodes(node))
    if node.op == "dense":
        return int(np.prod(node.output.type.shape, dtype=np.int64)) * node.inputs[0].type.shape[1]
    if node.op == "matmul":
        return int(np.prod(node.output.type.shape, dtype=np.int64)) * node.inputs[0].type.shape[-1]
    return 0


def graph_macs(graph: Graph) -> int:
    """Total multiply-accumulates of one forward pass."""
    return sum(node_macs(n) for n in graph.nodes)
