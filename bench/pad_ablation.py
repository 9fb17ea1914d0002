"""What the sparse kernels' padding stages cost in the model: each model pruned as in the sparse peer run
(bench/engines.py, KGS 8x4) built twice, as rt3d builds it and with the padding stage of every flat-mode and fused
(sep) sparse kernel left out (the kernel then reads whatever its padded copy's memory holds: outputs wrong, work
otherwise the same), and the dense build beside them; end to end and every kernel in the model
(Module.benchmark(layer_mode="in-model")), interleaved rounds. Against the end-to-end bar of the KGS issue
(speedup over dense at least 0.85x the FLOPs reduction) it says how much of the gap the padding stages are: the time
a sparse layer that is fed its input already padded (by the layer before it writing that layout) would not spend.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/pad_ablation.py [--models c3d,r2plus1d_18,s3d] [--rounds 5]
     [--out bench/results/sparse]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from engines import ENGINES, SPARSE_RATES, write_json, write_text  # noqa: E402
from peer_benchmark import MODELS, model_inputs  # noqa: E402

PADDED = ("sparse_conv3d.flat3", "sparse_conv3d.flat2", "sparse_conv3d.sep")  # kernels that may pad a copy...


def padded(impl: str) -> bool:
    """...and do: a fused pair's first conv reading its tiles' windows makes no padded copy."""
    return impl.split("(")[0] in PADDED and "windowed ->" not in impl
E2E_BAR = 0.85  # issue 5: end-to-end speedup over rt3d dense at least 0.85x the whole-model FLOPs reduction


@contextlib.contextmanager
def padding_left_out():
    """Builds inside generate their flat-mode and sep sparse kernels without the padding stage."""
    from rt3d.targets.arm_neon import sparse_conv3d
    real = sparse_conv3d._flat_pad
    sparse_conv3d._flat_pad = lambda *a, **k: ""
    try:
        yield
    finally:
        sparse_conv3d._flat_pad = real


def measure(mods: dict, x, rounds: int) -> dict:
    """Per build: the median end to end and the median in-model time of every kernel, over interleaved rounds."""
    e2e = {k: [] for k in mods}
    layers = {k: [] for k in mods}
    for _ in range(rounds):
        for name, mod in mods.items():
            rep = mod.benchmark(x, repeat=5, warmup=1, per_layer=name != "dense", layer_repeat=3,
                                layer_mode="in-model")
            e2e[name].append(rep.median_ms)
            if rep.layers:
                layers[name].append([lt.ms for lt in rep.layers])
    out = {k: {"e2e_ms": statistics.median(v)} for k, v in e2e.items()}
    for k, runs in layers.items():
        if runs:
            out[k]["layer_ms"] = [statistics.median(col) for col in zip(*runs)]
    return out


def model_result(name: str, mods: dict, x, rounds: int) -> dict:
    m = measure(mods, x, rounds)
    rate = SPARSE_RATES.get(name, 2.0)  # the sparse engines' rate for a model outside the paper's (test models)
    dense, kgs, nopad = (m[k]["e2e_ms"] for k in ("dense", "kgs", "kgs-no-pad"))
    rows = []
    for lay, a, b in zip(mods["kgs"].layers, m["kgs"]["layer_ms"], m["kgs-no-pad"]["layer_ms"]):
        if padded(lay.impl):
            rows.append({"kernel": lay.kernel, "impl": lay.impl, "ms": a, "no_pad_ms": b})
    return {"flops_reduction": rate, "dense_e2e_ms": dense, "kgs_e2e_ms": kgs, "kgs_no_pad_e2e_ms": nopad,
            "bar_e2e_ms": dense / (E2E_BAR * rate), "speedup": dense / kgs, "speedup_no_pad": dense / nopad,
            "in_model_ms": sum(m["kgs"]["layer_ms"]), "in_model_no_pad_ms": sum(m["kgs-no-pad"]["layer_ms"]),
            "padded_layers": rows}


def markdown(res: dict) -> str:
    lines = [f"Padding stages of the sparse kernels, KGS 8x4 builds; {res['rounds']} interleaved rounds, "
             f"{res['date']}.", "",
             "| model | FLOPs reduction | dense ms | KGS ms | KGS, no padding stages, ms | bar ms "
             f"({E2E_BAR}x the rate) | speedup (of the rate) | without padding stages | in the model: KGS ms, "
             "without ms | padding stages in the model ms (kernels) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        rate = r["flops_reduction"]
        lines.append(f"| {name} | {rate}x | {r['dense_e2e_ms']:.1f} | {r['kgs_e2e_ms']:.1f} | "
                     f"{r['kgs_no_pad_e2e_ms']:.1f} | {r['bar_e2e_ms']:.1f} | {r['speedup']:.2f}x "
                     f"({r['speedup'] / rate:.2f}) | {r['speedup_no_pad']:.2f}x ({r['speedup_no_pad'] / rate:.2f}) | "
                     f"{r['in_model_ms']:.1f}, {r['in_model_no_pad_ms']:.1f} | "
                     f"{sum(row['ms'] - row['no_pad_ms'] for row in r['padded_layers']):.1f} "
                     f"({len(r['padded_layers'])}) |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "sparse"))
    ap.add_argument("--cache", default=str(HERE / ".cache"))
    args = ap.parse_args(argv)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "models": {}}
    for name, path, module, shape, x in model_inputs(args.models, args.cache):
        mods = {"dense": ENGINES["rt3d"](path, module, shape).info["module"],
                "kgs": ENGINES["rt3d-kgs"](path, module, shape).info["module"]}
        with padding_left_out():
            mods["kgs-no-pad"] = ENGINES["rt3d-kgs"](path, module, shape).info["module"]
        res["models"][name] = r = model_result(name, mods, x, args.rounds)
        print(f"{name}: dense {r['dense_e2e_ms']:.1f} ms, KGS {r['kgs_e2e_ms']:.1f}, without padding stages "
              f"{r['kgs_no_pad_e2e_ms']:.1f} (bar {r['bar_e2e_ms']:.1f})", flush=True)
        del mods
        gc.collect()
        write_json(args.out, "pad_ablation.json", res)
    write_text(args.out, "pad_ablation.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
