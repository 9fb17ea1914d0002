"""Tuned against default schedules, end to end: run a local tuning session with a fixed trial budget per layer,
then time the default and the tuned build interleaved (medians). Writes bench/results/tune_compare.json.
Run: .venv/bin/python bench/tune_compare.py [--models c3d,r2plus1d_18] [--trials 6]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402
from peer_benchmark import export_models  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="c3d,r2plus1d_18")
    ap.add_argument("--trials", type=int, default=6, help="schedules measured per distinct conv layer")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--out", default=str(HERE / "results" / "tune_compare.json"))
    args = ap.parse_args(argv)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (path, _, shape) in export_models(args.models.split(","), Path(args.cache)).items():
        db = Path(args.cache) / f"{name}.tune.jsonl"
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        report = rt3d.autotune(path, db=db, trials=args.trials, stream=io.StringIO())
        tune_s = time.perf_counter() - t0
        default, tuned = rt3d.build(path), rt3d.build(path, tuning_db=db)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        runs = {"default": [], "tuned": []}
        for mod in (default, tuned):
            mod.run(x)
        for _ in range(args.rounds):
            for key, mod in (("default", default), ("tuned", tuned)):
                t0 = time.perf_counter()
                mod.run(x)
                runs[key].append((time.perf_counter() - t0) * 1e3)
        results[name] = {"trials_per_layer": args.trials, "tuning_s": tune_s, "runs_ms": runs,
                         "median_ms": {k: statistics.median(v) for k, v in runs.items()},
                         "layers": [vars(r) for r in report.layers]}
        print(f"{name}: tuning {tune_s:.0f} s; default {results[name]['median_ms']['default']:.1f} ms, "
              f"tuned {results[name]['median_ms']['tuned']:.1f} ms (medians of {args.rounds} interleaved runs)")
        print(report)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
