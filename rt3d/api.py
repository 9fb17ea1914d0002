"""The public entry points: ``rt3d.build`` and ``rt3d.load``."""
from __future__ import annotations

from typing import TextIO

from .errors import BuildError
from .frontend.onnx import import_model
from .ir import Graph
from .ir.flops import graph_macs
from .passes import PassManager
from .runtime import Module
from .runtime.module import ARTIFACT_VERSION
from .targets import get_target
from .targets.lower import compile_lowered, lower_graph


def build(model, target: str = "host", passes: str | list | None = None,
          input_shapes: dict[str, tuple[int, ...]] | None = None, print_after_all: bool = False,
          stream: TextIO | None = None) -> Module:
    """Compile an ONNX model (path, bytes, ``onnx.ModelProto``) or an rt3d IR ``Graph`` for ``target``.

    ``passes`` is a pipeline string of registered passes (built-in or your own); by default the target's own
    (``fold-constants,fold-bn,fuse,block-layout{block=16},dce`` on an AVX-512 host). Example::

        mod = rt3d.build("c3d.onnx", target="host")
        y = mod.run(clip)
    """
    tgt = get_target(target)
    graph = model if isinstance(model, Graph) else import_model(model, input_shapes=input_shapes)
    if isinstance(model, Graph):
        graph = graph.copy()  # passes edit in place; the caller's graph stays as it was
    pm = PassManager(tgt.default_passes() if passes is None else passes, print_after_all=print_after_all,
                     stream=stream)
    graph = pm.run(graph)
    lowered = lower_graph(graph, tgt)
    exe = compile_lowered(lowered, tgt)
    if not lowered.layers:
        raise BuildError(f"graph '{graph.name}' has no operations to compile")
    meta = {
        "artifact_version": ARTIFACT_VERSION,
        "rt3d_version": _version(),
        "name": graph.name,
        "target": tgt.name,
        "tvm_target": tgt.tvm_target,
        "runs_here": tgt.runs_here,
        "inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in graph.inputs],
        "outputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in graph.outputs],
        "macs": graph_macs(graph),
        "passes": [{"name": r.name, "ms": r.ms, "notes": r.notes} for r in pm.reports],
        "layers": [layer.to_json() for layer in lowered.layers],
    }
    return Module(exe, meta, lowered.params, str(graph))


def _version() -> str:
    from . import __version__
    return __version__


