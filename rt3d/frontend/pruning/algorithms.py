"""The three pruning algorithms of the paper (section 4) over the prunable layers of a torch model.

All three reach one whole-model FLOPs reduction (conv + linear MACs per clip, dense / pruned) and end with the
same masked retraining (cosine learning rate); they differ in how they choose the groups:

heuristic     ThiNet-style, greedy per layer, layers taken from the last to the first: a group's importance is its
              contribution to the *next* layer's input, estimated as sum over its weights of
              W[i, j, s]^2 * E[x_j^2] * c_i, with E[x_j^2] the energy of input channel j on calibration clips and
              c_i the sensitivity of output channel i: the squared weights that read channel i in the consuming
              convs / linear layers (after their own pruning, hence last to first), times the square of a directly
              following BatchNorm's scale. Every prunable layer keeps the same share of its MACs (a heuristic needs
              per-layer rates; this is the uniform one that reaches the target).
group-lasso   loss + lambda * R(W), R = mean over all groups g of f_g * ||W_g||_g, trained at a fixed learning rate,
              then the groups with the smallest norms are pruned, globally across layers, until the target holds.
reweighted    the same with R = mean of f_g * P_g * ||W_g||_g and P_g = 1 / (||W_g||_g^2 + eps), recomputed from
              the current weights at the start of every reweighting round (3 to 4 rounds; Candes et al. 2008).

f_g = MACs of group g / mean MACs of a group: each layer's term weighted by its FLOPs, so one lambda works on the
whole model's FLOPs and no per-layer rate is given. Norms are measured in units of the layer's initial weight scale
(rms weight x sqrt(group size); x group size for l1), so one lambda and one eps serve layers of any fan-in.
lambda itself is driven by the target: after every check (twice per epoch) it is scaled by the ratio of the FLOPs
still to prune to the FLOPs whose groups have converged to zero (normalized norm < zero_tol), within [1/2, 2].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from .layers import Layer
from .schemes import group_rows, structure_shape
from .train import Data, TrainConfig, all_reduce_, broadcast_, train

ALGORITHMS = ("heuristic", "group-lasso", "reweighted")


@dataclass
class RegConfig:
    norm: str = "mixed"  # group norm in the regularizer: l1 | l2 | mixed (the paper's best: a mix of l1 and l2)
    lam: float = 0.05  # initial lambda (then driven by the FLOPs target)
    eps: float = 0.01  # reweighting: P = 1 / (||W_g||^2 + eps), norms in units of the layer's weight scale
    rounds: int = 4  # reweighting rounds (the paper: 3 to 4)
    zero_tol: float = 0.05  # a group whose normalized norm is below this has converged to zero
    checks_per_epoch: int = 2


@dataclass
class RegState:
    """What the regularization phase did, for the report."""

    lam: list[float] = field(default_factory=list)  # lambda at every check
    converged: list[float] = field(default_factory=list)  # share of the FLOPs to prune already at zero, per check
    penalties: list[dict] = field(default_factory=list)  # per round: min / median / max of P


class Regularizer:
    """lambda * mean_g f_g * P_g * ||W_g|| over all prunable layers, with the reweighting and lambda rules."""

    def __init__(self, layers: list[Layer], need_macs: float, cfg: RegConfig, reweighted: bool):
        self.layers, self.cfg, self.reweighted, self.need = layers, cfg, reweighted, float(need_macs)
        macs = np.concatenate([lay.group_macs for lay in layers]).astype(np.float64)
        mean = macs.mean()
        self.f = [torch.as_tensor(lay.group_macs / mean, dtype=torch.float32) for lay in layers]
        self.count = float(macs.size)
        with torch.no_grad():
            self.scale = []
            for lay in layers:
                rms = float(lay.weight.detach().pow(2).mean().sqrt())
                size = torch.as_tensor(lay.sizes, dtype=torch.float32)
                unit = size if cfg.norm == "l1" else size.sqrt()
                self.scale.append(unit * max(rms, 1e-12))
        self.P = [torch.ones_like(f) for f in self.f]
        self.lam = cfg.lam
        self.state = RegState()

    def norms(self, i: int) -> torch.Tensor:
        """Normalized group norms of layer i (differentiable)."""
        lay = self.layers[i]
        return lay.norms(self.cfg.norm) / self.scale[i].to(lay.weight.device)

    def __call__(self) -> torch.Tensor:
        total = 0.0
        for i, lay in enumerate(self.layers):
            dev = lay.weight.device
            total = total + (self.f[i].to(dev) * self.P[i].to(dev) * self.norms(i)).sum()
        return self.lam * total / self.count

    @torch.no_grad()
    def reweight(self) -> None:
        """P_g = 1 / (||W_g||^2 + eps) from the current weights (the paper's update between iterations)."""
        if not self.reweighted:
            return
        self.P = [1.0 / (self.norms(i).detach().cpu() ** 2 + self.cfg.eps) for i in range(len(self.layers))]
        allp = torch.cat(self.P)
        self.state.penalties.append({"min": float(allp.min()), "median": float(allp.median()),
                                     "max": float(allp.max())})

    @torch.no_grad()
    def converged_macs(self) -> float:
        return float(sum(lay.group_macs[(self.norms(i).cpu() < self.cfg.zero_tol).numpy()].sum()
                         for i, lay in enumerate(self.layers)))

    def check(self) -> None:
        """Record progress and drive lambda toward converging the FLOPs still to prune."""
        conv = self.converged_macs()
        share = conv / max(self.need, 1.0)
        self.state.lam.append(self.lam)
        self.state.converged.append(share)
        self.lam *= float(np.clip(1.0 / max(share, 1e-9), 0.5, 2.0)) if share < 0.95 or share > 1.1 else 1.0

    @torch.no_grad()
    def scores(self) -> list[np.ndarray]:
        return [self.norms(i).cpu().numpy() for i in range(len(self.layers))]


def select_global(layers: list[Layer], scores: list[np.ndarray], need_macs: float) -> list[np.ndarray]:
    """Keep masks that prune the lowest-scoring groups across all layers until ``need_macs`` MACs are gone (every
    layer keeps at least its best group)."""
    flat = [(float(s), li, gi) for li, sc in enumerate(scores) for gi, s in enumerate(sc)]
    flat.sort()
    keeps = [np.ones(sc.size, bool) for sc in scores]
    left = [sc.size for sc in scores]
    removed = 0.0
    for s, li, gi in flat:
        if removed >= need_macs:
            break
        if left[li] <= 1:
            continue
        keeps[li][gi] = False
        left[li] -= 1
        removed += float(layers[li].group_macs[gi])
    if removed < need_macs * 0.999:
        raise InputError(f"cannot prune {need_macs:.3g} MACs per clip from the prunable layers (at most "
                         f"{removed:.3g}); lower flops_target or prune more layers (layers=, min_channels=)")
    return keeps


def select_per_layer(layer: Layer, score: np.ndarray, remove_macs: float) -> np.ndarray:
    """Prune the lowest-scoring groups of one layer until at least ``remove_macs`` of its MACs are gone (it keeps
    at least its best group)."""
    order = np.argsort(score, kind="stable")
    removed = np.cumsum(layer.group_macs[order].astype(np.float64))
    k = int(np.searchsorted(removed, remove_macs - 1e-6)) + 1 if remove_macs > 0 else 0
    keep = np.ones(score.size, bool)
    keep[order[:min(k, score.size - 1)]] = False
    return keep


# ---- the heuristic ------------------------------------------------------------------------------------------------

def _consumers(model: nn.Module, names: set[str]) -> dict[str, tuple[list[str], str | None]]:
    """For each conv in ``names``: the conv/linear modules that read its output (through activations, norms,
    pooling, adds, flatten) and the BatchNorm directly after it. Empty when the model cannot be traced or the path
    concatenates (channel offsets unknown)."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:
        return {}
    mods = dict(gm.named_modules())
    out: dict[str, tuple[list[str], str | None]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in names:
            continue
        found, bn, stack, seen, ok = [], None, list(node.users), set(), True
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(mods[users[0].target],
                                                                           nn.modules.batchnorm._BatchNorm):
            bn = users[0].target
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u.op == "call_module" and isinstance(mods[u.target], (nn.Conv3d, nn.Linear)):
                found.append(u.target)
                continue
            if u.op == "call_function" and getattr(u.target, "__name__", "") in ("cat", "concat", "stack"):
                ok = False
                break
            if u.op == "output":
                continue
            stack.extend(u.users)
        if ok:
            out[node.target] = (found, bn)
    return out


@torch.no_grad()
def _input_energy(model: nn.Module, layers: list[Layer], calib: Data, batch_size: int) -> list[torch.Tensor]:
    """E[x_j^2] per input channel of every layer over the calibration clips (summed over the ranks)."""
    sums = [torch.zeros(lay.module.in_channels, dtype=torch.float64) for lay in layers]
    count = torch.zeros(1, dtype=torch.float64)
    hooks = []
    for i, lay in enumerate(layers):
        def hook(mod, inp, out, i=i):
            x = inp[0].detach().double()
            sums[i] += x.pow(2).mean(dim=tuple(d for d in range(x.ndim) if d != 1)).cpu() * x.shape[0]
        hooks.append(lay.module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        for x, _ in calib.batches(batch_size, False, 0):
            model(x.to(lay.weight.device))
            count += len(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    all_reduce_(count)
    return [all_reduce_(s) / max(float(count), 1.0) for s in sums]


def _sensitivity(lay: Layer, consumers, mods: dict[str, nn.Module]) -> torch.Tensor:
    """c_i: squared weights reading output channel i in the consumers (ones when unknown)."""
    m = lay.module.out_channels
    found, bn = consumers.get(lay.name, ([], None))
    c = torch.zeros(m, dtype=torch.float64)
    for name in found:
        w = mods[name].weight.detach().double().cpu()
        if isinstance(mods[name], nn.Conv3d) and w.shape[1] == m:
            c += w.pow(2).sum(dim=tuple(d for d in range(w.ndim) if d != 1))
        elif isinstance(mods[name], nn.Linear) and w.shape[1] % m == 0:
            c += w.pow(2).reshape(w.shape[0], m, -1).sum(dim=(0, 2))
        else:
            return torch.ones(m, dtype=torch.float64)
    if not found:
        return torch.ones(m, dtype=torch.float64)
    if bn is not None:
        b = mods[bn]
        gamma = b.weight.detach().double().cpu() if b.weight is not None else torch.ones(m, dtype=torch.float64)
        c *= (gamma / (b.running_var.double().cpu() + b.eps).sqrt()).pow(2)
    return c


def heuristic(model: nn.Module, layers: list[Layer], calib: Data, need_macs: float,
              batch_size: int = 32) -> dict:
    """Prune every layer greedily to (about) the same share of its MACs, last layer first, each layer taking its
    share of what is still to prune (so the rounding of one layer's groups is made up by the next); returns what it
    used."""
    prunable = float(sum(lay.dense_macs for lay in layers))
    keep_share = 1.0 - need_macs / prunable
    if keep_share <= 0.0:
        raise InputError(f"the target needs {need_macs:.3g} MACs per clip pruned but the prunable layers have "
                         f"only {prunable:.3g}; lower flops_target or prune more layers (layers=, min_channels=)")
    energy = _input_energy(model, layers, calib, batch_size)
    consumers = _consumers(model, {lay.name for lay in layers})
    mods = dict(model.named_modules())
    left_need, left_macs = float(need_macs), prunable
    for i in reversed(range(len(layers))):
        lay = layers[i]
        c = _sensitivity(lay, consumers, mods)
        w = lay.weight.detach().double().cpu()
        contrib = w.pow(2) * energy[i].reshape((1, -1) + (1,) * (w.ndim - 2)) * c.reshape((-1,) + (1,) * (w.ndim - 1))
        score = group_rows(contrib, lay.sp).sum(1).numpy()
        keep = select_per_layer(lay, score, left_need * lay.dense_macs / left_macs)
        keep = broadcast_(torch.from_numpy(keep.astype(np.uint8))).numpy().astype(bool)
        lay.set_keep(keep)
        left_need -= float(lay.group_macs[~keep].sum())
        left_macs -= lay.dense_macs
    if left_need > 1e-6 * need_macs:
        raise InputError(f"the heuristic could prune only {need_macs - left_need:.3g} of {need_macs:.3g} MACs per "
                         f"clip (every layer keeps a group); lower flops_target or prune more layers")
    return {"keep_share": keep_share, "traced": bool(consumers)}


# ---- the regularization algorithms ----------------------------------------------------------------------------------

def regularize(model: nn.Module, layers: list[Layer], train_data: Data, need_macs: float, epochs: float,
               tcfg: TrainConfig, rcfg: RegConfig, reweighted: bool) -> tuple[list[np.ndarray], RegState]:
    """The regularization phase (fixed learning rate, ``rcfg.rounds`` rounds), then global hard pruning to the
    target. Returns the keep masks (already applied) and what happened."""
    reg = Regularizer(layers, need_macs, rcfg, reweighted)
    rounds = max(1, rcfg.rounds)
    per_round = epochs / rounds
    checks = max(1, int(math.ceil(per_round * rcfg.checks_per_epoch)))
    name = "reweighted" if reweighted else "group-lasso"
    for r in range(rounds):
        reg.reweight()  # round 0: P from the trained weights; later rounds: from the converging ones
        for c in range(checks):
            train(model, train_data, per_round / checks, tcfg, "fixed", penalty=reg,
                  desc=f"{name} round {r + 1}/{rounds} ({c + 1}/{checks}) lambda {reg.lam:.3g}",
                  epoch_offset=1000 * (r + 1) + 10 * c)
            reg.check()
    keeps = select_global(layers, reg.scores(), need_macs)
    for lay, keep in zip(layers, keeps):
        keep = broadcast_(torch.from_numpy(keep.astype(np.uint8))).numpy().astype(bool)
        lay.set_keep(keep.reshape(structure_shape(lay.shape, lay.sp)))
    reg.state.converged.append(reg.converged_macs() / max(need_macs, 1.0))
    return [lay.keep for lay in layers], reg.state


def retrain(model: nn.Module, layers: list[Layer], train_data: Data, epochs: float, tcfg: TrainConfig) -> float:
    """Masked retraining with a cosine learning rate: pruned weights stay exactly zero."""
    def after_step():
        for lay in layers:
            lay.apply_mask()
    return train(model, train_data, epochs, tcfg, "cosine", after_step=after_step, desc="retrain",
                 epoch_offset=500)
