"""The public entry points: ``rt3d.build`` and ``rt3d.load``."""
from __future__ import annotations

import os
import sys
import warnings
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
          stream: TextIO | None = None, tuning_db: str | os.PathLike | None = None) -> Module:
    """Compile an ONNX model (path, bytes, ``onnx.ModelProto``) or an rt3d IR ``Graph`` for ``target``.

    ``tuning_db`` (a file written by ``rt3d.autotune`` / ``rt3d tune``) supplies the best measured schedule of every
    layer it has records for; the others keep the default heuristic.
    ``passes`` is a pipeline string of registered passes (built-in or your own); by default the target's own
    (``Target.default_passes()``: fold-constants, fold-bn, fuse, the sparse passes, block-layout, fuse-pool, ...).
    Example::

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
    tuning = None
    if tuning_db is not None:
        from .tune import TuningDB, apply_db
        db = TuningDB(tuning_db)
        for problem in db.problems:
            warnings.warn(problem, stacklevel=2)
        tgt, applied = apply_db(graph, tgt, db)
        tuning = {"db": str(tuning_db), "layers_tuned": applied, "skipped_lines": len(db.problems)}
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
        "link": tgt.link,
        "emulate": tgt.emulate,
        "inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in graph.inputs],
        "outputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in graph.outputs],
        "macs": graph_macs(graph),
        "passes": [{"name": r.name, "ms": r.ms, "notes": r.notes} for r in pm.reports],
        "tuning": tuning,
        "layers": [layer.to_json() for layer in lowered.layers],
        "output_layers": lowered.output_layers,
    }
    opencl = None
    if tgt.emulate == "pyopencl":
        from .targets.opencl.launcher import launch_plan, opencl_source
        opencl = opencl_source(exe)
        meta["opencl_plan"] = launch_plan(lowered, opencl)
    return Module(exe, meta, lowered.params, str(graph), opencl_source=opencl)


def autotune(model, db: str | os.PathLike, target: str = "host", trials: int = 64, passes: str | list | None = None,
             input_shapes: dict[str, tuple[int, ...]] | None = None, stream: TextIO | None = None,
             tracker: str | None = None, key: str | None = None, resume: bool = False, search: str = "guided",
             timeout: float = 60.0, time_budget: float | None = None, seed: int = 0):
    """Run a tuning session of ``trials`` schedule measurements for the whole model and append them to ``db``.

    Measures on this machine, or with ``tracker="HOST:PORT"`` and ``key`` on the devices an RPC tracker holds
    (several at once). ``resume=True`` continues this model's last session in ``db``; ``time_budget`` (seconds)
    stops a session early. Example::

        report = rt3d.autotune("c3d.onnx", db="c3d.tune.jsonl", trials=200, tracker="127.0.0.1:9190", key="phone")
        mod = rt3d.build("c3d.onnx", tuning_db="c3d.tune.jsonl")
    """
    from .errors import TuneError
    from .tune import LocalRunner, RPCRunner, TuningDB, tune_graph
    tgt = get_target(target)
    if tracker is None and not tgt.runs_here:
        raise TuneError(f"target '{tgt.name}' cannot be measured on this machine: give a tracker and key")
    if tracker is not None and not key:
        raise TuneError("a tracker needs the device key its servers registered with (--key)")
    graph = model if isinstance(model, Graph) else import_model(model, input_shapes=input_shapes)
    graph = PassManager(tgt.default_passes() if passes is None else passes).run(graph)
    runner = RPCRunner(tracker, key, timeout=timeout) if tracker else LocalRunner(timeout=timeout)
    tdb = TuningDB(db)
    for problem in tdb.problems:
        warnings.warn(problem, stacklevel=2)
    return tune_graph(graph, tgt, tdb, runner, trials=trials, search=search, resume=resume,
                      time_budget=time_budget, seed=seed, out=sys.stderr if stream is None else stream)


def _version() -> str:
    from . import __version__
    return __version__


