"""Engine adapters for the peer benchmark. Each turns (ONNX file, torch module, input shape) into a run(x) callable.

Peers are optional extras (`pip install -e .[bench]`); an engine whose package is missing is reported, not fatal.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rt3d.models.sparse import PAPER_RATES


@dataclass
class Prepared:
    run: Callable[[np.ndarray], np.ndarray]
    info: dict  # what the engine reports about itself (version, precision, threads...)
    close: Callable[[], None] = lambda: None


def precision_name(value) -> str:
    """'f32', 'bf16', 'f16' from whatever an engine reports (OpenVINO gives a Type object)."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    for key, short in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float16", "f16"), ("f16", "f16"),
                       ("float32", "f32"), ("f32", "f32")):
        if key in text:
            return short
    return text


def write_text(out: str | Path, name: str, text: str) -> Path:
    """Write a benchmark's results as ``out/name`` atomically (a temporary file renamed over it); returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.tmp"
    tmp.write_text(text)
    tmp.replace(out / name)
    return out / name


def write_json(out: str | Path, name: str, obj) -> Path:
    return write_text(out, name, json.dumps(obj, indent=1))


def round_order(names: list, r: int) -> list:
    """The order in which round ``r`` times ``names``: rows of a balanced Latin square (Williams' design: 0, 1, n-1,
    2, n-2, ... shifted by r; for an odd n every other n rounds reversed), so that over n rounds (2n for an odd n)
    each is timed right after each of the others equally often. In a fixed order (or a rotated one, which keeps who
    follows whom) every engine follows the same one, whose traces in the caches it pays for: on the Zen 5 machine of
    2026-12-06 (scratch, C3D, 9 rounds) rt3d-kgs took 57.8 ms right after OpenVINO and 56.0 right after itself, and
    the peer run, where it always followed OpenVINO, had it at 1.09x Vanilla's time where bench/e2e_breakdown.py
    measured 1.00x."""
    n = len(names)
    if n == 0:
        return []
    base = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    order = [names[(b + r) % n] for b in base]
    return order[::-1] if n % 2 and (r // n) % 2 else order


def interleaved(mods: dict, rounds: int, time_ms) -> dict[str, float]:
    """The median of ``time_ms(module)`` for each of ``mods`` (name -> module) over ``rounds`` rounds, each round
    timing them in turn (round_order), so that a busy moment of a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in mods}
    for r in range(rounds):
        for name in round_order(list(mods), r):
            times[name].append(time_ms(mods[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


def select(table: dict, only: str | None, what: str) -> dict:
    """The entries of a benchmark's ``table`` whose name contains one of the comma-separated substrings of ``only``
    (all of them when it is empty); a SystemExit naming the choices when none matches."""
    if not only:
        return table
    keys = [k.strip() for k in only.split(",") if k.strip()]
    chosen = {name: v for name, v in table.items() if any(k in name for k in keys)}
    if not chosen:
        raise SystemExit(f"no {what} matches {only!r}; the {what}s are: {', '.join(table)}")
    return chosen


def cores() -> int:
    return len(os.sched_getaffinity(0))


def rt3d_engine(onnx_path: Path, module, shape) -> Prepared:
    import rt3d
    mod = rt3d.build(onnx_path, target="host")
    return Prepared(mod.run, {"version": rt3d.__version__, "precision": "f32",
                              "threads": os.environ.get("TVM_NUM_THREADS"), "module": mod})


# the paper's whole-model FLOPs reductions (DESIGN.md, performance protocol; rt3d.models.sparse.PAPER_RATES): random
# masks at one density for every conv and fully connected layer with >= 16 input channels (stems stay dense),
# chosen to reach the rate (rt3d.models.sparse.sparsify)
SPARSE_RATES = PAPER_RATES


def _rt3d_sparse(scheme: str) -> Callable:
    def engine(onnx_path: Path, module, shape) -> Prepared:
        import rt3d
        from rt3d.models.sparse import sparsify
        stem = Path(onnx_path).stem  # small test models: 2x, pruning every conv with >= 4 input channels
        rate = SPARSE_RATES.get(stem, 2.0)
        pruned, rates = sparsify(onnx_path, scheme, rate, seed=0, min_channels=16 if stem in SPARSE_RATES else 4)
        mod = rt3d.build(pruned, target="host")
        kept = sum(layer.macs for layer in mod.layers)
        return Prepared(mod.run, {"version": rt3d.__version__, "precision": "f32", "sparsity": scheme,
                                  "flops_reduction": rate, "layer_density": round(rates[0].density, 4),
                                  "pruned_layers": len(rates), "kept_macs": kept, "pruned": True,
                                  "threads": os.environ.get("TVM_NUM_THREADS"), "module": mod})
    return engine


def torch_engine(onnx_path: Path, module, shape) -> Prepared:
    import torch
    torch.set_num_threads(cores())
    module = module.eval()

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return Prepared(run, {"version": torch.__version__, "precision": "f32", "threads": torch.get_num_threads()})


def ort_engine(onnx_path: Path, module, shape) -> Prepared:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = cores()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return Prepared(lambda x: sess.run(None, {name: x})[0],
                    {"version": ort.__version__, "precision": "f32", "threads": cores()})


def _openvino(onnx_path: Path, precision: str | None) -> Prepared:
    import openvino as ov
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": cores()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(str(onnx_path), "CPU", config)
    req = compiled.create_infer_request()
    actual = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(x):
        req.infer([x])
        return req.get_output_tensor(0).data.copy()
    return Prepared(run, {"version": ov.get_version(), "precision": actual, "threads": cores()})


def openvino_f32_engine(onnx_path, module, shape) -> Prepared:
    return _openvino(onnx_path, "f32")


def openvino_default_engine(onnx_path, module, shape) -> Prepared:
    return _openvino(onnx_path, None)


def mnn_engine(onnx_path: Path, module, shape) -> Prepared:
    import MNN
    import MNN.expr as F
    mnn_path = onnx_path.with_suffix(".mnn")
    if not mnn_path.exists() or mnn_path.stat().st_mtime < onnx_path.stat().st_mtime:
        tool = shutil.which("mnnconvert", path=str(Path(sys.executable).parent)) or "mnnconvert"
        subprocess.run([tool, "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path),
                        "--bizCode", "rt3d-bench"], check=True, capture_output=True, timeout=1200)
    net = MNN.nn.load_module_from_file(str(mnn_path), ["input"], ["logits"], thread_num=cores(),
                                       precision_mode=F.PrecisionMode.High)

    def run(x):
        var = F.placeholder(list(x.shape), F.NCHW)
        var.write(x)
        return np.array(net.forward(var).read())
    return Prepared(run, {"version": MNN.version(), "precision": "f32 (PrecisionMode.High)", "threads": cores()})


def tvm_relax_engine(onnx_path: Path, module, shape) -> Prepared:
    """TVM's own pipeline: Relax ONNX importer, default Relax build for this CPU (no tuning database)."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    mod = from_onnx(onnx.load(str(onnx_path)), keep_params_in_input=False)
    cpu = tvm.get_global_func("target.llvm_get_system_cpu")()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores()})
    with target:
        mod = relax.get_pipeline("zero")(mod)
    ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())

    def run(x):
        out = vm["main"](tvm.runtime.tensor(x))
        return (out if hasattr(out, "numpy") else out[0]).numpy()  # a tensor, or a tuple of outputs
    return Prepared(run, {"version": tvm.__version__, "precision": "f32", "threads": os.environ.get("TVM_NUM_THREADS"),
                          "pipeline": "relax zero pipeline (legalize + fuse), unscheduled TOPI conv3d"})


ENGINES: dict[str, Callable] = {
    "rt3d": rt3d_engine,
    "pytorch": torch_engine,
    "onnxruntime": ort_engine,
    "openvino-f32": openvino_f32_engine,
    "mnn": mnn_engine,
    "tvm-relax": tvm_relax_engine,
    "openvino-default": openvino_default_engine,
    # the same models pruned at random (a different model: no output comparison with the dense engines)
    "rt3d-kgs": _rt3d_sparse("kgs(8x4)"),
    "rt3d-vanilla": _rt3d_sparse("vanilla(8x4)"),
}
