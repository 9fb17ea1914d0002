"""Every schedule record of a layer's sparse tuning space (rt3d.tune.space.sparse_space) timed against the layer's
dense kernel: whether the heuristic's default (the space's first record) is the best the space holds, or what a
layer under 0.85 of its dense kernel would need beyond the space. Each record is its own KGS 8x4 build of the same
random mask; the conv kernels are timed alone, interleaved, medians of --rounds.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/sparse_space.py --only "layer4.0 256->921" [--modes vector]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from rt3d.targets import get_target  # noqa: E402
from rt3d.tune.space import sparse_space  # noqa: E402
from engines import interleaved, select, write_json  # noqa: E402
from sparse_layers import LAYERS, conv_layer, conv_ms, layer_args, layer_modules  # noqa: E402

MODES = ("direct", "vector")  # records of the direct mode (th x tw positions) and of the position-vectorized ones


def record_mode(t) -> str:
    return "direct" if t.th else "vector"


def space_modules(spec: tuple, target, modes: set, limit: int) -> tuple[list, list, dict, np.ndarray]:
    """A LAYERS entry's sparse tuning space (its KGS node as the passes leave it; the default first), the indices
    of the records of ``modes`` to time (the default always, at most ``limit`` in all, 0: no limit), and the layer
    built dense and with each of those records (keys "dense" and the indices), all of the same random mask."""
    space = []

    def default(node):  # the default's build also gives the space
        space.extend(sparse_space(node, target.vector_lanes, target.num_cores, target.l2_bytes,
                                  target.vector_registers, target.l1_bytes))
        return space[0]
    built, x = layer_modules(spec, target, np.random.default_rng(0), schemes=("kgs",), retile=default)
    mods = {"dense": built["dense"], 0: built["kgs"]}
    chosen = [i for i, t in enumerate(space) if i == 0 or record_mode(t) in modes][:limit or None]
    for i in chosen[1:]:
        built, _ = layer_modules(spec, target, np.random.default_rng(0), schemes=("kgs",),
                                 retile=lambda node, t=space[i]: t, dense=False)
        mods[i] = built["kgs"]
    return space, chosen, mods, x


def main(argv=None) -> int:
    def extra(ap):
        ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated record kinds, of {', '.join(MODES)}")
        ap.add_argument("--limit", type=int, default=0, help="time the first N records of those kinds (0: all)")
    args = layer_args(argv, __doc__, extra=extra)
    modes = set(args.modes.split(","))
    if not modes <= set(MODES):
        raise SystemExit(f"--modes: unknown {sorted(modes - set(MODES))}; known: {', '.join(MODES)}")
    target = get_target("host")
    out = []
    for name, spec in select(LAYERS, args.only, "layer").items():
        space, chosen, mods, x = space_modules(spec, target, modes, args.limit)
        med = interleaved(mods, args.rounds, lambda mod: conv_ms(mod, x))
        dense = conv_layer(mods["dense"])
        rows = []
        for i in chosen:
            layer = conv_layer(mods[i])
            ratio = (layer.macs / med[i]) / (dense.macs / med["dense"])
            rows.append({"record": repr(space[i]), "default": i == 0, "ms": med[i], "sparse_over_dense": ratio,
                         "impl": layer.impl})
        rows.sort(key=lambda r: r["ms"])
        print(f"{name}: dense {med['dense']:.2f} ms ({dense.impl}); {len(rows)} of {len(space)} records", flush=True)
        for r in rows:
            print(f"  {'default ' if r['default'] else '        '}{r['ms']:8.3f} ms  sparse/dense "
                  f"{r['sparse_over_dense']:.2f}  {r['impl']}", flush=True)
        out.append({"layer": name, "dense_ms": med["dense"], "dense_impl": dense.impl, "space": len(space),
                    "records": rows})
    path = write_json(args.out, "sparse_space.json", {"target": target.key(), "rounds": args.rounds, "layers": out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
