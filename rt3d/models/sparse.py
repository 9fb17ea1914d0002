"""Random structured sparsity at a whole-model FLOPs reduction, for speed measurements.

Latency does not depend on the learned values of the kept weights, only on which structures are kept, so random
Filter / Vanilla / KGS masks at the paper's rates measure what pruned models run at (the pruning stage serves for
accuracy). The pruned weights are exact zeros in the ONNX model, so any ONNX engine runs it and rt3d's
detect-sparsity pass finds the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InputError
from ..ir.sparsity import Sparsity, random_mask


# the whole-model FLOPs reductions of the paper's pruned models (KGS, Table 2)
PAPER_RATES = {"c3d": 3.6, "r2plus1d_18": 3.2, "s3d": 2.1}


@dataclass
class LayerRate:
    weight: str  # the ONNX initializer
    macs: int  # dense multiply-accumulates of the layer
    density: float  # kept share of its weights (1.0: left dense)


def sparsify(model, sparsity: Sparsity | str, flops_reduction: float, seed: int = 0,
             min_channels: int = 16) -> tuple[onnx.ModelProto, list[LayerRate]]:
    """A copy of ``model`` whose conv and fully connected weights are pruned at random with one density for every
    conv and fully connected layer that has at least ``min_channels`` input channels (stems stay dense), chosen so
    that the whole model's conv+dense MACs shrink by ``flops_reduction``. ``model``: a path, bytes or
    ``onnx.ModelProto``. Returns the pruned ``onnx.ModelProto`` and the per-layer rates."""
    from ..frontend.onnx import import_model
    from ..frontend.onnx.importer import load_model
    model = load_model(model)[0]
    from ..ir.flops import node_macs
    sp = Sparsity.parse(sparsity) if isinstance(sparsity, str) else sparsity
    graph = import_model(model)
    inits = {i.name: i for i in model.graph.initializer}
    total, prunable = 0, []
    for node in graph.nodes:
        macs = node_macs(node)
        total += macs
        w = node.inputs[1] if node.op in ("conv3d", "dense") else None
        # a fully connected weight is [N, K] as in the IR (Gemm with transB=1, as PyTorch exports Linear)
        if (w is not None and w.name in inits and getattr(node.attrs, "groups", 1) == 1
                and w.type.shape[1] >= min_channels):
            prunable.append((w.name, macs))
    p_macs = sum(m for _, m in prunable)
    if not prunable:
        raise InputError(f"model '{graph.name}' has no conv or fully connected layer with >= {min_channels} input "
                         "channels to prune")
    density = (total / flops_reduction - (total - p_macs)) / p_macs
    if not 0.02 <= density <= 1.0:
        raise InputError(f"a {flops_reduction}x FLOPs reduction of '{graph.name}' needs density {density:.3f} "
                         f"on its prunable layers ({p_macs / total:.0%} of the MACs); choose a rate that gives "
                         f"0.02..1")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    rates = []
    by_name = {i.name: i for i in out.graph.initializer}
    for name, macs in prunable:
        w = numpy_helper.to_array(by_name[name])
        mask = random_mask(w.shape, sp, density, rng)
        by_name[name].CopyFrom(numpy_helper.from_array((w * mask).astype(w.dtype), name))
        rates.append(LayerRate(name, macs, float(mask.mean())))
    return out, rates
