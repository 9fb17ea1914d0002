"""The text form: golden output, parse(print(g)) identical, and parse errors that name the line."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from rt3d.errors import IRError
from rt3d.ir import Graph, TensorType, parse_graph, run_graph, verify
from rt3d.ir.ops import (AxisAttrs, BatchNormAttrs, BlockAttrs, ClipAttrs, ConvAttrs, DenseAttrs, LayoutAttrs,
                         LeakyReluAttrs, PadAttrs, PoolAttrs, ReduceAttrs, ReshapeAttrs, SparseConvAttrs,
                         SparseSepConvAttrs, TransposeAttrs)

GOLDEN = Path(__file__).parent / "golden"


def every_op_graph() -> Graph:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    g = Graph("every_op")
    x = g.add_input("x", TensorType((1, 3, 4, 8, 8)))
    w = g.add_const("conv1.w", f(8, 3, 3, 3, 3))
    b = g.add_const("conv1.b", f(8))
    c = g.add("conv3d", [x, w, b], ConvAttrs(stride=(1, 2, 2), pad=(1, 1, 1, 1, 1, 1), act="clip",
                                             act_params=(0.0, 6.0)), name="/conv1/Conv")
    bn = g.add("batch_norm", [c] + [g.add_const(f"bn.{k}", np.abs(f(8)) + 0.5) for k in "sbmv"],
               BatchNormAttrs(epsilon=1e-3))
    r = g.add("relu", [bn])
    lr = g.add("leaky_relu", [r], LeakyReluAttrs(alpha=0.1))
    s = g.add("sigmoid", [lr])
    cl = g.add("clip", [s], ClipAttrs(min=-np.inf, max=0.75))
    ad = g.add("add", [cl, r])
    mu = g.add("mul", [ad, g.add_const("half", np.full((1, 8, 1, 1, 1), 0.5, np.float32))])
    su = g.add("sub", [mu, r])
    dv = g.add("div", [su, g.add_const("three", np.array(3.0, np.float32))])
    mp = g.add("max_pool3d", [dv], PoolAttrs(kernel=(2, 2, 2), stride=(2, 2, 2), pad=(0, 0, 0, 0, 1, 1),
                                             ceil_mode=True))
    ap = g.add("avg_pool3d", [mp], PoolAttrs(kernel=(1, 2, 2), stride=(1, 1, 1), count_include_pad=True))
    pd = g.add("pad", [ap], PadAttrs(pads=(0, 0, 0, 1, 1, 0, 0, 1, 1, 1), mode="edge"))
    cc = g.add("concat", [pd, pd], AxisAttrs(axis=1))
    gp = g.add("global_avg_pool", [cc])
    rm = g.add("reduce_mean", [cc], ReduceAttrs(axes=(2, 3), keepdims=False))
    tr = g.add("transpose", [rm], TransposeAttrs(perm=(0, 2, 1)))
    rs = g.add("reshape", [gp], ReshapeAttrs(shape=(1, 16)))
    de = g.add("dense", [rs, g.add_const("fc.w", f(5, 16)), g.add_const("fc.b", f(5))], DenseAttrs(act="relu"))
    mm = g.add("matmul", [tr, g.add_const("proj", f(16, 5))])
    sm = g.add("softmax", [de], AxisAttrs(axis=1))
    # the blocked layout: NCDHW4c tensors between a conv, a pool and a global pool
    xb = g.add("to_blocked", [x], LayoutAttrs(block=4, channels=3))
    cb = g.add("conv3d", [xb, w, b], ConvAttrs(pad=(1, 1, 1, 1, 1, 1), in_block=4, out_block=4, act="relu"))
    pb = g.add("avg_pool3d", [cb], PoolAttrs(kernel=(2, 2, 2), stride=(2, 2, 2), block=4))
    gb = g.add("global_avg_pool", [pb], BlockAttrs(block=4))
    fb = g.add("from_blocked", [gb], LayoutAttrs(block=4, channels=8))
    # a KGS-sparse conv, packed (kept columns per row block, a filter permutation and a row-block order)
    from rt3d.ir.sparsity import Sparsity, pack, random_mask
    ws = f(8, 3, 3, 3, 3) * random_mask((8, 3, 3, 3, 3), Sparsity("kgs", (4, 2)), 0.5, np.random.default_rng(1))
    pk = pack(ws, (4, 2), perm=(4, 5, 6, 7, 0, 1, 2, 3))
    sc = g.add("sparse_conv3d", [x, g.add_const("conv2.kgs", pk.values), g.add_const("conv2.cols", pk.cols), b],
               SparseConvAttrs(pad=(1, 1, 1, 1, 1, 1), kernel=(3, 3, 3), filters=8, sparsity="kgs(4x2)",
                               group=(4, 2), kept=pk.kept, order=(1, 0), perm=pk.perm, act="relu"))
    # a sparse (2+1)D pair fused into one op (fuse-sep-convs): 1x3x3 then 3x1x1, blocked by 4, never writing the
    # intermediate tensor
    w1 = f(8, 4, 1, 3, 3) * random_mask((8, 4, 1, 3, 3), Sparsity("kgs", (4, 2)), 0.5, np.random.default_rng(2))
    w2 = f(8, 8, 3, 1, 1) * random_mask((8, 8, 3, 1, 1), Sparsity("kgs", (4, 2)), 0.5, np.random.default_rng(3))
    p1, p2 = pack(w1, (4, 2)), pack(w2, (4, 2))
    ss = g.add("sparse_sep_conv3d", [xb, g.add_const("sep.kgs1", p1.values), g.add_const("sep.cols1", p1.cols), b,
                                     g.add_const("sep.kgs2", p2.values), g.add_const("sep.cols2", p2.cols)],
               SparseSepConvAttrs(pad=(1, 0, 0, 1, 0, 0), kernel=(3, 1, 1), filters=8, sparsity="kgs(4x2)",
                                  group=(4, 2), kept=p2.kept, in_block=4, out_block=4, act="relu",
                                  first_filters=8, first_kernel=(1, 3, 3), first_pad=(0, 1, 1, 0, 1, 1),
                                  first_group=(4, 2), first_kept=p1.kept, first_act="relu",
                                  first_sparsity="kgs(4x2)", first_bias=True, mid_block=4))
    sf = g.add("from_blocked", [ss], LayoutAttrs(block=4, channels=8))
    g.outputs = [sm, mm, fb, sc, sf]
    return verify(g)


def same_graph(a: Graph, b: Graph) -> None:
    assert a.name == b.name
    assert [(v.name, v.type) for v in a.inputs] == [(v.name, v.type) for v in b.inputs]
    assert list(a.consts) == list(b.consts)
    for k in a.consts:
        assert a.consts[k].type == b.consts[k].type and a.consts[k].digest == b.consts[k].digest
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        assert (na.op, na.attrs, na.name, na.output.name, na.output.type) == \
               (nb.op, nb.attrs, nb.name, nb.output.name, nb.output.type)
        assert [v.name for v in na.inputs] == [v.name for v in nb.inputs]
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]


def test_every_op_golden(update_golden):
    g = every_op_graph()
    path = GOLDEN / "every_op.rt3d"
    if update_golden:
        path.write_text(str(g))
    assert str(g) == path.read_text()


def test_round_trip_identical():
    g = every_op_graph()
    text = str(g)
    g2 = parse_graph(text, g.params())
    assert str(g2) == text
    same_graph(g, g2)
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 8, 8)).astype(np.float32)
    for a, b in zip(run_graph(g, x), run_graph(g2, x)):
        np.testing.assert_array_equal(a, b)


def test_round_trip_without_params_keeps_hashes():
    g = every_op_graph()
    g2 = parse_graph(str(g))
    assert str(g2) == str(g)
    assert g2.consts["conv1.w"].data is None and g2.consts["half"].data is not None  # small ones print inline


def test_every_op_is_in_the_golden_graph():
    from rt3d.ir import OPS
    assert set(OPS) == set(every_op_graph().ops())


def test_every_attribute_round_trips_through_text():
    g = every_op_graph()
    for n in parse_graph(str(g)).nodes:
        for f in fields(n.attrs):
            assert getattr(n.attrs, f.name) == getattr(next(m for m in g.nodes if m.output.name == n.output.name)
                                                       .attrs, f.name)


@pytest.mark.parametrize("text,msg", [
    ("", "empty IR text"),
    ("grph x() {\n}", "line 1: expected 'graph"),
    ("graph g(%x: f32[2]) {\n  %1 = relu(%y) : f32[2]\n  return %1\n}", "line 2: use of undefined value %y"),
    ("graph g(%x: f32[2]) {\n  %1 = frob(%x) : f32[2]\n  return %1\n}", "line 2: unknown IR op 'frob'"),
    ("graph g(%x: f32[2]) {\n  %1 = clip(%x) {low=1} : f32[2]\n  return %1\n}", "op 'clip' has no attribute 'low'"),
    ("graph g(%x: f32[2]) {\n  %1 = relu(%x) : f32[2]\n  return %1\n", "missing closing"),
    ("graph g(%x: f32[2]) {\n  %1 = relu(%x) : f32[2]\n}", "has no 'return'"),
    ("graph g(%x: f32[2]) {\n  %x = relu(%x) : f32[2]\n  return %x\n}", "defined twice"),
])
def test_parse_errors(text, msg):
    with pytest.raises(IRError, match=msg):
        parse_graph(text)


def test_params_hash_mismatch():
    g = every_op_graph()
    params = g.params()
    params["conv1.w"] = params["conv1.w"] + 1
    with pytest.raises(IRError, match="conv1.w: params data hash"):
        parse_graph(str(g), params)
