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
    """One prunable conv: its scheme and group, output positions per clip and the MACs every group costs."""

    name: str
    module: nn.Conv3d
    sp: Sparsity
    positions: int  # output positions (T*H*W) per clip
    sizes: np.ndarray  # real weights per group, flattened structural order
    keep: np.ndarray | None = None  # structural keep mask once pruned
    mask: torch.Tensor | None = field(default=None, repr=False)  # element mask of the weight's shape

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
                layers: list[str] | None = None, min_channels: int = 8) -> list[Layer]:
    """The convs to prune, in execution order: every ``nn.Conv3d`` with groups=1 and at least ``min_channels``
    input channels (stems stay dense), or exactly the modules named in ``layers``. ``group``: one (gM, gN) for
    all, or a dict from layer name to (gM, gN) (key ``"*"`` for the rest)."""
    named = dict(model.named_modules())
    if layers is not None:
        missing = [n for n in layers if n not in named]
        if missing:
            raise InputError(f"layers {missing} are not modules of the model (its convs: "
                             f"{[n for n, m in named.items() if isinstance(m, nn.Conv3d)]})")
        bad = [n for n in layers if not isinstance(named[n], nn.Conv3d) or named[n].groups != 1]
        if bad:
            raise InputError(f"layers {bad} are not Conv3d modules with groups=1: only those can be pruned")
        chosen = set(layers)
    else:
        chosen = {n for n, m in named.items()
                  if isinstance(m, nn.Conv3d) and m.groups == 1 and m.in_channels >= min_channels}
    if isinstance(group, dict):
        unknown = set(group) - set(named) - {"*"}
        if unknown:
            raise InputError(f"group sizes name unknown layers {sorted(unknown)}")
    order: list[tuple[str, int]] = []
    hooks = []
    for name in chosen:
        def hook(mod, inp, out, name=name):
            order.append((name, int(out[0, 0].numel())))
        hooks.append(named[name].register_forward_hook(hook))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape[1:]), device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    seen, result = set(), []
    for name, positions in order:
        if name in seen:
            continue
        seen.add(name)
        mod = named[name]
        sp = _sparsity_for(name, scheme, group)
        result.append(Layer(name, mod, sp, positions, group_sizes(tuple(mod.weight.shape), sp).reshape(-1)))
    if not result:
        raise InputError(f"the model has no Conv3d with groups=1 and >= {min_channels} input channels to prune")
    return result

