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

f_g = MACs of group g / mean MACs of a conv group: each layer's term weighted by its FLOPs, so one lambda works on the
whole model's FLOPs and no per-layer rate is given. Norms are measured in units of the layer's initial weight scale
(rms weight x sqrt(group size); x group size for l1), so one lambda and one eps serve layers of any fan-in.
Fully connected layers (``linear_density``) cost next to no MACs, so no FLOPs target would prune them, yet C3D's
hold 200 MB of weights that every clip streams. They are pruned to a fixed share of their groups, chosen by the same
scores (the heuristic's contributions, the regularizers' norms; the regularizers push them as hard as an average conv
group, f_g = 1), and the MACs they drop count towards the target.
lambda starts where the penalty's gradient on the prunable weights equals the loss's (on one batch) and is then
driven by the target: at every check (8 per epoch) the MACs of the groups that have converged to zero (normalized norm
< zero_tol) are compared with a ramp that reaches the MACs to prune at 3/4 of the phase, and lambda is scaled by
their ratio, by at most 1.25x per check.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from .layers import Layer
from .schemes import group_rows
from .train import Data, TrainConfig, all_reduce_, device_of, train, world

ALGORITHMS = ("heuristic", "group-lasso", "reweighted")


@dataclass
class RegConfig:
    norm: str = "mixed"  # group norm in the regularizer: l1 | l2 | mixed (the paper's best: a mix of l1 and l2)
    lam: float | None = None  # initial lambda; None: where the penalty's gradient is as large as the loss's
    lam_ratio: float = 1.0  # the automatic initial lambda: penalty gradient / loss gradient
    eps: float = 0.01  # reweighting: P = 1 / (||W_g||^2 + eps), norms in units of the layer's weight scale
    rounds: int = 4  # reweighting rounds (the paper: 3 to 4)
    zero_tol: float = 0.05  # a group whose normalized norm is below this has converged to zero
    # no layer is pruned below this share of its MACs: the FLOPs-weighted penalty alone empties layers whose groups
    # are the most expensive (measured: C3D's conv3a/conv4b at 1-3 % and the network at chance with Vanilla 8x4)
    min_density: float = 0.1
    checks_per_epoch: int = 8
    ramp: float = 0.75  # the FLOPs at zero should reach the target by this share of the phase
    lam_step: float = 1.25  # lambda changes by at most this factor per check


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
        macs = np.concatenate([lay.group_macs for lay in layers if lay.density is None]).astype(np.float64)
        mean = macs.mean()
        # a fully connected layer's groups cost next to no MACs but are pruned to a fixed density: they are pushed
        # as hard as an average conv group
        self.f = [torch.as_tensor(lay.group_macs / mean if lay.density is None else np.ones(lay.group_macs.size),
                                  dtype=torch.float32) for lay in layers]
        self.count = float(sum(f.numel() for f in self.f))
        with torch.no_grad():
            self.scale = []
            for lay in layers:
                rms = float(lay.weight.detach().pow(2).mean().sqrt())
                size = torch.as_tensor(lay.sizes, dtype=torch.float32)
                unit = size if cfg.norm == "l1" else size.sqrt()
                self.scale.append(unit * max(rms, 1e-12))
        self.P = [torch.ones_like(f) for f in self.f]
        self.active = [True] * len(layers)
        self.lam = cfg.lam if cfg.lam is not None else 1.0
        self.state = RegState()

    def norms(self, i: int) -> torch.Tensor:
        """Normalized group norms of layer i (differentiable)."""
        lay = self.layers[i]
        return lay.norms(self.cfg.norm) / self.scale[i].to(lay.weight.device)

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.layers[0].weight.device)
        for i, lay in enumerate(self.layers):
            dev = lay.weight.device
            if self.active[i]:
                total = total + (self.f[i].to(dev) * self.P[i].to(dev) * self.norms(i)).sum()
        return self.lam * total / self.count

    def _grad_norm(self) -> float:
        value = self()
        if not value.requires_grad:  # every layer at its floor: no penalty left
            return 0.0
        g = torch.autograd.grad(value, [lay.weight for lay in self.layers], allow_unused=True)
        return float(sum(x.pow(2).sum() for x in g if x is not None) ** 0.5)

    def reweight(self, keep_strength: bool = True) -> None:
        """P_g = 1 / (||W_g||^2 + eps) from the current weights (the paper's update between iterations). With
        ``keep_strength`` lambda is rescaled so that the penalty's gradient keeps its size across the update: the
        new P changes which groups are pushed, lambda's controller alone how hard."""
        if not self.reweighted:
            return
        before = self._grad_norm() if keep_strength else 0.0
        with torch.no_grad():
            self.P = [1.0 / (self.norms(i).detach().cpu() ** 2 + self.cfg.eps) for i in range(len(self.layers))]
        if keep_strength and before > 0:
            self.lam *= before / max(self._grad_norm(), 1e-30)
        allp = torch.cat(self.P)
        self.state.penalties.append({"min": float(allp.min()), "median": float(allp.median()),
                                     "max": float(allp.max())})

    @torch.no_grad()
    def macs_at_zero(self) -> list[float]:
        """Per layer, the MACs of the groups whose normalized norm is below zero_tol."""
        return [float(lay.group_macs[(self.norms(i).cpu() < self.cfg.zero_tol).numpy()].sum())
                for i, lay in enumerate(self.layers)]

    def check(self, progress: float = 1.0) -> None:
        """Record progress and steer lambda: the FLOPs at zero should grow steadily to what the target needs by
        ``ramp`` of the phase (``progress`` = share of the phase done), not all at once (the shares respond late to
        lambda, and a jump in lambda collapses the model)."""
        at_zero = self.macs_at_zero()
        share = sum(z for z, lay in zip(at_zero, self.layers) if lay.density is None) / max(self.need, 1.0)
        # a layer at its floor (min_density) is not pushed any further
        self.active = [z < (1.0 - self.cfg.min_density) * lay.dense_macs for z, lay in zip(at_zero, self.layers)]
        want = min(1.0, progress / self.cfg.ramp)
        self.state.lam.append(self.lam)
        self.state.converged.append(share)
        if share < 0.95 * want or share > 1.1 * max(want, 1e-9):
            self.lam *= float(np.clip(want / max(share, 1e-9), 1 / self.cfg.lam_step, self.cfg.lam_step))

    def calibrate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Set lambda so that the penalty's gradient on the prunable weights is ``lam_ratio`` times the loss's on
        one batch (the same on every rank: the gradients are all-reduced)."""
        weights = [lay.weight for lay in self.layers]
        loss = nn.functional.cross_entropy(model(x), y)
        g_loss = torch.autograd.grad(loss, weights)
        lam, self.lam = self.lam, 1.0
        g_pen = [g for g in torch.autograd.grad(self(), weights, allow_unused=True) if g is not None]
        self.lam = lam
        norms = torch.stack([sum(g.pow(2).sum() for g in g_loss), sum(g.pow(2).sum() for g in g_pen)]).detach()
        all_reduce_(norms)
        self.lam = self.cfg.lam_ratio * float(norms[0].sqrt() / norms[1].sqrt().clamp_min(1e-30))
        return self.lam

    @torch.no_grad()
    def scores(self) -> list[np.ndarray]:
        return [self.norms(i).cpu().numpy() for i in range(len(self.layers))]


def select_global(layers: list[Layer], scores: list[np.ndarray], need_macs: float,
                  min_density: float = 0.0) -> list[np.ndarray]:
    """Keep masks that prune the lowest-scoring groups across all layers until ``need_macs`` MACs are gone. Every
    layer keeps at least its best group and ``min_density`` of its MACs."""
    flat = [(float(s), li, gi) for li, sc in enumerate(scores) for gi, s in enumerate(sc)]
    flat.sort()
    keeps = [np.ones(sc.size, bool) for sc in scores]
    left = [sc.size for sc in scores]
    room = [lay.dense_macs * (1.0 - min_density) for lay in layers]
    removed = 0.0
    deferred = []

    def take(li: int, gi: int, macs: float) -> None:
        nonlocal removed
        keeps[li][gi] = False
        left[li] -= 1
        room[li] -= macs
        removed += macs

    for s, li, gi in flat:
        if removed >= need_macs:
            break
        macs = float(layers[li].group_macs[gi])
        if left[li] <= 1 or macs > room[li]:
            continue
        if removed + macs - need_macs > need_macs - removed:
            deferred.append((li, gi, macs))  # would overshoot the target by more than it is short: a smaller
            continue  # group further down the ranking may fit (coarse groups: Vanilla 8x4 on small layers)
        take(li, gi, macs)
    for li, gi, macs in sorted(deferred, key=lambda d: d[2]):  # still short: the smallest of the deferred
        if removed >= need_macs:
            break
        if left[li] > 1 and macs <= room[li]:
            take(li, gi, macs)
    if removed < need_macs * 0.999:
        raise InputError(f"cannot prune {need_macs:.3g} MACs per clip from the prunable layers (at most "
                         f"{removed:.3g}); lower flops_target or prune more layers (layers=, min_channels=)")
    return keeps


def select_per_layer(layer: Layer, score: np.ndarray, remove_macs: float) -> np.ndarray:
    """Prune the lowest-scoring groups of one layer until the MACs removed are closest to ``remove_macs``; it keeps
    at least its best group."""
    order = np.argsort(score, kind="stable")
    removed = np.concatenate([[0.0], np.cumsum(layer.group_macs[order].astype(np.float64))])
    k = int(np.argmin(np.abs(removed - remove_macs)))
    keep = np.ones(score.size, bool)
    keep[order[:min(k, order.size - 1)]] = False
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
    sums = [torch.zeros(lay.in_channels, dtype=torch.float64) for lay in layers]
    count = torch.zeros(1, dtype=torch.float64)
    hooks = []
    for i, lay in enumerate(layers):
        def hook(mod, inp, out, i=i):
            x = inp[0].detach().double()
            cdim = x.ndim - 1 if isinstance(mod, nn.Linear) else 1
            sums[i] += x.pow(2).mean(dim=tuple(d for d in range(x.ndim) if d != cdim)).cpu() * x.shape[0]
        hooks.append(lay.module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        for x, _ in calib.batches(batch_size, False, 0):
            model(x.to(device_of(model)))
            count += len(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    all_reduce_(count)
    return [all_reduce_(s) / max(float(count), 1.0) for s in sums]


def _sensitivity(lay: Layer, consumers, mods: dict[str, nn.Module]) -> torch.Tensor:
    """c_i: squared weights reading output channel i in the consumers (ones when unknown)."""
    m = lay.out_channels
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
    prunable = float(sum(lay.dense_macs for lay in layers if lay.density is None))
    keep_share = 1.0 - need_macs / prunable
    if keep_share <= 0.0:
        raise InputError(f"the target needs {need_macs:.3g} MACs per clip pruned but the prunable layers have "
                         f"only {prunable:.3g}; lower flops_target or prune more layers (layers=, min_channels=)")
    energy = _input_energy(model, layers, calib, batch_size)
    consumers = _consumers(model, {lay.name for lay in layers})
    mods = dict(model.named_modules())
    left_need, left_macs = float(need_macs), prunable
    scores = {}
    for i in reversed(range(len(layers))):
        lay = layers[i]
        c = _sensitivity(lay, consumers, mods)
        w = lay.weight.detach().double().cpu()
        contrib = w.pow(2) * energy[i].reshape((1, -1) + (1,) * (w.ndim - 2)) * c.reshape((-1,) + (1,) * (w.ndim - 1))
        scores[i] = group_rows(contrib, lay.sp).sum(1).numpy()
        if lay.density is not None:  # a fully connected layer at its fixed density
            keep = select_per_layer(lay, scores[i], (1.0 - lay.density) * lay.dense_macs)
        else:
            keep = select_per_layer(lay, scores[i], left_need * lay.dense_macs / left_macs)
            left_macs -= lay.dense_macs
        lay.set_keep(keep)
        left_need -= float(lay.group_macs[~keep].sum())
    # a layer with too few groups (a stem of one 8x4 group) cannot give its share: the other layers make it up, one
    # group at a time, each offering its next-lowest-scoring group; the smallest offer that covers what is left
    # wins (else the largest), so the target is passed by as little as the groups allow
    while left_need > 1e-6 * need_macs:
        offers = []
        for i, lay in enumerate(layers):
            kept = np.flatnonzero(lay.keep.reshape(-1))
            if kept.size > 1 and lay.density is None:
                g = kept[np.argmin(scores[i][kept])]
                offers.append((float(lay.group_macs[g]), i, g))
        if not offers:
            break
        covering = [o for o in offers if o[0] >= left_need]
        macs, i, g = min(covering) if covering else max(offers)
        keep = layers[i].keep.reshape(-1).copy()
        keep[g] = False
        layers[i].set_keep(keep)
        left_need -= macs
    if left_need > 1e-6 * need_macs:
        raise InputError(f"the heuristic could prune only {need_macs - left_need:.3g} of {need_macs:.3g} MACs per "
                         f"clip (every layer keeps a group); lower flops_target or prune more layers")
    return {"keep_share": keep_share, "traced": bool(consumers)}


# ---- the regularization algorithms ----------------------------------------------------------------------------------

def regularize(model: nn.Module, layers: list[Layer], train_data: Data, need_macs: float, epochs: float,
               tcfg: TrainConfig, rcfg: RegConfig, reweighted: bool) -> RegState:
    """The regularization phase (fixed learning rate, ``rcfg.rounds`` rounds), then global hard pruning to the
    target (the masks are set on the layers). Returns what happened."""
    reg = Regularizer(layers, need_macs, rcfg, reweighted)
    reg.reweight(keep_strength=False)  # round 1: P from the trained weights
    if rcfg.lam is None:
        x, y = next(iter(train_data.batches(tcfg.batch_size, True, tcfg.seed)))
        was = model.training
        model.train()
        dev = device_of(model)
        reg.calibrate(model, x.to(dev), y.to(dev))
        model.train(was)
    rounds = max(1, rcfg.rounds)
    check_every = max(1, len(train_data) // world() // tcfg.batch_size // max(1, rcfg.checks_per_epoch))

    def after_step(step: int, total: int) -> str:
        round_of = lambda s: min(rounds - 1, s * rounds // total)  # noqa: E731  (steps done -> round index)
        if step % check_every == 0 or step == total:
            reg.check(step / total)
        if step < total and round_of(step) != round_of(step - 1):
            reg.reweight()  # rounds 2..: P from the converging weights
        share = reg.state.converged[-1] if reg.state.converged else 0.0
        return f"round {round_of(min(step, total - 1)) + 1}/{rounds} lambda {reg.lam:.3g} at zero {share:.0%}"

    name = "reweighted" if reweighted else "group-lasso"
    train(model, train_data, epochs, tcfg, "fixed", penalty=reg, after_step=after_step, desc=name, epoch_offset=1000)
    scores = reg.scores()
    for lay, score in zip(layers, scores):  # fully connected layers: their fixed density, by their norms
        if lay.density is not None:
            lay.set_keep(select_per_layer(lay, score, (1.0 - lay.density) * lay.dense_macs))
            need_macs -= float(lay.group_macs[~lay.keep.reshape(-1)].sum())
    convs = [i for i, lay in enumerate(layers) if lay.density is None]
    keeps = select_global([layers[i] for i in convs], [scores[i] for i in convs], need_macs, rcfg.min_density)
    for i, keep in zip(convs, keeps):
        layers[i].set_keep(keep)
    return reg.state


def retrain(model: nn.Module, layers: list[Layer], train_data: Data, epochs: float, tcfg: TrainConfig) -> float:
    """Masked retraining with a cosine learning rate: pruned weights stay exactly zero."""
    def after_step(step: int, total: int) -> str:
        for lay in layers:
            lay.apply_mask()
        return ""
    return train(model, train_data, epochs, tcfg, "cosine", after_step=after_step, desc="retrain",
                 epoch_offset=500)
