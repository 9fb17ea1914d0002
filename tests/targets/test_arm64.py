"""The ARM NEON targets end to end: small C3D and R(2+1)D, dense and KGS, compiled for arm64-linux, exported with the
C++ runner, run under qemu-aarch64 and compared with the host; NEON FMAs in the conv kernels; android-cpu's export
without an NDK."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import rt3d
from rt3d.models import export_onnx, get_model
from rt3d.models.sparse import sparsify
from rt3d.targets import get_target
from rt3d.targets.arm_neon import deploy

pytestmark = pytest.mark.skipif(not deploy.can_emulate(), reason="needs qemu-user and g++-aarch64-linux-gnu "
                                "(scripts/setup.sh installs them)")


@pytest.fixture(scope="module", autouse=True)
def runtime():
    return deploy.fetch_runtime()  # a no-op after scripts/setup.sh


def _model(name: str, sparse: str | None):
    model, shape = get_model(name)
    data = export_onnx(model, shape)
    if sparse:
        data, _ = sparsify(data, sparse, 1.6, seed=1, min_channels=8)
    return data, shape


def _functions(asm: str) -> dict[str, str]:
    """Assembly text of every function, by symbol."""
    out, name, lines = {}, None, []
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_.$][\w.$]*):", line)
        if m and not m.group(1).startswith(".L"):
            if name:
                out[name] = "\n".join(lines)
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        out[name] = "\n".join(lines)
    return out


def test_conv_kernels_use_neon_fused_multiply_adds():
    data, shape = _model("c3d_small", None)
    mod = rt3d.build(data, target="arm64-linux")
    assert all("lanes=4" in lay.impl for lay in mod.layers if lay.op == "conv3d")
    asm = mod._exe.mod.imports[0].inspect_source("asm")
    funcs = _functions(asm)
    convs = [lay.kernel for lay in mod.layers if lay.op == "conv3d"]
    assert len(convs) == 8
    for k in convs:
        body = "\n".join(text for name, text in funcs.items() if k in name)  # the kernel and its parallel body
        vector_fma = len(re.findall(r"\bfmla\s+v\d+\.4s", body))
        scalar_fma = len(re.findall(r"\bfmadd\s+s\d+", body))
        assert vector_fma >= 8, f"{k}: {vector_fma} NEON fmla"
        assert vector_fma > 4 * scalar_fma, f"{k}: {vector_fma} fmla vs {scalar_fma} scalar fmadd"


@pytest.mark.parametrize("name", ["c3d_small", "r2plus1d_small"])
@pytest.mark.parametrize("sparse", [None, "kgs(8x4)"], ids=["dense", "kgs"])
def test_emulated_arm64_matches_the_host(name, sparse, tmp_path):
    data, shape = _model(name, sparse)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    # sparse: every pruned layer on the sparse kernels, and R(2+1)D's (2+1)D pairs fused whatever their size
    passes = (get_target("arm64-linux").default_passes(always_sparse=True)
              .replace("fuse-sep-convs{", "fuse-sep-convs{cost_model=false,") if sparse else None)
    host = rt3d.build(data, target="host", passes=get_target("host").default_passes(always_sparse=True)
                      if sparse else None).run(x)
    mod = rt3d.build(data, target="arm64-linux", passes=passes)
    if sparse:
        assert any(lay.op == "sparse_conv3d" for lay in mod.layers)
        assert any(lay.op == "sparse_sep_conv3d" for lay in mod.layers) == name.startswith("r2plus1d")
    out = mod.export(tmp_path / "art")
    elf = (out / "model.so").read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"] == "arm64-linux" and meta["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    loaded = rt3d.load(out)  # runs the exported folder under qemu with the cross-compiled runner
    y = loaded.run(x)
    np.testing.assert_allclose(y, host, rtol=1e-4, atol=1e-4 * float(np.abs(host).max()))
    with pytest.raises(rt3d.Rt3dError, match="emulation"):
        loaded.benchmark(x)


def test_runner_reports_bad_input(tmp_path):
    data, shape = _model("c3d_small", None)
    out = rt3d.build(data, target="arm64-linux").export(tmp_path / "art")
    (tmp_path / "short.bin").write_bytes(b"\0" * 16)
    runner = deploy.build_runner()
    res = subprocess.run(["qemu-aarch64", "-L", deploy.SYSROOT, "-E",
                          f"LD_LIBRARY_PATH={deploy.require_runtime() / 'lib'}", str(runner), str(out),
                          "--input", str(tmp_path / "short.bin")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "short.bin: expected" in res.stderr


def test_arm_targets_take_the_devices_l2_from_the_environment(monkeypatch):
    """RT3D_DEVICE_L2 sizes the ARM targets' cache blocking (default 512 KiB, a phone's big core); a value that is
    not a size is an error naming the variable."""
    monkeypatch.delenv("RT3D_DEVICE_L2", raising=False)
    assert get_target("android-cpu").l2_bytes == 512 << 10
    monkeypatch.setenv("RT3D_DEVICE_L2", "1M")
    assert get_target("arm64-linux").l2_bytes == 1 << 20
    monkeypatch.setenv("RT3D_DEVICE_L2", "lots")
    with pytest.raises(rt3d.BuildError, match="RT3D_DEVICE_L2.*'lots'"):
        get_target("arm64-linux")


def test_android_cpu_exports_objects_without_an_ndk(tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    data, shape = _model("c3d_small", None)
    mod = rt3d.build(data, target="android-cpu")
    out = mod.export(tmp_path / "art")
    assert (out / "model.tar").exists() and not (out / "model.so").exists()
    assert "NDK" in (out / "LINKING.txt").read_text()
    with tarfile.open(out / "model.tar") as t:
        objs = [m for m in t.getmembers() if m.name.endswith(".o")]
        assert objs
        head = t.extractfile(objs[0]).read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183
    with pytest.raises(rt3d.Rt3dError, match="cannot run on this machine"):
        mod.run(np.zeros(shape, np.float32))
    monkeypatch.setenv("TVM_NDK_CC", "/nonexistent/clang++")
    with pytest.raises(rt3d.Rt3dError, match="TVM_NDK_CC"):
        mod.export(tmp_path / "art2")


def test_cli_compile_and_run_for_arm64(tmp_path):
    res = subprocess.run([sys.executable, "-m", "rt3d", "compile", "zoo:c3d_small", "--target", "arm64-linux",
                          "-o", str(tmp_path / "art")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([sys.executable, "-m", "rt3d", "run", str(tmp_path / "art")], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
