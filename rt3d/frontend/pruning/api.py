"""``rt3d.prune``: learn Filter / Vanilla / KGS sparsity at a whole-model FLOPs reduction, and its report."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...ir.sparsity import SCHEMES
from .algorithms import ALGORITHMS, RegConfig, heuristic, regularize, retrain
from .layers import Layer, find_layers
from .schemes import NORMS, count_flops
from .train import Data, TrainConfig, accuracy


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, ...]
    sparsity: str  # e.g. kgs(8x4)
    groups: int
    kept_groups: int
    density: float  # kept share of the weights
    dense_macs: int  # per clip
    macs: int


@dataclass
class PruneReport:
    """What ``rt3d.prune`` did: per-layer sparsity and FLOPs, accuracy before and after, and the algorithm's
    trace."""

    scheme: str
    group: object
    algorithm: str
    flops_target: float
    dense_macs: int  # whole model, per clip (conv + linear)
    macs: int
    accuracy_dense: float
    accuracy_pruned: float  # right after hard pruning, before retraining
    accuracy: float  # after retraining
    layers: list[LayerReport]
    seconds: float
    trace: dict = field(default_factory=dict)

    @property
    def flops_reduction(self) -> float:
        return self.dense_macs / max(self.macs, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops_reduction"] = self.flops_reduction
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The per-layer table as text."""
        rows = [f"{'layer':<28} {'shape':<20} {'sparsity':<12} {'kept groups':>13} {'weights':>8} "
                f"{'MMACs':>15}"]
        for lay in self.layers:
            rows.append(f"{lay.name:<28} {'x'.join(map(str, lay.shape)):<20} {lay.sparsity:<12} "
                        f"{lay.kept_groups:>6}/{lay.groups:<6} {lay.density:>8.1%} "
                        f"{lay.dense_macs / 1e6:>7.1f}->{lay.macs / 1e6:<6.1f}")
        rows.append(f"whole model: {self.dense_macs / 1e6:.1f} -> {self.macs / 1e6:.1f} MMACs per clip "
                    f"({self.flops_reduction:.2f}x, target {self.flops_target}x); top-1 {self.accuracy_dense:.1%} "
                    f"dense, {self.accuracy_pruned:.1%} pruned, {self.accuracy:.1%} retrained")
        return "\n".join(rows)


def _split_epochs(epochs, algorithm: str) -> tuple[float, float]:
    if isinstance(epochs, (int, float)):
        total = float(epochs)
        return (0.0, total) if algorithm == "heuristic" else (total * 0.6, total * 0.4)
    prune_e, retrain_e = (float(v) for v in epochs)
    # every algorithm gets the same number of epochs: the heuristic spends the pruning phase's on retraining
    return (0.0, prune_e + retrain_e) if algorithm == "heuristic" else (prune_e, retrain_e)


def prune(model: nn.Module, train_data, val_data, scheme: str = "kgs", group=(8, 4), algorithm: str = "reweighted",
          flops_target: float = 3.6, *, epochs=(6, 4), lr: float = 5e-4, batch_size: int = 32, norm: str = "mixed",
          lam: float | None = None, eps: float = 0.01, rounds: int = 4, min_density: float = 0.1,
          layers: list[str] | None = None, linear_density: float | None = None,
          min_channels: int = 8, calib_clips: int = 256, optimizer: str = "adam", seed: int = 0,
          progress: bool = True, inplace: bool = False) -> tuple[nn.Module, PruneReport]:
    """Prune ``model`` to ``flops_target`` x fewer whole-model FLOPs with structured sparsity.

    ``scheme``: filter | vanilla | kgs. ``group``: (gM, gN) for every layer, or {layer name: (gM, gN), "*": default}.
    ``algorithm``: heuristic | group-lasso | reweighted (see ``rt3d.frontend.pruning.algorithms``). ``train_data`` /
    ``val_data``: torch-style data sets (len + indexing to (clip, label)) or (clips, labels) arrays. ``epochs``:
    (pruning phase, masked retraining), the same total for every algorithm (the heuristic retrains for both).
    ``min_density``: no layer keeps less than this share of its MACs (the regularization algorithms choose the
    per-layer rates themselves; this only stops them from emptying a layer). ``linear_density``: prune the fully
    connected layers too (every ``nn.Linear`` with >= ``min_channels`` inputs but the classifier, the last one run),
    each to keep this share of its groups; their MACs hardly count, their weights do (C3D's fc6/fc7: 200 MB read per
    clip). ``layers``: exactly these modules (Conv3d with groups=1, or Linear with ``linear_density``). Runs
    unchanged under ``torchrun`` (DistributedDataParallel). Returns the pruned model (a copy unless ``inplace``)
    with exact zeros and ``model.rt3d_sparsity`` (layer name -> (Sparsity, keep mask)), and a report.

    Example::

        pruned, report = rt3d.prune(model, MotionDataset(2000), MotionDataset(500, "val"), flops_target=2.6)
        print(report.table())
    """
    if scheme not in SCHEMES:
        raise InputError(f"unknown scheme '{scheme}' (schemes: {', '.join(SCHEMES)})")
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm '{algorithm}' (algorithms: {', '.join(ALGORITHMS)})")
    if norm not in NORMS:
        raise InputError(f"unknown group norm '{norm}' (norms: {', '.join(NORMS)})")
    if not flops_target > 1.0:
        raise InputError(f"flops_target is a reduction factor > 1 (e.g. 3.6), got {flops_target}")
    start = time.time()
    torch.manual_seed(seed)
    train_data, val_data = Data(train_data, "train data"), Data(val_data, "validation data")
    model = model if inplace else copy.deepcopy(model)
    input_shape = (1,) + tuple(train_data.x.shape[1:])
    tcfg = TrainConfig(batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, progress=progress)
    rcfg = RegConfig(norm=norm, lam=lam, eps=eps, rounds=rounds, min_density=min_density)
    prune_e, retrain_e = _split_epochs(epochs, algorithm)

    found = find_layers(model, input_shape, scheme, group, layers, min_channels, linear_density)
    _, _, dense_total = count_flops(model, input_shape)
    need = dense_total - dense_total / flops_target
    acc_dense = accuracy(model, val_data, batch_size)
    trace: dict = {"epochs": [prune_e, retrain_e], "lr": lr, "optimizer": optimizer}
    if algorithm == "heuristic":
        n = min(len(train_data), calib_clips)
        trace.update(heuristic(model, found, Data((train_data.x[:n], train_data.y[:n])), need, batch_size))
    else:
        trace["norm"], trace["eps"], trace["rounds"] = norm, eps, rounds
        state = regularize(model, found, train_data, need, prune_e, tcfg, rcfg, algorithm == "reweighted")
        trace.update(asdict(state))
    acc_pruned = accuracy(model, val_data, batch_size)
    retrain(model, found, train_data, retrain_e, tcfg)
    acc = accuracy(model, val_data, batch_size)
    report = _report(model, found, input_shape, scheme, group, algorithm, flops_target, acc_dense, acc_pruned, acc,
                     time.time() - start, trace)
    model.rt3d_sparsity = {lay.name: (lay.sp, lay.keep.copy()) for lay in found}
    return model, report


def _report(model, found: list[Layer], input_shape, scheme, group, algorithm, flops_target, acc_dense, acc_pruned,
            acc, seconds, trace) -> PruneReport:
    per, total, dense = count_flops(model, input_shape)
    by_name = {lf.name: lf for lf in per}
    layers = []
    for lay in found:
        lf = by_name[lay.name]
        w = lay.weight.detach()
        layers.append(LayerReport(lay.name, lay.shape, str(lay.sp), int(lay.keep.size), int(lay.keep.sum()),
                                  float((w != 0).float().mean()), lf.dense_macs, lf.macs))
    return PruneReport(scheme, group if not isinstance(group, tuple) else list(group), algorithm, flops_target, dense,
                       total, acc_dense, acc_pruned, acc, layers, seconds, trace)


def masks_of(model: nn.Module) -> dict[str, np.ndarray]:
    """The element masks (bool, weight-shaped) of a model returned by ``prune``."""
    from ...ir.sparsity import expand
    sp = getattr(model, "rt3d_sparsity", None)
    if sp is None:
        raise InputError("the model carries no rt3d sparsity: prune it with rt3d.prune first")
    mods = dict(model.named_modules())
    return {name: expand(keep, s, tuple(mods[name].weight.shape)) for name, (s, keep) in sp.items()}


__all__ = ["prune", "PruneReport", "LayerReport", "masks_of"]
