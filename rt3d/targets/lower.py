"""Lower a whole IR graph: every node to a scheduled PrimFunc, glued into one Relax function with call_tir.

The Relax function takes the graph inputs followed by every build-time array (packed weights and the like) as
parameters, so weights live beside the library rather than inside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..errors import BuildError, Rt3dError
from ..ir import Graph, Node, Value
from .base import Target


@dataclass
class LayerInfo:
    """What the built module runs for one IR node (shown by Module.benchmark and `rt3d inspect`)."""

    kernel: str  # PrimFunc symbol in the library
    node: str  # the node's IR text
    op: str
    impl: str
    args: list  # ("input", index) | ("param", index) | ("value", kernel index)
    arg_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    macs: int
    out_dtype: str = "float32"

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "node": self.node, "op": self.op, "impl": self.impl, "args": self.args,
                "arg_shapes": [list(s) for s in self.arg_shapes], "out_shape": list(self.out_shape),
                "macs": self.macs, "out_dtype": self.out_dtype}

    @staticmethod
    def from_json(d: dict) -> "LayerInfo":
        return LayerInfo(d["kernel"], d["node"], d["op"], d["impl"], [tuple(a) for a in d["args"]],
                         [tuple(s) for s in d["arg_shapes"]], tuple(d["out_shape"]), d["macs"],
                         d.get("out_dtype", "float32"))


@dataclass
class Lowered:
    mod: tvm.IRModule
    params: list[np.ndarray]
    layers: list[LayerInfo]
    output_layers: list[int]  # the layer computing each graph output


def _symbol(i: int, node: Node) -> str:
    return f"k{i:03d}_{re.sub(r'[^A-Za-z0-9_]', '_', node.op)}"


def lower_graph(graph: Graph, target: Target) -> Lowered:
    from ..ir.flops import node_macs
    bb = relax.BlockBuilder()
    in_vars = [relax.Var(f"in{i}", relax.TensorType(v.type.shape, v.type.dtype)) for i, v in enumerate(graph.inputs)]
    env: dict[Value, tuple] = {v: ("input", i) for i, v in enumerate(graph.inputs)}
    params: list[np.ndarray] = []
    param_ids: dict[int, int] = {}
    kernels = []
    for i, node in enumerate(graph.nodes):
        try:
            k = target.lower(node)
        except Rt3dError:
            raise
        except Exception as e:
            raise BuildError(f"lowering failed for node: {node}\n  {type(e).__name__}: {e}") from e
        refs = []
        for a in k.args:
            if isinstance(a, Value) and not a.is_const:
                refs.append(env[a])
                continue
            arr = a.data if isinstance(a, Value) else a
            if arr is None:
                raise BuildError(f"constant {a.ref()} of node {node} has no data (graph parsed without params?)")
            key = id(arr)
            if key not in param_ids:
                param_ids[key] = len(params)
                params.append(np.require(arr, requirements="C"))
            refs.append(("param", param_ids[key]))
        sym = _symbol(i, node)
        env[node.output] = ("value", i)
        kernels.append((sym, k, refs, node))
    param_vars = [relax.Var(f"p{j}", relax.TensorType(p.shape, str(p.dtype))) for j, p in enumerate(params)]
    layers = []
    with bb.function("main", in_vars + param_vars):
        with bb.dataflow():
            vals = {}
            for i, (sym, k, refs, node) in enumerate(kernels):
                gv = bb.add_func(k.func.with_attr("global_symbol", sym), sym)
                args = [in_vars[r[1]] if r[0] == "input" else param_vars[r[1]] if r[0] == "param" else vals[r[1]]
                        for r in refs]
                out_t = node.output.type
                vals[i] = bb.emit(relax.call_tir(gv, args, relax.TensorType(out_t.shape, out_t.dtype)))
                shapes = [graph.inputs[r[1]].type.shape if r[0] == "input" else params[r[1]].shape
                          if r[0] == "param" else kernels[r[1]][3].output.type.shape for r in refs]
                layers.append(LayerInfo(sym, str(node), node.op, k.impl, [list(r) for r in refs], shapes,
                                        out_t.shape, node_macs(node), out_t.dtype))
            outs, output_layers = [], []
            for v in graph.outputs:
                ref = env[v]
                if ref[0] != "value":
                    raise BuildError(f"graph output {v.ref()} is not computed by any node; nothing to compile")
                outs.append(vals[ref[1]])
                output_layers.append(ref[1])
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    return Lowered(bb.get(), params, layers, output_layers)


def compile_lowered(lowered: Lowered, target: Target):
    from tvm.relax.pipeline import default_build_pipeline
    try:
        return tvm.compile(lowered.mod, target=target.tvm(), relax_pipeline=default_build_pipeline())
    except Exception as e:
        raise BuildError(f"TVM code generation failed for target '{target.name}': {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}") from e
