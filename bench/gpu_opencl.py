"""GPU timings of rt3d's android-gpu kernels: C3D, R(2+1)D-18 and S3D at full size, dense and pruned (KGS 8x4 and
Vanilla 8x4 at the paper's whole-model FLOPs reductions), float32 and float16, run on a GPU's OpenCL driver by each
artifact's own runner (run_opencl.py: numpy and pyopencl, no rt3d or TVM on the GPU machine).

Two steps, because the GPU machine need not have TVM (nor room for 300 MB of C3D weights in transit):

  prepare DIR (here, with rt3d): builds and exports the artifacts into DIR and packs DIR.tar.gz. Full-size models
      travel with synthetic weights: their float weights are zeroed in weights.bin (so the pack is small) and the
      GPU side refills them from a fixed integer hash at each weight's RMS, recorded in synthetic.json; each float32
      model's expected output comes from running the same artifact with the same weights on this machine's OpenCL
      device (PoCL). Float16 models are checked against their float32 twin's output (tolerance 3e-2 of its range).
      Small test models (*_small) travel with their real weights and onnxruntime's output, a check of the whole
      path (ONNX import to GPU kernels) against an independent engine.
  run DIR --out OUT (on the GPU machine): runs every artifact, checks its output, times it (OpenCL profiling: each
      kernel's median device time over the runs; and wall time per run, uploads and launches included); writes
      gpu.json and gpu.md (`report OUT` rewrites gpu.md from gpu.json).

Timings from `run` are the GPU's; a DIR run here (PoCL on the CPU) only tests the script.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np

MODELS = ("c3d", "r2plus1d_18", "s3d")
SCHEMES = ("dense", "kgs(8x4)", "vanilla(8x4)")
TARGETS = ("android-gpu", "android-gpu-fp16")
SMALL = ("c3d_small", "r2plus1d_small", "s3d_small")
INPUT_INDEX = 1 << 20  # synthetic() index of a full-size model's input clip
FP16_RTOL = 3e-2  # of the output's range: float16 keeps 11 significant bits over a few dozen layers


def synthetic(index: int, n: int, rms: float, dtype) -> np.ndarray:
    """Weight ``index``'s synthetic values: an integer hash of (index, position) mapped to [-1, 1) and scaled to
    ``rms`` (uniform: RMS = half-width / sqrt(3)); the same on every machine and numpy version."""
    h = (np.arange(n, dtype=np.uint64) + np.uint64(index * 1000003 + 1)) * np.uint64(2654435761) % np.uint64(2**32)
    h ^= h >> np.uint64(16)
    h = h * np.uint64(0x45D9F3B) % np.uint64(2**32)
    h ^= h >> np.uint64(16)
    u = h.astype(np.float64) / 2**32 * 2 - 1
    return (u * rms * np.sqrt(3)).astype(dtype)


def synthetic_input(shape, dtype) -> np.ndarray:
    return synthetic(INPUT_INDEX, int(np.prod(shape)), 1.0, dtype).reshape(shape)


def fill_synthetic(params: list[np.ndarray], spec: dict) -> list[np.ndarray]:
    out = list(params)
    for i, rms in spec["rms"].items():
        i = int(i)
        out[i] = synthetic(i, params[i].size, rms, params[i].dtype).reshape(params[i].shape)
    return out


def load_runner(artifact: Path):
    """The artifact's run_opencl.py as a module (what a user runs there)."""
    spec = importlib.util.spec_from_file_location("rt3d_run_opencl", artifact / "run_opencl.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


# ---- prepare (here) ------------------------------------------------------------------------------------------
def _build(name: str, scheme: str, target: str, cache: Path):
    import rt3d
    from rt3d.models import export_onnx, get_model
    from rt3d.models.sparse import PAPER_RATES, sparsify
    model, shape = get_model(name)
    path = cache / f"{name}.onnx"
    if not path.exists():
        export_onnx(model, shape, path)
    info = {"model": name, "scheme": scheme, "target": target, "shape": list(shape)}
    if scheme == "dense":
        return rt3d.build(path, target=target), info, path
    rate = PAPER_RATES.get(name, 2.0)
    pruned, rates = sparsify(path, scheme, rate, seed=0, min_channels=16 if name in PAPER_RATES else 4)
    info.update(flops_reduction=rate, layer_density=round(rates[0].density, 4), pruned_layers=len(rates))
    return rt3d.build(pruned, target=target), info, pruned


def prepare(out: Path, models, small, schemes, targets) -> None:
    import onnxruntime as ort
    out.mkdir(parents=True, exist_ok=True)
    cache = out / ".onnx"
    cache.mkdir(exist_ok=True)
    x_of: dict[str, np.ndarray] = {}
    for name in list(small) + list(models):
        is_small = name in small
        for scheme in schemes:
            twin = None  # the float32 artifact of the same model and scheme: its synthetic spec and output
            for target in targets:
                key = f"{name}-{scheme.split('(')[0]}-{'fp16' if target.endswith('fp16') else 'fp32'}"
                if (out / key / "bench.json").is_file():  # made by an earlier, interrupted prepare
                    twin = _twin(out / key) if not target.endswith("fp16") else twin
                    continue
                t0 = time.time()
                mod, info, onnx_model = _build(name, scheme, target, cache)
                art = mod.export(out / key)
                shape = tuple(mod.inputs[0]["shape"])
                if is_small:
                    x = x_of.setdefault(name, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
                    np.save(art / "input.npy", x.astype(mod.inputs[0]["dtype"]))
                else:  # the clip is synthetic too (a full-size clip is up to 9.6 MB of noise in transit)
                    x = synthetic_input(shape, np.float32)
                info.update(kernels=len(mod.layers), macs=mod.macs,
                            sparse_layers=sum(lay.op.startswith("sparse") for lay in mod.layers))
                fp16 = target.endswith("fp16")
                if is_small:
                    blob = onnx_model.SerializeToString() if hasattr(onnx_model, "SerializeToString") \
                        else Path(onnx_model).read_bytes()
                    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                    info.update(reference="onnxruntime (real weights)")
                else:
                    runner = load_runner(art)
                    meta, source, params, layers = runner.read_artifact(art)
                    floats = [i for i, p in enumerate(params) if p.dtype.kind == "f"]
                    same = twin is not None and [p.shape for p in params] == twin["shapes"]
                    spec = {"rms": twin["spec"]["rms"] if same else
                            {str(i): float(np.sqrt(np.mean(params[i].astype(np.float64) ** 2))) for i in floats}}
                    (art / "synthetic.json").write_text(json.dumps(spec))
                    _zero_floats(art / "weights.bin", meta, floats)
                    if not fp16:
                        # on this machine's OpenCL device (PoCL), with the weights the GPU side will make
                        ref = runner.OpenCLLauncher(source, meta["opencl_plan"], layers, fill_synthetic(params, spec),
                                                    meta["output_layers"]).run([x])[0]
                        twin = {"spec": spec, "shapes": [p.shape for p in params], "ref": ref}
                        info.update(reference="PoCL, same artifact and synthetic weights")
                    elif same:
                        ref = twin["ref"]
                        info.update(reference="the float32 twin's output")
                    else:
                        ref = None
                if ref is not None:
                    np.save(art / "expected.npy", ref)
                    info.update(rtol=FP16_RTOL if fp16 else 1e-4)
                (art / "bench.json").write_text(json.dumps(info))
                print(f"[prepare] {key}: {len(mod.layers)} kernels, {info['sparse_layers']} sparse, "
                      f"{time.time() - t0:.1f} s", flush=True)
    shutil.rmtree(cache)
    with tarfile.open(f"{out}.tar.gz", "w:gz") as tar:
        tar.add(out, arcname=out.name)
    print(f"[prepare] {out}.tar.gz: {os.path.getsize(f'{out}.tar.gz') / 2**20:.1f} MiB")


def _twin(art: Path) -> dict | None:
    if not (art / "synthetic.json").is_file():
        return None
    meta = json.loads((art / "meta.json").read_text())
    return {"spec": json.loads((art / "synthetic.json").read_text()),
            "shapes": [tuple(p["shape"]) for p in meta["params"]], "ref": np.load(art / "expected.npy")}


def _zero_floats(path: Path, meta: dict, floats: list[int]) -> None:
    blob = bytearray(path.read_bytes())
    for i in floats:
        spec = meta["params"][i]
        blob[spec["offset"]:spec["offset"] + spec["nbytes"]] = bytes(spec["nbytes"])
    path.write_bytes(bytes(blob))


# ---- run (on the GPU machine) --------------------------------------------------------------------------------
def run(root: Path, out: Path, repeat: int, warmup: int, only: str | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    arts = sorted(p for p in root.iterdir() if (p / "bench.json").is_file() and (not only or only in p.name))
    res = {"host": platform.node(), "python": sys.version.split()[0], "repeat": repeat, "models": {}}
    for art in arts:
        info = json.loads((art / "bench.json").read_text())
        entry = res["models"][art.name] = dict(info)
        try:
            runner = load_runner(art)
            meta, source, params, layers = runner.read_artifact(art)
            if (art / "synthetic.json").is_file():
                params = fill_synthetic(params, json.loads((art / "synthetic.json").read_text()))
            t0 = time.perf_counter()
            launcher = runner.OpenCLLauncher(source, meta["opencl_plan"], layers, params, meta["output_layers"])
            entry["setup_s"] = time.perf_counter() - t0  # kernel compilation and weight upload
            x = np.load(art / "input.npy") if (art / "input.npy").is_file() else \
                synthetic_input(meta["inputs"][0]["shape"], meta["inputs"][0]["dtype"])
            y = launcher.run([x])[0]
            if (art / "expected.npy").is_file():  # float16: within info["rtol"] of the output's range alone
                ref = np.load(art / "expected.npy").astype(np.float64)
                entry["check"] = runner.compare(y, ref, 0 if "fp16" in art.name else 1e-4,
                                                info["rtol"] * float(np.abs(ref).max()))
            runs, ktimes = launcher.benchmark([x], repeat=repeat, warmup=warmup)
            entry.update(device=launcher.device_name, median_ms=statistics.median(runs), runs_ms=runs,
                         kernel_ms=sum(k.ms for k in ktimes), layers=runner.layer_rows(layers, ktimes))
            res.setdefault("device", launcher.device_name)
            d = launcher.device
            res.setdefault("device_version", f"{d.version}; driver {d.driver_version}")
            print(f"[run] {art.name}: {entry['kernel_ms']:.3f} ms kernels, {entry['median_ms']:.3f} ms wall, "
                  f"check {entry.get('check', {}).get('ok')}", flush=True)
        except Exception as e:  # noqa: BLE001  (one artifact's failure is recorded; the others still run)
            entry["error"] = f"{type(e).__name__}: {str(e)[:600]}"
            print(f"[run] {art.name}: {entry['error']}", flush=True)
            traceback.print_exc()
    tmp = out / "gpu.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out / "gpu.json")
    (out / "gpu.md").write_text(markdown(res))
    return res


def markdown(res: dict) -> str:
    """One row per artifact: kernel time, wall time, GFLOP/s (of the MACs the model computes) and the speedup of
    each pruned model over its dense twin, kernel time against kernel time."""
    lines = [f"Device: {res.get('device', '?')}; {res['repeat']} timed runs each, medians. kernels: the sum of each "
             "kernel's median OpenCL-profiled time; wall: a whole run from Python (input upload, launches, output "
             "download).", "",
             "| model | precision | scheme | kernels ms | wall ms | GFLOP/s (kept MACs) | speedup over dense "
             "| FLOPs reduction | output check |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    models = res["models"]
    for key in sorted(models, key=lambda k: ("_small" in k, not k.endswith("fp32"), k)):  # full size first, fp32 first
        e = models[key]
        name, scheme, prec = key.rsplit("-", 2)
        if "error" in e:
            why = "not run: the device has no cl_khr_fp16" if "cl_khr_fp16" in e["error"] else e["error"][:100]
            lines.append(f"| {name} | {prec} | {scheme} | - | - | - | - | - | {why} |")
            continue
        dense = models.get(f"{name}-dense-{prec}", {})
        speed = f"{dense['kernel_ms'] / e['kernel_ms']:.2f}x" if scheme != "dense" and "kernel_ms" in dense else ""
        chk = e.get("check")
        check = "-" if not chk else (f"{'ok' if chk['ok'] else 'MISMATCH'} ({chk['max_abs_err']:.2g} "
                                     f"<= {chk['atol']:.2g})")
        lines.append(f"| {name} | {prec} | {scheme} | {e['kernel_ms']:.2f} | {e['median_ms']:.2f} | "
                     f"{2 * e['macs'] / (e['kernel_ms'] * 1e6):.0f} | {speed} | "
                     f"{e.get('flops_reduction', 1.0):.1f}x | {check} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build and export the artifacts (here, with rt3d)")
    p.add_argument("dir", type=Path)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--small", default=",".join(SMALL))
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--targets", default=",".join(TARGETS))
    r = sub.add_parser("run", help="run and time every artifact in DIR (on the GPU machine)")
    r.add_argument("dir", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--repeat", type=int, default=30)
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument("--only", help="only artifacts whose name contains this")
    m = sub.add_parser("report", help="rewrite OUT/gpu.md from OUT/gpu.json")
    m.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "report":
        (args.out / "gpu.md").write_text(markdown(json.loads((args.out / "gpu.json").read_text())))
        return 0
    split = (lambda s: [v for v in s.split(",") if v])  # noqa: E731
    if args.cmd == "prepare":
        prepare(args.dir, split(args.models), split(args.small), split(args.schemes), split(args.targets))
        return 0
    res = run(args.dir, args.out, args.repeat, args.warmup, args.only)
    print(markdown(res))
    return 0 if all("error" not in e and e.get("check", {}).get("ok", True) for e in res["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
