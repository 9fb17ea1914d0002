"""Training and evaluation loops of the pruning stage; unchanged under ``torchrun`` with DistributedDataParallel.

When ``torch.distributed`` is initialized (``torchrun --nproc_per_node N ...``; gloo on CPU, nccl on GPUs), every
rank takes its own shard of each epoch's shuffled order, gradients are averaged by DDP, and the decisions taken from
weights or statistics (penalties, masks, lambda) are identical on every rank because the weights are; statistics
gathered from data are all-reduced, and masks are broadcast from rank 0 as a guard. Only rank 0 shows progress.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ...errors import InputError


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def world() -> int:
    return dist.get_world_size() if distributed() else 1


def _collective(t: torch.Tensor, op) -> torch.Tensor:
    if not distributed():
        return t
    if dist.get_backend() == "nccl" and not t.is_cuda:  # nccl moves only GPU tensors
        g = t.cuda()
        op(g)
        t.copy_(g.cpu())
    else:
        op(t)
    return t


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (no-op when not distributed)."""
    return _collective(t, dist.all_reduce)


def broadcast_(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank, in place."""
    return _collective(t, lambda x: dist.broadcast(x, 0))


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class Data:
    """A labelled clip set as two tensors (clips [n, C, T, H, W], labels [n]), from a torch-style data set
    (``len`` and indexing to (clip, label)), a pair of arrays/tensors, or another Data."""

    def __init__(self, source, name: str = "data"):
        if isinstance(source, Data):
            self.x, self.y = source.x, source.y
        elif isinstance(source, (tuple, list)) and len(source) == 2:
            self.x = torch.as_tensor(np.asarray(source[0]) if not torch.is_tensor(source[0]) else source[0])
            self.y = torch.as_tensor(np.asarray(source[1]) if not torch.is_tensor(source[1]) else source[1])
        elif hasattr(source, "arrays"):
            x, y = source.arrays()
            self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
            items = [source[i] for i in range(len(source))]
            self.x = torch.stack([torch.as_tensor(c) for c, _ in items])
            self.y = torch.as_tensor([int(lab) for _, lab in items])
        else:
            raise InputError(f"{name}: expected a data set (len + indexing to (clip, label)) or (clips, labels), "
                             f"got {type(source).__name__}")
        self.x = self.x.float()
        self.y = self.y.long()
        if self.x.ndim != 5 or self.y.ndim != 1 or len(self.x) != len(self.y) or len(self.x) == 0:
            raise InputError(f"{name}: expected clips [n, C, T, H, W] and labels [n] with n > 0, got "
                             f"{tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, shuffle: bool, seed: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches: the order is one permutation from ``seed`` (same on every rank), dealt so that
        rank r takes every world-th clip; every rank gets the same number of full batches."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        mine = order[rank()::world()]
        per = len(order) // world()  # equal counts, so DDP's collectives line up
        mine = mine[:per]
        for i in range(0, per, batch_size):
            idx = mine[i:i + batch_size]
            if shuffle and len(idx) < batch_size and i > 0:
                break  # drop the ragged last training batch
            yield self.x[idx], self.y[idx]


class Progress:
    """A one-line progress bar on stderr (rank 0 only): in place on a terminal, a line every few seconds
    otherwise."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.n = total, desc, 0
        self.enabled = enabled and rank() == 0
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.time()
        self.info = ""

    def update(self, n: int = 1, info: str = "") -> None:
        self.n += n
        self.info = info or self.info
        now = time.time()
        if self.enabled and (self.tty or now - self.last > 5 or self.n == self.total):
            self.last = now
            frac = self.n / max(self.total, 1)
            bar = "#" * int(frac * 24)
            eta = (now - self.start) / max(frac, 1e-9) * (1 - frac)
            line = f"{self.desc} [{bar:<24}] {self.n}/{self.total} {self.info} eta {eta:.0f}s"
            sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass
class TrainConfig:
    batch_size: int = 32
    lr: float = 5e-4
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = True


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise InputError(f"unknown optimizer '{cfg.optimizer}' (adam or sgd)")


def train(model: nn.Module, data: Data, epochs: float, cfg: TrainConfig, schedule: str = "fixed",
          penalty: Callable[[], torch.Tensor] | None = None, after_step: Callable[[int, int], str] | None = None,
          desc: str = "train", epoch_offset: int = 0) -> float:
    """Train ``epochs`` (may be fractional) epochs with cross entropy (+ ``penalty()``), the learning rate fixed or
    annealed to 0 on a cosine (``schedule``). ``after_step(step, total)`` runs after every optimizer step (masks,
    reweighting, lambda) and may return a status for the progress bar. Returns the mean loss of the last epoch."""
    if epochs <= 0:
        return float("nan")
    net = nn.parallel.DistributedDataParallel(model) if distributed() else model
    opt = make_optimizer(model.parameters(), cfg)
    per_epoch = max(1, len(data) // world() // cfg.batch_size)
    total = max(1, int(round(epochs * per_epoch)))
    bar = Progress(total, desc, cfg.progress)
    step, losses = 0, []
    model.train()
    epoch = 0
    while step < total:
        losses = []
        for x, y in data.batches(cfg.batch_size, True, cfg.seed * 100003 + epoch_offset + epoch):
            if step >= total:
                break
            if schedule == "cosine":
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(net(x.to(device_of(model))), y.to(device_of(model)))
            full = loss + penalty() if penalty is not None else loss
            opt.zero_grad(set_to_none=True)
            full.backward()
            opt.step()
            step += 1
            status = after_step(step, total) if after_step is not None else ""
            losses.append(loss.item())
            bar.update(1, f"loss {np.mean(losses[-20:]):.3f}" + (f" {status}" if status else ""))
        epoch += 1
    bar.close()
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def accuracy(model: nn.Module, data: Data, batch_size: int = 64) -> float:
    """Top-1 accuracy on ``data`` (shards summed over the ranks)."""
    was = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.float64)
    n = len(data)
    for i in range(rank() * batch_size, n, batch_size * world()):
        x, y = data.x[i:i + batch_size], data.y[i:i + batch_size]
        pred = model(x.to(device_of(model))).argmax(1).cpu()
        correct[0] += float((pred == y).sum())
        correct[1] += len(y)
    all_reduce_(correct)
    model.train(was)
    return float(correct[0] / correct[1])


def fit(model: nn.Module, data, epochs: float, lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
        weight_decay: float = 1e-4, progress: bool = True) -> float:
    """Train a dense model from scratch (AdamW, cosine learning rate); the starting point of pruning."""
    cfg = TrainConfig(batch_size=batch_size, lr=lr, optimizer="adam", weight_decay=weight_decay, seed=seed,
                      progress=progress)
    return train(model, Data(data, "train data"), epochs, cfg, "cosine", desc="dense training")
