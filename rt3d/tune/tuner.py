"""Tuning sessions on this machine: per conv layer, measure schedule records from its search space and append
every result (failures too) to the tuning database. ``--resume`` is implicit: records already in the database are
not measured again, so a second session continues where the first stopped."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

from ..ir.flops import node_macs
from .db import Record, TuningDB
from .space import conv_space, tunable, workload_key


@dataclass
class LayerResult:
    workload: str
    node: str
    default_gflops: float | None = None
    best_gflops: float | None = None
    best: dict | None = None
    trials: int = 0
    failures: int = 0


@dataclass
class TuneReport:
    layers: list[LayerResult] = field(default_factory=list)

    def __str__(self) -> str:
        rows = [f"{'workload':<22}{'trials':>7}{'default':>10}{'best':>10}  best tile"]
        for r in self.layers:
            d = f"{r.default_gflops:.0f}" if r.default_gflops else "-"
            b = f"{r.best_gflops:.0f}" if r.best_gflops else "-"
            rows.append(f"{r.workload:<22}{r.trials:>7}{d:>10}{b:>10}  {r.best}")
        return "\n".join(rows)


def tune_graph(graph, target, db: TuningDB, trials: int = 8, out=sys.stderr) -> TuneReport:
    """Measure up to ``trials`` new candidates for every distinct tunable conv of ``graph`` (after passes)."""
    from .measure import measure_conv
    seen, nodes = set(), []
    for n in sorted((n for n in graph.nodes if tunable(n)), key=node_macs, reverse=True):
        key = workload_key(n)
        if key not in seen:
            seen.add(key)
            nodes.append(n)
    report = TuneReport()
    tkey = target.key()
    for i, node in enumerate(nodes, start=1):
        key = workload_key(node)
        space = conv_space(node, target.vector_lanes)
        done = db.measured(key, tkey)
        todo = [t for t in space if json.dumps(asdict(t), sort_keys=True) not in done][:trials]
        res = LayerResult(key, str(node).split("  #")[0][:80])
        for j, tile in enumerate(todo, start=1):
            try:
                ms, gf = measure_conv(node, tile, target)
                db.append(Record(key, tkey, asdict(tile), gflops=gf, ms=ms))
            except Exception as e:  # a failed build or run is a failed trial; the session goes on
                db.append(Record(key, tkey, asdict(tile), ok=False, error=f"{type(e).__name__}: {e}"[:300]))
                res.failures += 1
            res.trials += 1
            best = db.best(key, tkey)
            print(f"\r[layer {i}/{len(nodes)}] {key} trial {j}/{len(todo)}: best "
                  f"{best.gflops if best else 0:.0f} GFLOP/s {best.config if best else ''}", end="", file=out,
                  flush=True)
        default = json.dumps(asdict(space[0]), sort_keys=True)
        for r in db.records:
            if r.workload == key and r.target == tkey and r.ok and json.dumps(r.config, sort_keys=True) == default:
                res.default_gflops = r.gflops
        best = db.best(key, tkey)
        if best:
            res.best_gflops, res.best = best.gflops, best.config
        report.layers.append(res)
    print(file=out)
    return report


def apply_db(graph, target, db: TuningDB):
    """The target with its ``tuned`` table filled from the best records of ``db`` for this graph's layers."""
    import dataclasses
    from ..targets.arm_neon.conv3d import ConvTile
    tuned, tkey = {}, target.key()
    for n in graph.nodes:
        if tunable(n):
            rec = db.best(workload_key(n), tkey)
            if rec is not None:
                tuned[workload_key(n)] = ConvTile(**rec.config)
    return dataclasses.replace(target, tuned=tuned), len(tuned)


__all__ = ["tune_graph", "apply_db", "TuneReport"]
