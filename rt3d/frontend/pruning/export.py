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

def _conv_order(model: nn.Module, input_shape) -> list[str]:
    """Names of the Conv3d modules in execution order (the order of the exported Conv nodes)."""
    named = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
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


def export_pruned(model: nn.Module, input_shape: tuple[int, ...], path: str | Path | None = None) -> bytes:
    """ONNX bytes of a model returned by ``rt3d.prune`` (written atomically to ``path`` if given)."""
    from ...models.zoo import export_onnx
    sparsity = getattr(model, "rt3d_sparsity", None)
    if sparsity is None:
        raise InputError("the model carries no rt3d sparsity: prune it with rt3d.prune first")
    proto = onnx.load_from_string(export_onnx(model, input_shape))
    order = _conv_order(model, input_shape)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if len(convs) != len(order):
        raise ConversionError(f"model '{proto.graph.name}': {len(convs)} Conv nodes in the export but the torch model "
                              f"ran {len(order)} Conv3d modules; cannot match the masks to the weights")
    inits = {i.name: i for i in proto.graph.initializer}
    entries = {}
    for name, node in zip(order, convs):
        if name not in sparsity:
            continue
        sp, keep = sparsity[name]
        init = inits.get(node.input[1])
        if init is None:
            raise ConversionError(f"Conv node '{node.name}' (layer {name}): its weight is not an initializer")
        stray = outside_mask(numpy_helper.to_array(init), sp, keep)
        if stray:
            raise ConversionError(f"Conv node '{node.name}' (layer {name}): {stray} pruned weights are not zero in "
                                  f"the export")
        entries[init.name] = {"layer": name, "sparsity": str(sp), **encode_keep(keep)}
    meta = proto.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(entries)
    data = proto.SerializeToString()
    if path is not None:
        from ...runtime.artifact import atomic_write_bytes
        atomic_write_bytes(Path(path), data)
    return data
