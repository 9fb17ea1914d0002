"""A dense conv's time against its input's plane pitch, with the register tile held fixed: S3D's stem 7x1x1 stride-2
conv (64 -> 64 channels, 16 x 112 x W input) built for planes W = 112 wide, whose blocked depth planes lie 784 KiB
apart (a multiple of 4 KiB: the 7 taps x 4 channel blocks of a tile's input rows fall on one 4 KiB offset), and W =
119 (833 KiB, not a multiple), both with the same register tile (--tile th,tw,tm,ur,rows; default: the 112-wide
build's own), so that only the pitch differs. (The first version of this script compared W = 113, for which the
heuristic picks another tile: 113 has no divisor up to 7.) The kernels are timed alone, interleaved, per 112 columns
(a W time times 112 / W), in each of --processes fresh processes (the physical pages, and so the L2 sets, differ
between processes).
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/plane_pitch.py [--processes 6] [--rounds 6] [--tile 1,7,4,0,0]
     [--out bench/results]
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

WIDTHS = (112, 119)
SHAPE = dict(cin=64, cout=64, depth=16, height=112, kernel=(7, 1, 1), stride=(2, 1, 1), pad=(3, 0, 0))


def pinned_build(model, tile):
    """``model`` built for the host with its conv's register tile ``tile`` (a ConvTile, or None: the default), and
    that tile."""
    from dataclasses import replace

    import rt3d
    from rt3d.passes import run_pipeline
    from rt3d.targets import get_target
    from rt3d.targets.arm_neon.conv3d import build_tile, workload_key
    target = get_target("host")
    node = next(n for n in run_pipeline(rt3d.import_onnx(model), target.default_passes()).nodes if n.op == "conv3d")
    tile = tile or build_tile(node, target)
    return rt3d.build(model, target=replace(target, tuned={workload_key(node): tile})), tile


def one_process(rounds: int, shape: dict, tile: tuple | None) -> dict:
    """In this process: each width's conv kernel, all with one tile, timed alone, ``rounds`` interleaved rounds, ms
    per 112 columns; and the tile (th, tw, tm, ur, rows) and the kernels."""
    from dataclasses import astuple

    from rt3d.targets.arm_neon.conv3d import ConvTile
    from sparse_layers import conv_layer, conv_ms, layer_model
    tile = ConvTile(*tile) if tile else None
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((shape["cout"], shape["cin"]) + tuple(shape["kernel"])) * 0.05).astype(np.float32)
    built = []
    for w in WIDTHS:
        mod, tile = pinned_build(layer_model(shape["cin"], shape["cout"], shape["depth"], shape["height"],
                                             shape["kernel"], shape["stride"], shape["pad"], weight, width=w), tile)
        x = rng.standard_normal((1, shape["cin"], shape["depth"], shape["height"], w)).astype(np.float32)
        built.append((w, mod, x))
    times: dict[int, list[float]] = {w: [] for w in WIDTHS}
    for _ in range(rounds):
        for w, mod, x in built:
            times[w].append(conv_ms(mod, x) * WIDTHS[0] / w)
    return {"tile": list(astuple(tile)), "kernels": {w: conv_layer(mod).impl for w, mod, _ in built}, "times": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--shape", default="", help="JSON overriding the conv's shape (tests: a small one)")
    ap.add_argument("--tile", default="", help="th,tw,tm,ur,rows of the register tile for both widths (default: the "
                    "first width's default tile; tw must divide both widths)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape = {**SHAPE, **json.loads(args.shape or "{}")}
    tile = tuple(int(v) for v in args.tile.split(",")) if args.tile else None
    if args.child:
        print(json.dumps(one_process(args.rounds, shape, tile)))
        return 0
    rows, kernels = [], {}
    for p in range(args.processes):
        child = [sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--shape", json.dumps(shape),
                 "--tile", args.tile]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        times = {int(w): ts for w, ts in res["times"].items()}
        kernels = res["kernels"]
        rows.append({"process": p, "ms_per_112_columns": times,
                     "median": {w: statistics.median(ts) for w, ts in times.items()}})
        print(f"process {p}: " + " | ".join(f"W={w} " + " ".join(f"{t:.1f}" for t in ts) for w, ts in times.items()),
              flush=True)
    medians = {w: [r["median"][w] for r in rows] for w in WIDTHS}
    print("medians per process: " + " | ".join(f"W={w} " + " ".join(f"{m:.1f}" for m in ms)
                                              for w, ms in medians.items()))
    print("kernels: " + " | ".join(f"W={w} {k}" for w, k in kernels.items()))
    path = write_json(args.out, "plane_pitch.json", {"shape": shape, "rounds": args.rounds, "kernels": kernels,
                                                     "processes": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
