"""Guided against random search, replayed on a recorded search space.

Timings on a shared 2-core machine vary by several percent from run to run, more than what separates two search
strategies after a few dozen trials. So this benchmark measures every candidate of every layer once (that is what
bench/tune_compare.py's session does when its time budget covers the whole space) and then replays tuning sessions
against that table: each strategy sees exactly the same numbers, and what it found is scored by the table. For each
trial budget and seed, the score is the estimated end-to-end latency of the schedules the session picked (the sum
of its kernel times), as a gap to the best the table holds.

Run (after bench/tune_compare.py --model M):  .venv/bin/python bench/search_compare.py --model r2plus1d_18
Writes bench/results/tune/<model>.search.json and .md.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from rt3d.frontend.onnx import import_model  # noqa: E402
from rt3d.passes import PassManager  # noqa: E402
from rt3d.targets import get_target  # noqa: E402
from rt3d.tune import TuningDB, extract_tasks, tune_graph  # noqa: E402
from rt3d.tune.measure import Built, Result  # noqa: E402
from rt3d.tune.space import config_key  # noqa: E402


class ReplayRunner:
    name = "replay"

    def __init__(self, table):
        self.table = table

    def devices(self) -> int:
        return 1

    def run(self, batch):
        out = []
        for b in batch:
            key = (b.task.workload, config_key(b.config) if b.config is not None else "{}")
            ms = self.table.get(key)
            out.append(Result(ms=ms, device="replay") if ms else Result(error="failed when recorded"))
        return out

    def close(self) -> None:
        pass


def replay_builder(task, config, target, workdir):
    return Built(task, config)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="r2plus1d_18")
    ap.add_argument("--db", help="recorded measurements (default bench/.cache/MODEL.tune.jsonl)")
    ap.add_argument("--budgets", default="25,50,100,200")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default=str(HERE / "results" / "tune"))
    args = ap.parse_args(argv)
    tgt = get_target("host")
    db = TuningDB(args.db or HERE / ".cache" / f"{args.model}.tune.jsonl")
    table = {}
    for r in db.records:
        if r.target == tgt.key() and r.stage in ("", "estimate") and r.workload != "@session":
            table[(r.workload, config_key(r.config))] = r.ms if r.ok else 0.0
    g = PassManager(tgt.default_passes()).run(import_model(str(HERE / ".cache" / f"{args.model}.onnx")))
    tasks = extract_tasks(g, tgt)
    covered = sum(sum((t.workload, config_key(c)) in table for c in t.space) for t in tasks if t.space)
    size = sum(len(t.space) for t in tasks if t.space)
    if covered < size:
        print(f"the table covers {covered} of {size} candidates: replayed spaces are cut to the recorded ones")
        for t in tasks:
            t.space = [c for c in t.space if (t.workload, config_key(c)) in table]
    best = sum(t.count * min((table[(t.workload, config_key(c))] for c in t.space
                              if table[(t.workload, config_key(c))] > 0), default=0.0)
               if t.space else t.count * table.get((t.workload, "{}"), 0.0) for t in tasks)
    default = sum(t.count * table.get((t.workload, config_key(t.space[0]) if t.space else "{}"), 0.0) for t in tasks)
    res = {"model": args.model, "candidates": covered, "optimum_ms": best, "default_ms": default, "runs": {}}
    print(f"{args.model}: {covered} candidates; defaults {default:.1f} ms, best in the table {best:.1f} ms")
    for budget in (int(b) for b in args.budgets.split(",")):
        for kind in ("random", "guided"):
            found = []
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as d:
                    rep = tune_graph(g, tgt, TuningDB(Path(d) / "r.jsonl"), ReplayRunner(table), trials=budget,
                                     search=kind, seed=seed, out=None, validate=0, builder=replay_builder)
                found.append(rep.est_best_ms)
            res["runs"][f"{kind}@{budget}"] = found
            gap = [100 * (f / best - 1) for f in found]
            print(f"  {budget:>4} trials {kind:>7}: {statistics.mean(found):.1f} ms "
                  f"(gap to best {statistics.mean(gap):.2f} % +- {statistics.pstdev(gap):.2f})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.model}.search.json").write_text(json.dumps(res, indent=1))
    lines = [f"{args.model}: replayed on {covered} recorded candidates; defaults {default:.1f} ms, best "
             f"{best:.1f} ms (estimated end to end, sum of kernel times); mean of {args.seeds} seeds", "",
             "| trials | random: ms (gap to best) | guided: ms (gap to best) |", "|---|---|---|"]
    for budget in (int(b) for b in args.budgets.split(",")):
        cells = []
        for kind in ("random", "guided"):
            f = res["runs"][f"{kind}@{budget}"]
            cells.append(f"{statistics.mean(f):.1f} ({100 * (statistics.mean(f) / best - 1):.1f} %)")
        lines.append(f"| {budget} | {cells[0]} | {cells[1]} |")
    (out / f"{args.model}.search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if math.isfinite(best) else 1


if __name__ == "__main__":
    raise SystemExit(main())
