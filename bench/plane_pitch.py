"""A dense conv's time against its input's plane pitch: S3D's stem 7x1x1 stride-2 conv (64 -> 64 channels, 16 x 112 x
W input) built for planes W = 112 wide, whose blocked depth planes lie 784 KiB apart (a multiple of 4 KiB: the 7 taps
x 4 channel blocks of a tile's input rows fall into the same cache sets), and W = 113 (pitch 791 KiB, not a multiple
of 4 KiB). The kernels are timed alone, interleaved, per 112 columns (a W = 113 time times 112 / 113), in each of
--processes fresh processes (the physical pages, and so the L2 sets, differ between processes).
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/plane_pitch.py [--processes 6] [--rounds 6] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from engines import write_json  # noqa: E402

WIDTHS = (112, 113)
SHAPE = dict(cin=64, cout=64, depth=16, height=112, kernel=(7, 1, 1), stride=(2, 1, 1), pad=(3, 0, 0))


def one_process(rounds: int, shape: dict) -> dict[int, list[float]]:
    """In this process: each width's conv kernel timed alone, ``rounds`` interleaved rounds, ms per 112 columns."""
    import rt3d
    from sparse_layers import conv_ms, layer_model
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((shape["cout"], shape["cin"]) + tuple(shape["kernel"])) * 0.05).astype(np.float32)
    built = []
    for w in WIDTHS:
        mod = rt3d.build(layer_model(shape["cin"], shape["cout"], shape["depth"], shape["height"], shape["kernel"],
                                     shape["stride"], shape["pad"], weight, width=w), target="host")
        x = rng.standard_normal((1, shape["cin"], shape["depth"], shape["height"], w)).astype(np.float32)
        built.append((w, mod, x))
    times: dict[int, list[float]] = {w: [] for w in WIDTHS}
    for _ in range(rounds):
        for w, mod, x in built:
            times[w].append(conv_ms(mod, x) * WIDTHS[0] / w)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--shape", default="", help="JSON overriding the conv's shape (tests: a small one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape = {**SHAPE, **json.loads(args.shape or "{}")}
    if args.child:
        print(json.dumps(one_process(args.rounds, shape)))
        return 0
    rows = []
    for p in range(args.processes):
        out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--shape",
                              json.dumps(shape)], check=True, capture_output=True, text=True).stdout
        times = {int(w): ts for w, ts in json.loads(out.strip().splitlines()[-1]).items()}
        rows.append({"process": p, "ms_per_112_columns": times,
                     "median": {w: statistics.median(ts) for w, ts in times.items()}})
        print(f"process {p}: " + " | ".join(f"W={w} " + " ".join(f"{t:.1f}" for t in ts) for w, ts in times.items()),
              flush=True)
    medians = {w: [r["median"][w] for r in rows] for w in WIDTHS}
    print("medians per process: " + " | ".join(f"W={w} " + " ".join(f"{m:.1f}" for m in ms)
                                              for w, ms in medians.items()))
    path = write_json(args.out, "plane_pitch.json", {"shape": shape, "rounds": args.rounds, "processes": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
