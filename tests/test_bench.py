"""The benchmark tools keep working: the peer benchmark harness on a small model with the engines CI has, and the
FMA-peak kernel. (Full-size runs live in bench/, not in tests.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import peer_benchmark
    return peer_benchmark


def test_peer_benchmark_harness_on_a_small_model(tmp_path, bench_module):
    out = tmp_path / "results"
    rc = bench_module.main(["--models", "r2plus1d_small", "--engines", "rt3d,onnxruntime,pytorch,rt3d-kgs",
                            "--rounds", "2", "--warmup", "1", "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert rc == 0
    res = json.loads((out / "peer.json").read_text())
    m = res["models"]["r2plus1d_small"]
    for eng in ("rt3d", "onnxruntime", "pytorch"):
        r = m["engines"][eng]
        assert len(r["runs_ms"]) == 2 and r["median_ms"] > 0 and r["max_rel_diff_vs_first_engine"] < 1e-4
    assert m["engines"]["rt3d"]["layers"] and res["fma_peak"]["gflops"] > 0
    table = (out / "peer.md").read_text()
    assert "| r2plus1d_small" in table and "rt3d conv layers" in table
    assert "Pruned models" in table and m["engines"]["rt3d-kgs"]["info"]["flops_reduction"] == 2.0
    assert bench_module.main(["--report-only", "--out", str(out)]) == 0


def test_unknown_engine_is_an_error(bench_module, capsys):
    with pytest.raises(SystemExit):
        bench_module.main(["--engines", "rt3d,frobnitz"])
    assert "unknown engines ['frobnitz']" in capsys.readouterr().err


def test_fma_peak_kernel():
    from rt3d.targets import get_target
    from rt3d.targets.arm_neon.fma_peak import measure_fma_peak
    peak = measure_fma_peak(get_target("host"), repeat=2)
    assert peak["gflops"] > 1 and peak["cores"] >= 1 and peak["lanes"] in (4, 8, 16)
