"""Sparsity schemes: masks have exactly the claimed structure, packing round-trips, detection recovers the
scheme and group size from the zeros alone."""
from __future__ import annotations

import numpy as np
import pytest

from rt3d.ir.sparsity import Sparsity, detect, expand, pack, random_mask, structure, unpack

SHAPES = [(32, 16, 3, 3, 3), (30, 13, 1, 3, 3), (24, 20, 3, 1, 1), (16, 8, 1, 1, 1)]
GROUPS = [(8, 4), (4, 4), (4, 2), (8, 8)]


def _blockwise(mask, gm, gn, positions_tied: bool) -> bool:
    """Every gm x gn group (per position, or across all positions) is all-kept or all-pruned."""
    m, n = mask.shape[:2]
    flat = mask.reshape(m, n, -1)
    for p in range(0, m, gm):
        for q in range(0, n, gn):
            blk = flat[p:p + gm, q:q + gn]  # [rows, cols, S]
            per_s = blk.reshape(-1, blk.shape[-1])
            if not (per_s.all(axis=0) | ~per_s.any(axis=0)).all():
                return False
            if positions_tied and not (per_s.all() or not per_s.any()):
                return False
    return True


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("group", GROUPS)
def test_masks_have_the_claimed_structure(shape, group):
    rng = np.random.default_rng(0)
    for scheme in ("kgs", "vanilla"):
        sp = Sparsity(scheme, group)
        mask = random_mask(shape, sp, 0.3, rng)
        assert _blockwise(mask, *group, positions_tied=(scheme == "vanilla"))
        assert np.array_equal(expand(structure(mask.astype(np.float32), sp), sp, shape), mask)
        assert 0.05 < mask.mean() < 0.6
    mask = random_mask(shape, Sparsity("filter"), 0.5, rng)
    rows = mask.reshape(shape[0], -1)
    assert (rows.all(axis=1) | ~rows.any(axis=1)).all() and rows.all(axis=1).sum() == shape[0] // 2


@pytest.mark.parametrize("shape", SHAPES)
def test_pack_unpack_round_trip_with_a_permutation(shape):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape).astype(np.float32) * random_mask(shape, Sparsity("kgs", (8, 4)), 0.3, rng)
    perm = tuple(rng.permutation(shape[0]).tolist())
    for p in ((), perm):
        pk = pack(w, (8, 4), p)
        assert sum(pk.kept) == len(pk.cols) == len(pk.values)
        assert np.array_equal(unpack(pk.values, pk.cols, pk.kept, pk.perm, shape), w)


@pytest.mark.parametrize("sp", [Sparsity("kgs", (8, 4)), Sparsity("kgs", (4, 4)), Sparsity("vanilla", (8, 4)),
                                Sparsity("vanilla", (4, 4)), Sparsity("filter")], ids=str)
def test_detect_recovers_scheme_and_group(sp):
    rng = np.random.default_rng(2)
    shape = (64, 32, 3, 3, 3)
    w = rng.standard_normal(shape).astype(np.float32) * random_mask(shape, sp, 0.3, rng)
    assert detect(w) == sp


def test_detect_ignores_dense_and_unstructured_weights():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 16, 3, 3, 3)).astype(np.float32)
    assert detect(w) is None
    w[rng.random(w.shape) < 0.5] = 0  # unstructured (element-wise) zeros
    assert detect(w) is None


def test_sparsity_text_form():
    assert str(Sparsity.parse("kgs(8x4)")) == "kgs(8x4)" and Sparsity.parse("filter").scheme == "filter"
    with pytest.raises(ValueError, match="group size"):
        Sparsity.parse("vanilla")
    with pytest.raises(ValueError, match="unknown sparsity scheme"):
        Sparsity.parse("blocky(2x2)")
