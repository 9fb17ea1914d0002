"""The blocked layout end to end: kernels chosen, and blocked builds equal plain builds and the interpreter."""
from __future__ import annotations

import pytest

import rt3d
from rt3d.ir import run_graph
from rt3d.models import export_onnx, get_model
from rt3d.targets import get_target
from tests.helpers import assert_close, rand

PLAIN = "fold-constants,fold-bn,fuse,dce"


@pytest.mark.parametrize("name", ["r2plus1d_small", "c3d_small"])
def test_blocked_build_equals_plain_build(name):
    model, shape = get_model(name)
    data = export_onnx(model, shape)
    x = rand(*shape, seed=11)
    blocked = rt3d.build(data)
    plain = rt3d.build(data, passes=PLAIN)
    assert_close(blocked.run(x), plain.run(x))
    impls = [layer.impl for layer in blocked.layers if layer.op == "conv3d"]
    lanes = get_target("host").vector_lanes
    # the stem reads the 3-channel clip as it is; every later conv reads and writes blocked tensors
    assert impls[0].startswith("conv3d.direct(p->b") and all(i.startswith("conv3d.direct(b->b") for i in impls[1:])
    assert f"lanes={lanes}" in impls[0]
    assert all(layer.impl.startswith("conv3d.direct(p->p") for layer in plain.layers if layer.op == "conv3d")


def test_blocked_graph_matches_interpreter_on_padded_channels():
    """45 and 230 channels (R(2+1)D's mid widths) are not multiples of the block: the tail is zero-filled."""
    from onnx import helper
    from tests.helpers import make_model
    N = helper.make_node
    inits = {"w1": rand(45, 3, 1, 3, 3, seed=1, scale=0.3), "w2": rand(20, 45, 3, 1, 1, seed=2, scale=0.2),
             "w3": rand(20, 20, 1, 1, 1, seed=3, scale=0.3)}
    nodes = [N("Conv", ["x", "w1"], ["a"], pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2]), N("Sigmoid", ["a"], ["s"]),
             N("Conv", ["s", "w2"], ["b"], pads=[1, 0, 0, 1, 0, 0]), N("Relu", ["b"], ["r"]),
             N("MaxPool", ["r"], ["p"], kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1]),
             N("Conv", ["p", "w3"], ["c"]), N("Add", ["c", "p"], ["y"])]
    m = make_model(nodes, {"x": (1, 3, 4, 9, 9)}, ["y"], inits)
    x = rand(1, 3, 4, 9, 9)
    g = rt3d.passes.run_pipeline(rt3d.import_onnx(m), get_target("host").default_passes())
    assert "to_blocked" not in g.ops() and g.ops().count("from_blocked") == 1
    expected = run_graph(rt3d.import_onnx(m), x)[0]
    assert_close(run_graph(g, x)[0], expected)
    assert_close(rt3d.build(m).run(x), expected)


@pytest.mark.parametrize("lanes", [4, 8])
def test_schedules_take_the_vector_width_as_a_parameter(lanes):
    """The same kernels with NEON's 4 lanes (and AVX2's 8), run here: blocks, tiles and packing follow the width."""
    import dataclasses
    from rt3d.targets import base
    narrow = dataclasses.replace(get_target("host"), name=f"host-{lanes}", vector_lanes=lanes)
    model, shape = get_model("r2plus1d_small")
    data = export_onnx(model, shape)
    x = rand(*shape, seed=5)
    mod = rt3d.build(data, target=narrow)
    assert all(f"lanes={lanes}" in layer.impl for layer in mod.layers if layer.op == "conv3d")
    assert f"block-layout{{block={lanes}}}" in narrow.default_passes()
    assert_close(mod.run(x), rt3d.build(data).run(x))
    assert isinstance(narrow, base.Target)


def temporal_conv(cin, cout, shape, kd, stride, seed=0):
    """A temporal kd x 1 x 1 conv (bias, padded in depth) and a ReLU on an input of ``shape`` (D, H, W)."""
    from onnx import helper
    from tests.helpers import make_model
    inits = {"w": rand(cout, cin, kd, 1, 1, seed=seed, scale=0.2), "b": rand(cout, seed=seed + 1)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kd, 1, 1], strides=[stride, 1, 1],
                              pads=[kd // 2, 0, 0] * 2), helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": (1, cin) + shape}, ["y"], inits)


@pytest.mark.parametrize("tile", [(1, 6, 4, 0, 1), (1, 3, 4, 0, 2), (6, 1, 4, 0, 6), (2, 2, 2, 0, 4), (3, 1, 4, 0, 2)])
def test_temporal_conv_in_bands_of_rows_equals_the_interpreter(tile):
    """A kernel that runs bands of output rows through all output depths (ConvTile.rows) computes the same conv, with
    bands that do not divide the plane's rows too (6 rows in bands of 4), and bands cut to whole register tiles."""
    from dataclasses import replace
    from rt3d.passes import PassManager
    from rt3d.targets.arm_neon.conv3d import ConvTile, lower_blocked, workload_key
    m = temporal_conv(32, 64, (9, 6, 6), 7, 2)
    target = replace(get_target("host"), vector_lanes=16)
    g = PassManager(target.default_passes()).run(rt3d.import_onnx(m))
    node = next(n for n in g.nodes if n.op == "conv3d")
    band = max(1, tile[4] // tile[0]) * tile[0]  # whole register tiles
    assert f"bands of {band} rows" in lower_blocked(node, target, ConvTile(*tile)).impl
    x = rand(1, 32, 9, 6, 6, seed=3)
    tuned = replace(target, tuned={workload_key(node): ConvTile(*tile)})
    assert_close(rt3d.build(m, target=tuned).run(x), run_graph(rt3d.import_onnx(m), x)[0])


def test_default_tile_of_temporal_convs():
    """Temporal kernels whose input planes per output depth overflow BAND_L2S L2 caches run in bands of rows (none
    where the L2 is unknown); from LONG_TEMPORAL taps in a column tile; the default build picks them by itself."""
    from dataclasses import replace
    from rt3d.passes import PassManager
    from rt3d.targets.arm_neon.conv3d import BAND_L2S, ConvTile, build_tile, default_tile, temporal_footprint
    target = replace(get_target("host"), vector_lanes=16, vector_registers=32)

    def node(kd, stride):
        g = PassManager(target.default_passes()).run(rt3d.import_onnx(temporal_conv(64, 64, (8, 14, 14), kd, stride)))
        return next(n for n in g.nodes if n.op == "conv3d")
    short, long = node(3, 1), node(7, 2)
    assert temporal_footprint(short) == 3 * 64 * 14 * 14 * 4 and temporal_footprint(long) == 7 * 64 * 14 * 14 * 4
    small_l2 = temporal_footprint(short) // BAND_L2S - 1
    assert default_tile(short, 14, 14, 16) == ConvTile(1, 7, 4)
    assert default_tile(short, 14, 14, 16, l2_bytes=small_l2) == ConvTile(1, 7, 4, rows=1)
    assert default_tile(short, 14, 14, 16, l2_bytes=small_l2 * 2) == ConvTile(1, 7, 4)  # fits 4 L2s
    assert default_tile(long, 14, 14, 16) == ConvTile(7, 1, 4)
    assert default_tile(long, 14, 14, 16, l2_bytes=small_l2) == ConvTile(7, 1, 4, rows=7)
    assert build_tile(long, replace(target, l2_bytes=small_l2)) == ConvTile(7, 1, 4, rows=7)  # the build's choice
    built = rt3d.build(temporal_conv(64, 64, (8, 14, 14), 7, 2), target=replace(target, l2_bytes=small_l2))
    assert "tile=7x1x4, bands of 7 rows" in next(layer.impl for layer in built.layers if layer.op == "conv3d")
    x = rand(1, 64, 8, 14, 14, seed=4)
    assert_close(built.run(x), run_graph(rt3d.import_onnx(temporal_conv(64, 64, (8, 14, 14), 7, 2)), x)[0])
