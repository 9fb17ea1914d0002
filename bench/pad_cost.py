"""What the padding stage of a blocked conv costs: the same C3D layers timed with pad=1 (the kernel pads a copy of
its input) and on an input that is already padded (pad=0, same output). Run: .venv/bin/python bench/pad_cost.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from rt3d.ir import Graph, TensorType  # noqa: E402
from rt3d.ir.ops import ConvAttrs  # noqa: E402
from rt3d.targets import get_target  # noqa: E402
from rt3d.targets.arm_neon.conv3d import default_tile  # noqa: E402
from rt3d.tune.measure import measure_node  # noqa: E402

LAYERS = {"conv2": (64, 128, 16, 56, 56), "conv3b": (256, 256, 8, 28, 28), "conv4b": (512, 512, 4, 14, 14)}


def conv_node(cin, cout, d, h, w, pad):
    g = Graph("layer")
    x = g.add_input("x", TensorType((1, cin // 16, d, h, w, 16)))
    wt = g.add_const("w", (np.random.default_rng(0).standard_normal((cout, cin, 3, 3, 3)) * 0.05).astype("f4"))
    b = g.add_const("b", np.zeros(cout, "f4"))
    g.outputs = [g.add("conv3d", [x, wt, b], ConvAttrs(pad=(pad,) * 6, act="relu", in_block=16, out_block=16))]
    return g.nodes[0]


def main() -> int:
    target = get_target("host")
    for name, (c, m, d, h, w) in LAYERS.items():
        padded, prepadded = conv_node(c, m, d, h, w, 1), conv_node(c, m, d + 2, h + 2, w + 2, 0)
        tile = default_tile(padded, h, w, target.vector_lanes, target.vector_registers)
        ms1, _ = measure_node(padded, tile, target)
        ms0, _ = measure_node(prepadded, tile, target)
        print(f"{name}: with padding stage {ms1:.2f} ms, input already padded {ms0:.2f} ms "
              f"({100 * (ms1 - ms0) / ms1:+.1f}% of the layer)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
