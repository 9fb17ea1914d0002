"""The rt3d command line, run as a user would."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt3d.models import export_onnx, get_model

RT3D = [sys.executable, "-m", "rt3d"]


def run(*args, cwd=None, ok=True):
    p = subprocess.run(RT3D + list(args), capture_output=True, text=True, cwd=cwd, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model, shape = get_model("c3d_small")
    path = d / "c3d_small.onnx"
    export_onnx(model, shape, path)
    return path


def test_help_lists_commands():
    out = run("--help").stdout
    for cmd in ("compile", "run", "inspect", "demo", "zoo"):
        assert cmd in out


def test_demo_times_the_pruned_model_next_to_the_dense_one():
    out = run("demo", "--model", "c3d_small", "--repeat", "2").stdout
    assert "top classes: #" in out and "latency: median" in out
    assert re.search(r"kgs 8x4, random masks at 2.0x fewer FLOPs .* [1-9]\d* of \d+ kernels sparse", out), out
    assert re.search(r"speedup over dense: \d+\.\d+x at 2.0x fewer FLOPs", out), out
    assert "kernels sparse" not in run("demo", "--model", "c3d_small", "--repeat", "1", "--sparse", "none").stdout


def test_compile_then_run_artifact(tmp_path, onnx_path):
    out = run("compile", str(onnx_path), "-o", str(tmp_path / "art")).stdout
    assert "compiled" in out and (tmp_path / "art" / "model.so").exists()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run("run", str(tmp_path / "art"), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
              "--benchmark", "--repeat", "2", "--per-layer", "--json", str(tmp_path / "b.json")).stdout
    assert "top classes: #" in res and "latency: median" in res and "k000_conv3d" in res
    assert json.loads((tmp_path / "b.json").read_text())["median_ms"] > 0
    import rt3d
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), rt3d.load(tmp_path / "art").run(x))


def test_inspect_print_after_all(onnx_path):
    out = run("inspect", str(onnx_path), "--passes", "fold-constants,fuse,dce", "--print-after-all",
              "--timing").stdout
    assert "// ---- imported ----" in out and "// ---- after fuse" in out and "act=relu" in out
    assert "GMACs" in out and "pass" in out.splitlines()[-4]


def test_inspect_with_plugin_pass(tmp_path, onnx_path):
    plugin = tmp_path / "my_passes.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport rt3d\n\n"
        "@rt3d.register_pass\n@dataclass(frozen=True)\nclass CountConvs(rt3d.Pass):\n"
        "    name: ClassVar[str] = 'count-convs'\n"
        "    def apply(self, graph, report):\n"
        "        report.note(f\"{graph.ops().count('conv3d')} convs\")\n        return graph\n")
    out = run("inspect", str(onnx_path), "--plugin", str(plugin), "--passes", "count-convs", "--timing").stdout
    assert "8 convs" in out


def test_errors_are_one_line_not_tracebacks(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    p = run("compile", str(bad), "-o", str(tmp_path / "o"), ok=False)
    assert p.returncode == 2 and "rt3d: error:" in p.stderr and "is not an ONNX model" in p.stderr
    assert "Traceback" not in p.stderr
    p = run("inspect", str(bad), "--passes", "nope", ok=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_zoo_list_and_export(tmp_path):
    assert "r2plus1d_18" in run("zoo").stdout
    run("zoo", "--export", "s3d_small", "-o", str(tmp_path / "s.onnx"))
    import rt3d
    assert rt3d.import_onnx(tmp_path / "s.onnx").inputs[0].type.shape == (1, 3, 8, 64, 64)


def test_run_zoo_model_directly():
    out = run("run", "zoo:r2plus1d_small", "--top", "3").stdout
    assert out.count("#") == 3
