"""KGS group-size selection: measure candidate group sizes on a target, as the paper does, with synthesized layers.

For each candidate gM x gN, the conv layers of C3D (shapes scaled spatially by ``scale``) get random KGS masks at
the FLOPs reduction ``rate``, are compiled through the target's sparse pipeline and timed (here or on an RPC
tracker's devices) next to the same layers dense. The best group is the one with the lowest total time: the one
the pruning stage should use on that target (its accuracy cost grows with the group size, so prefer the smaller of
two groups within a few percent).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import TuneError

# (in channels, out channels, depth, height/width) of C3D's conv2..conv5b at 1x3x16x112x112
C3D_LAYERS = [(64, 128, 16, 56), (128, 256, 8, 28), (256, 256, 8, 28), (256, 512, 4, 14), (512, 512, 4, 14),
              (512, 512, 2, 7)]
TIE = 0.03  # two groups within 3 % are a tie; the smaller group wins (less accuracy loss in pruning)


@dataclass
class GroupResult:
    group: tuple[int, int]
    ms: float = 0.0  # total over the layers, each at its best measured schedule
    layer_ms: list[float] = field(default_factory=list)
    default_ms: float = 0.0  # total with the heuristic's schedules
    speedup: float = 0.0  # dense total / sparse total
    errors: list[str] = field(default_factory=list)


@dataclass
class GroupReport:
    target: str
    rate: float
    layers: list[str]
    dense_ms: float = 0.0
    dense_layer_ms: list[float] = field(default_factory=list)
    results: list[GroupResult] = field(default_factory=list)
    best: tuple[int, int] | None = None

    def __str__(self) -> str:
        rows = [f"KGS group sizes on {self.target}, {len(self.layers)} C3D-shaped layers at {self.rate}x fewer FLOPs "
                "(sparse layers at their best schedule; 'default': the heuristic's)",
                f"{'group':<8}{'total ms':>10}{'speedup':>9}{'default':>9}  per layer ms"]
        rows.append(f"{'dense':<8}{self.dense_ms:>10.2f}{1.0:>9.2f}{'':>9}  "
                    + " ".join(f"{m:.2f}" for m in self.dense_layer_ms))
        for r in self.results:
            g = f"{r.group[0]}x{r.group[1]}"
            if r.errors:
                rows.append(f"{g:<8}{'failed':>10}  {r.errors[0]}")
                continue
            rows.append(f"{g:<8}{r.ms:>10.2f}{r.speedup:>9.2f}{r.default_ms:>9.2f}  "
                        + " ".join(f"{m:.2f}" for m in r.layer_ms))
        if self.best:
            rows.append(f"best for the pruning stage on {self.target}: group={self.best[0]}x{self.best[1]} "
                        f"(rt3d.prune(..., group={self.best}))")
        return "\n".join(rows)

    def to_json(self) -> dict:
        return asdict(self)


def _layer_model(cin: int, cout: int, d: int, hw: int, weight: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, d, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, d, hw, hw])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3, 3], pads=[1] * 6),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
    g = helper.make_graph(nodes, f"conv_{cin}_{cout}_{d}x{hw}", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def select_group(groups: list[tuple[int, int]], rate: float = 3.6, target: str = "host", tracker: str | None = None,
                 key: str | None = None, scale: float = 0.5, seed: int = 0, timeout: float = 60.0,
                 layers: list[tuple[int, int, int, int]] | None = None, tune: bool = True) -> GroupReport:
    """Time C3D-shaped layers dense and with random KGS masks of each group; with ``tune`` every register tile and
    row-block chunking of the sparse kernel's search space is measured and each layer counts at its best, so that
    groups are compared at their best rather than at the heuristic's choice."""
    from ..frontend.onnx import import_model
    from ..ir.sparsity import Sparsity, random_mask
    from ..passes import PassManager
    from ..targets import get_target
    from .measure import LocalRunner, RPCRunner, Workdir, build_candidate
    from .space import extract_tasks
    if rate <= 1:
        raise TuneError(f"--rate is a FLOPs reduction and must be > 1, got {rate}")
    for g in groups:
        if len(g) != 2 or min(g) < 1:
            raise TuneError(f"a group size is gM x gN with both >= 1, got {'x'.join(map(str, g))}")
    tgt = get_target(target)
    if "sparse_conv3d" not in tgt.lowerings:
        raise TuneError(f"target '{tgt.name}' has no sparse kernels to measure")
    if tracker is None and not tgt.runs_here:
        raise TuneError(f"target '{tgt.name}' cannot be measured on this machine: give a tracker and key")
    shapes = [(ci, co, d, max(4, int(round(hw * scale)))) for ci, co, d, hw in (layers or C3D_LAYERS)]
    runner = RPCRunner(tracker, key or "", timeout=timeout) if tracker else LocalRunner(timeout=timeout)
    work = Workdir()
    rng = np.random.default_rng(seed)
    report = GroupReport(tgt.name, rate, [f"{ci}->{co} {d}x{hw}x{hw}" for ci, co, d, hw in shapes])

    def time_conv(model, sparse: bool) -> tuple[float, float, str]:
        """(best ms, default ms, error) of the model's conv kernel."""
        g = PassManager(tgt.default_passes(always_sparse=sparse)).run(import_model(model))
        task = next(t for t in extract_tasks(g, tgt) if t.node.op in ("conv3d", "sparse_conv3d"))
        if sparse and task.node.op != "sparse_conv3d":
            return 0.0, 0.0, "layer was not compiled sparse"
        configs = [None]
        if tune and sparse:  # the register tile and threading (what the group size changes), in the default's
            d = task.space[0]  # loop order: a row block through all tiles or the reduction split stay as chosen
            configs = [c for c in task.space if (c.tiles, c.split) == (d.tiles, d.split)]
        built = [build_candidate(task, c, tgt, work.path) for c in configs]
        results = runner.run(built)
        work.clean(built)
        ok = [r.ms for r in results if r.ok]
        if not ok:
            return 0.0, 0.0, results[0].error
        return min(ok), results[0].ms if results[0].ok else min(ok), ""

    try:
        weights = [rng.standard_normal((co, ci, 3, 3, 3)).astype(np.float32) * 0.05 for ci, co, _, _ in shapes]
        for (ci, co, d, hw), w in zip(shapes, weights):
            ms, _, err = time_conv(_layer_model(ci, co, d, hw, w), sparse=False)
            if err:
                raise TuneError(f"dense reference layer {ci}->{co} {d}x{hw}x{hw} failed: {err}")
            report.dense_layer_ms.append(ms)
        report.dense_ms = float(sum(report.dense_layer_ms))
        for g in groups:
            r = GroupResult(tuple(g))
            sp = Sparsity("kgs", tuple(g))
            for (ci, co, d, hw), w in zip(shapes, weights):
                mask = random_mask(w.shape, sp, 1.0 / rate, rng)
                ms, dms, err = time_conv(_layer_model(ci, co, d, hw, (w * mask).astype(np.float32)), sparse=True)
                if err:
                    r.errors.append(f"{ci}->{co}: {err}")
                r.layer_ms.append(ms)
                r.default_ms += dms
            r.ms = float(sum(r.layer_ms))
            r.speedup = report.dense_ms / r.ms if r.ms and not r.errors else 0.0
            report.results.append(r)
    finally:
        work.close()
        runner.close()
    ok = [r for r in report.results if not r.errors]
    if ok:
        fastest = min(r.ms for r in ok)
        near = [r for r in ok if r.ms <= fastest * (1 + TIE)]
        report.best = min(near, key=lambda r: (r.group[0] * r.group[1], r.ms)).group
    return report
