"""Fused vs unfused (2+1)D pairs: the benchmark models' 1xkxk -> kx1x1 sparse conv pairs, built with the pair as one
sparse_sep_conv3d (fuse-sep-convs forced on) and as two sparse_conv3d, the sparse kernels timed where they run in the
model (Module.benchmark(layer_mode="in-model"): the unfused second conv reads the intermediate tensor from wherever
the first left it) in interleaved rounds; what fuse-sep-convs' cost model decides for each pair on this target.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/sep_pairs.py [--rounds 5] [--out bench/results/sparse] [--only layer1,s3d]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402
from rt3d.ir.sparsity import Sparsity, random_mask  # noqa: E402
from rt3d.targets import get_target  # noqa: E402
from engines import interleaved, select, write_json  # noqa: E402
from sparse_layers import layer_args  # noqa: E402

# name: (in, mid, out, depth, height/width, k, density, stride): the pairs of the models at their benchmark input and
# the density of their whole-model FLOPs reduction (bench/engines.py); stride 2: a downsampling pair (1xkxk at spatial
# stride 2, kx1x1 at temporal stride 2)
PAIRS = {
    "r2plus1d layer1 64->144->64 16x56x56": (64, 144, 64, 16, 56, 3, 0.31, 1),
    "r2plus1d layer2 64->230->128 16x56x56 stride 2": (64, 230, 128, 16, 56, 3, 0.31, 2),
    "r2plus1d layer2 128->288->128 8x28x28": (128, 288, 128, 8, 28, 3, 0.31, 1),
    "r2plus1d layer3 128->460->256 8x28x28 stride 2": (128, 460, 256, 8, 28, 3, 0.31, 2),
    "r2plus1d layer3 256->576->256 4x14x14": (256, 576, 256, 4, 14, 3, 0.31, 1),
    "s3d conv 64->192->192 8x56x56": (64, 192, 192, 8, 56, 3, 0.42, 1),
    "s3d mixed_3b 96->128->128 8x28x28": (96, 128, 128, 8, 28, 3, 0.42, 1),
}


def pair_model(cin, mid, cout, d, hw, k, density, stride, rng):
    from onnx import TensorProto, helper, numpy_helper
    sp = Sparsity("kgs", (8, 4))
    w1 = rng.standard_normal((mid, cin, 1, k, k)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((cout, mid, k, 1, 1)).astype(np.float32) * 0.05
    inits = [numpy_helper.from_array(w1 * random_mask(w1.shape, sp, density, rng), "w1"),
             numpy_helper.from_array(np.zeros(mid, np.float32), "b1"),
             numpy_helper.from_array(w2 * random_mask(w2.shape, sp, density, rng), "w2"),
             numpy_helper.from_array(np.zeros(cout, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, k, k], pads=[0, k // 2, k // 2] * 2,
                              strides=[1, stride, stride]),
             helper.make_node("Relu", ["c1"], ["m"]),
             helper.make_node("Conv", ["m", "w2", "b2"], ["c2"], kernel_shape=[k, 1, 1], pads=[k // 2, 0, 0] * 2,
                              strides=[stride, 1, 1]),
             helper.make_node("Relu", ["c2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, d, hw, hw])
    od, ohw = (d - 1) // stride + 1, (hw - 1) // stride + 1
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, od, ohw, ohw])
    model = helper.make_model(helper.make_graph(nodes, "pair", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def sparse_ms(mod, x) -> float:
    """The sparse kernels' time in the model (the layout conversions around them left out)."""
    rep = mod.benchmark(x, repeat=1, warmup=1, layer_repeat=3, layer_mode="in-model")
    return sum(t.ms for t in rep.layers if t.op.startswith("sparse"))


def main(argv=None) -> int:
    args = layer_args(argv, __doc__, "pair")
    target = get_target("host")
    base = target.default_passes(always_sparse=True)
    fused_pl = base.replace("fuse-sep-convs{", "fuse-sep-convs{cost_model=false,")
    unfused_pl = re.sub(r"fuse-sep-convs(\{[^}]*\})?,?", "", base)
    rng = np.random.default_rng(0)
    rows = []
    for name, (cin, mid, cout, d, hw, k, density, stride) in select(PAIRS, args.only, "pair").items():
        model = pair_model(cin, mid, cout, d, hw, k, density, stride, rng)
        fused = rt3d.build(model, target=target, passes=fused_pl)
        unfused = rt3d.build(model, target=target, passes=unfused_pl)
        chosen = rt3d.build(model, target=target, passes=base)  # the cost model's choice
        decided = any(layer.op == "sparse_sep_conv3d" for layer in chosen.layers)
        x = rng.standard_normal((1, cin, d, hw, hw)).astype(np.float32)
        med = interleaved({"fused": fused, "unfused": unfused}, args.rounds, lambda mod: sparse_ms(mod, x))
        fm, um = med["fused"], med["unfused"]
        rows.append({"pair": name, "density": density, "fused_ms": fm, "unfused_ms": um, "unfused_over_fused": um / fm,
                     "cost_model_fuses": decided,
                     "fused_impl": next(t.impl for t in fused.layers if t.op.startswith("sparse"))})
        print(f"{name:42s} unfused {um:7.2f} ms  fused {fm:7.2f} ms  {um / fm:.2f}x  "
              f"cost model: {'fuse' if decided else 'keep apart'}", flush=True)
    path = write_json(args.out, "sep_pairs.json", {"target": target.key(), "rounds": args.rounds, "pairs": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
