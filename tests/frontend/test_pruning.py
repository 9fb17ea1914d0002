"""The pruning algorithms, rt3d.prune, the ONNX export with masks and the DDP run (tiny models, seconds each)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rt3d
from rt3d.data.motion import MotionDataset
from rt3d.errors import ConversionError, InputError
from rt3d.frontend.pruning import (Regularizer, RegConfig, count_flops, export_pruned, find_layers, group_rows,
                                   heuristic, masks_of, prune, select_global)
from rt3d.frontend.pruning.train import Data
from rt3d.ir.sparsity import Sparsity, structure
from rt3d.models import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Tiny(nn.Module):
    """Two prunable convs (the second reads the first) and a head."""

    def __init__(self, c=(8, 12, 10)):
        super().__init__()
        self.stem = nn.Conv3d(3, c[0], 3, padding=1)
        self.a = nn.Conv3d(c[0], c[1], 3, padding=1)
        self.b = nn.Conv3d(c[1], c[2], (3, 1, 1), padding=(1, 0, 0))
        self.head = nn.Linear(c[2], 4)

    def forward(self, x):
        x = torch.relu(self.b(torch.relu(self.a(torch.relu(self.stem(x))))))
        return self.head(x.mean(dim=(2, 3, 4)))


def _data(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + tuple(shape[1:]), generator=g), torch.randint(0, 4, (n,), generator=g)


# ---- the reweighting rule -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["l1", "l2", "mixed"])
def test_reweighting_updates_penalties_as_specified(norm):
    torch.manual_seed(0)
    model = Tiny()
    layers = find_layers(model, (1, 3, 4, 6, 6), "kgs", (4, 4))
    assert [lay.name for lay in layers] == ["a", "b"]  # the stem (3 input channels) stays dense
    cfg = RegConfig(norm=norm, lam=0.3, eps=0.02)
    reg = Regularizer(layers, need_macs=1000.0, cfg=cfg, reweighted=True)

    def normalized(lay):  # by hand: group norm in units of the layer's rms weight x sqrt(size) (x size for l1)
        rows = group_rows(lay.weight.detach(), lay.sp)
        size = torch.as_tensor(lay.sizes, dtype=torch.float32)
        l1, l2 = rows.abs().sum(1), rows.pow(2).sum(1).sqrt()
        raw = {"l1": l1, "l2": l2, "mixed": 0.5 * (l2 + l1 / size.sqrt())}[norm]
        return raw / ((size if norm == "l1" else size.sqrt()) * reg_rms[lay.name])

    reg_rms = {lay.name: float(lay.weight.detach().pow(2).mean().sqrt()) for lay in layers}
    assert all(torch.equal(p, torch.ones_like(p)) for p in reg.P)  # before the first round: plain group lasso
    for _ in range(2):
        before = reg._grad_norm()
        reg.reweight()
        assert reg._grad_norm() == pytest.approx(before, rel=1e-4)  # lambda keeps the penalty's strength
        for i, lay in enumerate(layers):
            expect = 1.0 / (normalized(lay) ** 2 + cfg.eps)
            torch.testing.assert_close(reg.P[i], expect, rtol=1e-5, atol=0)
            assert not reg.P[i].requires_grad
        # the penalty: lambda x mean over all groups of f_g x P_g x ||W_g||, f_g = group MACs / mean group MACs
        macs = np.concatenate([lay.group_macs for lay in layers]).astype(np.float64)
        by_hand = sum((torch.as_tensor(lay.group_macs / macs.mean(), dtype=torch.float32) * reg.P[i]
                       * normalized(lay)).sum() for i, lay in enumerate(layers)) * reg.lam / macs.size
        torch.testing.assert_close(reg().detach(), by_hand.detach(), rtol=1e-5, atol=0)
        with torch.no_grad():  # the weights move (training); the next reweighting must follow them
            layers[1].weight.mul_(torch.rand_like(layers[1].weight) + 0.5)
    with torch.no_grad():  # shrink one KGS group (row block 0, channel block 0, position 0) almost to zero
        layers[0].weight[0:4, 0:4, 0, 0, 0] *= 1e-4
    reg.reweight()
    assert float(reg.P[0][0]) > 0.9 / cfg.eps
    # a layer at its floor drops out of the penalty; reweighting still works, and with no layer left nothing is pushed
    reg.active = [False, True]
    before = reg._grad_norm()
    reg.reweight()
    assert reg._grad_norm() == pytest.approx(before, rel=1e-4) and layers[0].weight.grad is None
    reg.active = [False, False]
    assert float(reg()) == 0.0 and reg._grad_norm() == 0.0
    reg.reweight()
    plain = Regularizer(layers, 1000.0, cfg, reweighted=False)
    plain.reweight()
    assert all(torch.equal(p, torch.ones_like(p)) for p in plain.P)


def test_lambda_is_driven_by_the_flops_still_to_prune():
    model = Tiny()
    layers = find_layers(model, (1, 3, 4, 6, 6), "kgs", (4, 4))
    reg = Regularizer(layers, need_macs=1e9, cfg=RegConfig(lam=0.1), reweighted=True)
    reg.check()  # nothing has converged: lambda grows by the largest step
    assert reg.lam == pytest.approx(0.125)
    with torch.no_grad():
        for lay in layers:
            lay.weight.zero_()
    reg.need = float(sum(lay.dense_macs for lay in layers)) / 4  # 4x more converged than needed: shrink
    reg.check()
    assert reg.lam == pytest.approx(0.125 * 0.8)
    assert reg.active == [False, False]  # every layer at zero is past its floor (min_density): no more pushing
    reg.need *= 4.0 / 1.05  # within 5 % of the target: leave lambda alone
    reg.check()
    assert reg.lam == pytest.approx(0.125 * 0.8)
    reg.check(progress=0.375)  # half-way up the ramp, everything at zero is far too much: shrink
    assert reg.lam == pytest.approx(0.125 * 0.8 * 0.8)
    assert reg.state.converged == pytest.approx([0.0, 4.0, 1.05, 1.05])


def test_automatic_lambda_balances_the_gradients():
    torch.manual_seed(0)
    model = Tiny()
    layers = find_layers(model, (1, 3, 4, 6, 6), "kgs", (4, 4))
    reg = Regularizer(layers, 1e6, RegConfig(lam_ratio=0.5), reweighted=True)
    x, y = _data(8, (1, 3, 4, 6, 6))
    lam = reg.calibrate(model, x, y)
    weights = [lay.weight for lay in layers]
    g_loss = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), weights)
    g_pen = torch.autograd.grad(reg(), weights)
    norm = lambda gs: float(sum(g.pow(2).sum() for g in gs).sqrt())  # noqa: E731
    assert lam > 0 and norm(g_pen) == pytest.approx(0.5 * norm(g_loss), rel=1e-4)


def test_global_selection_prunes_the_lowest_scores_to_the_target():
    model = Tiny()
    layers = find_layers(model, (1, 3, 4, 6, 6), "vanilla", (4, 4))
    rng = np.random.default_rng(1)
    scores = [rng.random(lay.sizes.size) for lay in layers]
    need = 0.5 * sum(lay.dense_macs for lay in layers)
    keeps = select_global(layers, scores, need)
    removed = sum(lay.group_macs[~k].sum() for lay, k in zip(layers, keeps))
    assert removed >= need
    biggest = max(int(lay.group_macs.max()) for lay in layers)
    assert removed - need < biggest  # past the target by less than one group
    # the lowest-scoring groups go first: all of those that make up the first half of the target are pruned
    order = sorted((s, li, gi) for li, sc in enumerate(scores) for gi, s in enumerate(sc))
    acc = 0.0
    for _, li, gi in order:
        acc += layers[li].group_macs[gi]
        if acc > need / 2:
            break
        assert not keeps[li][gi]
    with pytest.raises(InputError, match="cannot prune"):
        select_global(layers, scores, 2.0 * sum(lay.dense_macs for lay in layers))
    # a floor: no layer below half of its MACs, even where its scores are the lowest
    scores[0] = scores[0] * 1e-3
    keeps = select_global(layers, scores, 0.45 * sum(lay.dense_macs for lay in layers), min_density=0.5)
    for lay, k in zip(layers, keeps):
        assert lay.group_macs[k].sum() >= 0.5 * lay.dense_macs


def test_heuristic_reads_the_next_layer():
    """Output channels of conv a that conv b never reads are worth nothing: the heuristic prunes them first."""
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        model.b.weight[:, 8:] = 0.0  # b ignores a's channels 8..11 (a's row block 2 at gM=4)
        model.a.weight[8:] *= 5.0  # ...although they are a's largest weights
    layers = find_layers(model, (1, 3, 4, 6, 6), "vanilla", (4, 4), layers=["a"])
    calib = Data(_data(16, (1, 3, 4, 6, 6)))
    heuristic(model, layers, calib, need_macs=layers[0].dense_macs / 3)
    keep = layers[0].keep  # [P=3, Q=2]: a third of the MACs is row block 2
    assert not keep[2].any() and keep[:2].all(), keep


# ---- rt3d.prune end to end ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data():
    model, shape = get_model("c3d_small", randomize_bn=False)
    train = MotionDataset(48, "train", seed=1, size=shape[-1], frames=shape[2])
    val = MotionDataset(20, "val", seed=1, size=shape[-1], frames=shape[2])
    return model, shape, Data(train), Data(val)


@pytest.mark.parametrize("algorithm,scheme", list(itertools.product(["heuristic", "group-lasso", "reweighted"],
                                                                    ["filter", "vanilla", "kgs"])))
def test_prune_reaches_the_target_with_exact_structure(small_data, algorithm, scheme):
    model, shape, train, val = small_data
    target = 1.6
    pruned, report = prune(model, train, val, scheme=scheme, group=(4, 4), algorithm=algorithm, flops_target=target,
                           epochs=(0.5, 0.5), batch_size=8, rounds=2, min_channels=4, progress=False)
    assert report.flops_reduction >= target * 0.999
    assert report.flops_reduction < target * 1.25  # pruned to the target, not far past it
    _, total, dense = count_flops(pruned, shape)
    assert (total, dense) == (report.macs, report.dense_macs)
    mods = dict(pruned.named_modules())
    for name, (sp, keep) in pruned.rt3d_sparsity.items():
        assert sp.scheme == scheme
        w = mods[name].weight.detach().numpy()
        kept = structure(w, sp)
        assert not np.any(kept & ~keep), name  # no weight survives in a pruned group
        assert kept.sum() >= keep.sum() * 0.9  # the kept groups did not die
    for lay in report.layers:
        assert lay.macs <= lay.dense_macs and 0 < lay.density <= 1
    assert 0 <= report.accuracy <= 1 and 0 <= report.accuracy_dense <= 1
    assert "whole model" in report.table()
    before = {k: v for k, v in model.state_dict().items()}
    assert any(not torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # a copy was pruned
    if algorithm != "heuristic":
        assert len(report.trace["lam"]) >= 2 and report.trace["converged"]


def test_per_layer_group_sizes(small_data):
    model, shape, train, val = small_data
    names = [lay.name for lay in find_layers(model, shape, min_channels=4)]
    pruned, report = prune(model, train, val, scheme="kgs", group={names[0]: (8, 8), "*": (4, 2)},
                           algorithm="reweighted", flops_target=1.8, epochs=(0.5, 0), batch_size=8, rounds=1,
                           min_channels=4, progress=False)
    sps = {name: sp for name, (sp, _) in pruned.rt3d_sparsity.items()}
    assert sps[names[0]] == Sparsity("kgs", (8, 8)) and sps[names[1]] == Sparsity("kgs", (4, 2))
    with pytest.raises(InputError, match="unknown layers"):
        prune(model, train, val, group={"nope": (4, 4)}, epochs=(0, 0), progress=False)
    with pytest.raises(InputError, match="flops_target"):
        prune(model, train, val, flops_target=0.5, progress=False)
    with pytest.raises(InputError, match="unknown algorithm"):
        prune(model, train, val, algorithm="admm", progress=False)


def test_pruned_onnx_runs_anywhere_and_carries_the_masks(small_data, tmp_path):
    model, shape, train, val = small_data
    pruned, _ = prune(model, train, val, scheme="kgs", group=(4, 4), algorithm="reweighted", flops_target=1.8,
                      epochs=(0.5, 0.5), batch_size=8, rounds=2, min_channels=4, progress=False)
    path = tmp_path / "pruned.onnx"
    export_pruned(pruned, shape, path)
    x = val.x[:1]
    with torch.no_grad():
        ref = pruned(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    proto = onnx.load(str(path))
    graph = rt3d.import_onnx(proto)
    annotated = {n.inputs[1].name: n.attrs.sparsity for n in graph.nodes if n.op == "conv3d" and n.attrs.sparsity}
    assert len(annotated) == len(pruned.rt3d_sparsity)
    assert set(annotated.values()) == {"kgs(4x4)"}
    assert "sparsity=kgs(4x4)" in str(graph).replace('"', "")
    # without the metadata (a model pruned elsewhere), detect-sparsity finds the same scheme and group in the zeros
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    g2 = rt3d.passes.run_pipeline(rt3d.import_onnx(bare), "detect-sparsity")
    detected = {n.inputs[1].name: n.attrs.sparsity for n in g2.nodes if n.op == "conv3d" and n.attrs.sparsity}
    assert detected == annotated
    # the compiler runs it with its sparse kernels and agrees with onnxruntime
    mod = rt3d.build(str(path), target="host")
    np.testing.assert_allclose(mod.run(x.numpy()), out, rtol=1e-4, atol=1e-4)
    # an annotation that the zeros contradict is an error naming the node
    init = next(i for i in proto.graph.initializer if i.name in annotated)
    w = onnx.numpy_helper.to_array(init).copy()
    w[w == 0] = 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    with pytest.raises(ConversionError, match=r"node .*Conv.*pruned groups are not zero"):
        rt3d.import_onnx(proto)


@pytest.mark.parametrize("algorithm", ["heuristic", "reweighted"])
def test_fully_connected_layers_pruned_at_their_density(small_data, tmp_path, algorithm):
    """linear_density prunes every fully connected layer but the classifier to that share of its groups; the masks
    travel with the Gemm weights, the importer annotates the dense layers, and the build agrees with onnxruntime."""
    model, shape, train, val = small_data
    pruned, report = prune(model, train, val, scheme="kgs", group=(4, 4), algorithm=algorithm, flops_target=1.6,
                           epochs=(0.5, 0.5), batch_size=8, rounds=2, min_channels=4, linear_density=0.25,
                           progress=False)
    mods = dict(pruned.named_modules())
    linear = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    assert set(linear[:-1]) <= set(pruned.rt3d_sparsity) and linear[-1] not in pruned.rt3d_sparsity
    rows = {lay.name: lay for lay in report.layers}
    for name in linear[:-1]:
        sp, keep = pruned.rt3d_sparsity[name]
        assert keep.shape == (mods[name].out_features // 4, mods[name].in_features // 4, 1)  # no kernel positions
        assert keep.sum() == round(0.25 * keep.size)
        assert not np.any(structure(mods[name].weight.detach().numpy(), sp) & ~keep)
        assert rows[name].density <= 0.25 and rows[name].macs <= rows[name].dense_macs * 0.25
    assert report.flops_reduction >= 1.6 * 0.999 and report.flops_reduction < 1.6 * 1.25
    path = tmp_path / "pruned.onnx"
    export_pruned(pruned, shape, path)
    x = val.x[:1]
    with torch.no_grad():
        ref = pruned(x).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    graph = rt3d.import_onnx(onnx.load(str(path)))
    dense = [n.attrs.sparsity for n in graph.nodes if n.op == "dense"]
    assert dense == ["kgs(4x4)"] * (len(linear) - 1) + [""]
    mod = rt3d.build(str(path), target="host")
    np.testing.assert_allclose(mod.run(x.numpy()), out, rtol=1e-4, atol=1e-4)


def test_fully_connected_layers_need_a_density(small_data):
    model, shape, train, val = small_data
    assert not any(lay.linear for lay in find_layers(model, shape, min_channels=4))  # by default they stay dense
    with pytest.raises(InputError, match=r"\['classifier.0'\] are fully connected.*linear_density"):
        find_layers(model, shape, layers=["classifier.0"])
    with pytest.raises(InputError, match="linear_density .* in \\(0, 1\\]"):
        find_layers(model, shape, linear_density=1.5)
    named = find_layers(model, shape, layers=["classifier.6"], linear_density=0.5)  # named: even the classifier
    assert [(lay.name, lay.linear, lay.positions) for lay in named] == [("classifier.6", True, 1)]


def test_importer_checks_a_fully_connected_annotation():
    """A MatMul's initializer is the [in, out] transpose: its mask is still of the [out, in] weight (on a 3-D input
    too: the layer applied per time step); the annotated layer runs sparse; zeros the mask contradicts are an error
    naming the node."""
    from rt3d.ir.sparsity import encode_keep, random_mask
    from tests.helpers import make_model
    rng = np.random.default_rng(0)
    sp = Sparsity("kgs", (4, 4))
    w = rng.standard_normal((16, 24)).astype(np.float32)  # [out, in]
    mask = random_mask(w.shape, sp, 0.5, rng)
    w *= mask
    keep = structure(w, sp)
    for op, init, xshape in (("Gemm", w, (2, 24)), ("MatMul", np.ascontiguousarray(w.T), (2, 24)),
                             ("MatMul", np.ascontiguousarray(w.T), (2, 3, 24))):  # per time step
        attrs = {"transB": 1} if op == "Gemm" else {}
        proto = make_model([onnx.helper.make_node(op, ["x", "w"], ["y"], name="fc", **attrs)], {"x": xshape}, ["y"],
                           {"w": init})
        meta = proto.metadata_props.add()
        meta.key, meta.value = "rt3d.sparsity", json.dumps({"w": {"layer": "fc", "sparsity": str(sp),
                                                                  **encode_keep(keep)}})
        g = rt3d.import_onnx(proto)
        assert [n.attrs.sparsity for n in g.nodes if n.op == "dense"] == ["kgs(4x4)"], op
        x = np.random.default_rng(1).standard_normal(xshape).astype(np.float32)
        ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        mod = rt3d.build(proto)
        assert any(layer.op == "sparse_conv3d" for layer in mod.layers), [layer.impl for layer in mod.layers]
        np.testing.assert_allclose(mod.run(x), ref, rtol=1e-4, atol=1e-5)
        # every kept group declared pruned
        meta.value = json.dumps({"w": {"layer": "fc", "sparsity": str(sp), **encode_keep(~keep)}})
        with pytest.raises(ConversionError, match=rf"{op}.*'w' is annotated kgs\(4x4\) but \d+ weights"):
            rt3d.import_onnx(proto)


def test_masks_of_and_detect_sparsity_agree(small_data):
    model, shape, train, val = small_data
    pruned, _ = prune(model, train, val, scheme="vanilla", group=(4, 4), algorithm="group-lasso", flops_target=1.6,
                      epochs=(0.5, 0), batch_size=8, rounds=1, min_channels=4,
                      progress=False)
    masks = masks_of(pruned)
    mods = dict(pruned.named_modules())
    from rt3d.ir.sparsity import detect
    for name, m in masks.items():
        w = mods[name].weight.detach().numpy()
        assert np.all(w[~m] == 0)
        found = detect(w)
        assert found is not None and found.scheme in ("vanilla", "filter")  # coarsest scheme that explains it


def test_prune_runs_under_torchrun_with_identical_ranks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "tests", "frontend", "ddp_prune_job.py"), str(tmp_path), "reweighted"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["masks"].keys() == r1["masks"].keys() and r0["masks"]
    for k in r0["masks"]:
        assert torch.equal(r0["masks"][k], r1["masks"][k]), k
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["accuracy"] == r1["accuracy"] and r0["macs"] == r1["macs"]


def test_cli_prune(tmp_path):
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "rt3d", "prune", "zoo:c3d_small", "--train-clips", "32",
                          "--val-clips", "10", "--epochs", "0.5,0.5", "--flops-target", "1.6", "--group", "4x4",
                          "--algorithm", "heuristic", "--min-channels", "4", "--linear-density", "0.5", "-o", str(out),
                          "--json", str(report)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "whole model" in res.stdout and out.exists() and report.exists()
    import json
    data = json.loads(report.read_text())
    assert data["flops_reduction"] >= 1.6 * 0.999
    fc = {lay["name"]: lay["kept_groups"] / lay["groups"] for lay in data["layers"] if lay["name"].startswith("cl")}
    assert fc == {"classifier.0": 0.5, "classifier.3": 0.5}  # the fully connected layers but the classifier
    bad = subprocess.run([sys.executable, "-m", "rt3d", "prune", "zoo:c3d_small", "--data", "x.npz"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert bad.returncode != 0 and "TRAIN.npz,VAL.npz" in bad.stderr
