"""SIMD CPU targets: the same schedules serve ARM NEON (4 lanes, 32 registers) and the host (16 lanes and 32
registers with AVX-512, 8 lanes and 16 registers with AVX2)."""
from __future__ import annotations

import os

from .. import register_target
from ...errors import BuildError
from ..base import Target
from .conv3d import lower_conv3d
from .dense import lower_dense, lower_matmul
from .injective import (lower_activation, lower_batch_norm, lower_binary, lower_concat, lower_from_blocked, lower_pad,
                        lower_reshape, lower_to_blocked, lower_transpose)
from .sparse_conv3d import lower_sparse_conv3d, lower_sparse_sep_conv3d
from .pool import lower_global_avg_pool, lower_pool, lower_reduce_mean, lower_softmax

LOWERINGS = {
    "conv3d": lower_conv3d, "sparse_conv3d": lower_sparse_conv3d, "sparse_sep_conv3d": lower_sparse_sep_conv3d,
    "dense": lower_dense, "matmul": lower_matmul,
    "batch_norm": lower_batch_norm, "relu": lower_activation, "clip": lower_activation,
    "leaky_relu": lower_activation, "sigmoid": lower_activation,
    "add": lower_binary, "sub": lower_binary, "mul": lower_binary, "div": lower_binary,
    "max_pool3d": lower_pool, "avg_pool3d": lower_pool, "global_avg_pool": lower_global_avg_pool,
    "reduce_mean": lower_reduce_mean, "softmax": lower_softmax,
    "reshape": lower_reshape, "transpose": lower_transpose, "concat": lower_concat, "pad": lower_pad,
    "to_blocked": lower_to_blocked, "from_blocked": lower_from_blocked,
}


def _cpu_flags() -> str:
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


def host_lanes() -> int:
    """fp32 lanes of the widest SIMD unit of this machine's CPU (from its feature flags)."""
    flags = _cpu_flags()
    if " avx512f" in flags:
        return 16
    if " avx2" in flags or " avx " in flags:
        return 8
    return 4


def host_registers() -> int:
    """Architectural vector registers of this machine's CPU: 32 with AVX-512 (zmm0-31) or on AArch64, 16 for
    x86-64 with SSE or AVX2 (xmm/ymm0-15)."""
    import platform
    if platform.machine().lower() in ("aarch64", "arm64"):
        return 32
    return 32 if " avx512f" in _cpu_flags() else 16


def parse_bytes(text: str, what: str) -> int:
    """'512K', '2M', '1048576' (sysfs cache sizes, environment variables) as bytes."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        n = -1
    if n <= 0:
        raise BuildError(f"{what}: expected a size such as 512K, 2M or 1048576, got {text!r}")
    return n


def host_cache_bytes(level: int) -> int:
    """One core's data (or unified) cache of this level on this machine (Linux sysfs), 0 where it cannot be read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            d = os.path.join(base, index)
            lv = open(os.path.join(d, "level")).read().strip()
            kind = open(os.path.join(d, "type")).read().strip()
            if lv == str(level) and kind in ("Unified", "Data"):
                return parse_bytes(open(os.path.join(d, "size")).read(), f"{d}/size")
    except (OSError, BuildError):
        pass
    return 0


def host_l2_bytes() -> int:
    """One core's L2 cache of this machine (Linux sysfs), 0 where it cannot be read."""
    return host_cache_bytes(2)


@register_target("host")
def host() -> Target:
    import tvm
    cpu = tvm.get_global_func("target.llvm_get_system_cpu")()
    cores = os.cpu_count() or 1
    return Target("host", {"kind": "llvm", "mcpu": cpu, "num-cores": cores}, host_lanes(), cores,
                  runs_here=True, lowerings=dict(LOWERINGS), doc=f"this machine's CPU ({cpu}, LLVM)",
                  l2_bytes=host_l2_bytes(), l1_bytes=host_cache_bytes(1), vector_registers=host_registers())


def device_cores() -> int:
    """Cores of the device the ARM targets compile for (parallel loops are split for them): $RT3D_DEVICE_CORES,
    default 4 (the big cores of a phone SoC)."""
    return int(os.environ.get("RT3D_DEVICE_CORES", "4"))


def device_l2_bytes() -> int:
    """One core's L2 cache on the device the ARM targets compile for: $RT3D_DEVICE_L2 (e.g. 256K, 1M), default
    512 KiB (a big core of a phone SoC: Cortex-A76 to A78 have 256 or 512 KiB, X1 512 KiB or 1 MiB)."""
    return parse_bytes(os.environ.get("RT3D_DEVICE_L2", "512K"), "RT3D_DEVICE_L2")


def device_l1_bytes() -> int:
    """One core's L1 data cache on the device the ARM targets compile for: $RT3D_DEVICE_L1, default 64 KiB (Cortex-A76
    to A78 and X1; A55 little cores have 32)."""
    return parse_bytes(os.environ.get("RT3D_DEVICE_L1", "64K"), "RT3D_DEVICE_L1")


def _aarch64(name: str, triple: str, doc: str, link: dict, emulate: str = "") -> Target:
    cores = device_cores()
    return Target(name, {"kind": "llvm", "mtriple": triple, "mattr": ["+neon"], "num-cores": cores}, 4, cores,
                  runs_here=False, lowerings=dict(LOWERINGS), doc=doc, link=link, emulate=emulate,
                  l2_bytes=device_l2_bytes(), l1_bytes=device_l1_bytes(), vector_registers=32)


@register_target("arm64-linux")
def arm64_linux() -> Target:
    return _aarch64("arm64-linux", "aarch64-linux-gnu", "64-bit ARM Linux with NEON (LLVM aarch64); runs here under "
                    "qemu-aarch64", {"kind": "cross", "cc": "aarch64-linux-gnu-g++"}, emulate="qemu-aarch64")


ANDROID_LINK_HOWTO = """model.tar holds the compiled model as aarch64 object files (no Android NDK was configured when
it was exported). Link them into the shared library the runner loads with the NDK's clang:

    tar xf model.tar
    $NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android24-clang++ -shared -fPIC -o model.so *.o

or export again with TVM_NDK_CC=<that clang++> set, which writes model.so directly. Build runner/ with the same
compiler (CXX=... TVM_RUNTIME=... bash runner/build.sh) against a TVM runtime built for Android.
"""


@register_target("android-cpu")
def android_cpu() -> Target:
    return _aarch64("android-cpu", "aarch64-linux-android", "Android phones' ARM CPU with NEON (LLVM aarch64); links "
                    "with the NDK named by TVM_NDK_CC", {"kind": "cross", "cc_env": "TVM_NDK_CC",
                                                          "howto": ANDROID_LINK_HOWTO})
