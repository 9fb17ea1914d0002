"""The ``rt3d`` command line. ``rt3d --help`` lists the commands; each has its own ``--help``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ZOO_PREFIX = "zoo:"


def _load_plugins(paths: list[str]) -> None:
    """Import user modules (files or module names) so that their passes register themselves."""
    for p in paths or []:
        if p.endswith(".py") or Path(p).is_file():
            spec = importlib.util.spec_from_file_location(Path(p).stem, p)
            if spec is None or spec.loader is None:
                raise SystemExit(f"rt3d: cannot load plugin file '{p}'")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(p)


def _model_bytes(spec: str):
    """A model argument: an ONNX path, or zoo:NAME for a built-in model (exported on the fly)."""
    if spec.startswith(ZOO_PREFIX):
        from .models import export_onnx, get_model
        model, shape = get_model(spec[len(ZOO_PREFIX):])
        return export_onnx(model, shape)
    return spec


def _shapes(items: list[str] | None) -> dict | None:
    if not items:
        return None
    out = {}
    for it in items:
        name, eq, dims = it.partition("=")
        if not eq:
            raise SystemExit(f"rt3d: --input-shape must be NAME=1x3x16x112x112, got '{it}'")
        out[name] = tuple(int(d) for d in dims.lower().split("x"))
    return out


def cmd_compile(args) -> int:
    import rt3d
    _load_plugins(args.plugin)
    t0 = time.perf_counter()
    mod = rt3d.build(_model_bytes(args.model), target=args.target, passes=args.passes,
                     input_shapes=_shapes(args.input_shape), tuning_db=args.tuning_db)
    out = mod.export(args.output)
    print(f"compiled {args.model} for {args.target} in {time.perf_counter() - t0:.1f} s -> {out}/")
    ins = ", ".join(f"{i['name']} {i['shape']}" for i in mod.inputs)
    print(f"  inputs: {ins}; "
          f"{2 * mod.macs / 1e9:.2f} GFLOP; {len(mod.layers)} kernels")
    return 0


def _module(spec: str, target: str, passes: str, plugins):
    import rt3d
    if Path(spec).is_dir():
        return rt3d.load(spec)
    _load_plugins(plugins)
    return rt3d.build(_model_bytes(spec), target=target, passes=passes)


def _inputs(mod, path: str | None, seed: int) -> list[tuple[str, np.ndarray]]:
    """(name, clip) pairs: a .npy array, a video file, every video of a folder, or a generated clip."""
    spec = mod.inputs[0]
    shape = tuple(spec["shape"])
    if path:
        from .data import read_video, video_files
        p = Path(path)
        if p.suffix == ".npy":
            return [(p.name, np.load(p))]
        if len(shape) != 5:
            raise SystemExit(f"rt3d: '{path}': videos need a model with an (N, 3, T, H, W) input, not {list(shape)}")
        if not p.exists():
            raise SystemExit(f"rt3d: input '{path}' does not exist (a .npy array, a video file or a folder)")
        files = video_files(p) if p.is_dir() else [p]
        return [(f.name, np.repeat(read_video(f, frames=shape[2], size=shape[3:]), shape[0], axis=0))
                for f in files]
    from .data import moving_shapes_clip
    if len(shape) == 5 and shape[1] == 3:
        return [("generated clip", moving_shapes_clip(shape, seed))]
    return [("random input", np.random.default_rng(seed).standard_normal(shape).astype(np.float32))]


def _print_top(y: np.ndarray, k: int) -> None:
    logits = y.reshape(y.shape[0], -1)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:k]
    print("top classes: " + ", ".join(f"#{int(i)} ({p[i]:.3f})" for i in top))


def cmd_run(args) -> int:
    mod = _module(args.model, args.target, args.passes, args.plugin)
    clips = _inputs(mod, args.input, args.seed)
    for name, x in clips:
        y = mod.run(x)
        ys = y if isinstance(y, list) else [y]
        if len(clips) > 1:
            print(f"{name}:")
        for o, arr in zip(mod.outputs, ys):
            print(f"output {o['name']}: shape {list(arr.shape)}")
        _print_top(ys[0], args.top)
    if args.output:
        np.save(args.output, ys[0])
    if args.benchmark:
        report = mod.benchmark(x, repeat=args.repeat, per_layer=args.per_layer, layer_mode=args.layer_mode)
        print(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=1))
    return 0


def cmd_tune(args) -> int:
    import rt3d
    _load_plugins(args.plugin)
    report = rt3d.autotune(_model_bytes(args.model), db=args.db, target=args.target, trials=args.trials,
                           passes=args.passes, input_shapes=_shapes(args.input_shape), tracker=args.tracker,
                           key=args.key, resume=args.resume, search=args.search, timeout=args.timeout,
                           time_budget=args.time_budget * 60 if args.time_budget else None, seed=args.seed)
    print(report)
    if args.json:
        _write_json(args.json, report.to_json())
    print(f"records in {args.db}; build with: rt3d compile {args.model} --tuning-db {args.db} -o OUT")
    return 0


def _write_json(path: str, data) -> None:
    """Written whole or not at all."""
    from .runtime.artifact import atomic_write_bytes
    atomic_write_bytes(Path(path), json.dumps(data, indent=1).encode())


def cmd_farm(args) -> int:
    from .tune import farm
    if args.action == "up":
        f = farm.up(servers=args.servers, key=args.key, host=args.host, port=args.port, threads=args.threads,
                    state_dir=args.state)
        print(f"farm up: tracker {f.tracker}, {len(f.server_pids)} server(s) under key '{f.key}'")
        print(f"tune with: rt3d tune MODEL --tracker {f.tracker} --key {f.key} --db tune.jsonl")
    elif args.action == "status":
        print(farm.load(args.state).status())
    else:
        f = farm.load(args.state)
        f.down()
        print(f"farm down: stopped the tracker {f.tracker} and {len(f.server_pids)} server(s)")
    return 0


def cmd_tune_groups(args) -> int:
    from .tune.groups import select_group
    groups = [tuple(int(v) for v in g.lower().split("x")) for g in args.groups.split(",")]
    report = select_group(groups, rate=args.rate, target=args.target, tracker=args.tracker, key=args.key,
                          scale=args.scale, seed=args.seed, timeout=args.timeout, tune=not args.no_tune)
    print(report)
    if args.json:
        _write_json(args.json, report.to_json())
    return 0


def _torch_model(spec: str):
    """zoo:NAME (freshly initialized) or a file saved with torch.save(model): (module, clip shape or None)."""
    if spec.startswith(ZOO_PREFIX):
        from .models import get_model
        model, shape = get_model(spec[len(ZOO_PREFIX):], randomize_bn=False)
        return model, shape
    import torch
    try:
        model = torch.load(spec, weights_only=False, map_location="cpu")
    except Exception as e:
        raise SystemExit(f"rt3d prune: cannot load torch model '{spec}': {type(e).__name__}: {e}")
    if isinstance(model, dict):
        raise SystemExit(f"rt3d prune: '{spec}' holds a state dict; save the whole module (torch.save(model, path))")
    return model, None


def _prune_data(args, shape):
    """(train, val) from --data: motion (generated) or TRAIN.npz,VAL.npz with arrays x and y."""
    if args.data == "motion":
        from .data.motion import MotionDataset
        if shape is None and (args.clip_size is None or args.frames is None):
            raise SystemExit("rt3d prune: --data motion with a saved model needs --clip-size and --frames")
        size = args.clip_size or shape[-1]
        frames = args.frames or shape[2]
        return (MotionDataset(args.train_clips, "train", args.seed, size, frames),
                MotionDataset(args.val_clips, "val", args.seed, size, frames))
    parts = args.data.split(",")
    if len(parts) != 2:
        raise SystemExit(f"rt3d prune: --data is 'motion' or TRAIN.npz,VAL.npz, got '{args.data}'")
    out = []
    for part in parts:
        try:
            with np.load(part) as z:
                out.append((z["x"], z["y"]))
        except (OSError, KeyError, ValueError) as e:
            raise SystemExit(f"rt3d prune: cannot read clips from '{part}' (an .npz with arrays x and y): {e}")
    return out[0], out[1]


def cmd_prune(args) -> int:
    import rt3d
    import torch
    from .frontend.pruning.export import export_pruned
    from .frontend.pruning.train import Data, fit, rank
    torch.manual_seed(args.seed)
    model, shape = _torch_model(args.model)
    # clips generated (or read) once, for the dense training and the pruning alike
    train, val = (Data(d, name) for d, name in zip(_prune_data(args, shape), ("train data", "validation data")))
    if args.dense_epochs:
        fit(model, train, args.dense_epochs, lr=args.dense_lr, seed=args.seed)
    group = tuple(int(v) for v in args.group.lower().split("x"))
    epochs = tuple(float(v) for v in args.epochs.split(","))
    pruned, report = rt3d.prune(model, train, val, scheme=args.scheme, group=group, algorithm=args.algorithm,
                                flops_target=args.flops_target, epochs=epochs if len(epochs) == 2 else epochs[0],
                                lr=args.lr, norm=args.norm, lam=args.lam, rounds=args.rounds, seed=args.seed,
                                min_channels=args.min_channels, linear_density=args.linear_density)
    if rank() != 0:
        return 0
    print(report.table())
    if args.output:
        export_pruned(pruned, (1,) + tuple(train.x.shape[1:]), args.output)
        print(f"wrote {args.output} (pruned weights are exact zeros; masks in its rt3d.sparsity metadata)")
    if args.save:
        import io

        from .runtime.artifact import atomic_write_bytes
        buf = io.BytesIO()
        torch.save(pruned, buf)
        atomic_write_bytes(Path(args.save), buf.getvalue())
        print(f"wrote {args.save} (the pruned torch model)")
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


def cmd_inspect(args) -> int:
    import rt3d
    from .ir.flops import graph_macs
    from .passes import PassManager
    _load_plugins(args.plugin)
    g = rt3d.import_onnx(_model_bytes(args.model), input_shapes=_shapes(args.input_shape))
    if args.print_after_all or not args.passes:
        print("// ---- imported ----")
        print(g)
    pm = PassManager(args.passes or [], print_after_all=args.print_after_all)
    g = pm.run(g)
    if not args.print_after_all and args.passes:
        print(g)
    print(f"// {len(g.nodes)} nodes, {graph_macs(g) / 1e9:.3f} GMACs")
    if args.timing:
        print(pm.timing_table())
    return 0


def cmd_demo(args) -> int:
    import rt3d
    from .data import moving_shapes_clip
    from .models import export_onnx, get_model
    from .models.zoo import ZOO
    print(f"rt3d demo: {args.model} ({ZOO[args.model].doc}), random weights (no model downloads here)")
    model, shape = get_model(args.model)
    t0 = time.perf_counter()
    onnx_bytes = export_onnx(model, shape)
    t1 = time.perf_counter()
    mod = rt3d.build(onnx_bytes, target=args.target)
    t2 = time.perf_counter()
    print(f"exported to ONNX in {t1 - t0:.1f} s; compiled for '{args.target}' in {t2 - t1:.1f} s "
          f"({len(mod.layers)} kernels, {2 * mod.macs / 1e9:.1f} GFLOP)")
    clip = moving_shapes_clip(shape, seed=args.seed)
    y = mod.run(clip)
    _print_top(y, args.top)
    report = mod.benchmark(clip, repeat=args.repeat, per_layer=False)
    print(report)
    if args.sparse != "none":
        _demo_sparse(args, onnx_bytes, mod, clip, report.median_ms)
    return 0


def _demo_sparse(args, onnx_bytes: bytes, dense, clip, dense_ms: float) -> None:
    """The same model with random 8x4 masks at the paper's FLOPs reduction, built and timed next to the dense one:
    what the pruning saves in latency (random weights: the classes mean nothing, as above)."""
    import rt3d
    from .models.sparse import PAPER_RATES, sparsify
    rate = PAPER_RATES.get(args.model, 2.0)
    t0 = time.perf_counter()
    pruned, rates = sparsify(onnx_bytes, f"{args.sparse}(8x4)", rate, seed=args.seed,
                             min_channels=16 if args.model in PAPER_RATES else 4)
    t1 = time.perf_counter()
    mod = rt3d.build(pruned, target=args.target)
    t2 = time.perf_counter()
    sparse_layers = [layer for layer in mod.layers if layer.op.startswith("sparse_")]
    print(f"\n{args.sparse} 8x4, random masks at {rate}x fewer FLOPs ({len(rates)} layers at "
          f"{rates[0].density:.0%} density; stems dense): pruned in {t1 - t0:.1f} s, compiled in {t2 - t1:.1f} s, "
          f"{len(sparse_layers)} of {len(mod.layers)} kernels sparse, {2 * mod.macs / 1e9:.1f} GFLOP")
    report = mod.benchmark(clip, repeat=args.repeat, per_layer=False)
    print(report)
    again = dense.benchmark(clip, repeat=args.repeat, per_layer=False).median_ms  # the machine may have changed
    base = min(dense_ms, again)
    print(f"speedup over dense: {base / report.median_ms:.2f}x at {rate}x fewer FLOPs "
          f"(dense {base:.1f} ms, the better of its two timings; {args.sparse} {report.median_ms:.1f} ms)")


def cmd_zoo(args) -> int:
    from .models import export_onnx, get_model
    from .models.zoo import ZOO
    if args.export:
        model, shape = get_model(args.export)
        export_onnx(model, shape, args.output or f"{args.export}.onnx", dynamo=args.dynamo)
        print(f"wrote {args.output or f'{args.export}.onnx'} (input {list(shape)})")
        return 0
    for e in ZOO.values():
        print(f"{e.name:<16}{'x'.join(map(str, e.input_shape)):<20}{e.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .targets import target_names
    p = argparse.ArgumentParser(prog="rt3d", description="rt3d: compile and run 3D CNNs (ONNX) for small devices.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, passes_default=None):
        sp.add_argument("model", help="ONNX file, zoo:NAME for a built-in model, or (run) an artifact folder")
        sp.add_argument("--target", default="host", choices=target_names(), help="compilation target")
        sp.add_argument("--passes", default=passes_default,
                        help="pass pipeline (default: " + (passes_default or "the target's own, e.g. fold-constants,"
                                                           "fold-bn,fuse,...,block-layout{block=16},fuse-pool,...,dce")
                        + ")")
        sp.add_argument("--plugin", action="append", default=[],
                        help="Python file or module to import first (e.g. one that registers custom passes)")

    c = sub.add_parser("compile", help="compile a model and write an artifact folder")
    common(c)
    c.add_argument("-o", "--output", required=True, help="artifact folder to write")
    c.add_argument("--input-shape", action="append", help="NAME=1x3x16x112x112 for models with dynamic shapes")
    c.add_argument("--tuning-db", help="tuning database (from `rt3d tune`) whose best schedules to use")
    c.set_defaults(fn=cmd_compile)

    t = sub.add_parser("tune", help="autotune conv schedules (here or on a device farm) into a tuning database")
    common(t)
    t.add_argument("--db", required=True, help="tuning database (JSON lines, appended to; shared across models)")
    t.add_argument("--trials", type=int, default=64, help="schedules to measure in this session, whole model")
    t.add_argument("--tracker", help="HOST:PORT of a TVM RPC tracker: measure on its devices (default: here)")
    t.add_argument("--key", help="with --tracker: the device key the servers registered with")
    t.add_argument("--resume", action="store_true", help="continue this model's last session in --db")
    t.add_argument("--search", default="guided", choices=["guided", "random"],
                   help="guided: a cost model learned from the records ranks candidates (default)")
    t.add_argument("--timeout", type=float, default=60.0, help="seconds one measurement may take")
    t.add_argument("--time-budget", type=float, help="stop after this many minutes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", help="write the session report as JSON here")
    t.add_argument("--input-shape", action="append")
    t.set_defaults(fn=cmd_tune)

    f = sub.add_parser("farm", help="a device farm on loopback: TVM RPC tracker + servers (up, status, down)")
    f.add_argument("action", choices=["up", "status", "down"])
    f.add_argument("--servers", type=int, default=2, help="with up: how many RPC servers")
    f.add_argument("--key", default="local", help="with up: the device key the servers register under")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, default=9190, help="with up: the tracker's port (or the next free one)")
    f.add_argument("--threads", type=int, help="with up: TVM_NUM_THREADS of each server (default: all cores)")
    f.add_argument("--state", help="state folder (default $RT3D_FARM_DIR or ~/.cache/rt3d/farm)")
    f.set_defaults(fn=cmd_farm)

    gs = sub.add_parser("tune-groups", help="measure KGS group sizes on a target and report the best for pruning")
    gs.add_argument("--target", default="host", choices=target_names())
    gs.add_argument("--groups", default="4x4,8x4,8x8", help="candidate gM x gN group sizes, comma-separated")
    gs.add_argument("--rate", type=float, default=3.6, help="FLOPs reduction of the synthesized layers")
    gs.add_argument("--scale", type=float, default=0.5, help="spatial scale of the C3D-shaped layers (1: full size)")
    gs.add_argument("--tracker", help="HOST:PORT of a TVM RPC tracker (default: measure here)")
    gs.add_argument("--key")
    gs.add_argument("--timeout", type=float, default=60.0)
    gs.add_argument("--seed", type=int, default=0)
    gs.add_argument("--no-tune", action="store_true",
                    help="time the heuristic's sparse schedule only (default: every schedule, each layer at its best)")
    gs.add_argument("--json", help="write the report as JSON here")
    gs.set_defaults(fn=cmd_tune_groups)

    pr = sub.add_parser("prune", help="learn Filter / Vanilla / KGS sparsity at a FLOPs reduction (PyTorch)")
    pr.add_argument("model", help="zoo:NAME (trained first with --dense-epochs) or a torch.save(model) file")
    pr.add_argument("--scheme", default="kgs", choices=["filter", "vanilla", "kgs"])
    pr.add_argument("--group", default="8x4", help="kernel group gMxgN (default 8x4)")
    pr.add_argument("--algorithm", default="reweighted", choices=["heuristic", "group-lasso", "reweighted"])
    pr.add_argument("--flops-target", type=float, default=3.6, help="whole-model FLOPs reduction (default 3.6)")
    pr.add_argument("--epochs", default="6,4", help="pruning,retraining epochs (default 6,4)")
    pr.add_argument("--lr", type=float, default=5e-4)
    pr.add_argument("--norm", default="mixed", choices=["l1", "l2", "mixed"])
    pr.add_argument("--lam", type=float, help="initial lambda (default: automatic; then driven by the FLOPs target)")
    pr.add_argument("--rounds", type=int, default=4, help="reweighting rounds")
    pr.add_argument("--min-channels", type=int, default=8, help="prune convs with at least this many input channels")
    pr.add_argument("--linear-density", type=float, default=None,
                    help="prune the fully connected layers too (all but the classifier), each keeping this share of "
                         "its groups (default: they stay dense)")
    pr.add_argument("--data", default="motion", help="'motion' (generated) or TRAIN.npz,VAL.npz with arrays x, y")
    pr.add_argument("--train-clips", type=int, default=2000)
    pr.add_argument("--val-clips", type=int, default=500)
    pr.add_argument("--clip-size", type=int, help="motion clips' side (default: the model's input)")
    pr.add_argument("--frames", type=int, help="motion clips' length (default: the model's input)")
    pr.add_argument("--dense-epochs", type=float, default=0, help="train the dense model first (zoo models)")
    pr.add_argument("--dense-lr", type=float, default=1e-3)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("-o", "--output", help="write the pruned model as ONNX (exact zeros + masks)")
    pr.add_argument("--save", help="write the pruned torch model (torch.save)")
    pr.add_argument("--json", help="write the report as JSON")
    pr.set_defaults(fn=cmd_prune)

    r = sub.add_parser("run", help="run a model or artifact on a clip (.npy) or a generated one")
    common(r)
    r.add_argument("--input", help="a .npy clip, a video file, or a folder of videos (default: a generated clip)")
    r.add_argument("--output", help="save the first output to this .npy file")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--top", type=int, default=5, help="how many top classes to print")
    r.add_argument("--benchmark", action="store_true", help="also time it (median latency, per-layer table)")
    r.add_argument("--repeat", type=int, default=10)
    r.add_argument("--per-layer", action="store_true", help="with --benchmark: time every kernel too")
    r.add_argument("--layer-mode", choices=("alone", "in-model"), default="alone",
                   help="with --per-layer: each kernel run on its own (warm), or in the model's order on the previous "
                        "kernels' outputs (cold, as in a run: where end-to-end time goes)")
    r.add_argument("--json", help="with --benchmark: write the report as JSON here")
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("inspect", help="print the IR, after each pass with --print-after-all")
    common(i, passes_default="")
    i.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    i.add_argument("--timing", action="store_true", help="print each pass's time and notes")
    i.add_argument("--input-shape", action="append")
    i.set_defaults(fn=cmd_inspect)

    d = sub.add_parser("demo", help="build a built-in model, run it on a generated clip, print classes and latency")
    d.add_argument("--model", default="c3d", help="zoo model (see `rt3d zoo`)")
    d.add_argument("--target", default="host", choices=target_names())
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--top", type=int, default=5)
    d.add_argument("--repeat", type=int, default=10)
    d.add_argument("--sparse", default="kgs", choices=("kgs", "vanilla", "filter", "none"),
                   help="also build the model pruned at random with this scheme (8x4, the paper's FLOPs reduction) "
                        "and time it against the dense one (default kgs; none: dense only)")
    d.set_defaults(fn=cmd_demo)

    z = sub.add_parser("zoo", help="list the built-in models, or export one to ONNX")
    z.add_argument("--export", metavar="NAME", help="model to export")
    z.add_argument("-o", "--output", help="ONNX file to write (default NAME.onnx)")
    z.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (default: the legacy one)")
    z.set_defaults(fn=cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import Rt3dError
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except Rt3dError as e:
        print(f"rt3d: error: {e}", file=sys.stderr)
        return 2
