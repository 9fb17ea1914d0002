"""The android-gpu target: OpenCL kernels for whole small models (dense and sparse) run through pyopencl on the
machine's OpenCL device (PoCL here) and checked against onnxruntime; the artifact and the launch plan."""
from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

import rt3d
from rt3d.models import export_onnx, get_model
from rt3d.models.sparse import sparsify
from rt3d.targets import get_target
from tests.helpers import assert_close, ort_run, sep_net

cl = pytest.importorskip("pyopencl")
try:
    _DEVICES = [d for p in cl.get_platforms() for d in p.get_devices()]
except cl.Error:  # no ICD loader / platform
    _DEVICES = []
pytestmark = pytest.mark.skipif(not _DEVICES, reason="no OpenCL device (scripts/setup.sh installs PoCL)")


def _reference(data, x):
    blob = data if isinstance(data, bytes) else data.SerializeToString()
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("name", ["c3d_small", "r2plus1d_small", "s3d_small"])
def test_whole_models_match_onnxruntime(name):
    model, shape = get_model(name)
    data = export_onnx(model, shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    mod = rt3d.build(data, target="android-gpu")
    assert all(lay.impl.startswith(("conv3d.gpu", "sparse_conv3d.gpu")) for lay in mod.layers if "conv" in lay.op)
    ref = _reference(data, x)
    np.testing.assert_allclose(mod.run(x), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("sparsity", ["kgs(8x4)", "kgs(4x4)", "vanilla(8x4)", "filter"])
def test_sparse_kernels_match_onnxruntime(sparsity):
    model, shape = get_model("r2plus1d_small")  # strided and residual layers
    data, _ = sparsify(export_onnx(model, shape), sparsity, 1.6, seed=2, min_channels=8)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mod = rt3d.build(data, target="android-gpu", passes=get_target("android-gpu").default_passes(always_sparse=True))
    sparse = [lay for lay in mod.layers if lay.op == "sparse_conv3d"]
    assert sparse and all("gpu_ell" in lay.impl for lay in sparse)
    assert any("Gemm" in lay.node for lay in sparse), "the pruned fully connected layer ran dense"
    if sparsity != "filter":  # a thread computes a row block's filters (they share its columns)
        gm = sparsity.split("(")[1].split("x")[0]
        assert any(f"tile={gm}x" in lay.impl for lay in sparse), [lay.impl for lay in sparse]
    else:  # filters permuted by reorder-kernel-groups: one filter per thread, through row_of
        assert any("tile=1x" in lay.impl and "perm=" in lay.node for lay in sparse)
    ref = _reference(data, x)
    np.testing.assert_allclose(mod.run(x), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_a_pair_the_cpu_fuses_runs_as_two_gpu_kernels():
    """fuse-sep-convs is a CPU pass (the fused kernel is a CPU loop nest): the GPU pipeline leaves it out, so a
    (2+1)D pair that a CPU target fuses (its 4 MiB intermediate too) runs as two OpenCL sparse kernels."""
    rng = np.random.default_rng(5)
    model, inputs = sep_net(rng, 16, 16, 16, 3, (1, 16, 4, 128, 128))
    host = get_target("host").default_passes(always_sparse=True)
    host = host.replace("fuse-sep-convs{", "fuse-sep-convs{cost_model=false,")
    assert any(lay.op == "sparse_sep_conv3d" for lay in rt3d.build(model, target="host", passes=host).layers)
    gpu = get_target("android-gpu").default_passes(always_sparse=True)
    assert "fuse-sep-convs" not in gpu
    mod = rt3d.build(model, target="android-gpu", passes=gpu)
    assert [lay.op for lay in mod.layers if "conv" in lay.op] == ["sparse_conv3d", "sparse_conv3d"]
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


def test_launch_plan_and_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    model, shape = get_model("c3d_small")
    data = export_onnx(model, shape)
    mod = rt3d.build(data, target="android-gpu")
    plan = mod.meta["opencl_plan"]
    assert len(plan) == len(mod.layers)
    for p, lay in zip(plan, mod.layers):
        assert p["kernel"] == f"{lay.kernel}_kernel"
        assert sorted(p["params"]) == list(range(len(lay.args) + 1))  # every argument and the output, once
        assert all(g % loc == 0 for g, loc in zip(p["global"], p["local"])) and p["local"][0] <= 64
        sig = re.search(rf"__kernel void {p['kernel']}\(([^)]*)\)", mod.opencl_source)
        assert sig, p["kernel"]
    out = mod.export(tmp_path / "art")
    names = {f.name for f in out.iterdir()}
    assert {"kernels.cl", "model.tar", "LINKING.txt", "meta.json", "weights.bin"} <= names
    assert json.loads((out / "meta.json").read_text())["opencl_plan"] == plan
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    loaded = rt3d.load(out)
    np.testing.assert_array_equal(loaded.run(x), mod.run(x))
    report = loaded.benchmark(x, repeat=2, warmup=1)
    assert report.device and len(report.layers) == len(mod.layers) and report.median_ms > 0
    assert "device:" in str(report)


_STANDALONE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("rt3d", "tvm", "tvm_ffi"))
sys.exit(f"the runner imported {leaked}" if leaked else code)
"""


def test_artifact_runs_without_rt3d_or_tvm(tmp_path):
    """run_opencl.py in an android-gpu artifact runs the model with numpy and pyopencl alone (for a GPU machine
    without TVM): its output checked against onnxruntime, its timings as JSON, and bad input named."""
    import subprocess
    import sys
    model, shape = get_model("s3d_small")
    data = export_onnx(model, shape)
    art = rt3d.build(data, target="android-gpu").export(tmp_path / "art")
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", _reference(data, x))
    np.save(tmp_path / "wrong.npy", _reference(data, x) + 1)

    def runner(*args):
        return subprocess.run([sys.executable, "-c", _STANDALONE, str(art / "run_opencl.py"), str(art), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)

    res = runner("--input", "x.npy", "--expect", "ref.npy", "--repeat", "2", "--warmup", "1", "--json", "r.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout and "GFLOP/s in the kernels" in res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["check"]["ok"] and report["median_ms"] > 0 and len(report["runs_ms"]) == 2
    assert len(report["layers"]) == len(json.loads((art / "meta.json").read_text())["layers"])
    assert abs(sum(lay["ms"] for lay in report["layers"]) - report["kernel_ms"]) < 1e-6
    res = runner("--input", "x.npy", "--expect", "wrong.npy", "--repeat", "0")
    assert res.returncode == 1 and "MISMATCH" in res.stdout
    np.save(tmp_path / "bad.npy", x[:, :, :2])
    res = runner("--input", "bad.npy", "--repeat", "0")
    assert res.returncode == 2 and "input 'input' must have shape" in res.stderr
    res = runner(str(tmp_path), "--repeat", "0")  # a second positional: argparse names it
    assert res.returncode == 2


def test_fp16_kernels():
    """android-gpu-fp16: every tensor float16, conv sums accumulated in float32. Run where the device has
    cl_khr_fp16 (tolerance 3e-2 of the output's range: float16 keeps 11 significant bits); PoCL's CPU device has
    no fp16, so here the launcher must refuse with a clear error instead."""
    model, shape = get_model("r2plus1d_small")
    data, _ = sparsify(export_onnx(model, shape), "kgs(8x4)", 1.6, seed=2, min_channels=8)
    target = get_target("android-gpu-fp16")
    mod = rt3d.build(data, target=target, passes=target.default_passes(always_sparse=True))
    assert mod.inputs[0]["dtype"] == "float16" and mod.outputs[0]["dtype"] == "float16"
    assert any(lay.op == "sparse_conv3d" for lay in mod.layers)
    src = mod.opencl_source
    assert "cl_khr_fp16" in src and "half" in src
    body = re.search(r"__kernel void k\d+_conv3d_kernel\([^)]*\) \{(.*?)\n}\n", src, re.S).group(1)
    assert re.search(r"\bfloat conv_local\w*\[8\]", body), "conv sums accumulate in float32 (4x2 register tile)"
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    if any("cl_khr_fp16" in d.extensions for d in _DEVICES):
        ref = _reference(data, x)
        y = mod.run(x).astype(np.float32)
        np.testing.assert_allclose(y, ref, rtol=0, atol=3e-2 * float(np.abs(ref).max()))
    else:
        with pytest.raises(rt3d.Rt3dError, match="cl_khr_fp16"):
            mod.run(x)
