"""Sparse vs dense kernel on single conv layers of the benchmark models: each layer built dense and with random
KGS and Vanilla 8x4 masks at its model's benchmark density (the sparse kernel forced on), the conv kernel timed alone
in interleaved rounds; sparse/dense = the KGS kernel's GFLOP/s on kept MACs over the dense kernel's, KGS/Vanilla =
the ratio of their times at equal kept MACs.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/sparse_layers.py [--rounds 5] [--out bench/results/sparse] [--only c3d]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import rt3d  # noqa: E402
from rt3d.ir.sparsity import Sparsity, random_mask  # noqa: E402
from rt3d.targets import get_target  # noqa: E402
from rt3d.targets.arm_neon.sparse_conv3d import sparse_workload_key  # noqa: E402
from engines import interleaved, select, write_json  # noqa: E402

# name: (in, out, depth, height/width, kernel, stride, pad, density): the layer shapes of the models at their
# benchmark input, the density their whole-model FLOPs reduction gives (bench/results/sparse/peer.md)
LAYERS = {
    "c3d conv2 64->128 3x3x3": (64, 128, 16, 56, (3, 3, 3), (1, 1, 1), (1, 1, 1), 0.26),
    "c3d conv3b 256->256 3x3x3 8x28x28": (256, 256, 8, 28, (3, 3, 3), (1, 1, 1), (1, 1, 1), 0.26),
    "c3d conv4b 512->512 3x3x3 4x14x14": (512, 512, 4, 14, (3, 3, 3), (1, 1, 1), (1, 1, 1), 0.26),
    "c3d conv5b 512->512 3x3x3 2x7x7": (512, 512, 2, 7, (3, 3, 3), (1, 1, 1), (1, 1, 1), 0.26),
    "r2plus1d layer1 64->144 1x3x3": (64, 144, 16, 56, (1, 3, 3), (1, 1, 1), (0, 1, 1), 0.31),
    "r2plus1d layer1 144->64 3x1x1": (144, 64, 16, 56, (3, 1, 1), (1, 1, 1), (1, 0, 0), 0.31),
    "r2plus1d layer2 64->230 1x3x3 stride 2": (64, 230, 16, 56, (1, 3, 3), (1, 2, 2), (0, 1, 1), 0.31),
    "r2plus1d stem 45->64 3x1x1": (45, 64, 16, 56, (3, 1, 1), (1, 1, 1), (1, 0, 0), 0.31),
    "r2plus1d layer2.1 128->288 1x3x3 8x28x28": (128, 288, 8, 28, (1, 3, 3), (1, 1, 1), (0, 1, 1), 0.31),
    "r2plus1d layer3.0 128->460 1x3x3 stride 2": (128, 460, 8, 28, (1, 3, 3), (1, 2, 2), (0, 1, 1), 0.31),
    "r2plus1d layer4.0 256->921 1x3x3 stride 2": (256, 921, 4, 14, (1, 3, 3), (1, 2, 2), (0, 1, 1), 0.31),
    "r2plus1d layer3.1 256->576 1x3x3 4x14x14": (256, 576, 4, 14, (1, 3, 3), (1, 1, 1), (0, 1, 1), 0.31),
    "r2plus1d layer3.1 576->256 3x1x1 4x14x14": (576, 256, 4, 14, (3, 1, 1), (1, 1, 1), (1, 0, 0), 0.31),
    "s3d 192->64 1x1x1": (192, 64, 8, 28, (1, 1, 1), (1, 1, 1), (0, 0, 0), 0.42),
}


def layer_model(cin, cout, d, hw, k, stride, pad, weight, width=None):
    """One conv + ReLU on a 1 x cin x d x hw x hw input (planes ``width`` wide where given)."""
    from onnx import TensorProto, helper, numpy_helper
    w_in = hw if width is None else width
    out = [(s + 2 * p - kk) // st + 1 for s, kk, st, p in zip((d, hw, w_in), k, stride, pad)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, d, hw, w_in])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout] + out)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(k), strides=list(stride),
                              pads=list(pad) * 2), helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
    return helper.make_model(helper.make_graph(nodes, "layer", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def conv_layer(mod):
    """The module's conv kernel (dense or sparse)."""
    return next(t for t in mod.layers if t.op in ("conv3d", "sparse_conv3d"))


def conv_ms(mod, x) -> float:
    """The conv kernel's time alone."""
    kernel = conv_layer(mod).kernel
    return next(t.ms for t in mod.benchmark(x, repeat=1, warmup=1, layer_repeat=3).layers if t.kernel == kernel)


def layer_args(argv, doc: str, what: str = "layer", extra=None) -> argparse.Namespace:
    """The options of the single-layer benchmarks: --rounds, --out, --only, and those ``extra(parser)`` adds."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "sparse"))
    ap.add_argument("--only", help=f"comma-separated substrings of the {what} names to run (default: all)")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


GROUP = (8, 4)  # the masks' group: gM filters x gN channels


def layer_modules(spec: tuple, target, rng, schemes=("kgs", "vanilla"), retile=None,
                  dense: bool = True) -> tuple[dict, np.ndarray]:
    """A LAYERS entry built dense (unless ``dense`` is False) and with a random mask of each of ``schemes`` (GROUP,
    the sparse kernel forced on), and an input for it; ``retile(node)``, where given, is the schedule record the
    sparse kernel is built with (the node as the passes leave it), instead of the target's default."""
    cin, cout, d, hw, k, stride, pad, density = spec
    w = (rng.standard_normal((cout, cin) + k) * 0.05).astype(np.float32)
    mods = {"dense": rt3d.build(layer_model(cin, cout, d, hw, k, stride, pad, w), target=target)} if dense else {}
    passes = target.default_passes(always_sparse=True)
    for scheme in schemes:
        ws = (w * random_mask(w.shape, Sparsity(scheme, GROUP), density, rng)).astype(np.float32)
        model, built_for = layer_model(cin, cout, d, hw, k, stride, pad, ws), target
        if retile is not None:
            node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(model), passes).nodes
                        if n.op == "sparse_conv3d")
            built_for = replace(target, tuned={sparse_workload_key(node): retile(node)})
        mods[scheme] = rt3d.build(model, target=built_for, passes=passes)
    return mods, rng.standard_normal((1, cin, d, hw, hw)).astype(np.float32)


def main(argv=None) -> int:
    args = layer_args(argv, __doc__)
    target = get_target("host")
    rng = np.random.default_rng(0)
    rows = []
    for name, spec in select(LAYERS, args.only, "layer").items():
        density = spec[-1]
        mods, x = layer_modules(spec, target, rng)
        med = interleaved(mods, args.rounds, lambda mod: conv_ms(mod, x))
        dm, sm, vm = med["dense"], med["kgs"], med["vanilla"]
        dl, sl, vl = (conv_layer(mods[m]) for m in ("dense", "kgs", "vanilla"))
        ratio = (sl.macs / sm) / (dl.macs / dm)
        kv = (sm / sl.macs) / (vm / vl.macs)  # per kept MAC: the masks keep the same share, not the same count
        rows.append({"layer": name, "density": density, "dense_ms": dm, "sparse_ms": sm, "sparse_over_dense": ratio,
                     "vanilla_ms": vm, "kgs_over_vanilla": kv, "dense_impl": dl.impl, "sparse_impl": sl.impl,
                     "vanilla_impl": vl.impl})
        print(f"{name:40s} dense {dm:7.2f} ms  KGS {sm:7.2f} ms  Vanilla {vm:7.2f} ms  sparse/dense GFLOP/s "
              f"{ratio:.2f}  KGS/Vanilla {kv:.2f}  {sl.impl}", flush=True)
    path = write_json(args.out, "layers.json", {"target": target.key(), "rounds": args.rounds, "layers": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
