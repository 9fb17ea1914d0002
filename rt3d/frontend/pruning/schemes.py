"""Structured sparsity for the pruning stage, on torch weights: groups, group norms, masks and exact FLOPs.

The schemes and their group shapes are those of ``rt3d.ir.sparsity`` (Filter, Vanilla and KGS with any gM x gN
group, partial groups at the edges when the channel counts are not multiples of the group). Here a weight's groups
are laid out as the rows of a matrix (``group_rows``) so that norms and penalties are one reduction, differentiable,
and a structural keep mask (``keep_top``) turns back into an element mask with ``rt3d.ir.sparsity.expand``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...ir.sparsity import Sparsity, expand

NORMS = ("l1", "l2", "mixed")


def structure_shape(wshape: tuple[int, ...], sp: Sparsity) -> tuple[int, ...]:
    """Shape of a structural mask: [M] (filter), [P, Q] (vanilla), [P, Q, S] (kgs)."""
    m, n = wshape[:2]
    s = int(np.prod(wshape[2:], dtype=np.int64))
    if sp.scheme == "filter":
        return (m,)
    p, q = -(-m // sp.group[0]), -(-n // sp.group[1])
    return (p, q) if sp.scheme == "vanilla" else (p, q, s)


def group_rows(w: torch.Tensor, sp: Sparsity) -> torch.Tensor:
    """[groups, elements per group]: every group of ``w`` as a row (zero-padded at partial edges), in the order of
    the flattened structural mask."""
    m, n = w.shape[:2]
    s = int(np.prod(w.shape[2:], dtype=np.int64))
    if sp.scheme == "filter":
        return w.reshape(m, -1)
    gm, gn = sp.group
    p, q = -(-m // gm), -(-n // gn)
    full = torch.nn.functional.pad(w.reshape(m, n, s), (0, 0, 0, q * gn - n, 0, p * gm - m))
    blocks = full.reshape(p, gm, q, gn, s)
    if sp.scheme == "vanilla":
        return blocks.permute(0, 2, 1, 3, 4).reshape(p * q, gm * gn * s)
    return blocks.permute(0, 2, 4, 1, 3).reshape(p * q * s, gm * gn)


def group_sizes(wshape: tuple[int, ...], sp: Sparsity) -> np.ndarray:
    """Real (unpadded) number of weights in every group, shaped like the structural mask."""
    ones = torch.ones(wshape)
    return group_rows(ones, sp).sum(1).reshape(structure_shape(wshape, sp)).numpy().astype(np.int64)


def group_norms(w: torch.Tensor, sp: Sparsity, norm: str = "l2") -> torch.Tensor:
    """Norm of every group, shaped like the structural mask. ``l1``: sum of |w|; ``l2``: Euclidean norm;
    ``mixed``: the mean of the l2 norm and the l1 norm scaled by 1/sqrt(group size) (the two agree on a group of equal
    magnitudes)."""
    if norm not in NORMS:
        raise ValueError(f"unknown group norm '{norm}' (norms: {', '.join(NORMS)})")
    rows = group_rows(w, sp)
    shape = structure_shape(tuple(w.shape), sp)
    if norm == "l1":
        return rows.abs().sum(1).reshape(shape)
    l2 = rows.pow(2).sum(1).clamp_min(1e-30).sqrt()
    if norm == "l2":
        return l2.reshape(shape)
    size = torch.as_tensor(group_sizes(tuple(w.shape), sp).reshape(-1), dtype=w.dtype, device=w.device)
    return (0.5 * (l2 + rows.abs().sum(1) / size.sqrt())).reshape(shape)


def keep_top(w: torch.Tensor, sp: Sparsity, density: float, norm: str = "l2") -> np.ndarray:
    """Structural keep mask that keeps the ``density`` share of groups with the largest norms (at least one)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    scores = group_norms(w.detach(), sp, norm).reshape(-1).cpu().numpy()
    k = max(1, int(round(density * scores.size)))
    keep = np.zeros(scores.size, bool)
    keep[np.argsort(-scores, kind="stable")[:k]] = True
    return keep.reshape(structure_shape(tuple(w.shape), sp))


def element_mask(keep: np.ndarray, sp: Sparsity, wshape: tuple[int, ...]) -> torch.Tensor:
    """The float 0/1 mask of the weight's shape for a structural keep mask."""
    return torch.from_numpy(expand(np.asarray(keep, bool), sp, tuple(wshape)).astype(np.float32))


@dataclass
class LayerFlops:
    name: str
    op: str  # conv or linear
    dense_macs: int
    macs: int  # multiply-accumulates with the zero weights skipped

    @property
    def density(self) -> float:
        return self.macs / self.dense_macs if self.dense_macs else 1.0


def count_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[list[LayerFlops], int, int]:
    """Exact multiply-accumulates of every conv and linear layer of ``model`` on an input of ``input_shape``:
    nonzero weights x output positions (batch included). Returns (per layer, total, dense total)."""
    layers: list[LayerFlops] = []
    hooks = []

    def hook(name):
        def f(mod, inputs, out):
            w = mod.weight
            if isinstance(mod, torch.nn.Linear):
                positions = out.numel() // out.shape[-1]
            else:
                positions = out.numel() // out.shape[1]
            per_out = w[0].numel()  # weights one output value uses (grouped convs: in channels of its group)
            dense = out.numel() * per_out
            nz = int(torch.count_nonzero(w).item())
            layers.append(LayerFlops(name, "linear" if isinstance(mod, torch.nn.Linear) else "conv", dense,
                                     nz * positions))
        return f

    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return layers, sum(x.macs for x in layers), sum(x.dense_macs for x in layers)
