"""The prunable layers of a torch model: which convs, their sparsity, what each group costs, and their masks."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...ir.sparsity import Sparsity
from .schemes import element_mask, group_norms, group_sizes, structure_shape


@dataclass
class Layer:
    """One prunable layer (a conv, or a fully connected layer at a fixed density): its scheme and group, output
    positions per clip and the MACs every group costs."""

    name: str
    module: nn.Conv3d | nn.Linear
    sp: Sparsity
    positions: int  # output positions per clip (T*H*W for a conv, 1 for a linear layer on a flat input)
    sizes: np.ndarray  # real weights per group, flattened structural order
    keep: np.ndarray | None = None  # structural keep mask once pruned
    mask: torch.Tensor | None = field(default=None, repr=False)  # element mask of the weight's shape
    density: float | None = None  # a fully connected layer's fixed share of kept groups (convs: None, the
    # algorithm chooses)

    @property
    def linear(self) -> bool:
        return isinstance(self.module, nn.Linear)

    @property
    def in_channels(self) -> int:
        return self.module.in_features if self.linear else self.module.in_channels

    @property
    def out_channels(self) -> int:
        return self.module.out_features if self.linear else self.module.out_channels

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)

    @property
    def group_macs(self) -> np.ndarray:
        """Multiply-accumulates per clip that each group costs (flattened structural order)."""
        return self.sizes * self.positions

    @property
    def dense_macs(self) -> int:
        return int(self.weight[0].numel() * self.weight.shape[0] * self.positions)

    def norms(self, norm: str = "l2") -> torch.Tensor:
        """Group norms, flattened (differentiable)."""
        return group_norms(self.weight, self.sp, norm).reshape(-1)

    def set_keep(self, keep: np.ndarray) -> None:
        """Fix the structural keep mask and zero the pruned weights. Under torchrun every rank takes rank 0's mask
        (they agree anyway, since the weights do; this guards against any divergence)."""
        from .train import broadcast_
        keep = np.asarray(keep, bool).reshape(-1)
        keep = broadcast_(torch.from_numpy(keep.astype(np.uint8))).numpy().astype(bool)
        keep = keep.reshape(structure_shape(self.shape, self.sp))
        self.keep = keep
        self.mask = element_mask(keep, self.sp, self.shape).to(self.weight.device, self.weight.dtype)
        self.apply_mask()

    @torch.no_grad()
    def apply_mask(self) -> None:
        if self.mask is not None:
            self.weight.mul_(self.mask)


def _sparsity_for(name: str, scheme: str, group, default=(8, 4)) -> Sparsity:
    if isinstance(group, dict):
        g = group.get(name, group.get("*", default))
    else:
        g = group if group is not None else default
    g = tuple(int(v) for v in g)
    if len(g) != 2:
        raise InputError(f"layer '{name}': a group size is (gM, gN), got {g}")
    return Sparsity(scheme, g if scheme != "filter" else (1, 1))


def find_layers(model: nn.Module, input_shape: tuple[int, ...], scheme: str = "kgs", group=(8, 4),
                layers: list[str] | None = None, min_channels: int = 8,
                linear_density: float | None = None) -> list[Layer]:
    """The layers to prune, in execution order: every ``nn.Conv3d`` with groups=1 and at least ``min_channels``
    input channels (stems stay dense), or exactly the modules named in ``layers``. ``group``: one (gM, gN) for
    all, or a dict from layer name to (gM, gN) (key ``"*"`` for the rest).

    Fully connected layers are pruned only with ``linear_density`` (the share of their groups they keep): then every
    ``nn.Linear`` with at least ``min_channels`` inputs except the last one run (the classifier) is taken too, or
    the ones named in ``layers``."""
    named = dict(model.named_modules())
    if linear_density is not None and not 0.0 < float(linear_density) <= 1.0:
        raise InputError(f"linear_density is the share of a fully connected layer's groups it keeps, in (0, 1]; "
                         f"got {linear_density}")
    prunable = lambda m: isinstance(m, nn.Linear) or (isinstance(m, nn.Conv3d) and m.groups == 1)  # noqa: E731
    if layers is not None:
        missing = [n for n in layers if n not in named]
        if missing:
            raise InputError(f"layers {missing} are not modules of the model (its prunable layers: "
                             f"{[n for n, m in named.items() if prunable(m)]})")
        bad = [n for n in layers if not prunable(named[n])]
        if bad:
            raise InputError(f"layers {bad} are not Conv3d modules with groups=1 or Linear modules: only those can "
                             f"be pruned")
        linear = [n for n in layers if isinstance(named[n], nn.Linear)]
        if linear and linear_density is None:
            raise InputError(f"layers {linear} are fully connected: they are pruned to a fixed share of their groups, "
                             f"give it as linear_density (e.g. 0.25)")
        chosen = set(layers)
    else:
        chosen = {n for n, m in named.items()
                  if isinstance(m, nn.Conv3d) and m.groups == 1 and m.in_channels >= min_channels}
        if linear_density is not None:
            chosen |= {n for n, m in named.items() if isinstance(m, nn.Linear) and m.in_features >= min_channels}
    if isinstance(group, dict):
        unknown = set(group) - set(named) - {"*"}
        if unknown:
            raise InputError(f"group sizes name unknown layers {sorted(unknown)}")
    order: list[tuple[str, int]] = []
    ran: list[str] = []  # every linear layer, in the order they run (the last one is the classifier)
    hooks = []
    for name, mod in named.items():
        if name not in chosen and not isinstance(mod, nn.Linear):
            continue

        def hook(mod, inp, out, name=name):
            if isinstance(mod, nn.Linear):
                ran.append(name)
            if name in chosen:
                per_sample = out[0].numel()
                order.append((name, per_sample // out.shape[-1] if isinstance(mod, nn.Linear) else per_sample //
                              out.shape[1]))
        hooks.append(mod.register_forward_hook(hook))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape[1:]), device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if layers is None and ran:
        order = [(n, p) for n, p in order if n != ran[-1]]
    seen, result = set(), []
    for name, positions in order:
        if name in seen:
            continue
        seen.add(name)
        mod = named[name]
        sp = _sparsity_for(name, scheme, group)
        result.append(Layer(name, mod, sp, positions, group_sizes(tuple(mod.weight.shape), sp).reshape(-1),
                            density=float(linear_density) if isinstance(mod, nn.Linear) else None))
    if not result or (layers is None and all(lay.linear for lay in result)):
        raise InputError(f"the model has no Conv3d with groups=1 and >= {min_channels} input channels to prune")
    return result
