"""Where a sparse conv kernel's time goes: the KGS kernel of single benchmark layers (bench/sparse_layers.py's shapes,
random KGS 8x4 masks at the model's density) timed with its packed column offsets as built and with them altered,
the arithmetic unchanged (the same kept columns, weights and FMAs), against the layer's dense kernel:
  * model      - the offsets as built: every kept column reads its own gN input rows;
  * window 256K - offsets modulo 65536 floats: the rows fall in a 256 KiB band per channel of the block (in L2);
  * window 16K - offsets modulo 4096 floats: a 16 KiB band per channel (about the L1);
  * 4 blocks   - the columns of channel blocks q read block q % 4 (unit-stride layers): the rows keep their kernel
                 positions, but a tile's input window is 4 channel blocks' instead of all of them;
  * one row    - every offset 0: all columns read the same gN rows (the micro-kernel with its inputs in L1);
  * no columns - no kept columns: the fixed costs (padding copy, zeroed accumulators, write-back).
Outputs are wrong in every variant but the first: this is a measurement, not a model. The variants alter the column
offsets of the plain loop order, so a layer whose default splits the reduction (split=, on a small L2) is built with
the reduction unsplit (its row says so: "unsplit"); layers in the pw or direct mode index their columns differently
and are left out. The flat3 layers are built on padded rows (sparse_conv3d.MASKED_ROWS off): on rows without pad
columns a row block's columns run in runs of one kw through bounds of their own, which these variants do not alter.
Run: TVM_NUM_THREADS=2 .venv/bin/python bench/sparse_ablation.py [--rounds 5] [--only conv2]
     [--out bench/results/sparse]
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from rt3d.targets import get_target  # noqa: E402
from rt3d.targets.arm_neon import sparse_conv3d  # noqa: E402
from rt3d.targets.arm_neon.sparse_conv3d import sparse_plan  # noqa: E402
from engines import interleaved, select, write_json  # noqa: E402
from sparse_layers import GROUP, LAYERS, conv_layer, conv_ms, layer_args, layer_modules  # noqa: E402

VARIANTS = ("model", "window 256K", "window 16K", "4 blocks", "one row", "no columns")
FOLD = 4  # channel blocks of the "4 blocks" variant


def column_params(mod) -> tuple[int, int]:
    """Parameter indices of the sparse kernel's column offsets and row pointers (its 3rd and 4th arguments, see
    lower_sparse_conv3d), checked: int32, row pointers ending at the offsets' count."""
    layer = conv_layer(mod)
    (ko, io), (kp, ip) = layer.args[2], layer.args[3]
    off, ptr = (mod._params[i] if k == "param" else None for k, i in ((ko, io), (kp, ip)))
    if off is None or ptr is None or off.dtype != np.int32 or ptr.dtype != np.int32 or ptr[-1] != off.size \
            or np.any(np.diff(ptr) < 0):
        raise SystemExit(f"{layer.impl}: arguments 3 and 4 are not the column offsets and row pointers")
    return io, ip


def channel_stride(d: int, hw: int, stride, pad) -> int | None:
    """Floats between two channels of a unit-stride layer's padded flat copy (sparse_conv3d.vector_plan's geometry:
    depth padded on both sides, rows and planes sharing one gap of the larger pad), None for strided layers."""
    if tuple(stride) != (1, 1, 1):
        return None
    return (d + 2 * pad[0]) * (hw + pad[1]) * (hw + pad[2])


def variant_params(off: np.ndarray, ptr: np.ndarray, name: str, cs: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The offsets and row pointers of a variant; ``cs``: floats between channels of the padded copy (the 4 blocks
    variant; None where unknown, or too few channel blocks to fold: no such variant)."""
    # every altered offset is at most the largest built one: the reads stay inside the padded copy
    if name == "4 blocks":
        block = GROUP[1] * cs if cs else 0  # floats between channel blocks
        if not block or off.max() < FOLD * block:
            return None
        if (off % block).max() >= cs:  # a column's rows lie within its block's first channel
            raise SystemExit(f"column offsets up to {off.max()} do not match channel blocks {block} floats apart: "
                             "channel_stride no longer follows sparse_conv3d's padded copy")
        return (off // block % FOLD * block + off % block).astype(np.int32), ptr
    if name == "window 256K":
        return off % 65536, ptr
    if name == "window 16K":
        return off % 4096, ptr
    if name == "one row":
        return np.zeros_like(off), ptr
    if name == "no columns":
        return off, np.zeros_like(ptr)
    return off, ptr


def main(argv=None) -> int:
    import tvm
    args = layer_args(argv, __doc__)
    target = get_target("host")
    sparse_conv3d.MASKED_ROWS = False  # (see the docstring: the variants alter the padded rows' plain loop)
    rng = np.random.default_rng(0)
    rows = []
    for name, spec in select(LAYERS, args.only, "layer").items():
        d, hw, _, stride, pad, density = spec[2:]
        split = []

        def unsplit(node):  # the default schedule in the plain order
            default = sparse_plan(node, target.vector_lanes, target.num_cores, target.l2_bytes,
                                  target.vector_registers, target.l1_bytes).default
            split.append(default.split)
            return replace(default, split=1)
        mods, x = layer_modules(spec, target, rng, schemes=("kgs",), retile=unsplit)
        dense, kgs = mods["dense"], mods["kgs"]
        impl = conv_layer(kgs).impl
        if "split=" in impl or ".pw(" in impl or ".flat" not in impl:
            print(f"{name:40s} skipped: {impl}", flush=True)
            continue
        conv_ms(kgs, x)  # builds the VM and its parameter tensors, which the variants replace
        io, ip = column_params(kgs)
        built = (kgs._params[io], kgs._params[ip])
        cases = {v: variant_params(*built, v, channel_stride(d, hw, stride, pad)) for v in VARIANTS}
        variants = [v for v in VARIANTS if cases[v] is not None]
        tensors = {v: [tvm.runtime.tensor(a) for a in cases[v]] for v in variants}

        def time_ms(case):
            if case == "dense":
                return conv_ms(dense, x)
            kgs._param_tensors[io], kgs._param_tensors[ip] = tensors[case]
            return conv_ms(kgs, x)

        med = interleaved({c: c for c in ["dense"] + variants}, args.rounds, time_ms)
        dl, sl = conv_layer(dense), conv_layer(kgs)
        ratio = {v: (sl.macs / med[v]) / (dl.macs / med["dense"]) for v in variants if v != "no columns"}
        rows.append({"layer": name, "density": density, "impl": impl, "unsplit": split[0] > 1, "dense_ms": med["dense"],
                     "ms": {v: med[v] for v in variants}, "sparse_over_dense": ratio})
        print(f"{name:40s} dense {med['dense']:7.2f} ms  " + "  ".join(
            f"{v} {med[v]:6.2f} ms" + (f" ({ratio[v]:.2f})" if v in ratio else "") for v in variants)
            + ("  (unsplit)" if split[0] > 1 else ""), flush=True)
    path = write_json(args.out, "ablation.json", {"target": target.key(), "rounds": args.rounds, "layers": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
