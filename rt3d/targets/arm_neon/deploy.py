"""Deploying to aarch64 devices: the device's TVM runtime, the C++ runner, and running an artifact under qemu.

The TVM runtime for the device comes from PyPI's aarch64 wheels of the same ``apache-tvm`` / ``apache-tvm-ffi``
versions that compiled the model (``fetch_runtime``; ``scripts/setup.sh`` runs it): ``lib/libtvm_runtime.so``,
``lib/libtvm_ffi.so`` and the ``tvm/ffi`` + dlpack headers. The runner (``runner/runner.cc``, built by
``runner/build.sh``) loads an artifact folder written by ``Module.export`` and runs it. Here, without a device, the
runner is cross-compiled with ``aarch64-linux-gnu-g++`` and runs under ``qemu-aarch64`` (``run_emulated``).

    python -m rt3d.targets.arm_neon.deploy fetch-runtime [DIR]
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ...errors import BuildError, Rt3dError

RUNNER_DIR = Path(__file__).parent / "runner"
CROSS_CXX = "aarch64-linux-gnu-g++"
SYSROOT = "/usr/aarch64-linux-gnu"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"


def _versions() -> tuple[str, str]:
    return metadata.version("apache-tvm"), metadata.version("apache-tvm-ffi")


def _cache() -> Path:
    return Path(os.environ.get("RT3D_CACHE", Path.home() / ".cache" / "rt3d"))


def runtime_dir() -> Path:
    """Where the aarch64 runtime lives: $RT3D_AARCH64_RUNTIME, or a cache folder named by the TVM versions."""
    env = os.environ.get("RT3D_AARCH64_RUNTIME")
    if env:
        return Path(env)
    tvm_v, ffi_v = _versions()
    return _cache() / "aarch64-runtime" / f"tvm-{tvm_v}_ffi-{ffi_v}"


def _complete(d: Path) -> bool:
    return all((d / p).exists() for p in ("lib/libtvm_runtime.so", "lib/libtvm_ffi.so",
                                          "include/tvm/ffi/function.h", "include/dlpack/dlpack.h"))


def fetch_runtime(dest: Path | None = None, quiet: bool = True) -> Path:
    """Download PyPI's aarch64 wheels of this machine's TVM versions and unpack the runtime (idempotent)."""
    dest = Path(dest) if dest else runtime_dir()
    if _complete(dest):
        return dest
    tvm_v, ffi_v = _versions()
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        wheels = stage / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--platform", WHEEL_PLATFORM,
               "--python-version", f"{sys.version_info.major}{sys.version_info.minor}",
               f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}", "-d", str(wheels)] + (["-q"] if quiet else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"cannot download the aarch64 TVM runtime (apache-tvm=={tvm_v}, "
                             f"apache-tvm-ffi=={ffi_v}, {WHEEL_PLATFORM}): {res.stderr.strip()[-800:]}")
        wanted = {"tvm/lib/libtvm_runtime.so": "lib/libtvm_runtime.so",
                  "tvm_ffi/lib/libtvm_ffi.so": "lib/libtvm_ffi.so"}
        for whl in wheels.glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                for name in z.namelist():
                    target = wanted.get(name)
                    if target is None and name.startswith("tvm_ffi/include/") and not name.endswith("/"):
                        target = "include/" + name[len("tvm_ffi/include/"):]
                    if target is None:
                        continue
                    out = stage / target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(name) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        shutil.rmtree(wheels)
        if not _complete(stage):
            raise BuildError(f"the aarch64 wheels of apache-tvm=={tvm_v} / apache-tvm-ffi=={ffi_v} lack the runtime "
                             f"libraries or headers")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


def require_runtime() -> Path:
    d = runtime_dir()
    if not _complete(d):
        raise BuildError(f"no aarch64 TVM runtime in '{d}': run `python -m rt3d.targets.arm_neon.deploy "
                         f"fetch-runtime` (scripts/setup.sh does) or set RT3D_AARCH64_RUNTIME")
    return d


def build_runner(cxx: str = CROSS_CXX, runtime: Path | None = None) -> Path:
    """The runner compiled with ``cxx`` against ``runtime`` (cached by source, compiler and runtime)."""
    runtime = Path(runtime) if runtime else require_runtime()
    if shutil.which(cxx) is None:
        raise BuildError(f"compiler '{cxx}' not found (Debian: apt-get install g++-aarch64-linux-gnu)")
    src = (RUNNER_DIR / "runner.cc").read_bytes() + (RUNNER_DIR / "build.sh").read_bytes()
    key = hashlib.sha256(src + cxx.encode() + str(runtime.resolve()).encode()).hexdigest()[:16]
    out = _cache() / "runner" / key / "rt3d_runner"
    if out.exists():
        return out
    stage = Path(tempfile.mkdtemp(prefix=".runner.", dir=_cache()))
    try:
        for f in ("runner.cc", "build.sh"):
            shutil.copy2(RUNNER_DIR / f, stage / f)
        res = subprocess.run(["bash", str(stage / "build.sh")], capture_output=True, text=True,
                             env=dict(os.environ, TVM_RUNTIME=str(runtime), CXX=cxx))
        if res.returncode != 0:
            raise BuildError(f"building the runner with {cxx} failed:\n{res.stderr.strip()[-2000:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / "rt3d_runner", out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def can_emulate() -> bool:
    return (shutil.which("qemu-aarch64") is not None and shutil.which(CROSS_CXX) is not None
            and Path(SYSROOT).is_dir())


def run_emulated(artifact: Path, inputs: list[np.ndarray], repeat: int = 1, threads: int | None = None,
                 timeout: float = 600.0) -> tuple[list[np.ndarray], list[float]]:
    """Run an aarch64 artifact folder under qemu-aarch64 with the cross-compiled runner: (outputs, run times in ms;
    emulated, so the times say nothing about a device)."""
    import json
    artifact = Path(artifact)
    if not can_emulate():
        raise Rt3dError("running aarch64 code here needs qemu-aarch64, aarch64-linux-gnu-g++ and its sysroot "
                        "(Debian: apt-get install qemu-user g++-aarch64-linux-gnu)")
    meta = json.loads((artifact / "meta.json").read_text())
    runtime = require_runtime()
    runner = build_runner(CROSS_CXX, runtime)
    with tempfile.TemporaryDirectory(prefix="rt3d-qemu-") as tmp:
        args = []
        for i, (spec, x) in enumerate(zip(meta["inputs"], inputs)):
            path = Path(tmp) / f"in{i}.bin"
            np.ascontiguousarray(x, dtype=spec["dtype"]).tofile(path)
            args += ["--input", str(path)]
        cmd = ["qemu-aarch64", "-L", SYSROOT, "-E", f"LD_LIBRARY_PATH={runtime / 'lib'}", str(runner),
               str(artifact), *args, "--output-prefix", str(Path(tmp) / "out"), "--repeat", str(repeat)]
        if threads:
            cmd += ["--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise Rt3dError(f"the emulated run of '{artifact}' failed (exit {res.returncode}):\n"
                            f"{(res.stderr or res.stdout).strip()[-2000:]}")
        outs = [np.fromfile(Path(tmp) / f"out{i}.bin", dtype=spec["dtype"]).reshape(spec["shape"])
                for i, spec in enumerate(meta["outputs"])]
    times = [float(line.split(":")[1].split()[0]) for line in res.stdout.splitlines() if line.startswith("run ")]
    return outs, times


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "fetch-runtime":
        print("usage: python -m rt3d.targets.arm_neon.deploy fetch-runtime [DIR]", file=sys.stderr)
        return 2
    d = fetch_runtime(Path(argv[1]) if len(argv) > 1 else None)
    print(f"aarch64 TVM runtime in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
