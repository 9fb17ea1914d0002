"""ONNX model -> rt3d IR graph (NCDHW, fp32, weights as constants)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ...errors import ConversionError, ModelLoadError, UnsupportedOpsError
from ...ir import Graph, TensorType, verify
from . import nn, tensor  # noqa: F401  (registers the converters)
from .annotations import read_annotations
from .context import Context, sanitize
from .registry import SUPPORTED_OPSETS, lookup, supported_ops



def load_model(model) -> tuple[onnx.ModelProto, str]:
    """Load and check an ONNX model from a path, bytes or ModelProto; return it with a display name."""
    if isinstance(model, onnx.ModelProto):
        proto, label = model, (model.graph.name or "<ModelProto>")
    elif isinstance(model, (bytes, bytearray)):
        proto, label = _parse(bytes(model), "<bytes>"), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model file '{path}' does not exist")
        proto, label = _parse(path.read_bytes(), str(path)), str(path)
        if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
            onnx.load_external_data_for_model(proto, str(path.parent))
    else:
        raise ModelLoadError(f"expected an ONNX file path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise ModelLoadError(f"'{label}' is not an ONNX model (no IR version or no graph)")
    if len(proto.graph.node) == 0:
        raise ModelLoadError(f"model '{label}' has no nodes; nothing to compile")
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"'{label}' is not a valid ONNX model: {first}") from None
    return proto, label


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"'{label}' is not an ONNX model (protobuf decode failed: {e})") from None
    return proto


def model_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def check_supported(proto: onnx.ModelProto, label: str, opset: int) -> None:
    """Scan the whole graph first and report every unsupported op at once."""
    bad = []
    for i, n in enumerate(proto.graph.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            bad.append((f"{n.domain}.{n.op_type}", name, opset))
        elif lookup(n.op_type, opset) is None:
            bad.append((n.op_type, name, opset))
    if bad:
        raise UnsupportedOpsError(label, bad, supported_ops())


def _input_type(vi: onnx.ValueInfoProto, label: str, override) -> TensorType:
    tt = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
    if dtype != np.float32:
        raise ModelLoadError(f"model '{label}': input '{vi.name}' has element type {dtype}; rt3d takes float32 inputs")
    if override is not None:
        return TensorType(tuple(int(d) for d in override))
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            sym = d.dim_param or "?"
            raise ModelLoadError(
                f"model '{label}': input '{vi.name}' has a dynamic dimension '{sym}' at axis {axis}; rt3d compiles "
                f"static shapes: export with fixed shapes or pass input_shapes={{'{vi.name}': (...)}}")
        dims.append(d.dim_value)
    if not tt.HasField("shape"):
        raise ModelLoadError(f"model '{label}': input '{vi.name}' has no shape; pass input_shapes={{...}}")
    return TensorType(tuple(dims))


def import_model(model, input_shapes: dict[str, tuple[int, ...]] | None = None, name: str | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a verified rt3d IR graph.

    Example::

        g = rt3d.frontend.onnx.import_model("c3d.onnx")
        print(g)
    """
    proto, label = load_model(model)
    opset = model_opset(proto)
    if opset not in SUPPORTED_OPSETS:
        raise ModelLoadError(f"model '{label}' uses ONNX opset {opset}; rt3d supports opsets "
                             f"{SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}")
    check_supported(proto, label, opset)
    g = Graph(sanitize(name or proto.graph.name or "main").replace("/", "_").replace(":", "_"))
    ctx = Context(g, opset, label)
    ctx.sparsity = read_annotations(proto, label)
    inits = {i.name for i in proto.graph.initializer}
    for init in proto.graph.initializer:
        ctx.env[init.name] = numpy_helper.to_array(init)
    shapes = dict(input_shapes or {})
    names = [v.name for v in proto.graph.input if v.name not in inits]
    if set(shapes) - set(names):
        raise ModelLoadError(f"model '{label}': input_shapes names unknown inputs {sorted(set(shapes) - set(names))}; "
                             f"inputs are {names}")
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        ctx.env[vi.name] = g.add_input(sanitize(vi.name), _input_type(vi, label, shapes.get(vi.name)))
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        ctx.node = node
        try:
            outs = lookup(node.op_type, opset)(ctx, node)
        except ConversionError:
            raise
        except Exception as e:  # an IR or numpy error: say which node
            raise ctx.fail(f"{type(e).__name__}: {e}") from e
        for oname, val in zip(node.output, outs):
            if oname:
                ctx.env[oname] = np.asarray(val) if isinstance(val, np.generic) else val
    ctx.node = None
    for vi in proto.graph.output:
        v = ctx.env.get(vi.name)
        if v is None:
            raise ModelLoadError(f"model '{label}': output '{vi.name}' is never produced")
        if isinstance(v, np.ndarray):
            raise ModelLoadError(f"model '{label}': output '{vi.name}' is a constant; nothing to compile")
        g.outputs.append(v)
    g.remove_unused()
    return verify(g)
