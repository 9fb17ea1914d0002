"""Tuning sessions on this machine: budget, resume after an interruption, faults as failed trials, guided search,
and the tuned build."""
from __future__ import annotations

import io
import json
import re

from dataclasses import replace

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

import rt3d
import rt3d.tune.session as session_mod
from rt3d.errors import TuneError
from rt3d.frontend.onnx import import_model
from rt3d.models import export_onnx, get_model
from rt3d.passes import PassManager
from rt3d.targets import get_target
from rt3d.tune import LocalRunner, TuningDB, extract_tasks, tune_graph
from rt3d.tune.search import CostModel, Search
from rt3d.tune.session import SESSION
from rt3d.tune.space import config_key
from tests.helpers import assert_close, rand


def _graph(name):
    model, shape = get_model(name)
    data = export_onnx(model, shape)
    tgt = get_target("host")
    return data, shape, tgt, PassManager(tgt.default_passes()).run(import_model(data))


class _Interrupt(LocalRunner):
    """Stops the session (as Ctrl-C would) after ``after`` measured trials."""

    def __init__(self, after, **kw):
        super().__init__(**kw)
        self.after, self.seen = after, 0

    def run(self, batch):
        if all(b.config is not None for b in batch):
            self.seen += len(batch)
            if self.seen > self.after:
                raise KeyboardInterrupt
        return super().run(batch)


def test_session_interrupted_resumes_and_builds(tmp_path):
    data, shape, tgt, g = _graph("r2plus1d_small")
    db_path = tmp_path / "tune.jsonl"
    with pytest.raises(KeyboardInterrupt):
        tune_graph(g, tgt, TuningDB(db_path), _Interrupt(5, timeout=30), trials=24, out=None)
    db = TuningDB(db_path)
    assert not db.problems
    heads = [r for r in db.records if r.workload == SESSION]
    assert len(heads) == 1 and heads[0].config["trials"] == 24
    sid = heads[0].config["id"]
    assert sum(1 for r in db.records if r.session == sid and r.workload != SESSION and not r.stage) == 5

    with pytest.raises(TuneError, match="nothing to resume"):
        tune_graph(g, tgt, TuningDB(tmp_path / "other.jsonl"), LocalRunner(), trials=4, resume=True, out=None)
    out = io.StringIO()
    report = tune_graph(g, tgt, TuningDB(db_path), LocalRunner(timeout=30), trials=999, resume=True, out=out)
    assert report.session == sid and report.trials == 19 and report.budget == 24  # the header's budget, not 999
    assert "[tune 24/24 trials" in out.getvalue() and "est. end to end" in out.getvalue()
    db = TuningDB(db_path)
    trials = [r for r in db.records if r.session == sid and r.workload != SESSION and not r.stage]
    assert len(trials) == 24
    keys = [(r.workload, config_key(r.config)) for r in db.records if r.workload != SESSION and not r.stage]
    assert len(keys) == len(set(keys)), "a candidate was measured twice"
    tasks = extract_tasks(g, tgt)
    fixed = [t for t in tasks if not t.space]
    assert fixed and all(any(r.workload == t.workload for r in db.records) for t in fixed)  # for the estimate
    # the 24 trials went to the defaults of all layers first, then to the heaviest layers
    tunable = [t for t in tasks if t.space]
    defaults = {(t.workload, config_key(t.space[0])) for t in tunable}
    assert defaults <= set(keys)
    assert report.est_best_ms <= report.est_default_ms * 1.05
    # the session ended by re-measuring each layer's finalists (up to 3 + its default) side by side, twice
    val = [r for r in db.records if r.stage == "validate"]
    assert val and all(r.session == sid for r in val)
    for layer in report.layers:
        mine = [r for r in val if r.workload == layer.workload]
        if not mine:
            continue
        configs = {config_key(r.config) for r in mine}
        assert 2 <= len(configs) <= 4 and len(mine) == 2 * len(configs)
        means = {k: np.mean([r.ms for r in mine if config_key(r.config) == k]) for k in configs}
        assert config_key(db.best(layer.workload, tgt.key()).config) == min(means, key=means.get)
        assert layer.best == json.loads(min(means, key=means.get))

    x = rand(*shape, seed=2)
    tuned = rt3d.build(data, tuning_db=db_path)
    assert tuned.meta["tuning"]["layers_tuned"] == len(tunable)
    assert_close(tuned.run(x), rt3d.build(data).run(x))


def _lib(path, func):
    tvm.compile(tvm.IRModule({"main": func}), target="llvm").export_library(str(path))
    return str(path)


@T.prim_func
def _crash(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
    for i in range(4):
        b[i + 2000000000] = a[i]  # far outside any mapping: the measuring process dies


@T.prim_func
def _hang(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
    for i, j in T.grid(2000000000, 2000000000):
        b[0] = b[0] * a[0] + a[1]


def test_build_failure_crash_and_hang_are_failed_trials(tmp_path, monkeypatch):
    _, _, tgt, g = _graph("c3d_small")
    crash, hang = _lib(tmp_path / "crash.so", _crash), _lib(tmp_path / "hang.so", _hang)
    real = session_mod.build_candidate
    calls = {"n": 0}

    def faulty(task, config, target, workdir):
        b = real(task, config, target, workdir)
        if config is None:
            return b
        calls["n"] += 1
        if calls["n"] == 2:
            b.error = "build failed: RuntimeError: injected"
        elif calls["n"] in (3, 4):
            b.path = crash if calls["n"] == 3 else hang
            b.args, b.out = [("rand", (4,), "float32")], ((4,), "float32")
        return b

    monkeypatch.setattr(session_mod, "build_candidate", faulty)
    db_path = tmp_path / "t.jsonl"
    report = tune_graph(g, tgt, TuningDB(db_path), LocalRunner(timeout=8), trials=8, out=None)
    assert report.trials == 8 and report.failures == 3
    errors = [r.error for r in TuningDB(db_path).records if not r.ok]
    assert any(e.startswith("build failed") for e in errors)
    assert any(e.startswith("crashed") for e in errors)
    assert any(e.startswith("timeout") for e in errors)
    trials = [r for r in TuningDB(db_path).records if r.session == report.session and r.workload != SESSION
              and not r.stage]
    assert len(trials) == 8 and sum(r.ok for r in trials) == 5


def test_cost_model_learns_a_ranking():
    """On a synthetic landscape (GFLOP/s grows with the accumulators, unrolling hurts) the fitted model ranks the
    unseen candidates of a layer it never saw in the right order."""
    _, _, tgt, g = _graph("c3d_small")
    tasks = [t for t in extract_tasks(g, tgt) if t.space]
    truth = lambda c: 100 * (c.th * c.tw * c.tm) / 28 * (0.6 if c.ur else 1.0)  # noqa: E731
    samples, defaults = [], {}
    for t in tasks[1:]:
        defaults[t.workload] = truth(t.space[0])
        samples += [(t, c, truth(c)) for c in t.space[::5]]
    m = CostModel()
    m.fit(samples, defaults)
    held = tasks[0]
    pred = m.predict(held, held.space)
    real = np.array([truth(c) for c in held.space])
    top = np.argsort(-pred)[:5]
    assert real[top].mean() > np.percentile(real, 75)
    s = Search("guided", seed=0, explore=0.0)
    s.update(samples, defaults)
    first = s.propose(held, set(), 3)
    assert first[0] == held.space[0]  # the default always comes first
    assert all(truth(c) >= np.percentile(real, 75) for c in first[1:])
    with pytest.raises(TuneError, match="unknown search"):
        Search("annealing")


def test_cli_tune_json_and_group_selection(tmp_path, capsys):
    from rt3d.cli import main
    from rt3d.tune.groups import select_group
    db, js = tmp_path / "t.jsonl", tmp_path / "r.json"
    assert main(["tune", "zoo:c3d_small", "--db", str(db), "--trials", "3", "--search", "random",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "3 trials (0 failed) of 3" in out and "rt3d compile zoo:c3d_small --tuning-db" in out
    rep = json.loads(js.read_text())
    assert rep["trials"] == 3 and sum(layer["trials"] for layer in rep["layers"]) == 3
    assert main(["tune", "zoo:c3d_small", "--db", str(db), "--resume"]) == 0  # the session had its 3 trials
    assert f"session {rep['session']}: 0 trials (0 failed) of 3" in capsys.readouterr().out
    assert main(["tune", "zoo:c3d_small", "--db", str(db), "--tracker", "nonsense", "--key", "k"]) == 2
    assert "tracker address must be HOST:PORT" in capsys.readouterr().err

    report = select_group([(4, 4), (8, 4)], rate=3.0, layers=[(16, 32, 4, 8), (32, 32, 2, 8)])
    assert len(report.dense_layer_ms) == 2 and all(m > 0 for m in report.dense_layer_ms)
    assert [r.group for r in report.results] == [(4, 4), (8, 4)]
    assert all(not r.errors and len(r.layer_ms) == 2 and r.speedup > 0 for r in report.results)
    assert report.best in ((4, 4), (8, 4)) and "best for the pruning stage" in str(report)
    with pytest.raises(TuneError, match="must be > 1"):
        select_group([(8, 4)], rate=0.5)


@pytest.mark.parametrize("mode", ["flat3", "direct"])
def test_sparse_layers_are_tuned_and_applied(tmp_path, mode):
    """Sparse layers are tasks whose records are SparseTiles: vectors of positions (flat modes, a 16-lane target)
    or, where the direct mode can run (8 lanes), also tiles of positions; the best one found is what the tuned build
    runs."""
    # sparse layers only (a dense stem would take the trials: the session spends them where the time is)
    from dataclasses import fields

    from rt3d.ir.sparsity import Sparsity, random_mask
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    from rt3d.tune.groups import _layer_model
    from tests.runtime.test_sparse import DIRECT, VECTOR, always_sparse
    target = VECTOR if mode == "flat3" else DIRECT[8]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16, 3, 3, 3)).astype(np.float32)
    pruned = _layer_model(16, 32, 4, 8, (w * random_mask(w.shape, Sparsity("kgs", (8, 4)), 0.4, rng)).astype(np.float32))
    shape = (1, 16, 4, 8, 8)
    db_path = tmp_path / "s.jsonl"
    report = rt3d.autotune(pruned, db=db_path, target=target, trials=6, passes=always_sparse(target),
                           stream=io.StringIO())
    sparse = [r for r in report.layers if r.op == "sparse_conv3d"]
    assert sparse and all(r.best and set(r.best) == {f.name for f in fields(SparseTile)} for r in sparse)
    assert sum(r.trials for r in sparse) >= len(sparse) + 2  # defaults and searched candidates
    x = rand(*shape, seed=3)
    tuned = rt3d.build(pruned, target=target, passes=always_sparse(target), tuning_db=db_path)
    assert tuned.meta["tuning"]["layers_tuned"] >= len(sparse)
    impls = [layer.impl for layer in tuned.layers if layer.op == "sparse_conv3d"]
    assert impls
    if mode == "direct":  # the space holds both modes
        from rt3d.tune.space import extract_tasks
        graph = rt3d.passes.run_pipeline(rt3d.import_onnx(pruned), always_sparse(target))
        (task,) = [t for t in extract_tasks(graph, target) if t.node.op == "sparse_conv3d"]
        assert any(c.th for c in task.space) and any(not c.th for c in task.space), task.space
    for r in sparse:
        size = (rf"\.direct\(.*tile={r.best['th']}x{r.best['tw']}x" if r.best["th"]
                else rf"\.flat3\(.*x{r.best['v']}x")
        assert any(re.search(size, i) for i in impls), (r.best, impls)
    assert_close(tuned.run(x), rt3d.build(pruned, target=target, passes=always_sparse(target)).run(x))


def test_fused_pairs_are_tuned_and_applied(tmp_path):
    """A (2+1)D pair fused into one sparse_sep_conv3d is one task: vectors per tile x runs of output depths."""
    from rt3d.passes import PassManager
    from rt3d.tune.space import extract_tasks, sep_space
    from tests.helpers import sep_net
    from tests.runtime.test_sparse import VECTOR, always_sparse
    model, inputs = sep_net(np.random.default_rng(4), 16, 24, 16, 3, (1, 16, 6, 10, 12))
    target = VECTOR  # 16 lanes, 32 registers: up to 3 vectors per tile
    passes = always_sparse(target).replace("fuse-sep-convs{", "fuse-sep-convs{cost_model=false,")
    graph = PassManager(passes).run(rt3d.import_onnx(model))
    (task,) = [t for t in extract_tasks(graph, target) if t.node.op == "sparse_sep_conv3d"]
    assert task.space == sep_space(task.node, target.vector_lanes, target.num_cores, target.vector_registers)
    # runs as the kernel makes them (6 output depths: 4 runs are 3 of 2), the default first
    assert {t.runs for t in task.space} == {1, 2, 3, 6} and task.space[0].runs in {1, 2, 3, 6}
    assert len({(t.v, t.runs) for t in task.space}) == len(task.space)
    assert {t.v for t in task.space} == {1, 2, 3}
    db_path = tmp_path / "sep.jsonl"
    report = rt3d.autotune(model, db=db_path, target=target, trials=5, passes=passes, stream=io.StringIO())
    (row,) = [r for r in report.layers if r.op == "sparse_sep_conv3d"]
    assert row.trials >= 2 and row.best.keys() >= {"v", "chunks", "tiles", "split", "runs"}
    x = rand(*inputs["x"], seed=5)
    tuned = rt3d.build(model, target=target, passes=passes, tuning_db=db_path)
    (impl,) = [layer.impl for layer in tuned.layers if layer.op == "sparse_sep_conv3d"]
    assert f"x{row.best['v']}x" in impl and (f"runs={row.best['runs']}" in impl) == (row.best["runs"] > 1), impl
    assert_close(tuned.run(x), rt3d.build(model, target=target, passes=passes).run(x))


def test_default_tile_of_odd_channel_blocks_and_measure_node():
    """An odd number of output-channel blocks takes three vectors per tile (no padded block of zero filters) when a
    row of 8 positions fits; an even one keeps two. measure_node times one kernel outside a session."""
    from rt3d.ir import Graph, TensorType
    from rt3d.ir.ops import ConvAttrs
    from rt3d.targets.arm_neon.conv3d import ConvTile, default_tile
    from rt3d.tune.measure import measure_node

    def node(cout):
        g = Graph("layer")
        x = g.add_input("x", TensorType((1, 4, 2, 8, 8, 16)))
        w = g.add_const("w", rand(cout, 64, 1, 3, 3, scale=0.05))
        g.outputs = [g.add("conv3d", [x, w], ConvAttrs(pad=(0, 1, 1, 0, 1, 1), in_block=16, out_block=16))]
        return g.nodes[0]

    assert default_tile(node(144), 8, 8, 16) == ConvTile(1, 8, 3, 1)  # 9 blocks
    assert default_tile(node(128), 8, 8, 16).tm == 2  # 8 blocks
    ms, gflops = measure_node(node(144), None, replace(get_target("host"), vector_lanes=16, vector_registers=32))
    assert ms > 0 and gflops > 0
    with pytest.raises(TuneError, match="build failed.*blocks channels by 4"):  # a failure says why
        measure_node(node(144), None, get_target("arm64-linux"))
