"""Where end-to-end time goes: each model, dense and pruned as in the sparse peer run (bench/engines.py), timed end to
end, with every kernel timed alone (run over and over: warm caches) and in the model (the kernels in order on the
previous kernels' outputs: Module.benchmark(layer_mode="in-model")), summed per kernel family.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/e2e_breakdown.py [--models c3d,r2plus1d_18,s3d]
     [--engines rt3d,rt3d-kgs] [--rounds 7] [--out bench/results/sparse]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from engines import ENGINES, write_json, write_text  # noqa: E402
from peer_benchmark import MODELS, model_inputs  # noqa: E402


def family(impl: str) -> str:
    """'sparse_conv3d.flat3(kgs(8x4), ...)' -> 'sparse_conv3d.flat3'."""
    return impl.split("(")[0]


def breakdown(mod, x, rounds: int) -> dict:
    alone = mod.benchmark(x, repeat=rounds, warmup=2, layer_repeat=5, layer_mode="alone")
    chain = mod.benchmark(x, repeat=rounds, warmup=2, layer_repeat=rounds, layer_mode="in-model")
    fams: dict[str, dict] = defaultdict(lambda: {"kernels": 0, "alone_ms": 0.0, "in_model_ms": 0.0})
    for a, c in zip(alone.layers, chain.layers):
        f = fams[family(a.impl)]
        f["kernels"] += 1
        f["alone_ms"] += a.ms
        f["in_model_ms"] += c.ms
    return {"e2e_ms": min(alone.median_ms, chain.median_ms), "alone_ms": sum(lt.ms for lt in alone.layers),
            "in_model_ms": sum(lt.ms for lt in chain.layers), "families": dict(fams),
            "layers": [{"kernel": a.kernel, "impl": a.impl, "alone_ms": a.ms, "in_model_ms": c.ms}
                       for a, c in zip(alone.layers, chain.layers)]}


def markdown(res: dict) -> str:
    lines = [f"End to end against the kernels timed alone and in the model; {res['rounds']} rounds, {res['date']}.", ""]
    for model, engines in res["models"].items():
        for eng, r in engines.items():
            lines += [f"{model} {eng}: end to end {r['e2e_ms']:.1f} ms, kernels alone {r['alone_ms']:.1f} ms "
                      f"(+{100 * (r['e2e_ms'] / r['alone_ms'] - 1):.0f} %), in the model {r['in_model_ms']:.1f} ms", "",
                      "| kernel family | kernels | alone ms | in the model ms | in the model / alone |",
                      "|---|---|---|---|---|"]
            for name, f in sorted(r["families"].items(), key=lambda kv: -kv[1]["in_model_ms"]):
                if f["in_model_ms"] >= 0.05:
                    lines.append(f"| {name} | {f['kernels']} | {f['alone_ms']:.2f} | {f['in_model_ms']:.2f} | "
                                 f"{f['in_model_ms'] / max(f['alone_ms'], 1e-9):.2f} |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--engines", default="rt3d,rt3d-kgs", help="rt3d engines of bench/engines.py")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "sparse"))
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    args = ap.parse_args(argv)
    engines = args.engines.split(",")
    bad = [e for e in engines if e not in ENGINES or not e.startswith("rt3d")]
    if bad:
        ap.error(f"not rt3d engines: {bad}; known: {', '.join(e for e in ENGINES if e.startswith('rt3d'))}")
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "models": {}}
    for name, path, module, shape, x in model_inputs(args.models, args.cache):
        res["models"][name] = {}
        for eng in engines:
            mod = ENGINES[eng](path, module, shape).info["module"]
            res["models"][name][eng] = r = breakdown(mod, x, args.rounds)
            print(f"{name} {eng}: e2e {r['e2e_ms']:.1f} ms, alone {r['alone_ms']:.1f}, in the model "
                  f"{r['in_model_ms']:.1f}", flush=True)
            del mod
            gc.collect()
    write_json(args.out, "e2e_breakdown.json", res)
    write_text(args.out, "e2e_breakdown.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
