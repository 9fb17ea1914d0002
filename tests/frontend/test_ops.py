"""Every supported ONNX op against onnxruntime, through the interpreter and the host build (rtol 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import rt3d

from tests.helpers import check_against_ort, make_model, rand

N = helper.make_node


def conv_case(x_shape, w_shape, opset=17, bias=True, **attrs):
    inits = {"w": rand(*w_shape, seed=1, scale=0.3)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rand(w_shape[0], seed=2)
        ins.append("b")
    return make_model([N("Conv", ins, ["y"], **attrs)], {"x": x_shape}, ["y"], inits, opset), {"x": rand(*x_shape)}


CONV_CASES = {
    "3x3x3 pad1": ((1, 3, 4, 8, 8), (8, 3, 3, 3, 3), dict(pads=[1] * 6)),
    "stride2": ((1, 4, 6, 9, 9), (8, 4, 3, 3, 3), dict(pads=[1] * 6, strides=[2, 2, 2])),
    "1x3x3 (2+1)D spatial": ((1, 5, 4, 10, 10), (6, 5, 1, 3, 3), dict(pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2])),
    "3x1x1 (2+1)D temporal": ((1, 6, 6, 5, 5), (7, 6, 3, 1, 1), dict(pads=[1, 0, 0, 1, 0, 0], strides=[2, 1, 1])),
    "1x7x7 stem": ((1, 3, 4, 20, 20), (9, 3, 1, 7, 7), dict(pads=[0, 3, 3, 0, 3, 3], strides=[1, 2, 2])),
    "7x1x1": ((1, 4, 9, 4, 4), (4, 4, 7, 1, 1), dict(pads=[3, 0, 0, 3, 0, 0])),
    "1x1x1 no bias": ((1, 16, 3, 5, 5), (20, 16, 1, 1, 1), dict(bias=False)),
    "dilation": ((1, 3, 7, 9, 9), (4, 3, 3, 3, 3), dict(dilations=[1, 2, 2], pads=[1, 2, 2, 1, 2, 2])),
    "asymmetric pads": ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(pads=[0, 1, 0, 1, 2, 1])),
    "groups=2": ((1, 4, 4, 6, 6), (6, 2, 3, 3, 3), dict(group=2, pads=[1] * 6)),
    "depthwise": ((1, 4, 4, 6, 6), (4, 1, 3, 3, 3), dict(group=4, pads=[1] * 6)),
    "auto_pad SAME_UPPER": ((1, 3, 5, 7, 7), (4, 3, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2, 2])),
    "auto_pad SAME_LOWER": ((1, 3, 5, 8, 8), (4, 3, 2, 2, 2), dict(auto_pad="SAME_LOWER")),
    "auto_pad VALID": ((1, 3, 5, 7, 7), (4, 3, 3, 3, 3), dict(auto_pad="VALID")),
    "conv2d": ((1, 3, 9, 9), (5, 3, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "conv2d grouped": ((1, 4, 8, 8), (4, 2, 3, 3), dict(group=2)),
    "conv1d": ((1, 3, 12), (4, 3, 3), dict(pads=[1, 1])),
    "M not a multiple of lanes": ((1, 3, 3, 6, 6), (45, 3, 1, 3, 3), dict(pads=[0, 1, 1, 0, 1, 1])),
}


@pytest.mark.parametrize("pipeline", [None, "fold-constants,fuse,dce"], ids=["blocked", "plain"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(case, pipeline):
    """Every conv kind through the blocked kernels (the target default) and the plain NCDHW kernels."""
    x, w, attrs = CONV_CASES[case]
    attrs = dict(attrs)
    bias = attrs.pop("bias", True)
    check_against_ort(*conv_case(x, w, bias=bias, **attrs), passes=pipeline)


POOL_CASES = {
    "max 2x2x2": ("MaxPool", (1, 3, 4, 8, 8), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2])),
    "max 1x2x2 (C3D pool1)": ("MaxPool", (1, 3, 4, 8, 8), dict(kernel_shape=[1, 2, 2], strides=[1, 2, 2])),
    "max pad (C3D pool5)": ("MaxPool", (1, 2, 2, 7, 7), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2],
                                                             pads=[0, 1, 1, 0, 1, 1])),
    "max 3x3x3 s1 p1 (S3D)": ("MaxPool", (1, 2, 4, 6, 6), dict(kernel_shape=[3, 3, 3], pads=[1] * 6)),
    "max ceil_mode": ("MaxPool", (1, 2, 5, 7, 7), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], ceil_mode=1)),
    "max dilation": ("MaxPool", (1, 2, 7, 7, 7), dict(kernel_shape=[2, 2, 2], dilations=[2, 2, 2])),
    "max 2d": ("MaxPool", (1, 3, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "avg exclude pad": ("AveragePool", (1, 3, 4, 6, 6), dict(kernel_shape=[3, 3, 3], pads=[1] * 6)),
    "avg include pad": ("AveragePool", (1, 3, 4, 6, 6), dict(kernel_shape=[3, 3, 3], pads=[1] * 6,
                                                             count_include_pad=1)),
    "avg ceil_mode": ("AveragePool", (1, 2, 5, 7, 7), dict(kernel_shape=[2, 3, 3], strides=[2, 2, 2], ceil_mode=1)),
    "avg ceil include pad": ("AveragePool", (1, 2, 5, 7, 7), dict(kernel_shape=[3, 3, 3], strides=[2, 2, 2],
                                                                  pads=[1] * 6, ceil_mode=1, count_include_pad=1)),
    "avg S3D head": ("AveragePool", (1, 4, 2, 7, 7), dict(kernel_shape=[2, 7, 7])),
    "avg 2d": ("AveragePool", (1, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2])),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool(case):
    op, shape, attrs = POOL_CASES[case]
    opset = 19 if "dilations" in attrs and op == "AveragePool" else 17
    m = make_model([N(op, ["x"], ["y"], **attrs)], {"x": shape}, ["y"], opset=opset)
    check_against_ort(m, {"x": rand(*shape)})


def test_global_avg_pool_and_reduce_mean():
    m = make_model([N("GlobalAveragePool", ["x"], ["g"]), N("ReduceMean", ["x"], ["r"], axes=[2, 3, 4], keepdims=0)],
                   {"x": (1, 4, 3, 5, 5)}, ["g", "r"], opset=13)
    check_against_ort(m, {"x": rand(1, 4, 3, 5, 5)})


def test_reduce_mean_opset18_axes_input():
    m = make_model([N("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], {"x": (1, 4, 3, 5, 5)}, ["y"],
                   {"axes": np.array([-1, -2], np.int64)}, opset=18)
    check_against_ort(m, {"x": rand(1, 4, 3, 5, 5)})


def test_batchnorm():
    c = 5
    inits = {"s": rand(c, seed=1) + 2, "b": rand(c, seed=2), "m": rand(c, seed=3), "v": np.abs(rand(c, seed=4)) + .5}
    m = make_model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                   {"x": (1, c, 3, 4, 4)}, ["y"], inits, opset=15)
    check_against_ort(m, {"x": rand(1, c, 3, 4, 4)})


@pytest.mark.parametrize("op,attrs", [("Relu", {}), ("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.2})])
def test_activation(op, attrs):
    m = make_model([N(op, ["x"], ["y"], **attrs)], {"x": (2, 3, 4, 5)}, ["y"])
    check_against_ort(m, {"x": rand(2, 3, 4, 5)})


def test_clip_opset6_attributes():
    m = make_model([N("Clip", ["x"], ["y"], min=-0.5, max=0.7)], {"x": (2, 3, 8)}, ["y"], opset=6)
    check_against_ort(m, {"x": rand(2, 3, 8)})


def test_clip_opset11_inputs():
    m = make_model([N("Clip", ["x", "lo", "hi"], ["y"]), N("Clip", ["y", "", "hi"], ["z"])], {"x": (2, 3, 8)}, ["z"],
                   {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}, opset=13)
    check_against_ort(m, {"x": rand(2, 3, 8, scale=5)})


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
def test_binary_broadcast(op):
    m = make_model([N(op, ["x", "c"], ["y"]), N(op, ["y", "x"], ["z"])], {"x": (1, 4, 3, 5, 5)}, ["z"],
                   {"c": rand(4, 1, 1, 1, seed=3) + 3})
    check_against_ort(m, {"x": rand(1, 4, 3, 5, 5) + 5})


def test_concat_flatten_reshape_transpose():
    nodes = [N("Concat", ["x", "x2"], ["c"], axis=1), N("Transpose", ["c"], ["t"], perm=[0, 2, 1, 3, 4]),
             N("Reshape", ["t", "shape"], ["r"]), N("Flatten", ["r"], ["y"], axis=1)]
    m = make_model(nodes, {"x": (1, 2, 3, 4, 4), "x2": (1, 3, 3, 4, 4)}, ["y"],
                   {"shape": np.array([0, -1, 16], np.int64)})
    check_against_ort(m, {"x": rand(1, 2, 3, 4, 4), "x2": rand(1, 3, 3, 4, 4, seed=5)})


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta", [(0, 1, 1.0, 1.0), (0, 0, 0.5, 2.0), (1, 1, 1.0, 0.3)])
def test_gemm(trans_a, trans_b, alpha, beta):
    a_shape = (7, 3) if trans_a else (3, 7)
    b_shape = (5, 7) if trans_b else (7, 5)
    m = make_model([N("Gemm", ["a", "b", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)],
                   {"a": a_shape}, ["y"], {"b": rand(*b_shape, seed=1), "c": rand(5, seed=2)})
    check_against_ort(m, {"a": rand(*a_shape)})


def test_gemm_runtime_b():
    m = make_model([N("Gemm", ["a", "b"], ["y"], transB=1, alpha=2.0)], {"a": (3, 7), "b": (5, 7)}, ["y"])
    check_against_ort(m, {"a": rand(3, 7), "b": rand(5, 7, seed=1)})


def test_matmul_constant_and_batched():
    m = make_model([N("MatMul", ["a", "w"], ["h"]), N("MatMul", ["x", "x2"], ["y"]), N("MatMul", ["x", "w2"], ["z"])],
                   {"a": (4, 6), "x": (2, 3, 4), "x2": (2, 4, 5)}, ["h", "y", "z"],
                   {"w": rand(6, 3, seed=1), "w2": rand(4, 7, seed=4)})
    check_against_ort(m, {"a": rand(4, 6), "x": rand(2, 3, 4, seed=2), "x2": rand(2, 4, 5, seed=3)})
    # constant weights make a fully connected layer, over the leading axes of a 3-D input too (a Linear per time step)
    ops = [n.op for n in rt3d.import_onnx(m).nodes]
    assert ops.count("dense") == 2 and ops.count("matmul") == 1


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (13, 1), (13, -1)])
def test_softmax(opset, axis):
    m = make_model([N("Softmax", ["x"], ["y"], axis=axis)], {"x": (2, 3, 4)}, ["y"], opset=opset)
    check_against_ort(m, {"x": rand(2, 3, 4)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    m = make_model([N("Pad", ["x", "pads", "v"], ["y"], mode=mode)], {"x": (1, 2, 3, 4, 5)}, ["y"],
                   {"pads": np.array([0, 0, 1, 2, 0, 0, 0, 1, 0, 2], np.int64), "v": np.array(0.5, np.float32)},
                   opset=13)
    check_against_ort(m, {"x": rand(1, 2, 3, 4, 5)})


def test_pad_opset18_axes():
    m = make_model([N("Pad", ["x", "pads", "", "axes"], ["y"])], {"x": (1, 2, 3, 4)}, ["y"],
                   {"pads": np.array([1, 2, 0, 1], np.int64), "axes": np.array([2, 3], np.int64)}, opset=18)
    check_against_ort(m, {"x": rand(1, 2, 3, 4)})


def test_constant_identity_dropout_and_shape_arithmetic():
    """The legacy exporter's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [N("Constant", [], ["k"], value=helper.make_tensor("k", 1, [1], [2.0])),
             N("Mul", ["x", "k"], ["m"]), N("Identity", ["m"], ["i"]), N("Dropout", ["i"], ["d"]),
             N("Shape", ["d"], ["s"]), N("Gather", ["s", "zero"], ["n"], axis=0),
             N("Unsqueeze", ["n", "ax0"], ["n1"]), N("Concat", ["n1", "minus1"], ["shape"], axis=0),
             N("Reshape", ["d", "shape"], ["y"])]
    consts = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    m = make_model(nodes, {"x": (2, 3, 4)}, {"y": (2, 12)}, consts, opset=13)
    g = check_against_ort(m, {"x": rand(2, 3, 4)})
    assert g.ops() == ["mul", "reshape"]  # all the shape arithmetic folded away at import


def test_squeeze_unsqueeze_runtime():
    nodes = [N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u", "a"], ["y"])]
    m = make_model(nodes, {"x": (2, 3)}, ["y"], {"a": np.array([0, 3], np.int64)}, opset=13)
    check_against_ort(m, {"x": rand(2, 3)})


@pytest.mark.parametrize("opset", list(range(11, 22)))
def test_small_3d_cnn_every_opset(opset):
    """A conv/BN/ReLU/pool/GAP/Gemm network imports and runs at every opset from 11 to 21."""
    c = 4
    inits = {"w": rand(c, 3, 3, 3, 3, seed=1, scale=0.3), "b": rand(c, seed=2), "s": rand(c, seed=3) + 2,
             "bb": rand(c, seed=4), "m": rand(c, seed=5), "v": np.abs(rand(c, seed=6)) + .5,
             "fw": rand(5, c, seed=7), "fb": rand(5, seed=8)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 6), N("BatchNormalization", ["c", "s", "bb", "m", "v"],
                                                                ["n"]),
             N("Relu", ["n"], ["r"]), N("MaxPool", ["r"], ["p"], kernel_shape=[1, 2, 2], strides=[1, 2, 2]),
             N("GlobalAveragePool", ["p"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    m = make_model(nodes, {"x": (1, 3, 4, 8, 8)}, ["y"], inits, opset=opset)
    check_against_ort(m, {"x": rand(1, 3, 4, 8, 8)})
