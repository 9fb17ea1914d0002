"""The built module: run, benchmark (median latency and a per-layer breakdown), export and load an artifact."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, Rt3dError
from ..targets.lower import LayerInfo

ARTIFACT_VERSION = 2  # 2: weights.bin + params.txt + io.txt (readable from C++) and runner/ instead of weights.npz
_ALIGN = 64  # weights.bin offsets


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
    """Median end-to-end latency over ``runs`` timed runs, plus the median time of every kernel, timed alone or in
    the model (``layer_mode``, see Module.benchmark)."""

    median_ms: float
    runs_ms: list[float]
    macs: int
    layers: list[LayerTime] = field(default_factory=list)
    device: str = ""  # where it ran, when not this machine's CPU (an OpenCL device)
    layer_mode: str = "alone"

    def __str__(self) -> str:
        lines = [(f"device: {self.device}; kernel times are the device's own (OpenCL profiling)\n"
                  if self.device else "") + f"latency: median {self.median_ms:.2f} ms over {len(self.runs_ms)} runs "
                 f"(min {min(self.runs_ms):.2f}, max {max(self.runs_ms):.2f}); "
                 f"{2 * self.macs / 1e9:.2f} GFLOP, {2 * self.macs / (self.median_ms * 1e6):.1f} GFLOP/s"]
        if self.layers:
            total = sum(lt.ms for lt in self.layers) or 1.0
            how = "alone" if self.layer_mode == "alone" else "in the model"
            lines.append(f"kernels timed {how}: sum {total:.2f} ms; end to end adds "
                         f"{100 * (self.median_ms - total) / self.median_ms:.1f}%"
                         + (" (launches, cold caches)" if self.layer_mode == "alone" else ""))
            lines.append(f"{'kernel':<22}{'op':<16}{'ms':>9}{'%':>7}{'GFLOP/s':>10}  impl")
            for lt in self.layers:
                gf = f"{lt.gflops:.1f}" if lt.macs else "-"
                lines.append(f"{lt.kernel:<22}{lt.op:<16}{lt.ms:>9.3f}{100 * lt.ms / total:>6.1f}%{gf:>10}  {lt.impl}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "runs_ms": self.runs_ms, "macs": self.macs, "device": self.device,
                "layer_mode": self.layer_mode, "layers": [lt.__dict__ | {"gflops": lt.gflops} for lt in self.layers]}


class Module:
    """A compiled model. ``run(x)`` takes and returns numpy arrays.

    Example::

        mod = rt3d.build("c3d.onnx", target="host")
        logits = mod.run(clip)
        print(mod.benchmark(clip))
        mod.export("c3d-host/"); mod2 = rt3d.load("c3d-host/")
    """

    def __init__(self, executable, meta: dict, params: list[np.ndarray], graph_text: str = "",
                 library_path: Path | None = None, opencl_source: str | None = None):
        self.meta = meta
        self.graph_text = graph_text
        self._exe = executable
        self._params = params
        self._library_path = library_path
        self._vm = None
        self._param_tensors = None
        # one run at a time: two threads in the Relax VM at once crashed the process (the VM is not reentrant), and
        # the emulated and OpenCL paths set up their artifact / launcher on first use
        self._lock = threading.RLock()
        self._artifact_dir: Path | None = None  # an exported copy, for running under emulation
        self._tmp_artifact = None
        self.opencl_source = opencl_source  # android-gpu: the kernels' OpenCL C (kernels.cl in the artifact)
        self._launcher = None
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
    def _emulated(self) -> bool:
        """aarch64-linux modules run here under qemu (see rt3d.targets.arm_neon.deploy)."""
        return not self.meta.get("runs_here", True) and self.meta.get("emulate") == "qemu-aarch64"

    def _opencl(self):
        """android-gpu modules run their kernels through pyopencl (rt3d.targets.opencl.launcher)."""
        if self.meta.get("emulate") != "pyopencl":
            return None
        if self._launcher is None:
            from ..targets.opencl.launcher import OpenCLLauncher
            self._launcher = OpenCLLauncher(self.opencl_source, self.meta["opencl_plan"], self.layers, self._params,
                                            self.meta["output_layers"])
        return self._launcher

    def _ensure_vm(self):
        if self._vm is None:
            import tvm
            from tvm import relax
            if not self.meta.get("runs_here", True):
                raise Rt3dError(f"module built for target '{self.target}' cannot run on this machine; "
                                "export it (Module.export) and run it on the device with the exported runner")
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
        """Run the model; returns one array, or a list when the model has several outputs. Thread-safe: calls from
        several threads run one after another."""
        arrays = self._check_inputs(inputs, named)
        with self._lock:
            return self._run(arrays)

    def _run(self, arrays: list[np.ndarray]):
        import tvm
        if self._emulated():
            outs, _ = self._run_emulated(arrays)
            return outs[0] if len(outs) == 1 else outs
        launcher = self._opencl()
        if launcher is not None:
            outs = launcher.run(arrays)
            return outs[0] if len(outs) == 1 else outs
        vm = self._ensure_vm()
        res = vm["main"](*[tvm.runtime.tensor(a) for a in arrays], *self._param_tensors)
        if len(self.outputs) == 1:
            return res.numpy()
        return [r.numpy() for r in res]

    def benchmark(self, *inputs: np.ndarray, repeat: int = 10, warmup: int = 2, per_layer: bool = True,
                  layer_repeat: int = 5, layer_mode: str = "alone") -> BenchmarkReport:
        """Median latency of ``repeat`` runs after ``warmup`` runs, and each kernel's median time (``per_layer``):
        ``layer_mode="alone"``, each kernel run over and over on its own (warm caches: what the kernel can do), or
        ``"in-model"``, the kernels run one after another in the model's order on the previous kernels' outputs,
        ``layer_repeat`` passes, each timed where it runs (cold inputs and weights as in a real run: where the time
        that end to end adds over the kernels alone goes). GPU modules report their device's kernel times."""
        _check_layer_mode(layer_mode)
        arrays = self._inputs_or_random(inputs)
        with self._lock:
            return self._benchmark(arrays, repeat, warmup, per_layer, layer_repeat, layer_mode)

    def _benchmark(self, arrays, repeat: int, warmup: int, per_layer: bool, layer_repeat: int,
                   layer_mode: str) -> BenchmarkReport:
        import tvm
        if self._emulated():
            raise Rt3dError(f"module for '{self.target}' runs here only under emulation (qemu), whose timings say "
                            "nothing about a device: benchmark it on the device with the exported runner "
                            "(rt3d_runner DIR --repeat N)")
        launcher = self._opencl()
        if launcher is not None:
            runs, ktimes = launcher.benchmark(arrays, repeat=repeat, warmup=warmup)
            report = BenchmarkReport(statistics.median(runs), runs, self.macs, device=launcher.device_name)
            if per_layer:
                report.layers = [LayerTime(lay.kernel, lay.op, lay.impl, kt.ms, lay.macs, lay.node)
                                 for lay, kt in zip(self.layers, ktimes)]
            return report
        vm = self._ensure_vm()
        args = [tvm.runtime.tensor(a) for a in arrays] + self._param_tensors
        for _ in range(warmup):
            vm["main"](*args)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            vm["main"](*args)
            runs.append((time.perf_counter() - t0) * 1e3)
        report = BenchmarkReport(statistics.median(runs), runs, self.macs, layer_mode=layer_mode)
        if per_layer:
            report.layers = self._kernel_times(args, layer_repeat, layer_mode)
        return report

    def layer_times(self, *inputs: np.ndarray, layer_repeat: int = 5, layer_mode: str = "alone") -> list[LayerTime]:
        """Each kernel's median time as in ``benchmark(per_layer=True)``, without the end-to-end runs: for
        benchmarks that interleave the kernels of several modules round by round (CPU modules)."""
        _check_layer_mode(layer_mode)
        if self._emulated():
            raise Rt3dError(f"module for '{self.target}' runs here only under emulation (qemu): time its kernels on "
                            "the device")
        if self.meta.get("emulate") == "pyopencl":
            raise Rt3dError(f"layer_times times CPU kernels; the '{self.target}' module's OpenCL kernels are timed "
                            "by benchmark(per_layer=True) (the device's own profiling)")
        import tvm
        arrays = self._inputs_or_random(inputs)
        with self._lock:
            self._ensure_vm()
            args = [tvm.runtime.tensor(a) for a in arrays] + self._param_tensors
            if layer_mode == "in-model":
                self._vm["main"](*args)  # warm, as benchmark's warm-up runs do
            return self._kernel_times(args, layer_repeat, layer_mode)

    def _inputs_or_random(self, inputs) -> list[np.ndarray]:
        """The checked inputs, or seeded standard-normal ones when none are given (benchmarks)."""
        return self._check_inputs(inputs, {}) if inputs else [
            np.random.default_rng(0).standard_normal(s["shape"]).astype(s["dtype"]) for s in self.inputs]

    def _kernel_times(self, args: list, layer_repeat: int, layer_mode: str) -> list[LayerTime]:
        return (self._layer_times(layer_repeat) if layer_mode == "alone"
                else self._in_model_times(args, layer_repeat))

    def _in_model_times(self, args: list, passes: int) -> list[LayerTime]:
        """Each kernel's median time over ``passes`` passes through the model in order (after one untimed pass),
        on its real inputs: the previous kernels' outputs, the parameters (``args``: inputs then parameters). Every
        kernel writes a buffer of its own (the VM shares storage between values), so this holds all activations."""
        import tvm
        dev = tvm.cpu()
        lib = self._kernel_library()
        fns = [lib.get_function(layer.kernel) for layer in self.layers]
        outs = [tvm.runtime.empty(layer.out_shape, layer.out_dtype, dev) for layer in self.layers]
        n_in = len(self.inputs)
        calls = [[args[i] if kind == "input" else args[n_in + i] if kind == "param" else outs[i]
                  for kind, i in layer.args] + [outs[k]] for k, layer in enumerate(self.layers)]
        times = [[] for _ in self.layers]
        for p in range(passes + 1):
            for k, (f, call) in enumerate(zip(fns, calls)):
                t0 = time.perf_counter()
                f(*call)
                if p:
                    times[k].append((time.perf_counter() - t0) * 1e3)
        return [LayerTime(layer.kernel, layer.op, layer.impl, statistics.median(ts), layer.macs, layer.node)
                for layer, ts in zip(self.layers, times)]

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
    def _run_emulated(self, arrays: list[np.ndarray]):
        from ..targets.arm_neon.deploy import run_emulated
        if self._artifact_dir is None:
            self._tmp_artifact = tempfile.TemporaryDirectory(prefix="rt3d-aarch64-")
            self._artifact_dir = self.export(Path(self._tmp_artifact.name) / "artifact")
        return run_emulated(self._artifact_dir, arrays)

    def _export_library(self, tmp: Path) -> str:
        """Write the compiled code for the target; returns its file name."""
        if self._library_path is not None:
            shutil.copy2(self._library_path, tmp / self._library_path.name)
            return self._library_path.name
        link = self.meta.get("link", {})
        kind = link.get("kind", "native")
        if kind == "native":
            self._exe.export_library(str(tmp / "model.so"))
            return "model.so"
        from ..targets.base import link_compiler
        cc = link_compiler(link)
        if cc is None:
            # no compiler for the device (Android without an NDK): the object files, and how to link them
            self._exe.export_library(str(tmp / "model.tar"))
            (tmp / "LINKING.txt").write_text(link.get("howto", ""))
            return "model.tar"
        if shutil.which(cc.split()[0]) is None:
            raise Rt3dError(f"cannot link the '{self.target}' library: compiler '{cc}' not found"
                            + (f" (set {link['cc_env']} to your NDK's clang++)" if link.get("cc_env") else ""))
        self._exe.export_library(str(tmp / "model.so"), cc=cc)
        return "model.so"

    def export(self, directory: str | os.PathLike) -> Path:
        """Write a deployable artifact folder (atomically): the library (model.so, or model.tar of object files when
        no device linker is configured), weights.bin with params.txt (dtype, offset, bytes and shape per weight),
        io.txt (inputs and outputs), meta.json (inputs/outputs/shapes/target/rt3d version, layers), graph.rt3d and
        runner/ (the C++ runner's source and build script); android-gpu adds kernels.cl and run_opencl.py (runs the
        kernels with numpy and pyopencl alone)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            library = self._export_library(tmp)
            offsets, pos = [], 0
            with open(tmp / "weights.bin", "wb") as f:
                for p in self._params:
                    pad = (-pos) % _ALIGN
                    f.write(b"\0" * pad)
                    pos += pad
                    data = np.ascontiguousarray(p).tobytes()
                    f.write(data)
                    offsets.append((pos, len(data)))
                    pos += len(data)
            (tmp / "params.txt").write_text("# dtype offset nbytes ndim dims...\n" + "".join(
                f"{p.dtype} {off} {n} {p.ndim} {' '.join(map(str, p.shape))}\n"
                for p, (off, n) in zip(self._params, offsets)))
            (tmp / "io.txt").write_text("# input|output name dtype ndim dims...\n" + "".join(
                f"{kind} {s['name']} {s['dtype']} {len(s['shape'])} {' '.join(map(str, s['shape']))}\n"
                for kind, specs in (("input", self.inputs), ("output", self.outputs)) for s in specs))
            meta = dict(self.meta, library=library,
                        params=[{"dtype": str(p.dtype), "shape": list(p.shape), "offset": off, "nbytes": n}
                                for p, (off, n) in zip(self._params, offsets)])
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            (tmp / "graph.rt3d").write_text(self.graph_text)
            if self.opencl_source is not None:
                (tmp / "kernels.cl").write_text(self.opencl_source)
                from ..targets.opencl import launcher  # runs the artifact with numpy and pyopencl alone
                shutil.copyfile(launcher.__file__, tmp / "run_opencl.py")
            from ..targets.arm_neon.deploy import RUNNER_DIR
            shutil.copytree(RUNNER_DIR, tmp / "runner", ignore=shutil.ignore_patterns("rt3d_runner", "__pycache__"))
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


def _check_layer_mode(layer_mode: str) -> None:
    if layer_mode not in ("alone", "in-model"):
        raise InputError(f"layer_mode must be 'alone' or 'in-model', got {layer_mode!r}")


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
    from ..targets.opencl.launcher import read_params  # the one reader, also in android-gpu artifacts' runner
    params = read_params(directory, meta)
    library = directory / meta.get("library", "model.so")
    lib = tvm.runtime.load_module(str(library)) if meta.get("runs_here", True) else None
    text = (directory / "graph.rt3d").read_text() if (directory / "graph.rt3d").exists() else ""
    cl = directory / "kernels.cl"
    mod = Module(lib, meta, params, text, library_path=library,
                 opencl_source=cl.read_text() if cl.exists() else None)
    mod._artifact_dir = directory if library.suffix == ".so" else None
    return mod
