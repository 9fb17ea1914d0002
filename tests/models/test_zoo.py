"""Zoo models: both torch exporters import; builds match onnxruntime and torch; MACs match published counts."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import rt3d
from rt3d.ir.flops import graph_macs
from rt3d.models import export_onnx, get_model
from tests.helpers import assert_close, ort_run, rand

SMALL = ["c3d_small", "r2plus1d_small", "s3d_small"]


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", SMALL)
def test_small_model_matches_ort_and_torch(name, dynamo):
    model, shape = get_model(name)
    data = export_onnx(model, shape, dynamo=dynamo)
    x = rand(*shape, seed=3)
    expected = ort_run(data, {onnx.load_from_string(data).graph.input[0].name: x})[0]
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x)).numpy()
    assert np.abs(torch_out).max() > 1e-3 and torch_out.std() > 1e-4, "degenerate test model output"
    mod = rt3d.build(data)
    y = mod.run(x)
    assert_close(y, expected, what=f"{name} vs onnxruntime")
    assert_close(y, torch_out, rtol=2e-4, what=f"{name} vs torch")


@pytest.mark.parametrize("name", SMALL)
def test_interpreter_matches_ort(name):
    model, shape = get_model(name)
    data = export_onnx(model, shape)
    x = rand(*shape, seed=4)
    g = rt3d.import_onnx(data)
    from rt3d.ir import run_graph
    assert_close(run_graph(g, x)[0], ort_run(data, {"input": x})[0], what=name)


@pytest.mark.parametrize("name,gmacs", [("c3d", 38.5), ("r2plus1d_18", 40.5), ("s3d", 17.98)])
def test_published_macs(name, gmacs):
    model, shape = get_model(name, randomize_bn=False)
    g = rt3d.import_onnx(export_onnx(model, shape))
    assert graph_macs(g) / 1e9 == pytest.approx(gmacs, abs=0.05 if gmacs > 20 else 0.005)
