"""Helpers for the tests: small ONNX models by hand, and comparisons of rt3d with onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rt3d.ir.sparsity import Sparsity, random_mask


def make_model(nodes, inputs: dict, outputs: list[str] | dict, inits: dict | None = None, opset: int = 17,
               name: str = "test") -> onnx.ModelProto:
    """An ONNX model from nodes; ``inputs`` maps names to shapes (float32), ``inits`` names to arrays.

    ``outputs`` is a list of names (shapes inferred by ONNX) or a dict of names to shapes.
    """
    shapes = outputs if isinstance(outputs, dict) else {o: None for o in outputs}
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in shapes.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    # let ONNX shape inference fill in the output types (the checker wants them)
    inferred = onnx.shape_inference.infer_shapes(model)
    for out, inf in zip(model.graph.output, inferred.graph.output):
        if shapes[out.name] is None:
            out.CopyFrom(inf)
    onnx.checker.check_model(model)
    return model


def ort_run(model, feeds: dict) -> list[np.ndarray]:
    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rand(*shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values"
    # relative to the output's scale, so that outputs near zero do not make the test meaningless or flaky
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=max(atol, rtol * scale), err_msg=what)


def check_against_ort(model, feeds: dict, build: bool = True, rtol=1e-4, passes=None):
    """Interpreter and (optionally) the host build must both match onnxruntime."""
    import rt3d
    from rt3d.ir import run_graph
    expected = ort_run(model, feeds)
    g = rt3d.import_onnx(model)
    args = [feeds[v.name] if v.name in feeds else list(feeds.values())[i] for i, v in enumerate(g.inputs)]
    got = run_graph(g, *args)
    for i, (a, e) in enumerate(zip(got, expected)):
        assert_close(a, e, rtol=rtol, what=f"interpreter output {i}")
    if build:
        kw = {} if passes is None else {"passes": passes}
        mod = rt3d.build(model, **kw)
        out = mod.run(*args)
        outs = out if isinstance(out, list) else [out]
        for i, (a, e) in enumerate(zip(outs, expected)):
            assert_close(a, e, rtol=rtol, what=f"build output {i}")
    return g


def sep_net(rng, cin, mid, cout, k, shape, stride2=1, bias1=True, act1="relu", residual=False, density=0.4,
            extra_user=False, stride1=1):
    """R(2+1)D's pair as ONNX: a 1xkxk conv (+ bias; spatial stride stride1) + act1, then a kx1x1 conv with bias
    (temporal stride stride2, + a residual) + relu, both KGS 8x4-pruned; ``extra_user``: the intermediate is also a
    graph output."""
    sp = Sparsity("kgs", (8, 4))
    w1 = rng.standard_normal((mid, cin, 1, k, k)).astype(np.float32) * (2.0 / (cin * k * k)) ** 0.5
    w2 = rng.standard_normal((cout, mid, k, 1, 1)).astype(np.float32) * (2.0 / (mid * k)) ** 0.5
    inits = {"w1": w1 * random_mask(w1.shape, sp, density, rng), "w2": w2 * random_mask(w2.shape, sp, density, rng),
             "b2": rng.standard_normal(cout).astype(np.float32)}
    ins1 = ["x", "w1"]
    if bias1:
        inits["b1"] = rng.standard_normal(mid).astype(np.float32)
        ins1.append("b1")
    nodes = [helper.make_node("Conv", ins1, ["c1"], kernel_shape=[1, k, k], pads=[0, k // 2, k // 2] * 2,
                              strides=[1, stride1, stride1])]
    nodes.append(helper.make_node("LeakyRelu", ["c1"], ["m"], alpha=0.1) if act1 == "leaky"
                 else helper.make_node("Relu", ["c1"], ["m"]))
    nodes.append(helper.make_node("Conv", ["m", "w2", "b2"], ["c2"], kernel_shape=[k, 1, 1], pads=[k // 2, 0, 0] * 2,
                                  strides=[stride2, 1, 1]))
    inputs = {"x": shape}
    last = "c2"
    if residual:
        inputs["r"] = (shape[0], cout, (shape[2] + 2 * (k // 2) - k) // stride2 + 1) + tuple(
            (s + 2 * (k // 2) - k) // stride1 + 1 for s in shape[3:])
        nodes.append(helper.make_node("Add", ["c2", "r"], ["s"]))
        last = "s"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    return make_model(nodes, inputs, ["y", "m"] if extra_user else ["y"], inits), inputs
