"""Measure conv3d register tiles on the heaviest conv layers of the zoo models (after rt3d's default passes).

This is how the default tile heuristic (rt3d/targets/arm_neon/conv3d.py: default_tile) was chosen; it writes
bench/results/tile_sweep.json on a machine with 32 vector registers (AVX-512) and bench/results/tile_sweep_16reg.json
on one with 16 (AVX2), each sweeping the tiles that suit that register file (and the default).
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/tile_sweep.py [--models c3d,r2plus1d_18,s3d]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import astuple
from pathlib import Path


HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402
from rt3d.ir.flops import node_macs  # noqa: E402
from rt3d.targets import get_target  # noqa: E402
from rt3d.targets.arm_neon.conv3d import ConvTile, build_tile  # noqa: E402
from rt3d.runtime.artifact import atomic_write_bytes  # noqa: E402
from rt3d.tune.measure import LocalRunner, measure_node  # noqa: E402

# (th, tw, tm, ur): ur=1 also unrolls the innermost reduction loop (the in-block input channels); per register file
TILES = {32: [(1, 4, 2, 0), (1, 7, 2, 0), (1, 8, 2, 0), (2, 4, 2, 0), (1, 14, 2, 0), (2, 7, 2, 0), (1, 12, 2, 0),
              (1, 4, 3, 0), (1, 8, 3, 0), (1, 8, 3, 1), (1, 4, 4, 0), (1, 7, 4, 0), (2, 7, 1, 0), (1, 14, 1, 0),
              (2, 8, 1, 0)],
         16: [(1, 4, 2, 0), (1, 4, 2, 1), (1, 6, 2, 0), (2, 3, 2, 0), (2, 2, 2, 0), (1, 4, 3, 0), (1, 4, 3, 1),
              (2, 2, 3, 0), (1, 2, 4, 0), (1, 3, 4, 0), (1, 2, 6, 0), (1, 14, 1, 0), (2, 7, 1, 0), (1, 8, 1, 0),
              (1, 7, 1, 0), (1, 7, 1, 1), (1, 12, 1, 0), (1, 7, 2, 0), (1, 14, 2, 0)]}


def tile_name(t: tuple) -> str:
    """th x tw x tm, 'u' where the reduction loop is unrolled, 'b<rows>' where it runs in bands of rows."""
    return "x".join(map(str, t[:3])) + ("u" if t[3] else "") + (f"b{t[4]}" if t[4] else "")


def workloads(models: list[str], cover: float) -> list:
    from rt3d.models import export_onnx, get_model
    target = get_target("host")
    out, seen = [], set()
    for name in models:
        model, shape = get_model(name)
        g = rt3d.passes.run_pipeline(rt3d.import_onnx(export_onnx(model, shape)), target.default_passes())
        convs = sorted((n for n in g.nodes if n.op == "conv3d" and n.attrs.groups == 1), key=node_macs, reverse=True)
        total, acc = sum(node_macs(n) for n in convs), 0
        for n in convs:
            key = (n.inputs[0].type.shape, n.inputs[1].type.shape, n.attrs.stride, n.attrs.pad, n.attrs.in_block)
            if key not in seen:
                seen.add(key)
                out.append((name, n))
            acc += node_macs(n)
            if acc >= cover * total:
                break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="c3d,r2plus1d_18,s3d")
    ap.add_argument("--cover", type=float, default=0.8, help="sweep the heaviest layers covering this MAC share")
    ap.add_argument("--out", help="results (default: bench/results/tile_sweep.json with 32 vector registers, "
                    "tile_sweep_16reg.json with 16); the rows of models not swept this time are kept from it")
    args = ap.parse_args(argv)
    target = get_target("host")
    regs = 32 if target.vector_registers >= 32 else 16
    args.out = args.out or str(HERE / "results" / ("tile_sweep.json" if regs == 32 else "tile_sweep_16reg.json"))
    runner = LocalRunner()  # one measuring worker for the whole sweep
    models = args.models.split(",")
    out = Path(args.out)
    rows = [r for r in json.loads(out.read_text()) if r["model"] not in models] if out.exists() else []
    for model, node in workloads(models, args.cover):
        oh, ow = node.output.type.shape[-3], node.output.type.shape[-2]
        dt = astuple(build_tile(node, target))  # with its bands of rows, as the build runs it
        res = {}
        for t in sorted({t + (0,) for t in TILES[regs]} | {dt}):
            if oh % t[0] or ow % t[1]:
                continue
            res[tile_name(t)] = round(measure_node(node, ConvTile(*t), target, runner)[1], 1)
        best = max(res, key=res.get)
        dkey = tile_name(dt)
        row = {"model": model, "target": target.key(), "registers": target.vector_registers,
               "x": list(node.inputs[0].type.shape), "w": list(node.inputs[1].type.shape),
               "stride": list(node.attrs.stride), "macs": node_macs(node), "default": dkey,
               "default_gflops": res[dkey], "best": best, "best_gflops": res[best], "all": res}
        rows.append(row)
        print(f"{model:12s} x{row['x']} w{row['w']} s{row['stride']}: default {dkey} {res[dkey]:.0f}, "
              f"best {best} {res[best]:.0f} GFLOP/s", flush=True)
        atomic_write_bytes(out, json.dumps(rows, indent=1).encode())  # after every layer: a long sweep keeps its rows
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
