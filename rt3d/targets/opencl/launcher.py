"""Running an android-gpu module's OpenCL kernels through pyopencl: the launch plan and the launcher.

TVM's runtime here has no OpenCL, so rt3d launches the kernels itself, in graph order: each IR node is one kernel
``<symbol>_kernel`` whose grid comes from the thread bindings of its scheduled function and whose parameter order
comes from its ``__kernel void`` signature (TVM orders the buffers by name there, not as the function lists them).
On this machine pyopencl finds PoCL's CPU device (correctness, not speed); with a GPU's OpenCL driver installed, the
same launcher runs there (``RT3D_OPENCL_DEVICE`` picks a device by a substring of its name or platform).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import numpy as np

from ...errors import BuildError, Rt3dError

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
        """Wall times (ms) of whole runs and the per-kernel device times of the last run."""
        for _ in range(warmup):
            self.run(inputs)
        runs, times = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            _, times = self.run(inputs, profile=True)
            runs.append((time.perf_counter() - t0) * 1e3)
        return runs, times
