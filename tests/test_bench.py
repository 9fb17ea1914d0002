"""The benchmark tools keep working: the peer benchmark harness on a small model with the engines CI has, and the
FMA-peak kernel. (Full-size runs live in bench/, not in tests.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import peer_benchmark
    return peer_benchmark


def test_peer_benchmark_harness_on_a_small_model(tmp_path, bench_module):
    out = tmp_path / "results"
    rc = bench_module.main(["--models", "r2plus1d_small", "--engines", "rt3d,onnxruntime,pytorch,rt3d-kgs,rt3d-vanilla",
                            "--rounds", "2", "--warmup", "1", "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 0
    res = json.loads((out / "peer.json").read_text())
    m = res["models"]["r2plus1d_small"]
    for eng in ("rt3d", "onnxruntime", "pytorch"):
        r = m["engines"][eng]
        assert len(r["runs_ms"]) == 2 and r["median_ms"] > 0 and r["max_rel_diff_vs_first_engine"] < 1e-4
    assert m["engines"]["rt3d"]["layers"] and res["fma_peak"]["gflops"] > 0
    assert len(res["fma_peak_between"]) == 1 and res["fma_peak_after"]["gflops"] > 0  # after each model, at the end
    table = (out / "peer.md").read_text()
    assert "| r2plus1d_small" in table and "rt3d conv layers" in table
    assert "Pruned models" in table and m["engines"]["rt3d-kgs"]["info"]["flops_reduction"] == 2.0
    assert "by round)" in table  # KGS/Vanilla also as the median of the rounds' ratios
    assert "- r2plus1d_small: " in table.split("under 0.85 of their dense kernels")[1]
    # the per-kernel times of the rt3d engines (timed in turns): one per kernel of each module
    for eng in ("rt3d", "rt3d-kgs", "rt3d-vanilla"):
        layers = m["engines"][eng]["layers"]
        assert layers and all(lt["ms"] > 0 for lt in layers)
        assert any(lt["op"] == "sparse_conv3d" for lt in layers) == (eng != "rt3d")
    assert bench_module.main(["--report-only", "--out", str(out)]) == 0


def test_report_lists_the_sparse_layers_under_the_bar(bench_module):
    def layer(op, name, ms, gflops, impl="k"):
        return {"op": op, "node": f"%1 = {op}(%0) : f32[1]  # {name}", "ms": ms, "gflops": gflops, "impl": impl}
    a, b = "/layer4/layer4.0/conv1/conv1.0/conv1.0.0/Conv", "/layer4/layer4.0/conv2/conv2.0/Conv"
    dense = {"median_ms": 10.0, "runs_ms": [10.0], "layers": [layer("conv3d", a, 2.0, 100.0),
                                                               layer("conv3d", b, 1.0, 50.0)]}
    # a: 90 GFLOP/s against 100 (0.9, over the bar); the fused pair a+b: 60 against (2 * 100 + 1 * 50) / 3 = 83.3
    kgs = {"median_ms": 4.0, "runs_ms": [4.0], "info": {"flops_reduction": 2.0, "layer_density": 0.5},
           "layers": [layer("sparse_conv3d", a, 1.0, 90.0), layer("sparse_sep_conv3d", f"{a}+{b}", 1.5, 60.0, "pair")]}
    res = {"models": {"m": {"engines": {"rt3d": dense, "rt3d-kgs": kgs}}}}
    ratios = bench_module.sparse_layer_ratios(dense, kgs)
    assert [r["name"] for r in ratios] == ["layer4.0/conv1.0.0", "layer4.0/conv1.0.0+layer4.0/conv2.0"]
    assert [round(r["ratio"], 3) for r in ratios] == [0.9, 0.72]
    text = "\n".join(bench_module.sparse_markdown(res))
    assert "- m: 1 of 2 (1.5 of 2.5 ms):" in text
    assert "  - layer4.0/conv1.0.0+layer4.0/conv2.0: 0.720, 1.50 ms, pair" in text
    assert bench_module.short_layer_name("/classifier/Conv") == "classifier"


def test_layer_history_over_runs(tmp_path, bench_module):
    """bench/layer_history.py: each sparse kernel's ratio run by run (a kernel a run lacks is '-'), the runs under the
    bar, worst mean first; a folder without a peer report is named."""
    import layer_history

    def layer(op, name, ms, gflops):
        return {"op": op, "node": f"%1 = {op}(%0) : f32[1]  # /{name}/Conv", "ms": ms, "gflops": gflops, "impl": "k"}

    def run(folder, dense, kgs):
        (tmp_path / folder).mkdir()
        engines = {"rt3d": {"layers": [layer("conv3d", *d) for d in dense]},
                   "rt3d-kgs": {"layers": [layer("sparse_conv3d", *k) for k in kgs]}}
        (tmp_path / folder / "peer.json").write_text(json.dumps({"models": {"m": {"engines": engines}}}))
        return str(tmp_path / folder)

    # run 1: a at 90 against 100 GFLOP/s (0.9), b at 40 against 50 (0.8); run 2 has no b: a at 80 (0.8)
    r1 = run("r1", [("a", 2.0, 100.0), ("b", 1.0, 50.0)], [("a", 1.0, 90.0), ("b", 0.5, 40.0)])
    r2 = run("r2", [("a", 2.0, 100.0)], [("a", 1.2, 80.0)])
    out = tmp_path / "out"
    assert layer_history.main([r1, r2, "--out", str(out)]) == 0
    rows = json.loads((out / "layer_history.json").read_text())["models"]["m"]
    assert [r["layer"] for r in rows] == ["b", "a"]  # means 0.80 and 0.85
    assert rows[0]["ratios"] == [pytest.approx(0.8), None] and rows[0]["under"] == 1 and rows[0]["runs"] == 1
    assert rows[1]["under"] == 1 and rows[1]["runs"] == 2 and rows[1]["ms"] == pytest.approx(1.1)
    text = (out / "layer_history.md").read_text()
    assert "m: 2 kernels, 2 under 0.85 in some run, 1 in every run that has them" in text
    assert "| b | 1 of 1 | 0.80 | 0.80-0.80 | 0.80 - | 0.50 |" in text
    assert "| a | 1 of 2 | 0.85 | 0.80-0.90 | 0.90 0.80 | 1.10 |" in text
    # a bar of 0.75 counts none of a's runs, one of 0.95 both
    assert layer_history.history(layer_history.load_runs([r1, r2]), bar=0.75)["m"][1]["under"] == 0
    assert layer_history.history(layer_history.load_runs([r1, r2]), bar=0.95)["m"][1]["under"] == 2
    with pytest.raises(SystemExit, match="nowhere: no peer.json"):
        layer_history.main([r1, str(tmp_path / "nowhere")])


def test_report_gives_the_speedup_by_round(bench_module):
    """The KGS speedup as the ratio of the medians and as the median of the rounds' ratios (both engines timed in
    every round): a round of contention on one side moves the second less."""
    layer = {"op": "conv3d", "node": "%1 = conv3d(%0) : f32[1]  # /c/Conv", "ms": 1.0, "gflops": 1.0, "impl": "k"}
    dense = {"median_ms": 12.0, "runs_ms": [10.0, 20.0, 12.0], "layers": [layer]}
    kgs = {"median_ms": 5.0, "runs_ms": [4.0, 5.0, 6.0], "info": {"flops_reduction": 2.0, "layer_density": 0.5},
           "layers": [dict(layer, op="sparse_conv3d")]}
    text = "\n".join(bench_module.sparse_markdown({"models": {"m": {"engines": {"rt3d": dense, "rt3d-kgs": kgs}}}}))
    # medians 12 / 5 = 2.40x; rounds 2.5, 4.0, 2.0: median 2.50x
    assert "| 2.40x (1.20 of the rate; by round 2.50x, 1.25) |" in text


def test_e2e_breakdown_on_a_small_model(tmp_path, bench_module):
    """bench/e2e_breakdown.py: end to end, the kernels alone and in the model, per kernel family, dense and KGS."""
    import e2e_breakdown
    out = tmp_path / "results"
    assert e2e_breakdown.main(["--models", "r2plus1d_small", "--rounds", "2", "--out", str(out),
                               "--cache", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "e2e_breakdown.json").read_text())
    for eng in ("rt3d", "rt3d-kgs"):
        r = res["models"]["r2plus1d_small"][eng]
        assert r["e2e_ms"] > 0 and r["alone_ms"] > 0 and r["in_model_ms"] > 0
        assert sum(f["kernels"] for f in r["families"].values()) == len(r["layers"])
    assert any(name.startswith("sparse_conv3d.") for name in res["models"]["r2plus1d_small"]["rt3d-kgs"]["families"])
    assert "| kernel family |" in (out / "e2e_breakdown.md").read_text()


def test_tune_compare_dense_and_pruned(tmp_path, bench_module):
    """bench/tune_compare.py --scheme kgs: a tuning session each for the dense and the pruned model, the four builds
    timed side by side."""
    import tune_compare
    out = tmp_path / "results"
    assert tune_compare.main(["--model", "c3d_small", "--trials", "3", "--search-trials", "0", "--scheme", "kgs",
                              "--rounds", "1", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "c3d_small.kgs.json").read_text())
    assert set(res["end_to_end_ms"]) == {"dense default", "dense tuned", "kgs default", "kgs tuned"}
    assert all(res["sessions"][k]["trials"] == 3 for k in ("dense", "kgs"))
    assert any(r["default_impl"].startswith("sparse_conv3d.") for r in res["layers"])
    assert "| tuned |" in (out / "c3d_small.kgs.md").read_text()


def test_sparse_layer_and_pair_benchmarks(tmp_path, bench_module):
    """bench/sparse_layers.py and bench/sep_pairs.py on their smallest entries (--only), one round each."""
    import sep_pairs
    import sparse_layers
    out = tmp_path / "results"
    assert sparse_layers.main(["--only", "conv5b", "--rounds", "1", "--out", str(out)]) == 0
    (row,) = json.loads((out / "layers.json").read_text())["layers"]
    assert row["layer"].startswith("c3d conv5b") and row["sparse_ms"] > 0 and row["sparse_over_dense"] > 0
    assert row["sparse_impl"].startswith("sparse_conv3d.") and row["dense_impl"].startswith("conv3d.")
    assert "kgs(8x4)" in row["sparse_impl"] and "vanilla(8x4)" in row["vanilla_impl"] and row["kgs_over_vanilla"] > 0
    assert sep_pairs.main(["--only", "mixed_3b", "--rounds", "1", "--out", str(out)]) == 0
    (pair,) = json.loads((out / "sep_pairs.json").read_text())["pairs"]
    assert pair["fused_impl"].startswith("sparse_conv3d.sep(") and pair["fused_ms"] > 0 and pair["unfused_ms"] > 0
    assert isinstance(pair["cost_model_fuses"], bool)  # what the cost model does depends on this machine's L2
    with pytest.raises(SystemExit, match="no pair matches 'frobnitz'; the pairs are: r2plus1d layer1"):
        sep_pairs.main(["--only", "frobnitz", "--out", str(out)])


def test_sparse_space_times_the_records_of_a_layer(tmp_path, bench_module):
    """bench/sparse_space.py on C3D's smallest layer: the default and the next vector-mode records, sorted by time."""
    import sparse_space
    out = tmp_path / "results"
    assert sparse_space.main(["--only", "conv5b", "--modes", "vector", "--limit", "3", "--rounds", "1",
                              "--out", str(out)]) == 0
    (layer,) = json.loads((out / "sparse_space.json").read_text())["layers"]
    records = layer["records"]
    assert len(records) == 3 and sum(r["default"] for r in records) == 1 and layer["space"] > 3
    assert [r["ms"] for r in records] == sorted(r["ms"] for r in records)
    assert all(r["sparse_over_dense"] > 0 and r["impl"].startswith("sparse_conv3d.flat3") for r in records)
    with pytest.raises(SystemExit, match="unknown"):
        sparse_space.main(["--only", "conv5b", "--modes", "flat"])


def test_sparse_ablation_times_the_variants(tmp_path, bench_module):
    """bench/sparse_ablation.py on C3D's smallest layer: every variant timed; the variants' offsets."""
    import sparse_ablation
    out = tmp_path / "results"
    assert sparse_ablation.main(["--only", "conv5b", "--rounds", "1", "--out", str(out)]) == 0
    (row,) = json.loads((out / "ablation.json").read_text())["layers"]
    assert set(row["ms"]) == set(sparse_ablation.VARIANTS) and row["impl"].startswith("sparse_conv3d.flat")
    assert "split=" not in row["impl"]  # a small L2's split reduction is built unsplit (the variants' offsets)
    # the folded variant keeps each column's kernel position and maps its channel block onto the first four
    cs = sparse_ablation.channel_stride(2, 7, (1, 1, 1), (1, 1, 1))
    assert cs == 4 * 8 * 8 and sparse_ablation.channel_stride(16, 56, (1, 2, 2), (0, 1, 1)) is None
    cols = np.array([[q, 70 + q % 3] for q in range(10)])
    folded, _ = sparse_ablation.variant_params((cols[:, 0] * 4 * cs + cols[:, 1]).astype(np.int32),
                                               np.array([0, 10], np.int32), "4 blocks", cs)
    assert folded.tolist() == [q % 4 * 4 * cs + 70 + q % 3 for q in range(10)]
    with pytest.raises(SystemExit, match="channel_stride no longer follows"):  # a copy laid out otherwise
        sparse_ablation.variant_params((cols[:, 0] * 4 * cs + cs + 1).astype(np.int32), np.array([0, 10], np.int32),
                                       "4 blocks", cs)
    assert all(ms > 0 for ms in row["ms"].values()) and row["sparse_over_dense"]["model"] > 0  # no timing bars
    off = np.arange(10, dtype=np.int32) * 70000
    ptr = np.array([0, 4, 10], np.int32)
    assert sparse_ablation.variant_params(off, ptr, "window 16K")[0].max() < 4096
    assert not sparse_ablation.variant_params(off, ptr, "one row")[0].any()
    assert not sparse_ablation.variant_params(off, ptr, "no columns")[1].any()


def test_pad_ablation_leaves_out_only_the_padding_stages(tmp_path, bench_module):
    """bench/pad_ablation.py: builds inside padding_left_out() run without the sparse kernels' padding stages (their
    outputs change), builds after it are whole again; the benchmark on a small model (C3D's 3x3x3 convs: flat3, each
    with a padding stage) reports the three builds."""
    import pad_ablation
    from engines import ENGINES
    from peer_benchmark import export_models
    path, module, shape = export_models(["c3d_small"], tmp_path)["c3d_small"]
    x, other = np.random.default_rng(0).standard_normal((2,) + tuple(shape)).astype(np.float32)
    whole = ENGINES["rt3d-kgs"](path, module, shape).info["module"]
    with pad_ablation.padding_left_out():
        nopad = ENGINES["rt3d-kgs"](path, module, shape).info["module"]
    again = ENGINES["rt3d-kgs"](path, module, shape).info["module"]
    want = whole.run(x)
    np.testing.assert_allclose(again.run(x), want, rtol=1e-5, atol=1e-6)
    # the padded copies live in the runtime's workspace, which the next kernel of the same size gets back: padded
    # from another input first, so that a kernel that pads nothing reads that input's copy. Which blocks it gets back
    # depends on what ran before (TVM's CPU workspace pools are per thread): after another test's builds, a stale
    # copy of x itself in some of them made the output differ from want by only ~1e-4, so the check is at the
    # tolerance whole and again agree to
    whole.run(other)
    assert not np.allclose(nopad.run(x), want, rtol=1e-5, atol=1e-6)
    out = tmp_path / "results"
    assert pad_ablation.main(["--models", "c3d_small", "--rounds", "1", "--out", str(out),
                              "--cache", str(tmp_path)]) == 0
    r = json.loads((out / "pad_ablation.json").read_text())["models"]["c3d_small"]
    assert r["padded_layers"] and all(pad_ablation.padded(row["impl"]) for row in r["padded_layers"])
    assert not pad_ablation.padded("sparse_conv3d.sep(kgs(8x4) 1x3x3 kept=31% windowed -> kgs(8x4), b->b)")
    assert r["bar_e2e_ms"] == pytest.approx(r["dense_e2e_ms"] / (0.85 * r["flops_reduction"]))
    assert "| c3d_small |" in (out / "pad_ablation.md").read_text()


def test_gpu_benchmark_prepares_and_runs(tmp_path, bench_module):
    """bench/gpu_opencl.py end to end on PoCL (the GPU run's script, not its timings): a model with synthetic weights
    (zeroed in transit, refilled from the hash at recorded RMS, checked against PoCL's own output) and one with real
    weights checked against onnxruntime; float16 artifacts are refused here (PoCL has no cl_khr_fp16) and say so."""
    pytest.importorskip("pyopencl")
    import gpu_opencl
    arts = tmp_path / "arts"
    assert gpu_opencl.main(["prepare", str(arts), "--models", "c3d_small", "--small", "s3d_small",
                            "--schemes", "kgs(8x4)"]) == 0
    art = arts / "c3d_small-kgs-fp32"
    meta = json.loads((art / "meta.json").read_text())
    blob = (art / "weights.bin").read_bytes()
    floats = [p for p in meta["params"] if p["dtype"].startswith("float")]
    assert floats and not any(blob[p["offset"]:p["offset"] + p["nbytes"]].strip(b"\0") for p in floats)
    rms = json.loads((art / "synthetic.json").read_text())["rms"]
    assert rms == json.loads((arts / "c3d_small-kgs-fp16" / "synthetic.json").read_text())["rms"]  # the twin's
    w = gpu_opencl.synthetic(3, 100000, 0.5, "float32")
    assert abs(float(w.std()) - 0.5) < 0.01 and abs(float(w.mean())) < 0.01
    assert (tmp_path / "arts.tar.gz").stat().st_size < 2**20 * 8
    rc = gpu_opencl.main(["run", str(arts), "--out", str(tmp_path / "out"), "--repeat", "2", "--warmup", "1"])
    res = json.loads((tmp_path / "out" / "gpu.json").read_text())["models"]
    assert set(res) == {"c3d_small-kgs-fp32", "c3d_small-kgs-fp16", "s3d_small-kgs-fp32", "s3d_small-kgs-fp16"}
    for key in ("c3d_small-kgs-fp32", "s3d_small-kgs-fp32"):
        assert res[key]["check"]["ok"] and res[key]["kernel_ms"] > 0 and res[key]["sparse_layers"] > 0
    assert res["s3d_small-kgs-fp32"]["reference"].startswith("onnxruntime")
    assert all("cl_khr_fp16" in res[k]["error"] for k in res if k.endswith("fp16"))
    assert rc == 1  # the refused float16 runs
    assert "| c3d_small | fp32 | kgs |" in (tmp_path / "out" / "gpu.md").read_text()


def test_gpu_run_script(tmp_path, bench_module):
    """bench/gpu_run.sh, the GPU side in one command, on PoCL: unpacks what prepare packed, runs and checks it."""
    pytest.importorskip("pyopencl")
    import os
    import subprocess
    import sys
    import gpu_opencl
    assert gpu_opencl.main(["prepare", str(tmp_path / "arts"), "--models", "", "--small", "c3d_small",
                            "--schemes", "dense", "--targets", "android-gpu"]) == 0
    res = subprocess.run(["bash", str(BENCH / "gpu_run.sh"), str(tmp_path / "arts.tar.gz"), str(tmp_path / "out")],
                         env=dict(os.environ, PYTHON=sys.executable, REPEAT="1"), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads((tmp_path / "out" / "gpu.json").read_text())["models"]["c3d_small-dense-fp32"]
    assert out["check"]["ok"] and len(out["runs_ms"]) == 1 and (tmp_path / "out" / "run.log").is_file()
    res = subprocess.run(["bash", str(BENCH / "gpu_run.sh")], capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr


def test_unknown_engine_is_an_error(bench_module, capsys):
    with pytest.raises(SystemExit):
        bench_module.main(["--engines", "rt3d,frobnitz"])
    assert "unknown engines ['frobnitz']" in capsys.readouterr().err


def test_fma_peak_kernel():
    from rt3d.targets import get_target
    from rt3d.targets.arm_neon.fma_peak import measure_fma_peak
    peak = measure_fma_peak(get_target("host"), repeat=2)
    assert peak["gflops"] > 1 and peak["cores"] >= 1 and peak["lanes"] in (4, 8, 16)


def test_rounds_balance_who_follows_whom(bench_module):
    from collections import Counter
    from engines import interleaved, round_order
    for n in (1, 2, 3, 4, 5):
        names = [chr(97 + i) for i in range(n)]
        rounds = [round_order(names, r) for r in range(n if n % 2 == 0 else 2 * n)]
        assert all(sorted(o) == names for o in rounds)
        pairs = Counter((o[i - 1], o[i]) for o in rounds for i in range(1, n))
        assert len(pairs) == n * (n - 1) and len(set(pairs.values())) <= 1  # every ordered pair, equally often
    assert round_order(["a", "b", "c", "d"], 0) == ["a", "b", "d", "c"] and round_order([], 3) == []
    seen = []
    med = interleaved({"a": 1.0, "b": 2.0, "c": 4.0}, 3, lambda m: seen.append(m) or m)
    assert med == {"a": 1.0, "b": 2.0, "c": 4.0} and sorted(seen) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0]


def test_plane_pitch_times_both_widths_in_each_process(tmp_path, bench_module):
    """bench/plane_pitch.py on a small conv: each process times both plane widths (per 112 columns) with one register
    tile and the report keeps every process's times and medians and the kernels; the model it builds has the
    asked-for width."""
    import plane_pitch
    from sparse_layers import layer_model
    model = layer_model(8, 8, 4, 8, (7, 1, 1), (2, 1, 1), (3, 0, 0), np.zeros((8, 8, 7, 1, 1), np.float32), width=113)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 8, 2, 8, 113]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 8, 4, 8, 113]
    shape = json.dumps({"cin": 8, "cout": 8, "depth": 4, "height": 8})
    assert plane_pitch.main(["--processes", "2", "--rounds", "2", "--shape", shape, "--tile", "2,1,1,0,4",
                             "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "plane_pitch.json").read_text())
    assert res["shape"]["cin"] == 8 and len(res["processes"]) == 2
    assert set(res["kernels"]) == {"112", "119"}
    assert all("tile=2x1x1, bands of 4 rows" in k for k in res["kernels"].values())  # the one tile asked for
    for row in res["processes"]:
        assert set(row["ms_per_112_columns"]) == {"112", "119"}
        assert all(len(ts) == 2 and min(ts) > 0 for ts in row["ms_per_112_columns"].values())
