"""Bad input gets a clear error naming what was wrong and where, never a traceback from deep inside TVM."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import rt3d
from tests.helpers import make_model, rand

N = helper.make_node


def test_unsupported_ops_all_listed_at_once():
    nodes = [N("Relu", ["x"], ["a"], name="ok_relu"), N("GridSample", ["a", "grid"], ["b"], name="grid_1"),
             N("Erf", ["b"], ["c"], name="erf_7"), N("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", 1, [1, 2, 4, 4]),
                                             helper.make_tensor_value_info("grid", 1, [1, 4, 4, 2])],
                              [helper.make_tensor_value_info("y", 1, [1, 2, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(rt3d.UnsupportedOpsError) as e:
        rt3d.import_onnx(model)
    msg = str(e.value)
    assert "unsupported ONNX op 'GridSample' (node 'grid_1', opset 17)" in msg
    assert "unsupported ONNX op 'Erf' (node 'erf_7', opset 17)" in msg
    assert "2 unsupported" in msg and "supported: " in msg and "Conv" in msg
    assert [u[0] for u in e.value.unsupported] == ["GridSample", "Erf"]


def test_corrupt_file(tmp_path):
    p = tmp_path / "broken.onnx"
    data = make_model([N("Relu", ["x"], ["y"])], {"x": (1, 2)}, ["y"]).SerializeToString()
    p.write_bytes(data[: len(data) // 2] + b"\xff\xff\xff")
    with pytest.raises(rt3d.ModelLoadError, match="broken.onnx' is not"):
        rt3d.import_onnx(p)


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a text file, not a model\n" * 10)
    with pytest.raises(rt3d.ModelLoadError, match="notes.onnx' is not an ONNX model"):
        rt3d.build(p)


def test_missing_file(tmp_path):
    with pytest.raises(rt3d.ModelLoadError, match="does not exist"):
        rt3d.import_onnx(tmp_path / "nope.onnx")


def test_dynamic_input_shape_and_override():
    graph = helper.make_graph([N("Relu", ["x"], ["y"])], "dyn",
                              [helper.make_tensor_value_info("x", 1, ["batch", 3, 8])],
                              [helper.make_tensor_value_info("y", 1, ["batch", 3, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(rt3d.ModelLoadError) as e:
        rt3d.import_onnx(model)
    assert "input 'x' has a dynamic dimension 'batch' at axis 0" in str(e.value)
    assert "input_shapes" in str(e.value)
    g = rt3d.import_onnx(model, input_shapes={"x": (2, 3, 8)})
    assert g.inputs[0].type.shape == (2, 3, 8)
    with pytest.raises(rt3d.ModelLoadError, match="unknown inputs"):
        rt3d.import_onnx(model, input_shapes={"nope": (1,)})


def test_wrong_input_shape_at_run_time():
    mod = rt3d.build(make_model([N("Relu", ["x"], ["y"])], {"x": (1, 3, 4, 8, 8)}, ["y"]))
    with pytest.raises(rt3d.InputError) as e:
        mod.run(np.zeros((1, 3, 4, 8, 9), np.float32))
    assert "input 'x' must have shape [1, 3, 4, 8, 8], got [1, 3, 4, 8, 9]" in str(e.value)
    with pytest.raises(rt3d.InputError, match="takes 1 input"):
        mod.run()
    with pytest.raises(rt3d.InputError, match="has no input"):
        mod.run(y=np.zeros((1, 3, 4, 8, 8), np.float32))
    with pytest.raises(rt3d.InputError, match="must be float32"):
        mod.run(np.zeros((1, 3, 4, 8, 8), dtype=object))
    np.testing.assert_array_equal(mod.run(x=np.ones((1, 3, 4, 8, 8))), 1.0)  # by name, float64 converted


def test_nonconstant_attribute_input_names_node():
    m = make_model([N("Clip", ["x", "lo"], ["y"], name="clip_3")], {"x": (2, 3), "lo": ()}, ["y"], opset=13)
    with pytest.raises(rt3d.ConversionError) as e:
        rt3d.import_onnx(m)
    assert "node 'clip_3' (op Clip, opset 13)" in str(e.value) and "must be a constant" in str(e.value)


def test_bad_conv_shapes_name_the_node():
    graph = helper.make_graph([N("Conv", ["x", "w"], ["y"], name="conv_bad")], "bad",
                              [helper.make_tensor_value_info("x", 1, [1, 3, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 1, 1, 1])],
                              initializer=[onnx.numpy_helper.from_array(rand(4, 3, 5, 5, 5), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(rt3d.ConversionError) as e:
        rt3d.import_onnx(model)
    assert "node 'conv_bad' (op Conv, opset 17)" in str(e.value) and "larger than padded input" in str(e.value)


def test_unsupported_opset():
    m = make_model([N("Relu", ["x"], ["y"])], {"x": (1, 2)}, ["y"])
    m.opset_import[0].version = 99
    with pytest.raises(rt3d.ModelLoadError, match="opset 99; rt3d supports opsets"):
        rt3d.import_onnx(m)


def test_unknown_target():
    with pytest.raises(rt3d.BuildError, match="unknown target 'tpu'; known targets: host"):
        rt3d.build(make_model([N("Relu", ["x"], ["y"])], {"x": (1, 2)}, ["y"]), target="tpu")
