"""The accuracy study (the analog of the paper's Table 1): a small C3D and a small R(2+1)D trained on the generated
motion data set, then pruned by every algorithm x scheme at the same whole-model FLOPs reduction (2.6x) and with KGS
at 3.6x; top-1 before and after, the reduction reached, JSON + markdown table + PNG of accuracy against FLOPs
reduction.

    .venv/bin/python bench/prune_study.py                 # the full study (about 35 minutes on 2 cores)
    .venv/bin/python bench/prune_study.py --report-only   # redo the table and the plot from the JSON

Every run of a model starts from the same trained dense weights and gets the same epochs (pruning phase + masked
retraining; the heuristic spends both on retraining) at the same learning rate, as in the paper ("the hyperparameter
settings are the same for all pruning algorithms and sparsity schemes"). The dense weights are cached (keyed by the
study's settings) so that a rerun with --runs can redo single cells; --no-cache trains them again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import rt3d  # noqa: E402
from rt3d.data.motion import MotionDataset  # noqa: E402
from rt3d.frontend.pruning.train import Data, accuracy, fit  # noqa: E402
from rt3d.models.c3d import C3D  # noqa: E402
from rt3d.models.r2plus1d import R2Plus1D  # noqa: E402
from rt3d.runtime.artifact import atomic_write_bytes  # noqa: E402

OUT = ROOT / "bench" / "results" / "prune"
ALGORITHMS = ("heuristic", "group-lasso", "reweighted")
SCHEMES = ("filter", "vanilla", "kgs")


def build(name: str, clip: tuple[int, int]) -> nn.Module:
    """The study's models, at 1/8 of the published widths on 16 x clip x clip inputs."""
    frames, size = clip
    if name == "c3d":
        m = C3D(num_classes=10, width=1 / 8, input_size=(frames, size, size), fc_width=1024, bn=True, dropout=0.2)
    elif name == "r2plus1d":
        m = R2Plus1D(num_classes=10, width=1 / 8, blocks=(1, 1, 1, 1))
    else:
        raise SystemExit(f"unknown study model '{name}' (c3d, r2plus1d)")
    for mod in m.modules():
        if isinstance(mod, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    nn.init.normal_(last.weight, std=0.01)  # small initial logits
    return m


def runs_of(spec: str) -> list[tuple[str, str, float]]:
    """All runs (algorithm, scheme, FLOPs target), or those named 'algorithm:scheme:target,...'."""
    full = [(a, s, 2.6) for a in ALGORITHMS for s in SCHEMES] + [(a, "kgs", 3.6) for a in ALGORITHMS]
    if spec == "all":
        return full
    out = []
    for item in spec.split(","):
        a, s, t = item.split(":")
        out.append((a, s, float(t)))
    return out


def dense_model(name: str, args, train: Data, val: Data) -> tuple[nn.Module, dict]:
    key = hashlib.sha256(json.dumps([name, args.train_clips, args.size, args.frames, args.dense_epochs,
                                     args.dense_lr, args.seed, 1]).encode()).hexdigest()[:16]
    cache = Path(args.cache) / f"{name}-{key}.pt"
    torch.manual_seed(args.seed)
    model = build(name, (args.frames, args.size))
    info = {"cached": False}
    if cache.exists() and not args.no_cache:
        model.load_state_dict(torch.load(cache))
        info["cached"] = True
    else:
        t = time.time()
        fit(model, train, args.dense_epochs, lr=args.dense_lr, seed=args.seed)
        info["train_seconds"] = time.time() - t
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), str(cache) + ".tmp")
        os.replace(str(cache) + ".tmp", cache)
    model.eval()
    info["accuracy"] = accuracy(model, val)
    return model, info


def run_study(args) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    path = out / "study.json"
    result = json.loads(path.read_text()) if path.exists() and args.runs != "all" else {}
    result.setdefault("runs", [])
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "cache", "report_only")}
    result["machine"] = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    t0 = time.time()
    print(f"generating {args.train_clips} + {args.val_clips} clips ({args.frames}x{args.size}x{args.size})",
          flush=True)
    train = Data(MotionDataset(args.train_clips, "train", args.seed, args.size, args.frames))
    val = Data(MotionDataset(args.val_clips, "val", args.seed, args.size, args.frames))
    result["data_seconds"] = time.time() - t0
    result.setdefault("dense", {})
    for name in args.models.split(","):
        dense, info = dense_model(name, args, train, val)
        result["dense"][name] = info
        print(f"{name}: dense top-1 {info['accuracy']:.1%}" + (" (cached)" if info["cached"] else ""), flush=True)
        for algorithm, scheme, target in runs_of(args.runs):
            t = time.time()
            _, rep = rt3d.prune(dense, train, val, scheme=scheme, group=(8, 4), algorithm=algorithm,
                                flops_target=target, epochs=(args.prune_epochs, args.retrain_epochs), lr=args.lr,
                                norm="mixed", seed=args.seed, min_channels=args.min_channels,
                                linear_density=args.linear_density, progress=args.progress)
            row = {"model": name, "algorithm": algorithm, "scheme": scheme, "group": "8x4", "target": target,
                   "linear_density": args.linear_density,
                   "reduction": rep.flops_reduction, "dense_macs": rep.dense_macs, "macs": rep.macs,
                   "top1_dense": rep.accuracy_dense, "top1_hard_pruned": rep.accuracy_pruned,
                   "top1": rep.accuracy, "seconds": time.time() - t,
                   "layers": [{"name": lay.name, "sparsity": lay.sparsity, "density": lay.density,
                               "macs": lay.macs, "dense_macs": lay.dense_macs} for lay in rep.layers],
                   "trace": {k: v for k, v in rep.trace.items() if k in ("lam", "converged", "keep_share")}}
            result["runs"] = [r for r in result["runs"] if _key(r) != _key(row)] + [row]
            print(f"  {algorithm:<12} {scheme:<8} {target}x: reached {rep.flops_reduction:.2f}x, top-1 "
                  f"{rep.accuracy_dense:.1%} -> {rep.accuracy_pruned:.1%} (hard pruned) -> {rep.accuracy:.1%} "
                  f"({row['seconds']:.0f} s)", flush=True)
            write(result, out)
    if args.runs == "all":  # the header states the full study's time; a rerun of single cells keeps it
        result["seconds"] = time.time() - t0
    write(result, out)
    return result


def _key(row: dict) -> tuple:
    return row["model"], row["algorithm"], row["scheme"], row["target"], row.get("linear_density")


def table(result: dict) -> str:
    s = result["settings"]
    lines = ["# Pruning study: top-1 on the generated motion data set (10 classes)", "",
             f"Small C3D (with BatchNorm) and R(2+1)D at 1/8 width, {s['frames']}x{s['size']}x{s['size']} clips, "
             f"{s['train_clips']} training / {s['val_clips']} validation clips; dense training {s['dense_epochs']} "
             f"epochs; every pruning run {s['prune_epochs']} + {s['retrain_epochs']} epochs (pruning phase + masked "
             f"cosine retraining; the heuristic retrains for both) at lr {s['lr']}, group 8x4, mixed l1/l2 norm. "
             f"Command: `.venv/bin/python bench/prune_study.py`; full run {result.get('seconds', 0) / 60:.1f} min "
             f"on {result['machine']['cores']} cores.", "",
             "| model | algorithm | scheme | FLOPs target | fully connected layers | reached | dense top-1 | "
             "hard-pruned top-1 | retrained top-1 | change |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = {a: i for i, a in enumerate(ALGORITHMS)}
    sorder = {x: i for i, x in enumerate(SCHEMES)}
    for r in sorted(result["runs"], key=lambda r: (r["model"], r["target"], r.get("linear_density") or 1.0,
                                                   order[r["algorithm"]], sorder[r["scheme"]])):
        fc = f"{r['linear_density']:.0%} kept" if r.get("linear_density") else "dense"
        lines.append(f"| {r['model']} | {r['algorithm']} | {r['scheme']} | {r['target']}x | {fc} | "
                     f"{r['reduction']:.2f}x | "
                     f"{r['top1_dense']:.1%} | {r['top1_hard_pruned']:.1%} | {r['top1']:.1%} | "
                     f"{100 * (r['top1'] - r['top1_dense']):+.1f} pt |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    colors = {"filter": "tab:red", "vanilla": "tab:blue", "kgs": "tab:green"}
    markers = {"heuristic": "s", "group-lasso": "^", "reweighted": "o"}
    for ax, name in zip(axes[0], models):
        rows = [r for r in result["runs"] if r["model"] == name]
        for r in rows:
            ax.scatter(r["reduction"], 100 * r["top1"], c=colors[r["scheme"]], marker=markers[r["algorithm"]], s=60)
        if rows:
            ax.axhline(100 * rows[0]["top1_dense"], color="gray", ls="--", lw=1, label="dense")
        for s, c in colors.items():
            ax.scatter([], [], c=c, marker="o", label=s)
        for a, m in markers.items():
            ax.scatter([], [], c="black", marker=m, label=a)
        ax.set_title(f"{name} (small), pruned to 2.6x and 3.6x")
        ax.set_xlabel("whole-model FLOPs reduction (x)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "study.json", json.dumps(result, indent=1).encode())
    atomic_write_bytes(out / "study.md", table(result).encode())
    if result["runs"]:
        plot(result, out / "study.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="c3d,r2plus1d")
    p.add_argument("--runs", default="all", help="all, or algorithm:scheme:target,... to redo single cells")
    p.add_argument("--train-clips", type=int, default=6000)
    p.add_argument("--val-clips", type=int, default=2000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--dense-epochs", type=float, default=5)
    p.add_argument("--dense-lr", type=float, default=2e-3)
    p.add_argument("--prune-epochs", type=float, default=1.5)
    p.add_argument("--retrain-epochs", type=float, default=1.5)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-channels", type=int, default=1, help="prune convs with at least this many input channels "
                   "(default 1: every conv, the stem included)")
    p.add_argument("--linear-density", type=float, default=None,
                   help="prune the fully connected layers too (all but the classifier) to this share of their groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--progress", action="store_true", help="progress bars for every run")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "rt3d" / "prune_study"))
    p.add_argument("--no-cache", action="store_true", help="train the dense models again")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if args.report_only:
        result = json.loads((Path(args.out) / "study.json").read_text())
        write(result, Path(args.out))
    else:
        result = run_study(args)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
