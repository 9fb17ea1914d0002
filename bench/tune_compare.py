"""Tuned against default schedules: a tuning session on C3D with a fixed time budget, then the default and the
tuned build timed side by side (interleaved rounds, medians), end to end and per conv layer. With
``--search-trials N`` it also runs the guided and the random search with the same N trials from empty databases
and compares what each found (estimated end to end, the sum of the best kernel times).

With ``--scheme kgs`` (or vanilla) the question is whether tuning changes the sparse speedup: the model is also
pruned at random as the peer benchmark prunes it (bench/engines.py: the paper's whole-model rate, KGS 8x4), both the
dense and the pruned model get a tuning session of ``--minutes`` each, and the four builds (dense and pruned, default
and tuned) are timed side by side; the per-layer table is the pruned model's.

Writes bench/results/tune/<model>[.<scheme>].json and .md. Run (about 30 minutes with the defaults):
    TVM_NUM_THREADS=2 .venv/bin/python bench/tune_compare.py --model c3d --minutes 20 --search-trials 60
    TVM_NUM_THREADS=2 .venv/bin/python bench/tune_compare.py --model c3d --minutes 15 --search-trials 0 --scheme kgs
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402
from engines import SPARSE_RATES, interleaved, write_json, write_text  # noqa: E402
from peer_benchmark import export_models  # noqa: E402


def session(path, db: Path, **kw):
    db.unlink(missing_ok=True)
    log = io.StringIO()
    t0 = time.perf_counter()
    report = rt3d.autotune(path, db=db, stream=log, **kw)
    print(f"  {kw.get('search', 'guided')}: {report.trials} trials ({report.failures} failed) in "
          f"{time.perf_counter() - t0:.0f} s; estimated end to end {report.est_default_ms:.1f} -> "
          f"{report.est_best_ms:.1f} ms", flush=True)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="c3d")
    ap.add_argument("--minutes", type=float, default=20.0, help="time budget of the main tuning session")
    ap.add_argument("--search-trials", type=int, default=60, help="guided vs random at this many trials (0: skip)")
    ap.add_argument("--trials", type=int, default=100000, help="the tuning sessions stop after this many trials")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--out", default=str(HERE / "results" / "tune"))
    ap.add_argument("--scheme", choices=("dense", "kgs", "vanilla"), default="dense",
                    help="kgs / vanilla: also tune the model pruned at random (8x4, the paper's rate) and compare the "
                         "sparse speedup default and tuned")
    args = ap.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    name = args.model
    path, _, shape = export_models([name], cache)[name]
    res = {"model": name, "threads": os.environ.get("TVM_NUM_THREADS"), "minutes": args.minutes}
    if args.scheme != "dense":
        return _sparse(args, name, path, shape, res, cache, out)

    if args.search_trials:
        print(f"{name}: guided vs random search, {args.search_trials} trials each", flush=True)
        res["search"] = {}
        for kind in ("random", "guided"):
            r = session(path, cache / f"{name}.{kind}.jsonl", trials=args.search_trials, search=kind)
            res["search"][kind] = {"trials": r.trials, "failures": r.failures, "est_default_ms": r.est_default_ms,
                                   "est_best_ms": r.est_best_ms,
                                   "layers": {x.workload: x.best_gflops for x in r.layers if x.tunable}}

    print(f"{name}: tuning for {args.minutes:.0f} minutes (guided search)", flush=True)
    db = cache / f"{name}.tune.jsonl"
    report = session(path, db, trials=args.trials, time_budget=args.minutes * 60)
    res["session"] = report.to_json()

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
    res["end_to_end_ms"] = {k: statistics.median(v) for k, v in runs.items()}
    res["runs_ms"] = runs
    res["layers"] = _layers(default, tuned, x, ("conv3d",))
    write_json(out, f"{name}.json", res)
    md = markdown(res)
    write_text(out, f"{name}.md", md)
    print(md)
    return 0


def _layers(default, tuned, x, ops) -> list[dict]:
    """The default and the tuned build's layers of ``ops``, each kernel timed alone."""
    per = {}
    for key, mod in (("default", default), ("tuned", tuned)):
        rep = mod.benchmark(x, repeat=3, per_layer=True, layer_repeat=7)
        per[key] = [lt for lt in rep.layers if lt.op in ops]
    return [{"node": d.node.split("#")[-1].strip(), "default_ms": d.ms, "tuned_ms": t.ms,
             "default_impl": d.impl, "tuned_impl": t.impl, "default_gflops": d.gflops,
             "tuned_gflops": t.gflops} for d, t in zip(per["default"], per["tuned"])]


def _sparse(args, name: str, path: Path, shape, res: dict, cache: Path, out: Path) -> int:
    """Dense and pruned model, each tuned for ``args.minutes``; the four builds timed side by side."""
    from rt3d.models.sparse import sparsify
    from rt3d.runtime.artifact import atomic_write_bytes
    rate = SPARSE_RATES.get(name, 2.0)
    sparse_path = cache / f"{name}.{args.scheme}.onnx"
    if not sparse_path.exists():
        pruned, _ = sparsify(path, f"{args.scheme}(8x4)", rate, seed=0,
                             min_channels=16 if name in SPARSE_RATES else 4)  # as bench/engines.py prunes
        atomic_write_bytes(sparse_path, pruned.SerializeToString())
    res.update({"scheme": args.scheme, "flops_reduction": rate, "sessions": {}})
    dbs = {}
    for kind, p in (("dense", path), (args.scheme, sparse_path)):
        print(f"{name} {kind}: tuning for {args.minutes:.0f} minutes (guided search)", flush=True)
        dbs[kind] = cache / f"{name}.{kind}.tune.jsonl"
        res["sessions"][kind] = session(p, dbs[kind], trials=args.trials, time_budget=args.minutes * 60).to_json()
    mods = {f"{kind} {how}": rt3d.build(p, tuning_db=dbs[kind] if how == "tuned" else None)
            for kind, p in (("dense", path), (args.scheme, sparse_path)) for how in ("default", "tuned")}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for mod in mods.values():
        mod.run(x)

    def time_ms(mod) -> float:
        t0 = time.perf_counter()
        mod.run(x)
        return (time.perf_counter() - t0) * 1e3
    res["end_to_end_ms"] = interleaved(mods, args.rounds, time_ms)
    res["layers"] = _layers(mods[f"{args.scheme} default"], mods[f"{args.scheme} tuned"], x,
                            ("conv3d", "sparse_conv3d", "sparse_sep_conv3d"))
    write_json(out, f"{name}.{args.scheme}.json", res)
    md = sparse_markdown(res)
    write_text(out, f"{name}.{args.scheme}.md", md)
    print(md)
    return 0


def sparse_markdown(res: dict) -> str:
    e, sc, rate = res["end_to_end_ms"], res["scheme"], res["flops_reduction"]
    lines = [f"{res['model']} dense and {sc} 8x4 at {rate}x fewer FLOPs, each tuned for up to {res['minutes']:.0f} "
             f"min (TVM_NUM_THREADS={res['threads']}); medians of interleaved runs:", "",
             "| schedules | trials | dense ms | pruned ms | speedup | of the FLOPs reduction |", "|---|---|---|---|---|---|"]
    for how in ("default", "tuned"):
        d, p = e[f"dense {how}"], e[f"{sc} {how}"]
        trials = "-" if how == "default" else " / ".join(str(res["sessions"][k]["trials"]) for k in ("dense", sc))
        lines.append(f"| {how} | {trials} | {d:.1f} | {p:.1f} | {d / p:.2f}x | {d / p / rate:.2f} |")
    lines += ["", f"{sc} layers, each kernel timed alone:", "",
              "| layer | default ms | tuned ms | speedup | default schedule | tuned schedule |",
              "|---|---|---|---|---|---|"]
    for r in res["layers"]:
        sched = lambda i: i.split("(", 1)[-1].rstrip(")")  # noqa: E731
        lines.append(f"| {r['node']} | {r['default_ms']:.2f} | {r['tuned_ms']:.2f} | "
                     f"{r['default_ms'] / r['tuned_ms']:.2f}x | {sched(r['default_impl'])} | "
                     f"{sched(r['tuned_impl'])} |")
    return "\n".join(lines) + "\n"


def markdown(res: dict) -> str:
    e = res["end_to_end_ms"]
    s = res["session"]
    lines = [f"{res['model']}: {s['trials']} trials ({s['failures']} failed) in {s['seconds'] / 60:.1f} min of a "
             f"{res['minutes']:.0f} min budget ({s['stopped']}; TVM_NUM_THREADS={res['threads']}); "
             f"estimated end to end {s['est_default_ms']:.1f} -> {s['est_best_ms']:.1f} ms; "
             f"measured end to end, median of interleaved runs: default "
             f"{e['default']:.1f} ms, tuned {e['tuned']:.1f} ms ({e['default'] / e['tuned']:.2f}x)", "",
             "| conv layer | default ms | tuned ms | speedup | default tile | tuned tile |", "|---|---|---|---|---|---|"]
    for r in res["layers"]:
        tile = lambda i: i.split("tile=")[-1].rstrip(")")  # noqa: E731
        lines.append(f"| {r['node']} | {r['default_ms']:.2f} | {r['tuned_ms']:.2f} | "
                     f"{r['default_ms'] / r['tuned_ms']:.2f}x | {tile(r['default_impl'])} | {tile(r['tuned_impl'])} |")
    if "search" in res:
        lines += ["", "| search | trials | estimated end to end (sum of best kernel times) |", "|---|---|---|"]
        for kind, r in res["search"].items():
            lines.append(f"| {kind} | {r['trials']} | {r['est_default_ms']:.1f} -> {r['est_best_ms']:.1f} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
