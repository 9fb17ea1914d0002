"""The peer benchmark: rt3d against PyTorch, onnxruntime, OpenVINO (f32 and its default precision), MNN and TVM's
own Relax ONNX pipeline, on C3D and R(2+1)D-18 at 1x3x16x112x112 and S3D at 1x3x16x224x224; fp32, batch 1, all cores.

Engines are interleaved round by round in one process (the order rotated each round: engines.round_order) and each
engine's median is reported, with GFLOP/s, the share of the machine's FMA peak (measured by a kernel rt3d builds with
TVM) and rt3d's per-conv-layer GFLOP/s.
rt3d's per-kernel times are interleaved too (every rt3d engine's kernels timed alone, the modules taking turns
round by round, median per kernel), so the sparse/dense per-layer ratios compare kernels timed side by side.
Writes JSON, a markdown table and a PNG chart. Run: ``bash scripts/bench.sh`` (or this file with the venv python).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from engines import ENGINES, precision_name, round_order, write_json, write_text  # noqa: E402

MODELS = ["c3d", "r2plus1d_18", "s3d"]
LAYER_ROUNDS = 5  # rounds of the interleaved per-kernel timings (at most the benchmark's --rounds)
SLOW_ENGINE_S = 5.0  # an engine slower than this per run is timed once per benchmark, not every round


def export_models(names: list[str], cache: Path) -> dict:
    from rt3d.models import export_onnx, get_model
    out = {}
    for name in names:
        model, shape = get_model(name)
        path = cache / f"{name}.onnx"
        if not path.exists():
            export_onnx(model, shape, path)
        out[name] = (path, model, shape)
    return out


def model_inputs(models: str, cache: str):
    """For each of the comma-separated ``models``: its name, its ONNX file (exported into the ``cache`` folder
    unless already there), torch module and input shape, and the benchmarks' fixed random input."""
    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, (path, module, shape) in export_models(models.split(","), cache_dir).items():
        yield name, path, module, shape, np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def bench_model(name, path, module, shape, engines, rounds, warmup, log) -> dict:
    from rt3d.ir.flops import graph_macs
    macs = graph_macs(rt3d.import_onnx(path))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    prepared, results = {}, {}
    reference = None
    for eng in engines:
        t0 = time.perf_counter()
        try:
            p = ENGINES[eng](path, module, shape)
            y = p.run(x)
            for _ in range(warmup - 1):
                p.run(x)
        except Exception as e:  # a missing or failing peer is reported, the benchmark goes on
            results[eng] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
            log(f"  {eng}: FAILED ({results[eng]['error']})")
            traceback.print_exc(limit=2)
            continue
        y = np.asarray(y).reshape(1, -1)
        if p.info.get("pruned"):
            err = None  # a pruned model computes something else
        else:
            if reference is None:
                reference = y
            err = float(np.abs(y - reference).max() / max(np.abs(reference).max(), 1e-12))
        prepared[eng] = p
        info = {k: v for k, v in p.info.items() if k != "module"}
        results[eng] = {"info": info, "prepare_s": time.perf_counter() - t0, "runs_ms": [],
                        "max_rel_diff_vs_first_engine": err}
        log(f"  {eng}: ready in {time.perf_counter() - t0:.1f} s"
            + (f", rel diff vs {engines[0]} {err:.1e}" if err is not None else " (pruned model)"))
    for r in range(rounds):
        for eng in round_order(list(prepared), r):
            p = prepared[eng]
            if r > 0 and results[eng]["runs_ms"] and min(results[eng]["runs_ms"]) > SLOW_ENGINE_S * 1e3:
                continue
            t0 = time.perf_counter()
            p.run(x)
            results[eng]["runs_ms"].append((time.perf_counter() - t0) * 1e3)
    for eng, res in results.items():
        if "runs_ms" in res and res["runs_ms"]:
            res["median_ms"] = statistics.median(res["runs_ms"])
            # pruned models: GFLOP/s of the MACs they still do
            res["gflops"] = 2 * res["info"].get("kept_macs", macs) / (res["median_ms"] * 1e6)
    mods = {eng: p.info["module"] for eng, p in prepared.items() if eng == "rt3d" or eng.startswith("rt3d-")}
    for eng, layers in interleaved_layer_times(mods, x, min(rounds, LAYER_ROUNDS)).items():
        results[eng]["layers"] = [lt.__dict__ | {"gflops": lt.gflops} for lt in layers]
    for p in prepared.values():
        p.close()
    return {"macs": macs, "input_shape": list(shape), "engines": results}


def interleaved_layer_times(mods: dict, x, rounds: int) -> dict:
    """Every kernel of each rt3d module (name -> Module) timed alone, the modules taking turns over ``rounds``
    rounds, and each kernel's median over the rounds: the sparse/dense ratio of a layer compares kernels timed at the
    same moments of a shared machine (timed one module after the other, R(2+1)D's dense temporal convs once ran
    twice as fast as in the next two runs and moved the ratio of those layers from 1.0 to 0.67)."""
    from rt3d.runtime.module import LayerTime
    rounds = max(1, rounds)
    times: dict[str, list[list]] = {name: [] for name in mods}
    for r in range(rounds):
        for name in round_order(list(mods), r):
            times[name].append(mods[name].layer_times(x, layer_repeat=3))
    out = {}
    for name, per_round in times.items():
        out[name] = [LayerTime(lt.kernel, lt.op, lt.impl, statistics.median(r[k].ms for r in per_round), lt.macs,
                               lt.node) for k, lt in enumerate(per_round[0])]
    return out


def write_reports(res: dict, out: Path) -> None:
    write_json(out, "peer.json", res)
    write_text(out, "peer.md", markdown(res))
    try:
        chart(res, out / "peer.png")
    except ImportError:
        print("matplotlib missing: no chart (pip install -e .[bench])")


def markdown(res: dict) -> str:
    # the peak is measured before the run, after each model and after the run; a neighbour's load on this shared
    # machine lowers a measurement, never raises it, so the highest one is the machine's (on the Zen 2 machine of
    # 2026-12-06 it read 54 before a run and 96 after it while the convs ran at up to 167; 191-193 in the next run)
    peaks = [res["fma_peak"]["gflops"]] + res.get("fma_peak_between", [])
    peaks += [res["fma_peak_after"]["gflops"]] if "fma_peak_after" in res else []
    peak = max(peaks)
    when = "before, between and after the models" if "fma_peak_between" in res else "before and after the run"
    measured = (f" (the highest of {len(peaks)} measurements, {min(peaks):.0f} to {peak:.0f}, {when})"
                if len(peaks) > 1 and min(peaks) < 0.95 * peak else "")
    engines = [e for e in res["engines"] if any(e in m["engines"] for m in res["models"].values())]
    lines = [f"Median latency in ms (GFLOP/s, % of the {peak:.0f} GFLOP/s fp32 FMA peak{measured}); "
             f"{res['machine']['cores']} cores, {res['rounds']} interleaved rounds, {res['date']}.", "",
             "| model | " + " | ".join(_label(res, e) for e in engines) + " |",
             "|---|" + "---|" * len(engines)]
    for name, m in res["models"].items():
        cells = []
        for e in engines:
            r = m["engines"].get(e, {})
            if "median_ms" in r:
                cells.append(f"{r['median_ms']:.0f} ({r['gflops']:.0f}, {100 * r['gflops'] / peak:.0f}%)")
            else:
                cells.append("failed" if "error" in r else "-")
        lines.append(f"| {name} ({2 * m['macs'] / 1e9:.1f} GFLOP) | " + " | ".join(cells) + " |")
    slow = [e for e in engines if any(m["engines"].get(e, {}).get("median_ms", 0) > SLOW_ENGINE_S * 1e3
                                       for m in res["models"].values())]
    if slow:
        lines += ["", f"Engines slower than {SLOW_ENGINE_S:.0f} s per run ({', '.join(_label(res, e) for e in slow)}) "
                      "are timed once, not every round, and left out of the chart."]
    lines += ["", "rt3d conv layers (GFLOP/s and % of peak, each kernel timed alone):", ""]
    for name, m in res["models"].items():
        layers = [lt for lt in m["engines"].get("rt3d", {}).get("layers", []) if lt["op"] == "conv3d"]
        if layers:
            g = sorted(lt["gflops"] for lt in layers)
            t = sum(lt["ms"] for lt in layers)
            all_ms = sum(lt["ms"] for lt in m["engines"]["rt3d"]["layers"])
            wavg = sum(lt["gflops"] * lt["ms"] for lt in layers) / t
            lines.append(f"- {name}: {len(layers)} convs, time-weighted {wavg:.0f} GFLOP/s "
                         f"({100 * wavg / peak:.0f}% of peak), min {g[0]:.0f}, median {g[len(g) // 2]:.0f}, "
                         f"max {g[-1]:.0f}; convs are {100 * t / all_ms:.0f}% of kernel time")
    lines += sparse_markdown(res)
    return "\n".join(lines) + "\n"


LAYER_BAR = 0.85  # the per-layer bar: a sparse kernel's GFLOP/s (kept MACs) over its dense kernel's


def short_layer_name(onnx_name: str) -> str:
    """'/layer4/layer4.0/conv1/conv1.0/conv1.0.0/Conv' -> 'layer4.0/conv1.0.0': the path's components, less the op
    and each component that the next one only extends."""
    parts = [p for p in onnx_name.split("/") if p]
    if len(parts) > 1:
        parts = parts[:-1]
    keep = [p for p, q in zip(parts, parts[1:] + [""]) if not q.startswith(p + ".")]
    return "/".join(keep) or onnx_name


def sparse_layer_ratios(dense: dict, sparse: dict) -> list[dict]:
    """Per sparse conv kernel: its GFLOP/s (kept MACs) / the dense kernel's on the same layer; a fused pair
    (sparse_sep_conv3d, named "first+second") against its two dense convs together."""
    dl = {lt["node"].rsplit("# ", 1)[-1]: lt for lt in dense.get("layers", []) if lt["op"] == "conv3d"}
    out = []
    for lt in sparse.get("layers", []):
        if lt["op"] not in ("sparse_conv3d", "sparse_sep_conv3d"):
            continue
        names = lt["node"].rsplit("# ", 1)[-1].split("+")
        ds = [dl.get(n) for n in names]
        if all(ds) and all(d["gflops"] for d in ds):
            out.append({"name": "+".join(short_layer_name(n) for n in names), "ms": lt["ms"], "impl": lt["impl"],
                        "ratio": lt["gflops"] * sum(d["ms"] for d in ds) / sum(d["gflops"] * d["ms"] for d in ds)})
    return out


def by_round(a: dict, b: dict) -> float | None:
    """Engine a's time over engine b's as the median of the rounds' ratios (None without several rounds of both).
    The engines run one after the other in each round, so contention on a shared machine that hits one engine's
    rounds more moves this less than the ratio of the medians (Zen 3 run 4: R(2+1)D's dense rounds 600-1072 ms, KGS
    190-344)."""
    if not len(a["runs_ms"]) == len(b["runs_ms"]) > 1:
        return None
    return statistics.median(x / y for x, y in zip(a["runs_ms"], b["runs_ms"]))


def sparse_markdown(res: dict) -> list[str]:
    """Pruned rows: speedup over rt3d dense against the FLOPs reduction, KGS vs Vanilla, per-layer efficiency; then
    the KGS conv kernels under the per-layer bar, worst first."""
    rows, under = [], []
    for name, m in res["models"].items():
        dense, kgs, van = (m["engines"].get(e, {}) for e in ("rt3d", "rt3d-kgs", "rt3d-vanilla"))
        if "median_ms" not in dense or "median_ms" not in kgs:
            continue
        rate = kgs["info"]["flops_reduction"]
        speed = dense["median_ms"] / kgs["median_ms"]
        layers = sparse_layer_ratios(dense, kgs)
        ratios = [lt["ratio"] for lt in layers]
        weights = [lt["ms"] for lt in layers]
        wr = sum(r * w for r, w in zip(ratios, weights)) / sum(weights) if weights else float("nan")
        van_ms = van.get("median_ms")
        kv = f"{kgs['median_ms'] / van_ms:.2f}" if van_ms else "-"
        if van_ms and (kr := by_round(kgs, van)):
            kv += f" ({kr:.2f} by round)"
        sp = f"{speed:.2f}x ({speed / rate:.2f} of the rate"
        if dr := by_round(dense, kgs):
            sp += f"; by round {dr:.2f}x, {dr / rate:.2f}"
        rows.append(f"| {name} | {rate}x (layers at {kgs['info']['layer_density']:.0%} density) | "
                    f"{dense['median_ms']:.0f} | {kgs['median_ms']:.0f} | "
                    f"{f'{van_ms:.0f}' if van_ms else '-'} | {sp}) | "
                    f"{kv} | "
                    f"{wr:.2f} (min {min(ratios) if ratios else float('nan'):.2f}) |")
        low = sorted((lt for lt in layers if lt["ratio"] < LAYER_BAR), key=lambda lt: lt["ratio"])
        if layers:
            under.append(f"- {name}: {len(low)} of {len(layers)} ({sum(lt['ms'] for lt in low):.1f} of "
                         f"{sum(weights):.1f} ms)" + (":" if low else ""))
            under += [f"  - {lt['name']}: {lt['ratio']:.3f}, {lt['ms']:.2f} ms, {lt['impl']}" for lt in low]
    if not rows:
        return []
    return ["", "Pruned models (random KGS / Vanilla 8x4 masks at the paper's whole-model FLOPs reductions; "
                "stems dense, fully connected layers pruned too), rt3d, same run:", "",
            "| model | FLOPs reduction | rt3d dense ms | rt3d KGS ms | rt3d Vanilla ms | KGS speedup | KGS/Vanilla "
            "| sparse/dense GFLOP/s per conv layer (time-weighted) |",
            "|---|---|---|---|---|---|---|---|"] + rows + [
            "", f"KGS conv kernels under {LAYER_BAR} of their dense kernels' GFLOP/s (each kernel timed alone; a fused "
                "pair against its two dense convs), worst first:", ""] + under


def _label(res, e: str) -> str:
    for m in res["models"].values():
        info = m["engines"].get(e, {}).get("info")
        if info and e == "openvino-default":
            p = precision_name(info["precision"])
            return f"OpenVINO default ({p}{', not fp32' if p != 'f32' else ''})"
    return {"rt3d": "rt3d", "pytorch": "PyTorch", "onnxruntime": "onnxruntime", "openvino-f32": "OpenVINO f32",
            "mnn": "MNN", "tvm-relax": "TVM Relax"}.get(e, e)


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(res["models"])
    engines = res["engines"]
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        m = res["models"][name]["engines"]
        names = [e for e in engines if "median_ms" in m.get(e, {}) and m[e]["median_ms"] < 5000]
        vals = [m[e]["median_ms"] for e in names]
        ax.barh([_label(res, e) for e in names], vals, color=["tab:red" if e == "rt3d" else "tab:gray" for e in names])
        ax.set_title(name)
        ax.set_xlabel("median latency, ms (lower is better)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the markdown table and chart from the JSON in --out, measuring nothing")
    args = ap.parse_args(argv)
    if args.report_only:
        res = json.loads((Path(args.out) / "peer.json").read_text())
        write_reports(res, Path(args.out))
        print(markdown(res))
        return 0
    from rt3d.targets import get_target
    from rt3d.targets.arm_neon.fma_peak import measure_fma_peak
    log = lambda s: print(s, flush=True)  # noqa: E731
    engines = args.engines.split(",")
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engines {sorted(unknown)}; known: {', '.join(ENGINES)}")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    peak = measure_fma_peak(get_target("host"))
    log(f"fp32 FMA peak: {peak['gflops']:.0f} GFLOP/s on {peak['cores']} cores")
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"cpu": platform.processor() or platform.machine(),
           "llvm_cpu": get_target("host").tvm_target["mcpu"], "cores": len(os.sched_getaffinity(0))},
           "fma_peak": peak, "rounds": args.rounds, "engines": engines, "models": {}}
    models = export_models(args.models.split(","), cache)
    for name, (path, module, shape) in models.items():
        log(f"{name} {shape}:")
        res["models"][name] = bench_model(name, path, module, shape, engines, args.rounds, args.warmup, log)
        gc.collect()
        res.setdefault("fma_peak_between", []).append(measure_fma_peak(get_target("host"))["gflops"])
        write_reports(res, Path(args.out))
    peak_after = measure_fma_peak(get_target("host"))
    res["fma_peak_after"] = peak_after
    write_reports(res, Path(args.out))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
