"""The verifier: its errors quote the offending node."""
from __future__ import annotations

import numpy as np
import pytest

from rt3d.errors import IRError
from rt3d.ir import Graph, TensorType, parse_graph, verify
from rt3d.ir.ops import ConvAttrs


def conv_graph():
    g = Graph("v")
    x = g.add_input("x", TensorType((1, 3, 4, 6, 6)))
    y = g.add("conv3d", [x, g.add_const("w", np.zeros((4, 3, 3, 3, 3), np.float32))], ConvAttrs(pad=(1,) * 6))
    g.outputs = [g.add("relu", [y])]
    return g


def test_valid_graph_passes():
    verify(conv_graph())


def test_wrong_output_type_quotes_node():
    g = conv_graph()
    g.nodes[0].output.type = TensorType((1, 4, 4, 6, 7))
    with pytest.raises(IRError, match=r"node: %0 = conv3d\(%x, @w\).*output type should be f32\[1,4,4,6,6\]"):
        verify(g)


def test_use_before_definition():
    g = conv_graph()
    g.nodes.reverse()
    with pytest.raises(IRError, match=r"node: %1 = relu\(%0\).*not defined before use"):
        verify(g)


def test_bad_attribute_values():
    g = conv_graph()
    g.nodes[0].with_attrs(stride=(1, 1))
    with pytest.raises(IRError, match="attribute 'stride' has 2 entries, expected 3"):
        verify(g)
    g = conv_graph()
    g.nodes[0].with_attrs(groups=2)
    with pytest.raises(IRError, match="groups=2 does not divide channels 3"):
        verify(g)


def test_arity_and_unknown_activation():
    g = conv_graph()
    g.nodes[1].inputs.append(g.inputs[0])
    with pytest.raises(IRError, match="2 inputs, op 'relu' takes 1"):
        verify(g)
    with pytest.raises(IRError, match="unknown activation 'gelu'"):
        parse_graph("graph g(%x: f32[1,2,3,3,3]) {\n  @w: f32[2,2,1,1,1] = [1, 0, 0, 1]\n"
                    "  %1 = conv3d(%x, @w) {act=gelu, stride=[1,1,1], pad=[0,0,0,0,0,0], dilation=[1,1,1], groups=1}"
                    " : f32[1,2,3,3,3]\n  return %1\n}").nodes and verify(parse_graph(
                        "graph g(%x: f32[1,2,3,3,3]) {\n  @w: f32[2,2,1,1,1] = [1, 0, 0, 1]\n"
                        "  %1 = conv3d(%x, @w) {act=gelu} : f32[1,2,3,3,3]\n  return %1\n}"))


def test_output_not_defined():
    g = conv_graph()
    g.outputs = [g.inputs[0], g.add_const("c", np.zeros(2, np.float32))]
    verify(g)  # returning an input or a constant is structurally fine
    g2 = conv_graph()
    other = conv_graph()
    g2.outputs = [other.nodes[0].output]
    with pytest.raises(IRError, match="output %0 is not defined"):
        verify(g2)
