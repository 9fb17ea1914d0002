"""Search strategies: which candidates of a task to measure next.

``random``: the default first, then uniformly among the unmeasured. ``guided``: the default first, then the
candidates a cost model ranks best, with a share of random exploration. The cost model is a ridge regression
from ``space.features`` to log(GFLOP/s of a schedule / GFLOP/s of the layer's default schedule), fitted after
every round on the successful measurements of the model's layers (this session's and those already in the
database), blended with what the same schedule did on other layers of the same class. Until the regression has
MIN_RECORDS informative samples, only the class transfer ranks; the rest is in random order.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.interpreter import conv_out_spatial
from .space import Task, config_key, features

MIN_RECORDS = 6  # records needed before the model ranks candidates


def layer_class(task: Task) -> tuple:
    """Layers of one class take the same schedules well: same op, stride, input layout, kernel shape, width."""
    n = task.node
    a = n.attrs
    if n.op in ("sparse_conv3d", "sparse_sep_conv3d"):
        return (n.op, tuple(a.stride), tuple(a.group), tuple(a.kernel))
    w = n.inputs[1].type.shape
    return (n.op, tuple(a.stride[-2:]), bool(a.in_block), tuple(w[2:]), conv_out_spatial(n)[-1])


class CostModel:
    """Ridge regression on ``features`` plus what the same schedule did on other layers of the same class: where a
    schedule was measured on such layers, the mean of its measured ratios is blended with the regression's guess
    (weighted by how many layers measured it)."""

    def __init__(self, ridge: float = 0.3, prior: float = 1.0):
        self.ridge, self.prior = ridge, prior
        self.coef: np.ndarray | None = None
        self.n = 0
        self.seen: dict[tuple, dict[str, float]] = {}  # (class, config key) -> {workload: log ratio}
        self._features: dict[tuple[str, str], np.ndarray] = {}  # refitted every round: computed once per pair

    def features(self, task: Task, config) -> np.ndarray:
        key = (task.workload, config_key(config))
        f = self._features.get(key)
        if f is None:
            f = self._features[key] = features(task, config)
        return f

    def fit(self, samples: list[tuple[Task, object, float]], defaults: dict[str, float]) -> None:
        """``samples``: (task, config, gflops); ``defaults``: workload -> GFLOP/s of its default schedule."""
        rows, ys = [], []
        self.seen = {}
        for task, cfg, gf in samples:
            base = defaults.get(task.workload)
            if base and gf > 0:
                rows.append(self.features(task, cfg))
                ys.append(math.log(gf / base))
                self.seen.setdefault((layer_class(task), config_key(cfg)), {})[task.workload] = ys[-1]
        self.n = sum(1 for y in ys if y != 0.0)  # defaults (ratio 1) carry no information
        if self.n < MIN_RECORDS:
            self.coef = None
            return
        X, y = np.array(rows), np.array(ys)
        A = X.T @ X + self.ridge * np.eye(X.shape[1])
        self.coef = np.linalg.solve(A, X.T @ y)

    def predict(self, task: Task, configs: list, rng: np.random.Generator | None = None) -> np.ndarray:
        """Predicted log(GFLOP/s / default's). Before the regression has enough data, schedules measured on
        layers of the same class still count; the others score 0 and are ordered at random (``rng``)."""
        cls = layer_class(task)
        rng = rng or np.random.default_rng(0)
        out = []
        for c in configs:
            guess = float(self.features(task, c) @ self.coef) if self.coef is not None else 1e-6 * rng.random()
            other = [v for w, v in self.seen.get((cls, config_key(c)), {}).items() if w != task.workload]
            out.append((self.prior * guess + sum(other)) / (self.prior + len(other)))
        return np.array(out)


class Search:
    """Proposes candidates of a task whose config keys are not in ``measured`` (the default first)."""

    def __init__(self, kind: str = "guided", seed: int = 0, explore: float = 0.2):
        if kind not in ("guided", "random"):
            from ..errors import TuneError
            raise TuneError(f"unknown search '{kind}': use 'guided' or 'random'")
        self.kind, self.explore = kind, explore
        self.rng = np.random.default_rng(seed)
        self.model = CostModel()

    def update(self, samples, defaults) -> None:
        if self.kind == "guided":
            self.model.fit(samples, defaults)

    def propose(self, task: Task, measured: set[str], n: int) -> list:
        todo = [c for c in task.space if config_key(c) not in measured]
        if not todo or n <= 0:
            return []
        out = []
        if config_key(task.space[0]) not in measured:  # the default is always measured first
            out.append(todo.pop(0))
        if self.kind == "random":
            idx = self.rng.permutation(len(todo))[: n - len(out)]
            return out + [todo[i] for i in idx]
        scores = self.model.predict(task, todo, self.rng)
        order = list(np.argsort(-scores, kind="stable"))
        while len(out) < n and order:
            if self.rng.random() < self.explore:
                pick = order.pop(int(self.rng.integers(len(order))))
            else:
                pick = order.pop(0)
            out.append(todo[pick])
        return out
