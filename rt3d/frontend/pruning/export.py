"""ONNX export of a pruned model: the pruned weights are exact zeros (any ONNX engine runs it) and the masks travel
in the model's metadata under ``rt3d.sparsity``, which rt3d's importer turns into the IR's sparsity annotation.

Metadata value: JSON {initializer name: {"layer": torch module name, "sparsity": "kgs(8x4)", "shape": keep-mask
shape, "keep": base64 of the keep mask's packed bits}}. Models from anywhere else carry no such entry; rt3d's
detect-sparsity pass recovers scheme and group from their zeros instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ...errors import ConversionError, InputError
from ...ir.sparsity import encode_keep, outside_mask
from ..onnx.annotations import METADATA_KEY

def _run_order(model: nn.Module, input_shape, kind: type) -> list[str]:
    """Names of the modules of type ``kind`` in execution order (the order of their exported nodes)."""
    named = {m: n for n, m in model.named_modules() if isinstance(m, kind)}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(named[mod])) for m in named]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape[1:])))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return order


def _layer_weights(proto: onnx.ModelProto, model: nn.Module, input_shape,
                   linear: bool) -> dict[str, tuple[onnx.NodeProto, bool]]:
    """torch module name -> (its exported node, whether the node's weight initializer is the module's weight
    transposed): Conv nodes for the Conv3d modules, and with ``linear`` Gemm / MatMul nodes with a 2-D constant
    weight for the Linear ones, matched in execution order."""
    inits = {i.name: i for i in proto.graph.initializer}
    out = {}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    order = _run_order(model, input_shape, nn.Conv3d)
    if len(convs) != len(order):
        raise ConversionError(f"model '{proto.graph.name}': {len(convs)} Conv nodes in the export but the torch model "
                              f"ran {len(order)} Conv3d modules; cannot match the masks to the weights")
    out.update({name: (node, False) for name, node in zip(order, convs)})
    if not linear:
        return out
    gemms = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1
             and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    order = _run_order(model, input_shape, nn.Linear)
    if len(gemms) != len(order):
        raise ConversionError(f"model '{proto.graph.name}': {len(gemms)} Gemm/MatMul nodes with constant weights in "
                              f"the export but the torch model ran {len(order)} Linear modules; cannot match the "
                              f"masks to the weights")
    for name, node in zip(order, gemms):
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        out[name] = (node, not (node.op_type == "Gemm" and trans_b))
    return out


def export_pruned(model: nn.Module, input_shape: tuple[int, ...], path: str | Path | None = None) -> bytes:
    """ONNX bytes of a model returned by ``rt3d.prune`` (written atomically to ``path`` if given). A fully connected
    layer's mask is that of its [out, in] weight, whichever layout its Gemm / MatMul initializer has."""
    from ...models.zoo import export_onnx
    sparsity = getattr(model, "rt3d_sparsity", None)
    if sparsity is None:
        raise InputError("the model carries no rt3d sparsity: prune it with rt3d.prune first")
    proto = onnx.load_from_string(export_onnx(model, input_shape))
    mods = dict(model.named_modules())
    nodes = _layer_weights(proto, model, input_shape, any(isinstance(mods[n], nn.Linear) for n in sparsity))
    inits = {i.name: i for i in proto.graph.initializer}
    entries = {}
    for name, (sp, keep) in sparsity.items():
        node, transposed = nodes.get(name, (None, False))
        if node is None:
            raise ConversionError(f"layer {name}: pruned, but the torch model did not run it on an input of shape "
                                  f"{tuple(input_shape)}")
        init = inits.get(node.input[1])
        if init is None:
            raise ConversionError(f"{node.op_type} node '{node.name}' (layer {name}): its weight is not an initializer")
        w = numpy_helper.to_array(init)
        w = w.T if transposed else w
        if tuple(w.shape) != tuple(mods[name].weight.shape):
            raise ConversionError(f"{node.op_type} node '{node.name}' (layer {name}): weight {w.shape} in the export, "
                                  f"{tuple(mods[name].weight.shape)} in the torch model")
        stray = outside_mask(w, sp, keep)
        if stray:
            raise ConversionError(f"{node.op_type} node '{node.name}' (layer {name}): {stray} pruned weights are not "
                                  f"zero in the export")
        entries[init.name] = {"layer": name, "sparsity": str(sp), **encode_keep(keep)}
    meta = proto.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(entries)
    data = proto.SerializeToString()
    if path is not None:
        from ...runtime.artifact import atomic_write_bytes
        atomic_write_bytes(Path(path), data)
    return data
