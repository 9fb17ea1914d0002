"""The model zoo: full-size models for benchmarks and small variants for tests, with ONNX export."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .c3d import C3D
from .r2plus1d import R2Plus1D
from .s3d import S3D


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    doc: str


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("c3d", lambda: C3D(num_classes=487), (1, 3, 16, 112, 112), "C3D, Sports-1M head (487 classes)"),
    ZooEntry("r2plus1d_18", lambda: R2Plus1D(num_classes=400), (1, 3, 16, 112, 112), "R(2+1)D-18, Kinetics-400 head"),
    ZooEntry("s3d", lambda: S3D(num_classes=400), (1, 3, 16, 224, 224), "S3D, Kinetics-400 head"),
    # small variants: same structure, fewer channels and smaller clips, for tests
    ZooEntry("c3d_small", lambda: C3D(num_classes=10, width=1 / 16, input_size=(16, 32, 32), fc_width=64),
             (1, 3, 16, 32, 32), "C3D at 1/16 width on 16x32x32 clips"),
    ZooEntry("r2plus1d_small", lambda: R2Plus1D(num_classes=10, width=1 / 8, blocks=(1, 1, 1, 1)),
             (1, 3, 8, 32, 32), "R(2+1)D at 1/8 width, one block per stage, 8x32x32 clips"),
    ZooEntry("s3d_small", lambda: S3D(num_classes=10, width=1 / 8, input_size=(8, 64, 64)),
             (1, 3, 8, 64, 64), "S3D at 1/8 width on 8x64x64 clips"),
]}


def get_model(name: str, seed: int = 0, randomize_bn: bool = True) -> tuple[nn.Module, tuple[int, ...]]:
    """A zoo model in eval mode with deterministic weights, and its input shape.

    BatchNorm statistics are randomized (``randomize_bn``) so that folding them is actually exercised.
    Example: ``model, shape = get_model("c3d_small")``.
    """
    if name not in ZOO:
        raise KeyError(f"unknown model '{name}'; the zoo has: {', '.join(ZOO)}")
    torch.manual_seed(seed)
    model = ZOO[name].build().eval()
    with torch.no_grad():  # variance-preserving init, so activations stay alive through deep ReLU stacks
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -0.1, 0.1)
    if randomize_bn:
        g = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model, ZOO[name].input_shape


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path | None = None,
                dynamo: bool = False, opset: int | None = None) -> bytes:
    """Export ``model`` to ONNX with a static input shape; returns the bytes (and writes ``path`` if given)."""
    opset = opset or (18 if dynamo else 17)  # the dynamo exporter writes opset 18 natively
    x = torch.zeros(input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                     output_names=["logits"], verbose=False)
            prog.optimize()
            data = prog.model_proto.SerializeToString()
        else:
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"])
            data = buf.getvalue()
    if path is not None:
        from ..runtime.artifact import atomic_write_bytes
        atomic_write_bytes(Path(path), data)
    return data
