"""A tuning session on this machine, resumed, and applied by rt3d.build."""
from __future__ import annotations

import io
import warnings

import numpy as np

import rt3d
from rt3d.models import export_onnx, get_model
from rt3d.tune import TuningDB
from tests.helpers import assert_close, rand


def test_tune_resume_and_build(tmp_path):
    model, shape = get_model("r2plus1d_small")
    data = export_onnx(model, shape)
    db_path = tmp_path / "tune.jsonl"
    report = rt3d.autotune(data, db=db_path, trials=2, stream=io.StringIO())
    n_layers = len(report.layers)
    assert n_layers >= 5 and all(r.trials == 2 and r.best_gflops for r in report.layers)
    assert all(r.default_gflops for r in report.layers)  # the heuristic's choice is always measured first
    first = len(TuningDB(db_path).records)
    assert first == 2 * n_layers
    rt3d.autotune(data, db=db_path, trials=1, stream=io.StringIO())  # resumes: one new candidate per layer
    db = TuningDB(db_path)
    assert len(db.records) == first + n_layers
    for layer in report.layers:
        configs = [str(sorted(r.config.items())) for r in db.records if r.workload == layer.workload]
        assert len(configs) == len(set(configs)), "a candidate was measured twice"

    x = rand(*shape, seed=2)
    tuned = rt3d.build(data, tuning_db=db_path)
    assert tuned.meta["tuning"]["layers_tuned"] == n_layers
    assert_close(tuned.run(x), rt3d.build(data).run(x))
    best = {r.workload: r for r in (db.best(layer.workload, rt3d.targets.get_target("host").key())
                                    for layer in report.layers)}
    tiles = {f"tile={b.config['th']}x{b.config['tw']}x{b.config['tm']}" for b in best.values()}
    used = {layer.impl.split("tile=")[1].rstrip(")") for layer in tuned.layers if "tile=" in layer.impl}
    assert {t.split("=")[1] for t in tiles} <= used


def test_build_warns_about_skipped_lines(tmp_path):
    model, shape = get_model("c3d_small")
    data = export_onnx(model, shape)
    db_path = tmp_path / "tune.jsonl"
    db_path.write_text("garbage\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mod = rt3d.build(data, tuning_db=db_path)
    assert any("skipped unreadable record" in str(x.message) for x in w)
    assert mod.meta["tuning"] == {"db": str(db_path), "layers_tuned": 0, "skipped_lines": 1}
    assert np.isfinite(mod.run(rand(*shape))).all()
