"""Pruning-stage schemes on torch weights: group layout, exact mask structure for every scheme and group size
(channel counts not multiples of the group included), group norms, top-k keeping and exact FLOPs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rt3d.frontend.pruning import (count_flops, element_mask, group_norms, group_rows, group_sizes, keep_top,
                                   structure_shape)
from rt3d.ir.sparsity import Sparsity, random_mask, structure

SHAPES = [(10, 6, 3, 3, 3), (16, 8, 1, 1, 1), (7, 5, 3, 1, 1), (12, 9)]
SCHEMES = [Sparsity("filter")] + [Sparsity(k, g) for k in ("vanilla", "kgs") for g in ((8, 4), (4, 4), (4, 2), (2, 4))]


@pytest.mark.parametrize("sp,shape", list(itertools.product(SCHEMES, SHAPES)), ids=str)
def test_masks_have_exactly_the_scheme_structure(sp, shape):
    rng = np.random.default_rng(abs(hash((str(sp), shape))) % 2**32)
    keep = rng.random(structure_shape(shape, sp)) < 0.5
    keep.reshape(-1)[0] = True
    mask = element_mask(keep, sp, shape)
    w = (torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) + 3.0) * mask  # no accidental zeros
    np.testing.assert_array_equal(structure(w.numpy(), sp), keep)  # the IR's view of the same zeros
    rows = group_rows(w, sp)
    assert rows.shape[0] == keep.size
    np.testing.assert_array_equal(rows.abs().sum(1).numpy() > 0, keep.reshape(-1))
    sizes = group_sizes(shape, sp)
    assert sizes.sum() == int(np.prod(shape)) and sizes.shape == keep.shape
    assert int(mask.sum()) == int(sizes[keep].sum())  # kept weights = sizes of the kept groups, edges included


def test_group_norms_match_hand_computation():
    sp = Sparsity("kgs", (2, 2))
    w = torch.arange(1.0, 1.0 + 3 * 3 * 2).reshape(3, 3, 2) * torch.tensor([1.0, -1.0])  # M=3, N=3, S=2
    # group (p=0, q=0, s=0): w[0:2, 0:2, 0]; group (p=1, q=1, s=1): the single weight w[2, 2, 1]
    g00 = w[0:2, 0:2, 0].reshape(-1)
    g111 = w[2:3, 2:3, 1].reshape(-1)
    for norm, f in (("l1", lambda g: g.abs().sum()), ("l2", lambda g: g.norm()),
                    ("mixed", lambda g: 0.5 * (g.norm() + g.abs().sum() / len(g) ** 0.5))):
        n = group_norms(w, sp, norm)
        assert n.shape == (2, 2, 2)
        torch.testing.assert_close(n[0, 0, 0], f(g00))
        torch.testing.assert_close(n[1, 1, 1], f(g111))
    with pytest.raises(ValueError, match="unknown group norm"):
        group_norms(w, sp, "l0")
    v = torch.randn(16, 8, 3, 3, 3, requires_grad=True)
    group_norms(v, Sparsity("vanilla", (8, 4))).sum().backward()  # differentiable for the regularizers
    assert v.grad is not None and torch.isfinite(v.grad).all()


def test_keep_top_keeps_the_largest_groups():
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.standard_normal((20, 10, 3, 3, 3)).astype(np.float32))
    sp = Sparsity("kgs", (8, 4))
    keep = keep_top(w, sp, 0.3)
    norms = group_norms(w, sp).numpy()
    assert keep.sum() == round(0.3 * keep.size)
    assert norms[keep].min() >= norms[~keep].max()
    with pytest.raises(ValueError, match="density"):
        keep_top(w, sp, 0.0)


def test_flops_are_counted_exactly():
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 6, (1, 3, 3),
                              stride=(1, 2, 2), padding=(0, 1, 1), groups=2), torch.nn.Flatten(),
                              torch.nn.Linear(6 * 4 * 3 * 3, 5))
    shape = (2, 3, 4, 6, 6)
    layers, total, dense = count_flops(net, shape)
    hand = [2 * 4 * 6 * 6 * 8 * 3 * 27, 2 * 4 * 3 * 3 * 6 * 4 * 9, 2 * 5 * 216]
    assert [x.dense_macs for x in layers] == hand and dense == sum(hand) and total == sum(hand)
    with torch.no_grad():
        net[0].weight[:4] = 0  # half the filters of the first conv
        net[4].weight[:, :100] = 0
    layers, total, _ = count_flops(net, shape)
    assert layers[0].macs == hand[0] // 2 and layers[0].density == 0.5
    assert layers[2].macs == 2 * 5 * 116 and total == hand[0] // 2 + hand[1] + 2 * 5 * 116


def test_flops_agree_with_the_compilers_counter():
    import rt3d
    from rt3d.ir.flops import graph_macs
    from rt3d.models import export_onnx, get_model
    model, shape = get_model("c3d_small")
    _, total, dense = count_flops(model, shape)
    assert total == dense == graph_macs(rt3d.import_onnx(export_onnx(model, shape)))
    sp = Sparsity("kgs", (8, 4))
    conv = model.features[3] if hasattr(model, "features") else None
    assert conv is not None and isinstance(conv, torch.nn.Conv3d)
    with torch.no_grad():
        conv.weight.mul_(torch.from_numpy(random_mask(tuple(conv.weight.shape), sp, 0.25,
                                                      np.random.default_rng(0)).astype(np.float32)))
    _, pruned, _ = count_flops(model, shape)
    g = rt3d.passes.run_pipeline(rt3d.import_onnx(export_onnx(model, shape)),
                                 "fold-constants,fold-bn,fuse,detect-sparsity,"
                                 "eliminate-kgs-columns{max_density=1.0,cost_model=false},dce")
    assert pruned < dense and graph_macs(g) == pruned
