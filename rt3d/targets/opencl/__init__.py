"""The OpenCL target ("android-gpu"): GPU schedules for every IR op, one OpenCL kernel per IR node.

The artifact holds the host library (the Relax VM code that launches the kernels, for a TVM runtime built with
OpenCL on the device) and the kernels' OpenCL C (``kernels.cl``) with a launch plan (``meta.json``: every kernel's
grid, work-group and argument order). On this machine, where TVM's runtime has no OpenCL, ``Module.run`` executes
the kernels in order through pyopencl (PoCL's CPU device here, a real GPU where its driver is installed): see
``launcher.py``.
"""
from __future__ import annotations

from .. import register_target
from ..arm_neon import ANDROID_LINK_HOWTO
from ..arm_neon import LOWERINGS as CPU_LOWERINGS
from ..arm_neon.dense import _dense_generic
from ..base import Target
from .conv3d import lower_conv3d, lower_sparse_conv3d

WORK_GROUP = 64  # threads per work-group of the default GPU schedule

LOWERINGS = dict(CPU_LOWERINGS)  # the TE of the other ops is shared; their schedule follows target.gpu_threads
LOWERINGS.update({"conv3d": lower_conv3d, "sparse_conv3d": lower_sparse_conv3d,
                  "dense": _dense_generic})
# no layout conversions (GPU kernels read plain NCDHW) and no fused sparse pair (its kernel is a CPU loop nest; without
# the lowering, the target's default pipeline leaves out fuse-sep-convs)
for _op in ("to_blocked", "from_blocked", "sparse_sep_conv3d"):
    LOWERINGS.pop(_op, None)


@register_target("android-gpu")
def android_gpu() -> Target:
    return Target("android-gpu", {"kind": "opencl", "host": {"kind": "llvm", "mtriple": "aarch64-linux-android"}},
                  4, 1, runs_here=False, lowerings=dict(LOWERINGS),
                  doc="OpenCL for mobile GPUs (host code aarch64 Android); runs here through pyopencl on PoCL",
                  link={"kind": "cross", "cc_env": "TVM_NDK_CC", "howto": ANDROID_LINK_HOWTO},
                  emulate="pyopencl", gpu_threads=WORK_GROUP)


@register_target("android-gpu-fp16")
def android_gpu_fp16() -> Target:
    """android-gpu with every tensor in float16 (float32 accumulation in conv and dense), as the paper runs its GPU
    kernels; needs a device with cl_khr_fp16 (every mobile GPU; not PoCL's CPU device)."""
    t = android_gpu()
    t.name, t.precision = "android-gpu-fp16", "float16"
    t.doc = "android-gpu in 16-bit floats (float32 accumulation); needs cl_khr_fp16"
    return t
