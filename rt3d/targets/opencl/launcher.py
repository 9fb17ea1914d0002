"""Running an android-gpu module's OpenCL kernels through pyopencl: the launch plan and the launcher.

TVM's runtime here has no OpenCL, so rt3d launches the kernels itself, in graph order: each IR node is one kernel
``<symbol>_kernel`` whose grid comes from the thread bindings of its scheduled function and whose parameter order
comes from its ``__kernel void`` signature (TVM orders the buffers by name there, not as the function lists them).
On this machine pyopencl finds PoCL's CPU device (correctness, not speed); with a GPU's OpenCL driver installed, the
same launcher runs there (``RT3D_OPENCL_DEVICE`` picks a device by a substring of its name or platform).

This file is also the artifact's own runner: ``Module.export`` copies it into an android-gpu artifact as
``run_opencl.py``, which needs only numpy and pyopencl (no rt3d, no TVM), for a machine with a GPU's OpenCL driver::

    python c3d-gpu/run_opencl.py c3d-gpu --repeat 20 --json c3d-gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from ...errors import BuildError, Rt3dError
except ImportError:  # run as an artifact's run_opencl.py, without the rt3d package
    class Rt3dError(RuntimeError):
        """What went wrong running an artifact (rt3d.Rt3dError inside rt3d)."""

    BuildError = Rt3dError

_SIGNATURE = re.compile(r"__kernel\s+void\s+(\w+)\s*\(([^)]*)\)")
_BINDING = re.compile(r'T\.thread_binding\((\d+), thread="(blockIdx|threadIdx)\.([xyz])"\)')


def opencl_source(exe) -> str:
    """The OpenCL C of a compiled module (the device module imported by its host code)."""
    stack = [exe.mod]
    while stack:
        m = stack.pop()
        if m.kind == "opencl":
            return m.inspect_source()
        stack.extend(m.imports)
    raise BuildError("the compiled module has no OpenCL device code")


def launch_plan(lowered, source: str) -> list[dict]:
    """For every kernel, in graph order: its name, global and local sizes, and which of the function's parameters
    (index into the layer's arguments; len(args) is the output) each kernel parameter is."""
    signatures: dict[str, list[str]] = {}
    for name, params in _SIGNATURE.findall(source):
        signatures[name] = [p.strip().split()[-1] for p in params.split(",") if p.strip()]
    plan = []
    for layer in lowered.layers:
        func = lowered.mod[layer.kernel]
        names = [p.name for p in func.params]
        kname = f"{layer.kernel}_kernel"
        if kname not in signatures:
            raise BuildError(f"no OpenCL kernel '{kname}' for node {layer.node}")
        if any(k.startswith(kname + "_") for k in signatures):
            raise BuildError(f"node {layer.node} compiled to more than one OpenCL kernel; rt3d's launcher expects one")
        order = []
        for p in signatures[kname]:
            base = p[:-4] if p.endswith("_ptr") else p
            if base not in names:
                raise BuildError(f"kernel '{kname}' parameter '{p}' matches none of {names}")
            order.append(names.index(base))
        extents = {"blockIdx": [1, 1, 1], "threadIdx": [1, 1, 1]}
        for ext, kind, axis in _BINDING.findall(func.script()):
            extents[kind]["xyz".index(axis)] = int(ext)
        local = extents["threadIdx"]
        glob = [b * t for b, t in zip(extents["blockIdx"], local)]
        plan.append({"kernel": kname, "global": glob, "local": local, "params": order})
    return plan


def _device(cl):
    want = os.environ.get("RT3D_OPENCL_DEVICE", "").lower()
    devices = [(p, d) for p in cl.get_platforms() for d in p.get_devices()]
    if not devices:
        raise Rt3dError("no OpenCL device found (Debian: apt-get install pocl-opencl-icd; or a GPU driver)")
    if want:
        for p, d in devices:
            if want in d.name.lower() or want in p.name.lower():
                return d
        raise Rt3dError(f"no OpenCL device matches RT3D_OPENCL_DEVICE='{want}'; devices: "
                        f"{[f'{p.name}: {d.name}' for p, d in devices]}")
    gpus = [d for _, d in devices if d.type & cl.device_type.GPU]
    return gpus[0] if gpus else devices[0][1]


@dataclass
class KernelTime:
    kernel: str
    ms: float


@dataclass
class ArtifactLayer:
    """What the launcher needs of a layer (rt3d.targets.lower.LayerInfo's fields, read from meta.json)."""

    kernel: str
    op: str
    impl: str
    args: list
    out_shape: tuple
    out_dtype: str
    macs: int


def read_params(directory: Path, meta: dict) -> list[np.ndarray]:
    """The weights of an artifact folder: weights.bin sliced as meta.json's params say (rt3d.load reads them so too)."""
    blob = (directory / "weights.bin").read_bytes()
    params = []
    for spec in meta["params"]:
        if spec["offset"] + spec["nbytes"] > len(blob):
            raise Rt3dError(f"'{directory}': weights.bin is truncated ({len(blob)} bytes, a weight ends at "
                            f"{spec['offset'] + spec['nbytes']})")
        count = int(np.prod(spec["shape"], dtype=np.int64))
        params.append(np.frombuffer(blob, dtype=spec["dtype"], count=count, offset=spec["offset"])
                      .reshape(spec["shape"]).copy())
    return params


def read_artifact(directory) -> tuple[dict, str, list[np.ndarray], list[ArtifactLayer]]:
    """meta.json, kernels.cl, the weights and the layers of an android-gpu artifact written by Module.export."""
    directory = Path(directory)
    if not (directory / "meta.json").is_file():
        raise Rt3dError(f"'{directory}' is not an rt3d artifact (no meta.json)")
    meta = json.loads((directory / "meta.json").read_text())
    if "opencl_plan" not in meta or not (directory / "kernels.cl").is_file():
        raise Rt3dError(f"'{directory}' holds no OpenCL kernels (target '{meta.get('target')}'; build it for "
                        "android-gpu or android-gpu-fp16)")
    layers = [ArtifactLayer(d["kernel"], d["op"], d["impl"], [tuple(a) for a in d["args"]], tuple(d["out_shape"]),
                            d.get("out_dtype", "float32"), d["macs"]) for d in meta["layers"]]
    return meta, (directory / "kernels.cl").read_text(), read_params(directory, meta), layers


class OpenCLLauncher:
    """Runs a module's kernels in order on one OpenCL device; weights are uploaded once."""

    def __init__(self, source: str, plan: list[dict], layers, params: list[np.ndarray], output_layers: list[int]):
        try:
            import pyopencl as cl
        except ImportError as e:
            raise Rt3dError("running android-gpu modules here needs pyopencl (pip install pyopencl)") from e
        self.cl = cl
        self.device = _device(cl)
        if "cl_khr_fp16" in source and "cl_khr_fp16" not in self.device.extensions:
            raise Rt3dError(f"the kernels compute in float16 but OpenCL device '{self.device.name}' has no "
                            "cl_khr_fp16 (PoCL's CPU device has none; mobile GPUs do): run them on such a device "
                            "(RT3D_OPENCL_DEVICE) or build for android-gpu (float32)")
        self.ctx = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        try:
            self.program = cl.Program(self.ctx, source).build()
        except cl.RuntimeError as e:
            raise Rt3dError(f"the OpenCL kernels do not build on '{self.device.name}': {str(e)[-1500:]}") from e
        self.plan, self.layers, self.output_layers = plan, layers, output_layers
        mf = cl.mem_flags
        self.params = [cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(p))
                       for p in params]
        self.kernels = [getattr(self.program, p["kernel"]) for p in plan]
        # every value's buffer once, reused by every run (runs on one launcher are sequential)
        self.values = [cl.Buffer(self.ctx, mf.READ_WRITE,
                                 size=max(4, np.dtype(lay.out_dtype).itemsize * int(np.prod(lay.out_shape))))
                       for lay in layers]
        self.inputs: list | None = None
        self.launches: list[tuple] = []  # (kernel, global, local, buffers in the kernel's order), once inputs exist

    @property
    def device_name(self) -> str:
        return f"{self.device.platform.name}: {self.device.name}"

    def _bind(self, inputs: list[np.ndarray]) -> None:
        """Input buffers and every kernel's argument list, made on the first run and reused (shapes are fixed)."""
        cl, mf = self.cl, self.cl.mem_flags
        self.inputs = [cl.Buffer(self.ctx, mf.READ_ONLY, size=max(4, x.nbytes)) for x in inputs]
        pools = {"input": self.inputs, "param": self.params, "value": self.values}
        for layer, p, k, out in zip(self.layers, self.plan, self.kernels, self.values):
            args = [pools[kind][idx] for kind, idx in (ref[:2] for ref in layer.args)] + [out]
            self.launches.append((k, tuple(p["global"]), tuple(p["local"]), [args[j] for j in p["params"]]))

    def run(self, inputs: list[np.ndarray], profile: bool = False):
        """The outputs (and, with ``profile``, every kernel's device time)."""
        cl = self.cl
        inputs = [np.ascontiguousarray(x) for x in inputs]
        if self.inputs is None:
            self._bind(inputs)
        for buf, x in zip(self.inputs, inputs):
            cl.enqueue_copy(self.queue, buf, x)
        events = [k(self.queue, glob, local, *args) for k, glob, local, args in self.launches]
        outs = []
        for li in self.output_layers:
            host = np.empty(self.layers[li].out_shape, self.layers[li].out_dtype)
            cl.enqueue_copy(self.queue, host, self.values[li])
            outs.append(host)
        self.queue.finish()
        if not profile:
            return outs
        times = [KernelTime(p["kernel"], (e.profile.end - e.profile.start) * 1e-6) for p, e in zip(self.plan, events)]
        return outs, times

    def benchmark(self, inputs: list[np.ndarray], repeat: int = 10, warmup: int = 2) -> tuple[list[float], list]:
        """Wall times (ms) of whole runs (input upload, the kernels, output download) and every kernel's median
        device time over the runs."""
        for _ in range(warmup):
            self.run(inputs)
        runs, per_run = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            _, times = self.run(inputs, profile=True)
            runs.append((time.perf_counter() - t0) * 1e3)
            per_run.append(times)
        return runs, [KernelTime(p["kernel"], statistics.median(t[i].ms for t in per_run))
                      for i, p in enumerate(self.plan)]


def compare(out: np.ndarray, ref: np.ndarray, rtol: float, atol: float | None = None) -> dict:
    """``out`` against the expected ``ref``: the largest absolute error and whether it is within tolerance (``atol``
    by default ``rtol`` times the largest expected magnitude; a shape mismatch fails)."""
    atol = atol if atol is not None else rtol * float(np.abs(ref).max())
    same = out.shape == ref.shape
    err = float(np.abs(out.astype(np.float64) - ref).max()) if same else float("inf")
    return {"max_abs_err": err, "rtol": rtol, "atol": atol,
            "ok": same and bool(np.allclose(out, ref, rtol=rtol, atol=atol))}


def layer_rows(layers, ktimes: list[KernelTime]) -> list[dict]:
    """Every layer's kernel, op, impl, MACs and median device time, for JSON reports."""
    return [{"kernel": lay.kernel, "op": lay.op, "impl": lay.impl, "macs": lay.macs, "ms": k.ms}
            for lay, k in zip(layers, ktimes)]


def main(argv=None) -> int:
    """run_opencl.py: run an android-gpu artifact on an OpenCL device, check its output, time it."""
    ap = argparse.ArgumentParser(prog="run_opencl.py", description=main.__doc__)
    ap.add_argument("artifact", help="the folder Module.export wrote (rt3d compile ... --target android-gpu)")
    ap.add_argument("--input", action="append", default=[], metavar="NPY",
                    help="an input array (.npy), once per model input in order; default: seeded standard normal")
    ap.add_argument("--expect", metavar="NPY", help="the expected first output (.npy): exit 1 when it differs")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, help="default: rtol times the largest expected magnitude")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs (0: run once, no timing)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", help="a substring of the OpenCL device or platform name (RT3D_OPENCL_DEVICE)")
    ap.add_argument("--save-output", metavar="NPY", help="write the first output here")
    ap.add_argument("--json", metavar="PATH", help="write the timings and the check as JSON here")
    args = ap.parse_args(argv)
    if args.device:
        os.environ["RT3D_OPENCL_DEVICE"] = args.device
    try:
        meta, source, params, layers = read_artifact(args.artifact)
        inputs = _inputs(meta, args.input)
        launcher = OpenCLLauncher(source, meta["opencl_plan"], layers, params, meta["output_layers"])
        out = launcher.run(inputs)[0]
    except Rt3dError as e:
        print(f"run_opencl.py: {e}", file=sys.stderr)
        return 2
    result = {"artifact": str(args.artifact), "model": meta.get("name"), "target": meta.get("target"),
              "device": launcher.device_name, "macs": meta.get("macs")}
    print(f"{meta.get('name')} ({meta.get('target')}) on {launcher.device_name}")
    if args.save_output:
        np.save(args.save_output, out)
    ok = True
    if args.expect:
        check = result["check"] = compare(out, np.load(args.expect), args.rtol, args.atol)
        ok = check["ok"]
        print(f"output vs {args.expect}: max abs error {check['max_abs_err']:.3g} ({'ok' if ok else 'MISMATCH'}, "
              f"rtol {args.rtol}, atol {check['atol']:.3g})")
    if args.repeat > 0:
        runs, ktimes = launcher.benchmark(inputs, repeat=args.repeat, warmup=args.warmup)
        kernel_ms = sum(k.ms for k in ktimes)
        result.update(median_ms=statistics.median(runs), runs_ms=runs, kernel_ms=kernel_ms,
                      layers=layer_rows(layers, ktimes))
        gflop = 2 * meta.get("macs", 0) / 1e9
        print(f"latency: median {result['median_ms']:.3f} ms over {len(runs)} runs (wall: upload, kernels, "
              f"download); kernels {kernel_ms:.3f} ms (device time, median per kernel); "
              f"{gflop:.2f} GFLOP, {gflop / kernel_ms * 1e3:.1f} GFLOP/s in the kernels")
        for lay, k in sorted(zip(layers, ktimes), key=lambda lk: -lk[1].ms)[:10]:
            rate = f"{2 * lay.macs / (k.ms * 1e6):.1f}" if lay.macs and k.ms > 0 else "-"
            print(f"  {lay.kernel:<24}{lay.op:<16}{k.ms:>9.3f} ms{rate:>9} GFLOP/s  {lay.impl}")
    if args.json:
        tmp = Path(args.json).with_name(Path(args.json).name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.json)
    return 0 if ok else 1


def _inputs(meta: dict, paths: list[str]) -> list[np.ndarray]:
    specs = meta["inputs"]
    if paths and len(paths) != len(specs):
        raise Rt3dError(f"the model takes {len(specs)} inputs ({[s['name'] for s in specs]}), got {len(paths)}")
    if not paths:
        rng = np.random.default_rng(0)
        return [rng.standard_normal(s["shape"]).astype(s["dtype"]) for s in specs]
    out = []
    for path, s in zip(paths, specs):
        x = np.load(path)
        if list(x.shape) != list(s["shape"]):
            raise Rt3dError(f"input '{s['name']}' must have shape {s['shape']}, '{path}' has {list(x.shape)}")
        out.append(np.ascontiguousarray(x, dtype=s["dtype"]))
    return out


if __name__ == "__main__":
    sys.exit(main())
