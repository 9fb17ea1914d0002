"""The built Module: run, benchmark, export/load artifacts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

import rt3d
from rt3d.models import export_onnx, get_model
from tests.helpers import assert_close, make_model, ort_run, rand

N = helper.make_node


@pytest.fixture(scope="module")
def small():
    model, shape = get_model("r2plus1d_small")
    data = export_onnx(model, shape)
    return data, shape, rt3d.build(data)


def test_export_load_round_trip(tmp_path, small):
    data, shape, mod = small
    x = rand(*shape, seed=7)
    out = mod.export(tmp_path / "art")
    assert sorted(p.name for p in out.iterdir()) == ["graph.rt3d", "io.txt", "meta.json", "model.so", "params.txt",
                                                     "runner", "weights.bin"]
    assert sorted(p.name for p in (out / "runner").iterdir()) == ["build.sh", "runner.cc"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"] == "host" and meta["inputs"][0]["shape"] == list(shape) and meta["rt3d_version"]
    # the C++ runner's view of the weights: params.txt lines agree with meta.json and weights.bin
    lines = [ln.split() for ln in (out / "params.txt").read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == len(meta["params"])
    size = (out / "weights.bin").stat().st_size
    for ln, p in zip(lines, meta["params"]):
        assert ln[0] == p["dtype"] and int(ln[1]) == p["offset"] and int(ln[2]) == p["nbytes"]
        assert int(ln[1]) % 64 == 0 and int(ln[1]) + int(ln[2]) <= size and list(map(int, ln[4:])) == p["shape"]
    io = (out / "io.txt").read_text()
    assert f"input {meta['inputs'][0]['name']} float32 5 {' '.join(map(str, shape))}" in io
    loaded = rt3d.load(out)
    np.testing.assert_array_equal(loaded.run(x), mod.run(x))
    assert loaded.graph_text == mod.graph_text
    # re-export over an existing artifact replaces it whole, and a loaded module exports too
    loaded.export(out)
    np.testing.assert_array_equal(rt3d.load(out).run(x), mod.run(x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_load_rejects_non_artifacts(tmp_path):
    with pytest.raises(rt3d.Rt3dError, match="not an rt3d artifact"):
        rt3d.load(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"artifact_version": 999}))
    with pytest.raises(rt3d.Rt3dError, match="artifact version 999 is not supported"):
        rt3d.load(tmp_path)


def test_benchmark_report(small):
    _, shape, mod = small
    rep = mod.benchmark(rand(*shape), repeat=3, warmup=1, layer_repeat=2)
    assert len(rep.runs_ms) == 3 and rep.median_ms > 0 and rep.macs == mod.macs > 0
    assert [lt.kernel for lt in rep.layers] == [layer.kernel for layer in mod.layers]
    conv = [lt for lt in rep.layers if lt.op == "conv3d"]
    assert conv and all(lt.ms > 0 and lt.gflops > 0 and "conv3d.direct" in lt.impl for lt in conv)
    text = str(rep)
    assert "latency: median" in text and "GFLOP/s" in text and "k000_conv3d" in text
    assert json.loads(json.dumps(rep.to_json()))["layers"][0]["kernel"] == "k000_conv3d"


def test_benchmark_times_kernels_in_the_model(small):
    """layer_mode="in-model" times every kernel in the model's order on the previous kernels' outputs; the same
    kernels as alone, each with a time; a mode that does not exist is an input error naming it."""
    _, shape, mod = small
    rep = mod.benchmark(rand(*shape), repeat=2, warmup=1, layer_repeat=2, layer_mode="in-model")
    assert [lt.kernel for lt in rep.layers] == [layer.kernel for layer in mod.layers]
    assert all(lt.ms > 0 for lt in rep.layers) and rep.layer_mode == "in-model"
    assert "kernels timed in the model" in str(rep) and rep.to_json()["layer_mode"] == "in-model"
    with pytest.raises(rt3d.InputError, match="'chained'"):
        mod.benchmark(rand(*shape), layer_mode="chained")


def test_layer_times_without_end_to_end_runs(small):
    """layer_times gives the per-kernel times of benchmark(per_layer=True) alone, in both modes, for benchmarks that
    interleave several modules' kernels; a wrong input shape or mode is an input error."""
    _, shape, mod = small
    for mode in ("alone", "in-model"):
        lts = mod.layer_times(rand(*shape), layer_repeat=2, layer_mode=mode)
        assert [lt.kernel for lt in lts] == [layer.kernel for layer in mod.layers] and all(lt.ms > 0 for lt in lts)
    assert [lt.kernel for lt in mod.layer_times(layer_repeat=1)] == [layer.kernel for layer in mod.layers]
    with pytest.raises(rt3d.InputError, match="must have shape"):
        mod.layer_times(rand(1, 2, 3))
    with pytest.raises(rt3d.InputError, match="'chained'"):
        mod.layer_times(layer_mode="chained")


def test_multiple_outputs_and_named_inputs():
    m = make_model([N("Relu", ["a"], ["r"]), N("Add", ["a", "b"], ["s"])], {"a": (2, 3), "b": (2, 3)}, ["r", "s"])
    mod = rt3d.build(m)
    a, b = rand(2, 3), rand(2, 3, seed=1)
    r, s = mod.run(b=b, a=a)
    exp = ort_run(m, {"a": a, "b": b})
    assert_close(r, exp[0])
    assert_close(s, exp[1])


def test_runs_from_several_threads_get_their_own_results(small):
    """Calls of run() from several threads at once run one after another (two threads in the Relax VM crashed the
    process): each gets the result of its own input, the same as alone."""
    from concurrent.futures import ThreadPoolExecutor
    _, shape, mod = small
    xs = [rand(*shape, seed=s) for s in range(4)]
    alone = [mod.run(x) for x in xs]
    assert not np.allclose(alone[0], alone[1])
    with ThreadPoolExecutor(4) as pool:
        for got, want in zip(pool.map(mod.run, xs * 2), alone * 2):
            np.testing.assert_array_equal(got, want)


def test_threads_default_to_all_cores():
    import os
    import tvm
    assert int(os.environ["TVM_NUM_THREADS"]) == len(os.sched_getaffinity(0))
    assert tvm.get_global_func("runtime.NumThreads")() == len(os.sched_getaffinity(0))
