"""The built module: run, benchmark (median latency and a per-layer breakdown), export and load an artifact."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, Rt3dError
from ..targets.lower import LayerInfo

ARTIFACT_VERSION = 1


@dataclass
class LayerTime:
    kernel: str
    op: str
    impl: str
    ms: float
    macs: int
    node: str = ""  # the IR node's text (ends with "# <source node name>")

    @property
    def gflops(self) -> float:
        return 2 * self.macs / (self.ms * 1e6) if self.ms > 0 else 0.0


@dataclass
class BenchmarkReport:
    """Median end-to-end latency over ``runs`` timed runs, plus the median time of every kernel alone."""

    median_ms: float
    runs_ms: list[float]
    macs: int
    layers: list[LayerTime] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"latency: median {self.median_ms:.2f} ms over {len(self.runs_ms)} runs "
                 f"(min {min(self.runs_ms):.2f}, max {max(self.runs_ms):.2f}); "
                 f"{2 * self.macs / 1e9:.2f} GFLOP, {2 * self.macs / (self.median_ms * 1e6):.1f} GFLOP/s"]
        if self.layers:
            total = sum(lt.ms for lt in self.layers) or 1.0
            lines.append(f"kernels timed alone: sum {total:.2f} ms; end to end adds "
                         f"{100 * (self.median_ms - total) / self.median_ms:.1f}% (launches, cold caches)")
            lines.append(f"{'kernel':<22}{'op':<16}{'ms':>9}{'%':>7}{'GFLOP/s':>10}  impl")
            for lt in self.layers:
                gf = f"{lt.gflops:.1f}" if lt.macs else "-"
                lines.append(f"{lt.kernel:<22}{lt.op:<16}{lt.ms:>9.3f}{100 * lt.ms / total:>6.1f}%{gf:>10}  {lt.impl}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "runs_ms": self.runs_ms, "macs": self.macs,
                "layers": [lt.__dict__ | {"gflops": lt.gflops} for lt in self.layers]}


class Module:
    """A compiled model. ``run(x)`` takes and returns numpy arrays.

    Example::

        mod = rt3d.build("c3d.onnx", target="host")
        logits = mod.run(clip)
        print(mod.benchmark(clip))
        mod.export("c3d-host/"); mod2 = rt3d.load("c3d-host/")
    """

    def __init__(self, executable, meta: dict, params: list[np.ndarray], graph_text: str = "",
                 library_path: Path | None = None):
        self.meta = meta
        self.graph_text = graph_text
        self._exe = executable
        self._params = params
        self._library_path = library_path
        self._vm = None
        self._param_tensors = None
        self.layers = [LayerInfo.from_json(d) for d in meta["layers"]]

    # ---- properties ----------------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.meta["target"]

    @property
    def inputs(self) -> list[dict]:
        return self.meta["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.meta["outputs"]

    @property
    def macs(self) -> int:
        return int(self.meta["macs"])

    # ---- running -------------------------------------------------------------------------------------------
    def _ensure_vm(self):
        if self._vm is None:
            import tvm
            from tvm import relax
            if not self.meta.get("runs_here", True):
                raise Rt3dError(f"module built for target '{self.target}' cannot run on this machine; "
                                "export it and run it on the device")
            self._vm = relax.VirtualMachine(self._exe, tvm.cpu())
            self._param_tensors = [tvm.runtime.tensor(p, tvm.cpu()) for p in self._params]
        return self._vm

    def _check_inputs(self, inputs, named) -> list[np.ndarray]:
        spec = self.inputs
        if named:
            if inputs:
                raise InputError("pass inputs either by position or by name, not both")
            unknown = set(named) - {s["name"] for s in spec}
            if unknown:
                raise InputError(f"model '{self.meta['name']}' has no input(s) {sorted(unknown)}; "
                                 f"inputs: {[s['name'] for s in spec]}")
            inputs = [named.get(s["name"]) for s in spec]
            missing = [s["name"] for s, x in zip(spec, inputs) if x is None]
            if missing:
                raise InputError(f"model '{self.meta['name']}': missing input(s) {missing}")
        if len(inputs) != len(spec):
            raise InputError(f"model '{self.meta['name']}' takes {len(spec)} input(s) "
                             f"({', '.join(s['name'] for s in spec)}), got {len(inputs)}")
        out = []
        for s, x in zip(spec, inputs):
            x = np.asarray(x)
            if tuple(x.shape) != tuple(s["shape"]):
                raise InputError(f"model '{self.meta['name']}': input '{s['name']}' must have shape "
                                 f"{list(s['shape'])}, got {list(x.shape)}")
            if x.dtype != np.dtype(s["dtype"]):
                if not np.issubdtype(x.dtype, np.number):
                    raise InputError(f"model '{self.meta['name']}': input '{s['name']}' must be {s['dtype']}, "
                                     f"got {x.dtype}")
                x = x.astype(s["dtype"])
            out.append(np.ascontiguousarray(x))
        return out

    def run(self, *inputs: np.ndarray, **named: np.ndarray):
        """Run the model; returns one array, or a list when the model has several outputs."""
        import tvm
        arrays = self._check_inputs(inputs, named)
        vm = self._ensure_vm()
        res = vm["main"](*[tvm.runtime.tensor(a) for a in arrays], *self._param_tensors)
        if len(self.outputs) == 1:
            return res.numpy()
        return [r.numpy() for r in res]

    def benchmark(self, *inputs: np.ndarray, repeat: int = 10, warmup: int = 2, per_layer: bool = True,
                  layer_repeat: int = 5) -> BenchmarkReport:
        """Median latency of ``repeat`` runs after ``warmup`` runs, and each kernel's median time alone."""
        import tvm
        arrays = self._check_inputs(inputs, {}) if inputs else [
            np.random.default_rng(0).standard_normal(s["shape"]).astype(s["dtype"]) for s in self.inputs]
        vm = self._ensure_vm()
        args = [tvm.runtime.tensor(a) for a in arrays] + self._param_tensors
        for _ in range(warmup):
            vm["main"](*args)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            vm["main"](*args)
            runs.append((time.perf_counter() - t0) * 1e3)
        report = BenchmarkReport(statistics.median(runs), runs, self.macs)
        if per_layer:
            report.layers = self._layer_times(layer_repeat)
        return report

    def _layer_times(self, repeat: int) -> list[LayerTime]:
        import tvm
        dev = tvm.cpu()
        lib = self._kernel_library()
        rng = np.random.default_rng(0)
        times = []
        for layer in self.layers:
            args = []
            for ref, shape in zip(layer.args, layer.arg_shapes):
                if ref[0] == "param":
                    args.append(self._param_tensors[ref[1]])
                else:
                    args.append(tvm.runtime.tensor(rng.standard_normal(shape).astype("float32"), dev))
            args.append(tvm.runtime.empty(layer.out_shape, "float32", dev))
            f = lib.time_evaluator(layer.kernel, dev, number=1, repeat=repeat, min_repeat_ms=20)
            ms = float(np.median(f(*args).results)) * 1e3
            times.append(LayerTime(layer.kernel, layer.op, layer.impl, ms, layer.macs, layer.node))
        return times

    def _kernel_library(self):
        mod = self._exe.mod if hasattr(self._exe, "mod") else self._exe
        for m in [mod] + list(mod.imports):
            if m.implements_function(self.layers[0].kernel) if self.layers else False:
                return m
        raise Rt3dError("cannot find the kernel library inside the compiled module")

    # ---- artifacts -----------------------------------------------------------------------------------------
    def export(self, directory: str | os.PathLike) -> Path:
        """Write a deployable artifact folder: model.so, weights.npz, meta.json and graph.rt3d (atomically)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            lib = tmp / "model.so"
            if self._library_path is not None:
                shutil.copy2(self._library_path, lib)
            else:
                self._exe.export_library(str(lib))
            np.savez(tmp / "weights.npz", **{f"p{i}": p for i, p in enumerate(self._params)})
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1))
            (tmp / "graph.rt3d").write_text(self.graph_text)
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory


def load(directory: str | os.PathLike) -> Module:
    """Load an artifact folder written by ``Module.export``."""
    import tvm
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise Rt3dError(f"'{directory}' is not an rt3d artifact (no meta.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise Rt3dError(f"'{directory}': artifact version {meta.get('artifact_version')} is not supported "
                        f"(this rt3d reads version {ARTIFACT_VERSION})")
    with np.load(directory / "weights.npz") as z:
        params = [z[f"p{i}"] for i in range(len(z.files))]
    lib = tvm.runtime.load_module(str(directory / "model.so")) if meta.get("runs_here", True) else None
    text = (directory / "graph.rt3d").read_text() if (directory / "graph.rt3d").exists() else ""
    return Module(lib, meta, params, text, library_path=directory / "model.so")
