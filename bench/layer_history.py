"""Each sparse conv kernel's sparse/dense GFLOP/s over several peer runs (the peer.json that bench/peer_benchmark.py
wrote in each --out folder): in how many runs it was under the per-layer bar, its mean, range and run-by-run ratios,
worst first. On a shared machine the runs differ by more than one change moves a layer: a kernel under the bar in one
run says less than one under it in every run.
Run: .venv/bin/python bench/layer_history.py bench/results/sparse/zen3 bench/results/sparse/zen3/run{2..10}
     [--engine rt3d-kgs] [--bar 0.85] [--out bench/results/sparse/zen3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from engines import write_json, write_text  # noqa: E402
from peer_benchmark import LAYER_BAR, sparse_layer_ratios  # noqa: E402


def load_runs(folders: list[str]) -> list[dict]:
    """The peer reports of ``folders``, in order; a SystemExit naming the folder that has none."""
    runs = []
    for folder in folders:
        path = Path(folder) / "peer.json"
        try:
            res = json.loads(path.read_text())
        except FileNotFoundError:
            raise SystemExit(f"{folder}: no peer.json (the --out folder of a bench/peer_benchmark.py run)") from None
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}: not JSON ({e})") from None
        if not isinstance(res.get("models"), dict):
            raise SystemExit(f"{path}: not a peer report (no 'models')")
        runs.append(res)
    return runs


def history(runs: list[dict], engine: str = "rt3d-kgs", bar: float = LAYER_BAR) -> dict[str, list[dict]]:
    """Per model, per sparse kernel (by layer name; a fused pair is "first+second"): its ratio in each run (None
    where that run has no such kernel or no such engine), the runs under ``bar``, mean, min and max over the runs
    that have it, and its mean time; worst mean first."""
    table: dict[str, dict[str, list]] = {}  # model -> kernel -> per run: its sparse_layer_ratios entry or None
    for i, res in enumerate(runs):
        for model, m in res["models"].items():
            dense, sparse = m.get("engines", {}).get("rt3d"), m.get("engines", {}).get(engine)
            if not dense or not sparse or "layers" not in sparse:
                continue
            for lt in sparse_layer_ratios(dense, sparse):
                table.setdefault(model, {}).setdefault(lt["name"], [None] * len(runs))[i] = lt
    out = {}
    for model, layers in table.items():
        rows = []
        for name, per_run in layers.items():
            have = [lt["ratio"] for lt in per_run if lt]
            rows.append({"layer": name, "ratios": [lt and lt["ratio"] for lt in per_run], "runs": len(have),
                         "under": sum(r < bar for r in have), "mean": statistics.fmean(have), "min": min(have),
                         "max": max(have), "ms": statistics.fmean(lt["ms"] for lt in per_run if lt)})
        out[model] = sorted(rows, key=lambda r: (r["mean"], r["layer"]))
    return out


def markdown(hist: dict[str, list[dict]], labels: list[str], engine: str, bar: float) -> str:
    lines = [f"Sparse/dense GFLOP/s per conv kernel ({engine} against rt3d dense, each kernel timed alone) over "
             f"{len(labels)} runs: {', '.join(f'{i + 1}: {lab}' for i, lab in enumerate(labels))}. Worst mean first; "
             f"'under' counts the runs under {bar}; '-': the run has no such kernel.", ""]
    for model, rows in hist.items():
        under = [r for r in rows if r["under"]]
        every = [r for r in rows if r["under"] == r["runs"]]
        lines += [f"{model}: {len(rows)} kernels, {len(under)} under {bar} in some run, {len(every)} in every run "
                  "that has them", "", "| kernel | under | mean | min-max | by run | mean ms |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            by_run = " ".join("-" if x is None else f"{x:.2f}" for x in r["ratios"])
            lines.append(f"| {r['layer']} | {r['under']} of {r['runs']} | {r['mean']:.2f} | {r['min']:.2f}-"
                         f"{r['max']:.2f} | {by_run} | {r['ms']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="--out folders of bench/peer_benchmark.py runs, oldest first")
    ap.add_argument("--engine", default="rt3d-kgs", help="the sparse engine to compare with rt3d dense")
    ap.add_argument("--bar", type=float, default=LAYER_BAR)
    ap.add_argument("--out", help="write layer_history.json and .md here (default: print only)")
    args = ap.parse_args(argv)
    runs = load_runs(args.folders)
    hist = history(runs, args.engine, args.bar)
    if not hist:
        raise SystemExit(f"none of the runs has both rt3d and {args.engine} with per-kernel times")
    text = markdown(hist, args.folders, args.engine, args.bar)
    print(text)
    if args.out:
        write_json(args.out, "layer_history.json", {"folders": args.folders, "engine": args.engine, "bar": args.bar,
                                                    "models": hist})
        write_text(args.out, "layer_history.md", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
