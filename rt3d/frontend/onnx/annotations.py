"""Sparsity annotations an ONNX model may carry in its metadata (written by rt3d's pruning stage).

Key ``rt3d.sparsity``, value JSON {initializer name: {"layer": source module, "sparsity": "kgs(8x4)", "shape": keep
mask shape, "keep": base64 of the mask's packed bits}}. The Conv converter checks the weight's zeros against the mask
and annotates the conv3d node, the Gemm / MatMul converters the dense node (a fully connected layer's mask is of its
[out, in] weight, whatever the initializer's layout); models without the entry rely on the detect-sparsity pass.
"""
from __future__ import annotations

import json

import numpy as np
import onnx

from ...errors import ConversionError
from ...ir.sparsity import Sparsity, decode_keep

METADATA_KEY = "rt3d.sparsity"


def read_annotations(proto: onnx.ModelProto, label: str = "") -> dict[str, tuple[Sparsity, np.ndarray]]:
    """initializer name -> (Sparsity, keep mask); {} when the model has no annotation."""
    for p in proto.metadata_props:
        if p.key != METADATA_KEY:
            continue
        try:
            return {name: (Sparsity.parse(e["sparsity"]), decode_keep(e)) for name, e in json.loads(p.value).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConversionError(f"model '{label or proto.graph.name}': unreadable '{METADATA_KEY}' metadata: "
                                  f"{type(e).__name__}: {e}") from e
    return {}
