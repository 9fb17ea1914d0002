"""fuse-pool end to end: dense convs that compute their max pool build to the interpreter's result, plain and blocked,
and what cannot be fused or lowered says why."""
from __future__ import annotations

from dataclasses import replace

import pytest
from onnx import helper

import rt3d
from rt3d.errors import BuildError, IRError
from rt3d.ir import parse_graph, run_graph, verify
from rt3d.ir.flops import graph_macs
from rt3d.models import export_onnx, get_model
from rt3d.passes import PassManager
from tests.helpers import assert_close, make_model, rand

PLAIN = "fold-constants,fold-bn,fuse,fuse-pool,dce"


def conv_pool(cin, cout, shape, kernel, pad, pool, seed=0):
    """conv (bias, relu) -> max pool -> 1x1 conv, on an input of ``shape`` (D, H, W)."""
    N = helper.make_node
    inits = {"w": rand(cout, cin, *kernel, seed=seed, scale=0.3), "b": rand(cout, seed=seed + 1),
             "w2": rand(4, cout, 1, 1, 1, seed=seed + 2, scale=0.3)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), pads=list(pad) * 2), N("Relu", ["c"], ["r"]),
             N("MaxPool", ["r"], ["p"], kernel_shape=list(pool), strides=list(pool)), N("Conv", ["p", "w2"], ["y"])]
    return make_model(nodes, {"x": (1, cin) + shape}, ["y"], inits)


@pytest.mark.parametrize("case", [
    (3, 16, (4, 8, 8), (3, 3, 3), (1, 1, 1), (1, 2, 2)),  # C3D's stem and pool1, small: plain input
    (5, 20, (4, 6, 6), (3, 3, 3), (1, 1, 1), (2, 2, 2)),  # pool2-4: depth pairs too; 20 filters, a padded block
    (16, 24, (2, 6, 6), (1, 3, 3), (0, 1, 1), (1, 3, 3)),  # windows of 3 rows: the register tile's rows cut to 1
])
def test_fused_pool_equals_the_interpreter(case):
    cin, cout, shape, kernel, pad, pool = case
    m = conv_pool(cin, cout, shape, kernel, pad, pool)
    x = rand(1, cin, *shape, seed=3)
    expected = run_graph(rt3d.import_onnx(m), x)[0]
    for passes in (None, PLAIN):  # the target's pipeline (blocked output), and plain NCDHW
        mod = rt3d.build(m, passes=passes)
        fused = [layer.impl for layer in mod.layers if "max_pool=" in layer.impl]
        assert fused and fused[0].endswith(f"max_pool={'x'.join(map(str, pool))})"), [t.impl for t in mod.layers]
        assert "max_pool3d" not in [layer.op for layer in mod.layers]
        assert_close(mod.run(x), expected)


def test_c3d_stem_computes_pool1_and_counts_the_same_macs():
    model, shape = get_model("c3d_small")
    data = export_onnx(model, shape)
    pm = PassManager(rt3d.targets.get_target("host").default_passes())
    out = pm.run(rt3d.import_onnx(data))
    stem = next(n for n in out.nodes if n.op == "conv3d")
    assert stem.attrs.pool == (1, 2, 2)
    assert graph_macs(out) == graph_macs(rt3d.import_onnx(data))
    notes = next(r for r in pm.reports if r.name == "fuse-pool").notes
    assert any("pool(s) fused" in n for n in notes)


def test_fuse_pool_says_why_it_keeps_a_pool():
    text = """graph g(%x: f32[1,2,2,4,4]) {
  @w: f32[3,2,1,1,1] = [1, 0.5, -0.5, 1, 0.25, 2]
  %0 = conv3d(%x, @w) {stride=[1,1,1], pad=[0,0,0,0,0,0], dilation=[1,1,1], groups=1} : f32[1,3,2,4,4]
  %1 = max_pool3d(%0) {kernel=[1,3,3], stride=[1,2,2], pad=[0,1,1,0,1,1], dilation=[1,1,1]} : f32[1,3,2,2,2]
  return %1
}"""
    pm = PassManager("fuse-pool")
    out = pm.run(parse_graph(text))
    assert "max_pool3d" in out.ops()
    assert any("kept %1" in n and "not disjoint" in n for n in pm.reports[0].notes), pm.reports[0].notes


def test_a_pool_that_does_not_tile_the_conv_is_an_error():
    text = """graph g(%x: f32[1,2,2,5,5]) {
  @w: f32[3,2,1,1,1] = [1, 0.5, -0.5, 1, 0.25, 2]
  %0 = conv3d(%x, @w) {stride=[1,1,1], pad=[0,0,0,0,0,0], dilation=[1,1,1], groups=1, pool=[1,2,2]} : f32[1,3,2,2,2]
  return %0
}"""
    with pytest.raises(IRError, match=r"conv3d.*pool=\[1, 2, 2\] windows do not tile the conv's output \[2, 5, 5\]"):
        verify(parse_graph(text))


def test_opencl_refuses_a_fused_pool_by_name():
    m = conv_pool(3, 8, (2, 4, 4), (3, 3, 3), (1, 1, 1), (1, 2, 2))
    with pytest.raises(BuildError, match="no fused pool.*fuse-pool"):
        rt3d.build(m, target="android-gpu", passes="fold-constants,fuse,fuse-pool,dce")


def test_tuning_space_tiles_the_conv_not_its_pooled_output():
    """The register tiles a pooled conv is tuned over divide the conv's own 8 x 8 plane (not the 4 x 4 pooled one),
    and a tile whose rows do not divide the window's builds with rows cut to fit (4 rows in windows of 2)."""
    from rt3d.targets.arm_neon.conv3d import ConvTile, lower_blocked, workload_key
    from rt3d.tune.space import conv_space
    m = conv_pool(16, 32, (2, 8, 8), (3, 3, 3), (1, 1, 1), (1, 2, 2))
    target = rt3d.targets.get_target("host")
    g = PassManager(target.default_passes()).run(rt3d.import_onnx(m))
    node = next(n for n in g.nodes if n.attrs.__class__.__name__ == "ConvAttrs" and n.attrs.pool)
    tiles = conv_space(node, target.vector_lanes, target.vector_registers)
    assert any(t.tw == 8 for t in tiles) and all(8 % t.tw == 0 and 8 % t.th == 0 for t in tiles)
    assert "tile=2x2x1" in lower_blocked(node, target, ConvTile(4, 2, 1)).impl
    x = rand(1, 16, 2, 8, 8, seed=5)
    expected = run_graph(rt3d.import_onnx(m), x)[0]
    tuned = replace(target, tuned={workload_key(node): ConvTile(4, 2, 1)})
    assert_close(rt3d.build(m, target=tuned).run(x), expected)
