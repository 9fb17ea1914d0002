"""Sparse builds: the sparse_conv3d kernels equal the dense build of the same masked weights (all three schemes,
several group sizes, random masks and conv shapes), and whole pruned models run with the sparse kernels."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import rt3d
from rt3d.ir.sparsity import Sparsity, random_mask
from rt3d.targets import get_target
from tests.helpers import assert_close, make_model, ort_run, sep_net

DENSE = "fold-constants,fold-bn,fuse,block-layout{block=%d},dce"
HOST = get_target("host")
# The tests pin the vector width they exercise, so that they mean the same on every machine (LLVM splits vectors
# wider than the host's): the position-vectorized modes (flat3, flat2, pw) are what a 16-lane AVX-512 host runs
# with 8x4 groups (8 filters are half a vector), the direct mode what 4-lane NEON (32 registers) and 8 lanes with
# 32 registers (AVX-512VL's ymm) run (sparse_direct.py); AVX2 (8 lanes, 16 registers) runs the position-vectorized
# modes in passes of 4 filters over an 8-filter row block (filter_pass).
VECTOR = replace(HOST, vector_lanes=16, vector_registers=32)
DIRECT = {8: replace(HOST, vector_lanes=8, vector_registers=32), 4: replace(HOST, vector_lanes=4, vector_registers=32)}
AVX2 = replace(HOST, vector_lanes=8, vector_registers=16)


def always_sparse(target="host") -> str:
    """The target's pipeline with the sparse kernel forced on every annotated layer (no density or cost cut-off),
    so the tests exercise it on small layers too."""
    return get_target(target).default_passes(always_sparse=True)


def conv_net(rng, cin, cout, k, stride, pad, dil, shape, sp, density, bias, act, residual):
    """Conv (+ bias) (+ residual add) (+ activation) as ONNX, the conv weight pruned with ``sp``."""
    w = rng.standard_normal((cout, cin) + k) * (2.0 / (cin * np.prod(k))) ** 0.5
    w = (w * random_mask(w.shape, sp, density, rng)).astype(np.float32)
    inits = {"w": w}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c"], kernel_shape=list(k), strides=list(stride), pads=list(pad),
                              dilations=list(dil))]
    out_sp = [(shape[2 + i] + pad[i] + pad[3 + i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(3)]
    inputs = {"x": shape}
    last = "c"
    if residual:
        inputs["r"] = (shape[0], cout, *out_sp)
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        last = "s"
    if act == "relu":
        nodes.append(helper.make_node("Relu", [last], ["y"]))
    elif act == "leaky":
        nodes.append(helper.make_node("LeakyRelu", [last], ["y"], alpha=0.1))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return make_model(nodes, inputs, ["y"], inits), inputs


def sparse_impls(mod) -> list[str]:
    return [layer.impl for layer in mod.layers if layer.op == "sparse_conv3d"]


@st.composite
def sparse_case(draw):
    scheme = draw(st.sampled_from(["kgs", "vanilla", "filter"]))
    group = draw(st.sampled_from([(8, 4), (4, 4), (4, 2), (8, 8)]))
    cin = draw(st.integers(3, 20))
    cout = draw(st.integers(1, 20))
    k = tuple(draw(st.sampled_from([1, 2, 3])) for _ in range(3))
    stride = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(3))
    dil = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(3))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(6))
    shape = (draw(st.integers(1, 2)), cin, draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 20)))
    out = [(shape[2 + i] + pad[i] + pad[3 + i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(3)]
    if min(out) < 1:
        return None
    return dict(sp=Sparsity(scheme, group), density=draw(st.sampled_from([0.1, 0.3, 0.6])), cin=cin, cout=cout, k=k,
                stride=stride, pad=pad, dil=dil, shape=shape, bias=draw(st.booleans()),
                act=draw(st.sampled_from(["none", "relu", "leaky"])), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(sparse_case())
def test_sparse_build_equals_dense_build_of_the_masked_weights(case):
    if case is None:
        return
    check_sparse_equals_dense(case, VECTOR)


def one_position_case(case) -> bool:
    """Whether a case's conv is one position per sample, which runs as a fully connected layer (one_position)."""
    return np.prod(case["shape"][2:]) == 1 and set(case["k"]) == {1} and not any(case["pad"])


@st.composite
def direct_case(draw):
    """Cases for the direct mode: row blocks of whole vectors (8 or 16 filters at 8 lanes, 4 or 8 at 4), column
    groups of 2, 4 or 8 channels, either layout of the input and output."""
    lanes = draw(st.sampled_from([8, 4]))
    case = draw(sparse_case())
    if case is None:
        return None
    gm = draw(st.sampled_from([lanes, 2 * lanes]))
    gn = draw(st.sampled_from([2, 4, 8]))
    return case | dict(sp=Sparsity(case["sp"].scheme, (gm, gn)), lanes=lanes, blocked=draw(st.booleans()))


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(direct_case())
def test_direct_mode_equals_dense_build_of_the_masked_weights(case):
    if case is None:
        return
    target = DIRECT[case["lanes"]]
    impls = check_sparse_equals_dense(case, target, blocked=case["blocked"])
    assert all((".fc(" if one_position_case(case) else ".direct(") in i for i in impls), impls


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(sparse_case(), st.booleans())
def test_filter_passes_equal_dense_build_of_the_masked_weights(case, blocked):
    """AVX2: row blocks of 8 filters run through their columns in passes of 4 filters x up to 3 vectors of
    positions (12 accumulators of 16 registers), two per register tile of the position tile (one or two: WIDE_TILE),
    4-filter row blocks in one."""
    if case is None:
        return
    impls = check_sparse_equals_dense(case, AVX2, blocked=blocked)
    if one_position_case(case):
        assert all(".fc(" in i for i in impls), impls
        return
    for i in impls:  # (Filter sparsity is packed in 8x4 groups whatever the case's group)
        fm, v = map(int, re.search(r"tile=(\d+)x(\d+)x8", i).groups())
        m = re.search(r"passes=(\d+)", i)
        passes = int(m.group(1)) if m else 1
        assert ".direct(" not in i and fm == 4 and passes == (2 * -(-v // 3) if "group=8x" in i else 1), impls


def check_sparse_equals_dense(case, target, blocked=True) -> list[str]:
    """Build the case's conv pruned (annotated as the pruning stage does) with the sparse kernel forced on, and
    dense; both on ``target`` (plain NCDHW tensors where not ``blocked``); compare. Returns the sparse kernels."""
    rng = np.random.default_rng(case["seed"])
    model, inputs = conv_net(rng, case["cin"], case["cout"], case["k"], case["stride"], case["pad"], case["dil"],
                             case["shape"], case["sp"], case["density"], case["bias"], case["act"], case["residual"])
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    graph = rt3d.import_onnx(model)  # annotated as the pruning stage does (detection is tested on its own)
    for node in graph.nodes:
        if node.op == "conv3d":
            node.attrs = replace(node.attrs, sparsity=str(case["sp"]))
    passes, dense_passes = always_sparse(target), DENSE % target.vector_lanes
    if not blocked:
        passes = ",".join(p for p in passes.split(",") if not p.startswith("block-layout"))
        dense_passes = dense_passes.replace(f"block-layout{{block={target.vector_lanes}}},", "")
    sparse = rt3d.build(graph, target=target, passes=passes)
    dense = rt3d.build(model, target=target, passes=dense_passes)
    assert sparse_impls(sparse), f"no sparse kernel ran for {case}: {[layer.impl for layer in sparse.layers]}"
    assert not sparse_impls(dense)
    got = sparse.run(*feeds.values())
    want = dense.run(*feeds.values())
    assert_close(got, want, rtol=1e-4, what=f"sparse vs dense build for {case}")
    return sparse_impls(sparse)


@pytest.mark.parametrize("lanes,registers,group,mode", [(4, 32, (8, 4), "direct"), (8, 16, (8, 4), "flat3"),
                                                         (8, 32, (8, 4), "direct"), (4, 32, (2, 4), "flat3"),
                                                         (8, 16, (4, 4), "flat3"), (16, 32, (8, 4), "flat3")])
def test_sparse_kernel_at_other_vector_widths(lanes, registers, group, mode):
    """NEON has 4 lanes and 32 registers, AVX2 8 and 16, AVX-512 16 and 32: the kernel family at those widths (run
    here with the host's LLVM). Row blocks of whole vectors take the direct mode, except on AVX2, where they (and
    the others everywhere) vectorize positions (as many vectors per tile as the registers hold, in passes of 4
    filters on 16 registers)."""
    narrow = replace(get_target("host"), vector_lanes=lanes, vector_registers=registers)
    rng = np.random.default_rng(lanes)
    model, inputs = conv_net(rng, 12, 16, (3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), (1, 12, 4, 7, 9),
                             Sparsity("kgs", group), 0.4, True, "relu", True)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    mod = rt3d.build(model, target=narrow, passes=always_sparse(narrow))
    impls = sparse_impls(mod)
    assert impls and all(f".{mode}(" in i for i in impls), impls
    if mode != "direct":
        fm = min(group[0], 4) if registers == 16 else group[0]
        assert any(re.search(rf"tile={fm}x\d+x{lanes}\b", impl) for impl in impls), impls
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


@pytest.mark.parametrize("name,scheme,rate", [("c3d_small", "kgs(8x4)", 2.0), ("r2plus1d_small", "kgs(4x4)", 2.5),
                                              ("r2plus1d_small", "vanilla(8x4)", 2.0), ("c3d_small", "filter", 1.5)])
def test_pruned_zoo_model_runs_sparse_and_matches_onnxruntime(name, scheme, rate):
    from rt3d.models import export_onnx, get_model
    from rt3d.models.sparse import sparsify
    model, shape = get_model(name)
    pruned, rates = sparsify(export_onnx(model, shape), scheme, rate, seed=1, min_channels=4)
    assert rates and all(r.density < 1 for r in rates)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    mod = rt3d.build(pruned, passes=always_sparse())
    impls = sparse_impls(mod)
    pairs = sum(layer.op == "sparse_sep_conv3d" for layer in mod.layers)  # a fused pair: two pruned convs
    assert len(impls) + 2 * pairs >= len(rates) - 1, [layer.impl for layer in mod.layers]  # the densest may stay dense
    # detection names the coarsest scheme the zeros follow: a KGS mask of a 1x1x1 conv is also a Vanilla one
    coarser = {"kgs": ("kgs", "vanilla", "filter"), "vanilla": ("vanilla", "filter"), "filter": ("filter",)}
    assert all(any("(" + s in impl for s in coarser[scheme.split("(")[0]]) for impl in impls), impls
    assert_close(mod.run(x), ort_run(pruned, {pruned.graph.input[0].name: x})[0], rtol=1e-4)
    # the report counts MACs exactly: every nonzero weight of a sparse layer once per output position, every
    # weight of a layer that stayed dense
    from onnx import numpy_helper
    weights = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    convs = {n.name: n for n in rt3d.import_onnx(pruned).nodes if n.op in ("conv3d", "dense")}
    built = [layer for layer in mod.layers if layer.op in ("conv3d", "dense", "sparse_conv3d", "sparse_sep_conv3d")]
    named = []
    for layer in built:  # a fused pair's node is named after both convs, "first+second"
        names = layer.node.rsplit("# ", 1)[1].split("+")
        ws = [weights[convs[name].inputs[1].name] for name in names]
        per = [np.count_nonzero(w) if layer.op.startswith("sparse") else w.size for w in ws]
        assert layer.macs == sum(p * int(np.prod(convs[name].output.type.shape[2:]))
                                 for p, name in zip(per, names)), layer.node
        named += names
    assert sorted(named) == sorted(convs)


@pytest.mark.parametrize("scheme,k,n,batch,act", [("kgs(8x4)", 64, 40, 1, "relu"), ("kgs(4x4)", 30, 12, 2, "none"),
                                                   ("vanilla(8x4)", 50, 17, 1, "relu"), ("filter", 33, 24, 3, "none")])
def test_sparse_fully_connected_layer_matches_onnxruntime(scheme, k, n, batch, act):
    """A pruned Gemm (K not a multiple of gN, N not of gM, batch > 1) is detected, packed and run by the fc mode of
    the sparse kernel: the model's answer is onnxruntime's, and the layer's MACs are its nonzero weights."""
    rng = np.random.default_rng(k)
    sp = Sparsity.parse(scheme)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w = (w * random_mask(w.shape, sp, 0.35, rng)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1)]
    nodes.append(helper.make_node("Relu" if act == "relu" else "Identity", ["g"], ["y"]))
    model = make_model(nodes, {"x": (batch, k)}, ["y"], {"w": w, "b": rng.standard_normal(n).astype(np.float32)})
    x = rng.standard_normal((batch, k)).astype(np.float32)
    mod = rt3d.build(model, passes=always_sparse())
    impls = sparse_impls(mod)
    assert len(impls) == 1 and impls[0].startswith("sparse_conv3d.fc("), [layer.impl for layer in mod.layers]
    layer = next(layer for layer in mod.layers if layer.op == "sparse_conv3d")
    assert layer.macs == batch * np.count_nonzero(w)
    assert_close(mod.run(x), ort_run(model, {"x": x})[0], rtol=1e-4)


def test_cost_model_makes_a_pruned_fully_connected_layer_sparse():
    """The default pipeline (density and cost cut-offs on) streams a pruned fully connected layer's kept weights
    only; a dense one stays dense."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    pruned = (w * random_mask(w.shape, Sparsity("kgs", (8, 4)), 0.3, rng)).astype(np.float32)
    for weight, sparse in ((pruned, True), (w, False)):
        model = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], {"x": (1, 96)}, ["y"],
                           {"w": weight})
        mod = rt3d.build(model)
        assert bool(sparse_impls(mod)) == sparse, [layer.impl for layer in mod.layers]


@pytest.mark.parametrize("lanes", [16, 8])
def test_cost_model_keeps_layers_the_sparse_kernel_would_slow_down(lanes):
    """Position-vectorized modes (16 lanes): convs with few kept columns per row block stay dense; a long reduction
    goes sparse, strided or not, and so do temporal and pointwise convs with enough columns (the pw mode, strided
    or not). The direct mode (8 lanes: 8 filters are a vector) also takes the short reductions, and keeps only
    layers with a handful of columns per row block dense."""
    rng = np.random.default_rng(5)
    direct = lanes == 8
    cases = [((16, 64, (1, 3, 3), (1, 2, 2), (0, 1, 1, 0, 1, 1)), direct),  # 4 x 9 columns, 30% kept
             ((64, 64, (1, 3, 3), (1, 2, 2), (0, 1, 1, 0, 1, 1)), True),  # spatial stride: phase planes
             ((16, 32, (1, 1, 1), (1, 1, 1), (0,) * 6), False),  # 4 column blocks x 1 position
             ((64, 64, (3, 3, 3), (1, 1, 1), (1,) * 6), True),  # 16 x 27 columns, 30% kept
             ((144, 64, (3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0)), True),  # 36 x 3 columns, no spatial reach
             ((64, 128, (1, 1, 1), (2, 2, 2), (0,) * 6), True)]  # a strided pointwise shortcut
    target = VECTOR if lanes == 16 else DIRECT[8]
    for (cin, cout, k, stride, pad), sparse in cases:
        model, _ = conv_net(rng, cin, cout, k, stride, pad, (1, 1, 1), (1, cin, 4, 12, 12),
                            Sparsity("kgs", (8, 4)), 0.3, True, "relu", False)
        g = rt3d.passes.run_pipeline(rt3d.import_onnx(model), target.default_passes())
        assert ("sparse_conv3d" in g.ops()) == sparse, (k, stride, g.ops())


@pytest.mark.parametrize("k,pad,pw", [((3, 1, 1), (1, 0, 0, 1, 0, 0), True), ((1, 1, 1), (0,) * 6, True),
                                       ((1, 1, 1), (0, 1, 0, 0, 1, 0), False), ((1, 1, 1), (0, 0, 0, 0, 0, 1), False),
                                       ((1, 1, 3), (0, 0, 1, 0, 0, 1), False), ((3, 3, 3), (1,) * 6, False)])
def test_cost_model_and_kernel_agree_on_the_pw_mode(k, pad, pw):
    """The cost model of eliminate-kgs-columns predicts the pw mode's speed for exactly the convs the kernel runs in
    that mode (1x1 spatial kernel, no spatial padding, even on one side only): one predicate for both."""
    from rt3d.passes.sparse import _no_spatial_reach
    from rt3d.targets.arm_neon.sparse_conv3d import sparse_plan
    model, _ = conv_net(np.random.default_rng(0), 16, 16, k, (1, 1, 1), pad, (1, 1, 1), (1, 16, 4, 6, 6),
                        Sparsity("kgs", (8, 4)), 0.5, True, "relu", False)
    graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse())
    node = next(n for n in graph.nodes if n.op == "sparse_conv3d")
    assert _no_spatial_reach(node) == pw
    assert (sparse_plan(node, 16, 2).mode == "pw") == pw


K3, P1 = (3, 3, 3), (1,) * 6
PW = ((3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0))  # temporal conv: no spatial reach, read tile-major


@pytest.mark.parametrize("k,stride,pad,dil,cout,residual,mode", [
    (K3, (1, 1, 1), P1, (1, 1, 1), 20, True, "flat3"), (K3, (2, 1, 1), P1, (1, 1, 1), 16, False, "flat2"),
    (K3, (1, 2, 2), P1, (1, 1, 1), 12, True, "flat3"), (K3, (1, 1, 1), P1, (1, 1, 1), 8, False, "flat3"),
    ((2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1), 16, True, "flat2"),  # phases of a strided conv
    (*PW, (1, 1, 1), 20, True, "pw"), ((1, 1, 1), (2, 2, 2), (0,) * 6, (1, 1, 1), 16, False, "pw"),
    ((3, 1, 1), (2, 1, 1), (2, 0, 0, 1, 0, 0), (2, 1, 1), 12, True, "pw"),
    ((1, 3, 3), (1, 1, 1), (0, 2, 0, 1, 0, 2), (1, 2, 1), 16, True, "flat3")])  # uneven gaps at unit stride
def test_blocked_sparse_kernel_writes_every_element_of_its_layout(k, stride, pad, dil, cout, residual, mode):
    """In the channel-blocked layout the sparse kernel reads a blocked input (its zero tail included) and writes
    every element of its blocked output: the channels past cout as zeros, which the next blocked conv reads. The
    output buffer starts as NaN, so an element the kernel skips shows up. Every kernel mode: the flattened padded
    volume (flat3, flat2; split into sh x sw phase planes for spatial strides, here with dilation and uneven pads),
    and the tile-major ring of input depths (pw: 1 x 1 spatial kernels, here with depth padding, stride and
    dilation, and a channel count that is not a multiple of the block)."""
    check_blocked_kernel(k, stride, pad, dil, cout, residual, mode)


@pytest.mark.parametrize("k,stride,pad", [((1, 1, 1), (1, 2, 2), (0,) * 6), PW], ids=["strided", "temporal"])
def test_pw_ring_fill_at_constant_offsets_and_clamped(k, stride, pad):
    """The pw ring fill from a blocked input on 8 lanes: vectors of positions inside the plane (strided: inside one
    output row, 10 wide here, so some vectors straddle rows) load at constant offsets, the others clamp each lane's
    position; both kinds in one kernel, against the interpreter."""
    check_blocked_kernel(k, stride, pad, (1, 1, 1), 16, False, "pw", shape=(1, 20, 3, 12, 20), target=AVX2)


@pytest.mark.parametrize("group", [(4, 4), (6, 4), (2, 4)], ids=lambda g: "%dx%d" % g)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_blocked_write_back_of_other_group_sizes(group, residual):
    """The write-back into a blocked output for row blocks of other sizes: 4 filters (zips in rounds of 4, four
    positions per vector), 2 (one round), and 6, not a power of two, stored with stride b. Rows of 11 positions,
    so that vectors straddle row ends and go through the position table. (Row blocks of 16 filters are whole
    vectors of 16 lanes: the direct mode.)"""
    check_blocked_kernel(K3, (1, 1, 1), P1, (1, 1, 1), 28, residual, "flat3", group=group)


@pytest.mark.parametrize("k,stride,pad,dil,mode", [(K3, (1, 1, 1), P1, (1, 1, 1), "flat3"),
                                                   ((2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1), "flat2")])
@pytest.mark.parametrize("tile", [(3, 1, 1, 1), (1, 2, 1, 1), (2, 1, 2, 1), (1, 2, 40, 1), (3, 1, 1, 2),
                                  (1, 2, 1, 3), (2, 3, 1, 5)], ids=lambda t: "v%d-chunks%d-tiles%d-split%d" % t)
def test_sparse_schedules_compute_the_same(k, stride, pad, dil, mode, tile):
    """Every schedule of the flat modes writes the same blocked output: one row block after another per position
    tile (tiles 1), a row block through a group of tiles (2, or all of them), the reduction split into chunks of
    channel blocks with parked accumulators (20 channels: 5 blocks of 4, split in 2, 3 or 5 uneven chunks), with
    the row blocks split among threads or not."""
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    check_blocked_kernel(k, stride, pad, dil, 20, True, mode, SparseTile(*tile), shape=(2, 20, 5, 15, 23))


def test_shared_schedule_deals_every_row_block_of_every_unit_once():
    """The threads' contiguous ranges of the shared schedule (TVM's parallel loop gives thread i iterations
    i * ceil(n / cores) ..) cover every (unit, row block) once, with as much work each as the row-block chunks
    allow; units that divide evenly, a single thread or fewer row blocks than threads are not shared."""
    from rt3d.targets.arm_neon.sparse_conv3d import shared_schedule
    for units, cores, blocks in ((19, 2, 72), (7, 3, 5), (35, 4, 9), (5, 2, 2), (3, 4, 8)):
        rows = shared_schedule(units, cores, blocks).reshape(-1, 3)
        per = -(-len(rows) // cores)
        assert len(rows) == per * cores
        seen = np.zeros((units, blocks), int)
        for u, lo, hi in rows:
            seen[u, lo:hi] += 1
        assert (seen == 1).all(), (units, cores, blocks)
        work = [sum(hi - lo for _, lo, hi in rows[i * per:(i + 1) * per]) for i in range(cores)]
        assert max(work) - min(work) <= units % cores, work  # a block more per left-over unit, at most
    assert shared_schedule(18, 2, 72) is None and shared_schedule(19, 1, 72) is None
    assert shared_schedule(19, 4, 3) is None


@pytest.mark.parametrize("cores", [2, 3])
@pytest.mark.parametrize("k,stride,pad,dil,mode,split", [
    (K3, (1, 1, 1), P1, (1, 1, 1), "flat3", 1), (K3, (1, 1, 1), P1, (1, 1, 1), "flat3", 2),
    ((2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1), "flat2", 1),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1, 0, 1, 1), (1, 1, 1), "flat3", 1)], ids=["flat3", "split2", "flat2", "phases"])
def test_left_over_position_tiles_are_shared_by_row_blocks(cores, k, stride, pad, dil, mode, split):
    """Position tiles that do not divide among the threads are run by all of them, each its chunk of the row blocks
    (shared_schedule): the blocked output is the same, with the reduction split (parked accumulators) and on
    masked phase planes. The tile is the smallest record whose units leave a remainder on ``cores`` threads."""
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile, vector_plan
    target = replace(AVX2, num_cores=cores)
    shape = (1, 20, {2: 6, 3: 8}[cores], 15, 23)  # flat2's 3 or 4 output depths: not a multiple of the threads
    model, _ = conv_net(np.random.default_rng(28), 20, 28, k, stride, pad, dil, shape,
                        Sparsity("kgs", (8, 4)), 0.4, True, "relu", True)
    node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(target)).nodes
                if n.op == "sparse_conv3d")
    plan = vector_plan(node, 8, cores, target.l2_bytes, 16)
    v = next(v for v in range(1, 7) if plan.units(8, v) % cores)
    impl = check_blocked_kernel(k, stride, pad, dil, 28, True, mode, SparseTile(v, 1, 1, split),
                                shape=shape, target=target)
    assert "shared" in impl and (", masked" in impl) == (mode == "flat3" and stride[1] > 1), impl


@pytest.mark.parametrize("k,stride,pad,dil,cout,residual,lanes,group", [
    (K3, (1, 1, 1), P1, (1, 1, 1), 20, True, 8, (8, 4)), (K3, (1, 1, 1), P1, (1, 1, 1), 20, True, 4, (8, 4)),
    (K3, (2, 1, 1), P1, (1, 1, 1), 16, False, 8, (16, 4)),
    ((2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1), 12, True, 4, (4, 8)),
    ((2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1), 12, True, 8, (8, 4)),
    ((3, 1, 1), (2, 1, 1), (2, 0, 0, 1, 0, 0), (2, 1, 1), 12, True, 4, (8, 4)),
    ((1, 1, 1), (2, 2, 2), (0,) * 6, (1, 1, 1), 16, False, 8, (8, 4))])
def test_direct_kernel_writes_every_element_of_its_blocked_layout(k, stride, pad, dil, cout, residual, lanes, group):
    """The direct mode (a row block's filters as whole vectors) reads the blocked input and writes every element
    of its blocked output, the channels past cout as zeros: strides, dilations and uneven pads read at constant
    offsets, row blocks of one and two vectors, columns of half a block, one block and two blocks of channels, and
    cout that is not a multiple of the lanes (the last vector's lanes past it stored as zeros)."""
    check_blocked_kernel(k, stride, pad, dil, cout, residual, "direct", group=group, target=DIRECT[lanes])


@pytest.mark.parametrize("tile", [(1, 1, 1, 4), (2, 1, 2, 5), (1, 3, 3, 2), (3, 5, 1, 23), (1, 4, 4, 3), (2, 2, 2, 7)],
                         ids=lambda t: "chunks%d-split%d-tile%dx%d" % t)
def test_direct_schedules_compute_the_same(tile):
    """Every schedule of the direct mode writes the same blocked output: register tiles that do not divide the
    15 x 23 output plane (shorter last rows and columns of tiles), row blocks split among threads, the reduction
    split into uneven chunks of channel blocks with parked accumulators."""
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    chunks, split, th, tw = tile
    record = SparseTile(1, chunks, split=split, th=th, tw=tw)
    check_blocked_kernel(K3, (1, 1, 1), P1, (1, 1, 1), 20, True, "direct", record, shape=(2, 20, 5, 15, 23),
                         target=DIRECT[8])


def test_split_reduction_is_declined_when_the_parked_accumulators_would_not_fit():
    """Parked accumulators of all row blocks over PARK_LIMIT (1376 filters x 48 positions at 16 lanes): a tuning
    record asking for a split reduction gets the plain order (the park lives on a worker thread's stack)."""
    from rt3d.targets.arm_neon.sparse_conv3d import PARK_LIMIT, SparseTile, sparse_workload_key
    host = VECTOR
    blocks = PARK_LIMIT // (8 * 3 * host.vector_lanes * 4) + 1
    rng = np.random.default_rng(3)
    model, _ = conv_net(rng, 8, 8 * blocks, K3, (1, 1, 1), P1, (1, 1, 1), (1, 8, 2, 6, 8), Sparsity("kgs", (8, 4)),
                        0.5, False, "none", False)
    node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(host)).nodes
                if n.op == "sparse_conv3d")
    for split, expect in ((2, False), (1, False)):
        impl = replace(host, tuned={sparse_workload_key(node): SparseTile(3, 1, 1, split)}).lower(node).impl
        assert ("split=" in impl) == expect and "tile=8x3x" in impl, impl
    small = replace(host, tuned={sparse_workload_key(node): SparseTile(3, 8, 1, 2)}).lower(node).impl
    assert "split=2" in small and "chunks=8" in small, small  # an eighth of the row blocks per thread chunk


def test_loop_order_follows_the_targets_l2():
    """The flat modes' loop order is chosen against 3/8 of a core's L2 (Target.l2_bytes): a 64-channel 3x3x3 layer
    whose padded input (1.5 MB) fits an 8 MiB L2's share runs each row block through all position tiles; with
    this machine's 2 MiB the tile's 115 KB window fits and the order stays plain; a 256 KiB L2 (a small phone
    core) splits the reduction in two."""
    from rt3d.targets.arm_neon.sparse_conv3d import sparse_plan
    host = VECTOR
    model, _ = conv_net(np.random.default_rng(4), 64, 16, K3, (1, 1, 1), P1, (1, 1, 1), (1, 64, 4, 30, 30),
                        Sparsity("kgs", (8, 4)), 0.3, False, "none", False)
    node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(host)).nodes
                if n.op == "sparse_conv3d")
    orders = {l2: sparse_plan(node, 16, 2, l2).default for l2 in (8 << 20, 2 << 20, 256 << 10)}
    assert orders[8 << 20].tiles > 1 and orders[8 << 20].split == 1, orders
    assert orders[2 << 20].tiles == 1 and orders[2 << 20].split == 1, orders
    assert orders[256 << 10].tiles == 1 and orders[256 << 10].split == 2, orders
    assert "split=2" in replace(host, vector_lanes=16, num_cores=2, l2_bytes=256 << 10).lower(node).impl


def check_blocked_kernel(k, stride, pad, dil, cout, residual, mode, tile=None, shape=(1, 20, 5, 9, 11), group=(8, 4),
                         target=VECTOR):
    """Run the blocked sparse kernel of one conv on a NaN-filled output, against the interpreter."""
    import tvm

    from rt3d.ir.interpreter import evaluate_node, to_blocked
    from rt3d.targets.arm_neon.sparse_conv3d import sparse_workload_key
    rng = np.random.default_rng(cout)
    model, inputs = conv_net(rng, 20, cout, k, stride, pad, dil, shape, Sparsity("kgs", group), 0.4, True, "relu",
                             residual)
    graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(target))
    node = next(n for n in graph.nodes if n.op == "sparse_conv3d")
    assert (node.attrs.in_block, node.attrs.out_block) == (target.vector_lanes,) * 2, node
    if tile is not None:
        target = replace(target, tuned={sparse_workload_key(node): tile})
    kernel = target.lower(node)
    assert f"{mode}(" in kernel.impl and "b->b" in kernel.impl, kernel.impl
    if tile is not None:
        size = f"tile={tile.th}x{tile.tw}x" if mode == "direct" else f"x{tile.v}x"
        assert size in kernel.impl and ("chunks=" in kernel.impl) == (tile.chunks > 1), kernel.impl
        assert ("tiles=" in kernel.impl) == (tile.tiles > 1) and ("split=" in kernel.impl) == (tile.split > 1)
    lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=target.tvm())
    values = []
    for a in kernel.args:
        if isinstance(a, np.ndarray) or a.data is not None:
            values.append(a if isinstance(a, np.ndarray) else a.data)
        else:  # a run-time input in the blocked layout, with the zero tail its producer writes
            blocked = a.type.shape
            channels = 20 if a is node.inputs[0] else cout
            values.append(to_blocked(rng.standard_normal((blocked[0], channels) + blocked[2:-1]).astype(np.float32),
                                     blocked[-1]))
    dev = tvm.cpu()
    y = tvm.runtime.tensor(np.full(node.output.type.shape, np.nan, np.float32), dev)
    lib["main"](*[tvm.runtime.tensor(np.ascontiguousarray(v), dev) for v in values], y)
    # the reference: the node's own inputs in order (x, packed values, cols, bias, residual)
    by_value = {id(a): v for a, v in zip(kernel.args, values) if not isinstance(a, np.ndarray)}
    want = evaluate_node(node, [by_value[id(v)] if id(v) in by_value else v.data for v in node.inputs])
    got = y.numpy()
    assert not np.isnan(got).any(), "the kernel left elements of its blocked output unwritten"
    assert_close(got, want, rtol=1e-4)
    return kernel.impl


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "padded"])
@pytest.mark.parametrize("k,pad,dil,tile", [
    (K3, P1, (1, 1, 1), None), ((3, 3, 3), (1, 1, 2, 1, 1, 0), (1, 1, 1), None),  # a left pad only: kw 0, 1 off
    ((3, 3, 3), (1, 1, 2, 1, 1, 2), (1, 1, 2), None), ((1, 3, 5), (0, 1, 2, 0, 1, 2), (1, 1, 1), None),
    (K3, P1, (1, 1, 1), (2, 1, 1, 3)), (K3, P1, (1, 1, 1), (1, 2, 40, 1)), (K3, P1, (1, 1, 1), (3, 1, 1, 1))],
    ids=["3x3x3", "left-pad", "dilated", "1x3x5", "split3", "tiles", "v3"])
def test_rows_without_pad_columns_compute_the_same(monkeypatch, masked, k, pad, dil, tile):
    """flat3 on rows without pad columns (SparsePlan.masked): a column's lanes whose kw reads off the row (the
    previous row's last columns, the next one's first) are masked to zero; kw at a dilation and uneven pads, a
    1x3x5 kernel, and the schedules that run a row block's columns in runs of one kw per reduction chunk (split into
    3), through a group of tiles, and 3 vectors per tile. Against the interpreter, padded rows alike."""
    from rt3d.targets.arm_neon import sparse_conv3d
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    monkeypatch.setattr(sparse_conv3d, "MASKED_ROWS", masked)
    record = SparseTile(*tile) if tile else None
    impl = check_blocked_kernel(k, (1, 1, 1), pad, dil, 20, True, "flat3", record, shape=(2, 20, 5, 15, 23))
    assert (", masked" in impl) == masked, impl


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "padded"])
@pytest.mark.parametrize("k,stride,pad,dil,shape,tile", [
    ((1, 3, 3), (1, 2, 2), P1, (1, 1, 1), (1, 20, 3, 14, 14), None),  # R(2+1)D's layer3.0 / layer4.0 geometry
    (K3, (1, 2, 2), P1, (1, 1, 1), (2, 20, 5, 15, 23), None),  # odd rows: phase 1 planes one column short
    ((3, 3, 3), (1, 2, 2), (1, 1, 2, 1, 1, 0), (1, 1, 1), (2, 20, 5, 15, 23), None),  # kw 0, 1 one column back
    ((3, 3, 3), (1, 2, 2), (1, 1, 2, 1, 1, 2), (1, 1, 2), (2, 20, 5, 15, 23), None),  # kw 2 one column ahead
    ((1, 3, 3), (1, 2, 3), (0, 1, 1, 0, 1, 1), (1, 1, 1), (1, 20, 4, 14, 18), None),  # three column phases
    ((1, 3, 3), (1, 2, 2), P1, (1, 1, 1), (1, 20, 3, 14, 14), (5, 2, 1, 3, 2)),  # long tile, chunks, split
    ((1, 3, 3), (1, 2, 2), P1, (1, 1, 1), (1, 20, 3, 14, 14), (2, 1, 4, 1, 0))],  # a row block through 4 tiles
    ids=["1x3x3-14x14", "3x3x3-odd", "left-pad", "dilated-right", "stride3", "v5-chunks-split", "tiles"])
def test_phase_planes_without_pad_columns_compute_the_same(monkeypatch, masked, k, stride, pad, dil, shape, tile):
    """Spatially strided flat3 convs on phase planes of the input's own columns (SparsePlan.masked): a tap reads
    its phase plane (kw * dw - pad) // sw columns off, and the lanes that fall off the row (before it, or past
    the last phase column) are masked to zero; odd row widths (a phase plane one column short, zero-filled), a pad
    on one side, a dilation that reaches one column ahead, three column phases and the long-tile, chunked, split
    and grouped schedules. Against the interpreter, padded phase planes alike."""
    from rt3d.targets.arm_neon import sparse_conv3d
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    monkeypatch.setattr(sparse_conv3d, "MASKED_ROWS", masked)
    record = None if tile is None else SparseTile(*tile[:4], vp=tile[4])
    impl = check_blocked_kernel(k, stride, pad, dil, 20, True, "flat3", record, shape=shape)
    assert (", masked" in impl) == masked, impl


def test_phase_planes_without_pad_columns_are_the_default_where_they_compute_less():
    """R(2+1)D-18's layer4.0 spatial conv (1x3x3 stride 2 on 4x14x14, 256 -> 921 at KGS 8x4): on 8x8 phase planes
    with pad columns its tiles of 2 vectors compute 256 positions for its 196 outputs, on 8x7 ones without 224;
    masked_rows_problem names why a strided conv cannot run that way."""
    from rt3d.targets.arm_neon.sparse_conv3d import computed_positions, masked_rows_problem, sparse_plan, vector_plan

    def strided(cin, cout, pad):
        model, _ = conv_net(np.random.default_rng(0), cin, cout, (1, 3, 3), (1, 2, 2), pad, (1, 1, 1),
                            (1, cin, 4, 14, 14), Sparsity("kgs", (8, 4)), 0.3, True, "relu", False)
        graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(VECTOR))
        return next(n for n in graph.nodes if n.op == "sparse_conv3d")

    node = strided(256, 921, (0, 1, 1, 0, 1, 1))
    padded, plan = vector_plan(node, 16, 2, registers=32, masked=False), sparse_plan(node, 16, 2, registers=32)
    assert padded.plane == (8, 8) and computed_positions(padded, 16) == 256
    assert plan.masked and plan.plane == (8, 7) and plan.mode == "flat3" and computed_positions(plan, 16) == 224
    assert "phase planes" in masked_rows_problem(strided(64, 64, (0, 1, 0, 0, 1, 0)), 32)  # 6 output columns, not 7


@pytest.mark.parametrize("target,tile,mode,k,stride,pad,dil", [
    (AVX2, (6, 1, 1, 1, 4, 3), "flat3", K3, (1, 1, 1), P1, (1, 1, 1)),
    (AVX2, (6, 2, 1, 2, 4, 3), "flat3", K3, (1, 1, 1), P1, (1, 1, 1)),
    (AVX2, (9, 1, 3, 1, 4, 3), "flat3", K3, (1, 1, 1), P1, (1, 1, 1)),
    (AVX2, (6, 1, 1, 1, 4, 3), "flat2", (2, 3, 3), (2, 2, 3), (0, 1, 2, 1, 0, 1), (1, 2, 1)),
    (VECTOR, (4, 1, 1, 2, 0, 2), "flat3", K3, (1, 1, 1), P1, (1, 1, 1))],
    ids=["avx2-v6", "avx2-v6-chunks-split", "avx2-v9-tiles", "avx2-v6-flat2", "vector-v4"])
def test_wide_position_tiles_compute_the_same(target, tile, mode, k, stride, pad, dil):
    """Position tiles of several register tiles (WIDE_TILE: passes of fm filters x vp vectors taking turns every
    PASS_COLUMNS columns), with row-block chunks, the reduction split or a row block through groups of tiles, and
    with all filters per pass on 32 registers: the blocked output of the interpreter."""
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    v, chunks, tiles, split, fm, vp = tile
    t = SparseTile(v, chunks, tiles, split, fm=fm, vp=vp)
    check_blocked_kernel(k, stride, pad, dil, 20, True, mode, t, shape=(2, 20, 5, 15, 23), target=target)


def test_wide_position_tile_is_the_avx2_default_where_positions_are_many():
    """WIDE_TILE on AVX2 (8x4 groups, filters in passes): a large layer's position tile is 2 register tiles of 3
    vectors; a layer with few positions keeps one; 32-register targets (no filter passes) keep one."""
    from rt3d.targets.arm_neon.sparse_conv3d import sparse_plan
    from tests.targets.test_registers import layer
    big, small = layer(AVX2, sparse=True, shape=(1, 64, 8, 28, 28)), layer(AVX2, sparse=True, shape=(1, 64, 2, 4, 4))
    default = sparse_plan(big, 8, 2, registers=16).default
    assert (default.v, default.vp) == (6, 3)
    assert sparse_plan(small, 8, 2, registers=16).default.v <= 3
    wide32 = layer(VECTOR, sparse=True, shape=(1, 64, 8, 28, 28))
    assert sparse_plan(wide32, 16, 2, registers=32).default.vp == 0


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "padded"])
@pytest.mark.parametrize("k,stride,pad,shape,tile", [
    (K3, (1, 1, 1), P1, (2, 20, 5, 15, 23), None),  # the default: 2 register tiles of 3 vectors, 4 passes
    ((3, 3, 3), (1, 1, 1), (1, 1, 2, 1, 1, 0), (2, 20, 5, 15, 23), (6, 2, 1, 3, 4, 3)),  # left pad, chunks, split
    ((1, 3, 3), (1, 2, 2), P1, (1, 20, 3, 14, 14), None),  # phase planes
    ((1, 3, 3), (1, 2, 2), P1, (1, 20, 3, 14, 14), (3, 1, 4, 1, 4, 0)),  # one register tile, a group of tiles
    (K3, (1, 1, 1), P1, (2, 20, 5, 15, 23), (5, 1, 1, 1, 2, 2))],  # filters in 4 passes, vectors in 3 (2, 2, 1)
    ids=["default", "left-pad-chunks-split", "stride2", "stride2-v3-tiles", "fm2-v5"])
def test_rows_without_pad_columns_with_filter_passes_compute_the_same(monkeypatch, masked, k, stride, pad, shape,
                                                                      tile):
    """AVX2 (16 registers: a row block's filters in passes) on rows without pad columns and phase planes of the
    input's own columns: every pass over a run of one kw loads its inputs with the lanes off the row masked (ANDed
    with a mask table's vectors); wide tiles, chunks, the split reduction, a group of tiles and uneven passes,
    against the interpreter. The unit-stride cases are not the AVX2 default (masked_rows_problem): forced here."""
    from rt3d.targets.arm_neon import sparse_conv3d
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    monkeypatch.setattr(sparse_conv3d, "MASKED_ROWS", masked)
    if stride == (1, 1, 1):
        monkeypatch.setattr(sparse_conv3d, "masked_rows_problem", lambda node, registers: "")
    record = None if tile is None else SparseTile(*tile[:4], fm=tile[4], vp=tile[5])
    impl = check_blocked_kernel(k, stride, pad, (1, 1, 1), 20, True, "flat3", record, shape=shape, target=AVX2)
    assert (", masked" in impl) == masked and "passes=" in impl, impl


def test_avx2_phase_planes_with_a_plain_output_build():
    """AVX2 phase planes without pad columns (mask tables) writing a plain NC(D)HW output (masked stores): the
    mask-table lookups and the write-back's vector positions each name their own scalars (both were c0_<vector>,
    and TVMScript refused the kernel: found by test_filter_passes_equal_dense_build_of_the_masked_weights)."""
    case = dict(sp=Sparsity("kgs", (8, 4)), density=0.1, cin=3, cout=1, k=(1, 1, 2), stride=(1, 1, 2),
                pad=(0, 0, 0, 0, 0, 1), dil=(1, 1, 1), shape=(1, 3, 1, 5, 2), bias=False, act="none", residual=False,
                seed=0)
    impls = check_sparse_equals_dense(case, AVX2, blocked=False)
    assert [("flat3(" in i and "p->p" in i and ", masked" in i) for i in impls] == [True], impls


def test_avx2_phase_planes_without_pad_columns_unit_stride_with_them():
    """On AVX2 a spatially strided conv runs on phase planes without pad columns (R(2+1)D's layer4.0: 8x7 planes),
    a unit-stride one keeps its pad columns (its taps share input rows), and masked_rows_problem says so."""
    from rt3d.targets.arm_neon.sparse_conv3d import masked_rows_problem, sparse_plan

    def node_of(cin, cout, stride, shape):
        model, _ = conv_net(np.random.default_rng(0), cin, cout, (1, 3, 3), stride, (0, 1, 1, 0, 1, 1), (1, 1, 1),
                            shape, Sparsity("kgs", (8, 4)), 0.3, True, "relu", False)
        graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(AVX2))
        return next(n for n in graph.nodes if n.op == "sparse_conv3d")

    strided = sparse_plan(node_of(64, 96, (1, 2, 2), (1, 64, 4, 14, 14)), 8, 2, registers=16)
    assert strided.masked and strided.plane == (8, 7) and strided.default.fm == 4, strided
    unit = node_of(64, 96, (1, 1, 1), (1, 64, 4, 14, 14))
    assert not sparse_plan(unit, 8, 2, registers=16).masked
    assert "unit column stride" in masked_rows_problem(unit, 16)
    assert masked_rows_problem(unit, 32) == ""


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "padded"])
@pytest.mark.parametrize("tile", [(7, 1, 1, 1, 3), (5, 2, 1, 3, 2), (4, 2, 3, 1, 3)],
                         ids=["v7-passes-3-2-2", "v5-chunks-split", "v4-tiles"])
def test_long_position_tiles_compute_the_same(monkeypatch, masked, tile):
    """Long position tiles on 32 registers (LONG_TILE: all filters per pass, the vectors in passes of at most vp,
    uneven ones where vp does not divide v), on rows with pad columns and without (the masked column body in passes
    too), with row-block chunks, the reduction split and a row block through a group of tiles: the blocked output of
    the interpreter."""
    from rt3d.targets.arm_neon import sparse_conv3d
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile
    monkeypatch.setattr(sparse_conv3d, "MASKED_ROWS", masked)
    v, chunks, tiles, split, vp = tile
    impl = check_blocked_kernel(K3, (1, 1, 1), P1, (1, 1, 1), 20, True, "flat3",
                                SparseTile(v, chunks, tiles, split, vp=vp), shape=(2, 20, 5, 15, 23))
    assert f"passes={-(-v // vp)}" in impl and (", masked" in impl) == masked, impl


def test_long_position_tile_is_the_default_on_small_planes():
    """On 32 registers a 2x7x7 plane (105 positions on rows without pad columns) takes one tile of 7 vectors in
    3 passes (112 positions computed, 128 in tiles of 2); a 28x28 plane keeps tiles of max_v vectors, and so does
    a plane where a long tile would not compute fewer positions."""
    from rt3d.targets.arm_neon.sparse_conv3d import _choose_v, computed_positions, sparse_plan, vector_passes
    from tests.targets.test_registers import layer
    assert vector_passes(7, 3) == [range(0, 3), range(3, 5), range(5, 7)] and vector_passes(6, 3)[1] == range(3, 6)
    plan = sparse_plan(layer(VECTOR, sparse=True, shape=(1, 64, 2, 7, 7)), 16, 2, registers=32)
    assert (plan.default.v, plan.default.vp, plan.masked) == (7, 3, True)
    assert computed_positions(plan, 16) == 112
    big = sparse_plan(layer(VECTOR, sparse=True, shape=(1, 64, 8, 28, 28)), 16, 2, registers=32).default
    assert (big.v, big.vp) == (3, 0)
    assert _choose_v(8, 16, 247, registers=32, reach=12) == 2  # 256 positions either way (a 4x7x7 phase plane)
    assert _choose_v(8, 16, 105, registers=32) == 2  # no reach: tiles of at most max_v


@pytest.mark.parametrize("stride,lanes", [((1, 1, 1), None), ((1, 2, 2), None), ((1, 1, 1), 4)])
def test_pointwise_spatial_kernel_in_the_plain_layout(stride, lanes):
    """The pw mode reading a plain NCDHW input (no block-layout in the pipeline): contiguous copies at unit stride,
    strided ones otherwise, and the register transpose of a blocked input at NEON's width (4 lanes; row blocks of 2
    filters, which are not whole vectors there)."""
    target = replace(VECTOR, vector_lanes=lanes) if lanes else VECTOR
    rng = np.random.default_rng(7)
    model, inputs = conv_net(rng, 13, 24, (3, 1, 1), stride, (1, 0, 0, 1, 0, 0), (1, 1, 1), (2, 13, 6, 7, 10),
                             Sparsity("kgs", (2, 4) if lanes == 4 else (4, 4)), 0.4, True, "relu", False)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    passes = always_sparse(target)
    if not lanes:
        passes = ",".join(p for p in passes.split(",") if not p.startswith("block-layout"))
    mod = rt3d.build(model, target=target, passes=passes)
    impls = sparse_impls(mod)
    assert impls and all(("pw(" in i and ("b->b" if lanes else "p->p") in i) for i in impls), impls
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


@pytest.mark.parametrize("stride,shape,volume", [((1, 1, 1), (2, 20, 3, 7, 9), True),
                                                 ((1, 2, 2), (2, 20, 3, 12, 9), True),
                                                 ((1, 2, 2), (2, 20, 3, 11, 9), False),
                                                 ((2, 2, 2), (2, 20, 5, 12, 9), True),
                                                 ((3, 1, 1), (2, 20, 7, 6, 5), True)],
                         ids=["unit", "even", "odd", "depth-stride2", "depth-stride3"])
def test_pointwise_conv_tiles_its_whole_volume(stride, shape, volume):
    """A 1x1x1 conv whose input rows continue across depths (H = sh x OH) is tiled over its whole output volume,
    not plane by plane: the position tiles run across depths and batches stay apart; in the blocked layout (with a
    residual) and the plain one. A depth stride skips the input depths between output depths (R(2+1)D's 2x2x2
    downsampling convs; an odd depth count, and unit spatial strides, where a vector of positions must not cross
    from one output depth into the next). An odd height at stride 2 stays plane by plane."""
    from rt3d.targets.arm_neon.sparse_conv3d import pw_volume, sparse_plan
    rng = np.random.default_rng(3)
    model, inputs = conv_net(rng, 20, 12, (1, 1, 1), stride, (0,) * 6, (1, 1, 1), shape, Sparsity("kgs", (4, 4)),
                             0.5, True, "relu", True)
    node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(model), always_sparse(VECTOR)).nodes
                if n.op == "sparse_conv3d")
    od, oh, ow = (-(-n // st) for n, st in zip(shape[2:], stride))
    plan = sparse_plan(node, 16, 2)
    assert pw_volume(node) == volume
    assert (plan.positions, plan.outer) == ((od * oh * ow, 2) if volume else (oh * ow, 2 * od)), plan
    check_blocked_kernel((1, 1, 1), stride, (0,) * 6, (1, 1, 1), 12, True, "pw", shape=shape)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    passes = ",".join(p for p in always_sparse(VECTOR).split(",") if not p.startswith("block-layout"))
    mod = rt3d.build(model, target=VECTOR, passes=passes)
    assert sparse_impls(mod) and all("pw(" in i and "p->p" in i for i in sparse_impls(mod)), sparse_impls(mod)
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


@pytest.mark.parametrize("blocked", [True, False], ids=["blocked", "plain"])
@pytest.mark.parametrize("target", [VECTOR, AVX2], ids=["vector", "avx2"])
def test_conv_of_one_position_runs_as_a_fully_connected_layer(blocked, target):
    """A 1x1x1 conv on one position per sample (S3D's classifier after the global pool) is lowered by the fc mode
    (a vector of filters, not of positions) in the blocked layout (20 channels: a blocked input's zero tail, an
    output block half filled, whose channels past 12 must read as zeros) and the plain one, with a residual, at
    batch 2; the tuning space has nothing to try for it. A 3x1x1 conv on one position keeps its mode."""
    from rt3d.targets.arm_neon.sparse_conv3d import one_position
    from rt3d.tune import tunable
    rng = np.random.default_rng(5)
    model, inputs = conv_net(rng, 20, 12, (1, 1, 1), (1, 1, 1), (0,) * 6, (1, 1, 1), (2, 20, 1, 1, 1),
                             Sparsity("kgs", (4, 4)), 0.5, True, "relu", True)
    passes = always_sparse(target)
    if not blocked:
        passes = ",".join(p for p in passes.split(",") if not p.startswith("block-layout"))
    graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), passes)
    node = next(n for n in graph.nodes if n.op == "sparse_conv3d")
    assert one_position(node) and not tunable(node) and bool(node.attrs.out_block) == blocked, node
    mod = rt3d.build(model, target=target, passes=passes)
    assert [i.startswith("sparse_conv3d.fc(") for i in sparse_impls(mod)] == [True], sparse_impls(mod)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)
    if blocked:  # the output block's channels past 12, as the kernel leaves them (NaN-filled before)
        import tvm
        kernel = target.lower(node)
        lib = tvm.compile(tvm.IRModule({"main": kernel.func}), target=target.tvm())
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.ascontiguousarray(a if isinstance(a, np.ndarray) else a.data if a.data is not None
                                                        else np.ones(a.type.shape, np.float32)), dev)
                for a in kernel.args]
        out = tvm.runtime.tensor(np.full(node.output.type.shape, np.nan, np.float32), dev)
        lib["main"](*args, out)
        assert np.all(out.numpy().reshape(2, -1)[:, 12:] == 0) and not np.isnan(out.numpy()).any()
    temporal, _ = conv_net(rng, 20, 12, (3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0), (1, 1, 1), (2, 20, 1, 1, 1),
                           Sparsity("kgs", (4, 4)), 0.5, True, "relu", False)
    node = next(n for n in rt3d.passes.run_pipeline(rt3d.import_onnx(temporal), passes).nodes
                if n.op == "sparse_conv3d")
    assert not one_position(node) and tunable(node)


def test_pw_volume_chunks_row_blocks_only_where_the_fills_pay():
    """A pw_volume conv's tile and row-block chunks come from the busiest thread's time with each unit filling its
    slab: S3D's 832->128 1x1x1 conv on 2x7x7 (7 tiles of 2 vectors, 3.5 per thread) runs unchunked, since 2 chunks
    fill every slab twice; a volume of one tile is chunked (one thread would idle); a large one is not."""
    from rt3d.targets.arm_neon.sparse_conv3d import _pw_volume_tile
    macs = round(832 * 128 * 0.42)
    assert _pw_volume_tile(98, 1, 832, macs, 16, 8, 3, 2) == (2, 1)
    assert _pw_volume_tile(8, 1, 832, macs, 16, 8, 3, 2) == (1, 2)
    assert _pw_volume_tile(784, 1, 480, round(480 * 192 * 0.42), 24, 8, 3, 2) == (3, 1)


def test_pw_short_tiles_on_16_lanes():
    """The pw mode's short-tile penalty is the measured one on 16 lanes (pw_short_tile): a 3x1x1 conv on 14x14
    planes (196 positions) runs 13 tiles of one vector, 208 positions per depth where 7 tiles of 2 compute 224; the
    flat modes and 8-lane targets keep SHORT_TILE (AVX2: tiles of 3 vectors of 8, 216 per depth)."""
    from rt3d.targets.arm_neon.sparse_conv3d import (SHORT_TILE, _choose_v, computed_positions, pw_short_tile,
                                                     sparse_plan)
    from tests.targets.test_registers import layer
    assert pw_short_tile(16) < SHORT_TILE == pw_short_tile(8) == pw_short_tile(4)
    for target, v, per_depth in ((VECTOR, 1, 208), (AVX2, 3, 216)):
        plan = sparse_plan(layer(target, k=(3, 1, 1), shape=(1, 64, 4, 14, 14), sparse=True), target.vector_lanes,
                           2, registers=target.vector_registers)
        assert (plan.mode, plan.default.v) == ("pw", v)
        assert computed_positions(plan, target.vector_lanes) == 4 * per_depth
    assert _choose_v(8, 16, 196, registers=32) == 2  # the flat modes' penalty: 7 tiles of 2 on the same plane


def test_pw_depth_runs_balance_the_threads():
    """The pw mode's runs of output depths per position tile are chosen for the busiest thread: 9 tiles of a 14x14
    plane through 4 depths are 2 runs (18 units, 9 per thread, where one run left one thread 5 of 9), 4 tiles of a
    7x7 plane one (2 units per thread either way, without refilling the ring), 131 tiles one (the second run's ring
    fills cost about what the balance saves); a fused pair keeps one run per core."""
    from rt3d.targets.arm_neon.sparse_conv3d import _depth_runs
    assert _depth_runs(4, 9, 2, span=3) == 2 and _depth_runs(8, 33, 2, span=3) == 2
    assert _depth_runs(2, 4, 2, span=3) == 1 and _depth_runs(16, 131, 2, span=3) == 1
    assert _depth_runs(8, 1, 2, span=3) == 2 and _depth_runs(1, 5, 2) == 1
    assert _depth_runs(4, 9, 2, fused=True, span=3) == 1 and _depth_runs(16, 1, 2, fused=True, span=3) == 2


def test_pointwise_kernel_with_many_channels():
    """1152 input channels (R(2+1)D's widest temporal conv): the ring's zero fill for a depth of padding is written
    one vector at a time (one vector of all its elements made LLVM abort the process)."""
    rng = np.random.default_rng(11)
    model, inputs = conv_net(rng, 1152, 16, (3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0), (1, 1, 1), (1, 1152, 2, 3, 5),
                             Sparsity("kgs", (8, 4)), 0.3, False, "none", False)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    mod = rt3d.build(model, target=VECTOR, passes=always_sparse(VECTOR))
    assert any("pw(" in i for i in sparse_impls(mod)), sparse_impls(mod)
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


@pytest.mark.parametrize("k,stride,pad,dil", [((3, 3, 3), (1, 2, 2), (1,) * 6, (1, 1, 1)),
                                              ((1, 3, 3), (2, 3, 2), (0, 2, 1, 0, 0, 1), (1, 1, 2))])
def test_strided_sparse_conv_in_the_plain_layout(k, stride, pad, dil):
    """Spatially strided convs read their sh x sw phase planes; from a plain NCDHW input the copy gathers."""
    rng = np.random.default_rng(13)
    model, inputs = conv_net(rng, 9, 12, k, stride, pad, dil, (2, 9, 5, 11, 13), Sparsity("kgs", (4, 4)), 0.5, True,
                             "relu", True)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    passes = ",".join(p for p in always_sparse(VECTOR).split(",") if not p.startswith("block-layout"))
    mod = rt3d.build(model, target=VECTOR, passes=passes)
    assert sparse_impls(mod) and all("p->p" in i for i in sparse_impls(mod)), sparse_impls(mod)
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


def fused_pipeline(target="host", cost_model=False) -> str:
    return always_sparse(target).replace("fuse-sep-convs{", f"fuse-sep-convs{{cost_model={str(cost_model).lower()},")


@pytest.mark.parametrize("cin,mid,cout,k,shape,stride2,bias1,act1,residual,lanes,stride1", [
    (16, 40, 24, 3, (1, 16, 5, 9, 11), 1, True, "relu", False, None, 1),
    (16, 20, 24, 3, (2, 16, 4, 7, 6), 2, False, "leaky", True, None, 1),  # channels past 20 zero in the ring; batch 2
    # 5x5, 5x1x1: 5 depths in the ring; x stays plain on 16 lanes, blocked on 8
    (8, 24, 16, 5, (1, 8, 6, 12, 5), 1, True, "relu", True, None, 1),
    (12, 16, 8, 3, (1, 12, 3, 5, 7), 1, True, "relu", False, 4, 1),  # NEON's 4 lanes
    # R(2+1)D's downsampling pair (1x3x3 stride 2 into 3x1x1 temporal stride 2, a residual): phase planes, odd sizes
    (16, 24, 16, 3, (1, 16, 5, 11, 9), 2, True, "relu", True, None, 2),
    (8, 16, 8, 3, (2, 8, 3, 8, 10), 1, True, "relu", False, None, 2),  # plain x (8 channels), batch 2
])
def test_fused_sep_pair_matches_onnxruntime(cin, mid, cout, k, shape, stride2, bias1, act1, residual, lanes, stride1):
    rng = np.random.default_rng(cin + mid + k)
    model, inputs = sep_net(rng, cin, mid, cout, k, shape, stride2, bias1, act1, residual, stride1=stride1)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    target = replace(get_target("host"), vector_lanes=lanes) if lanes else get_target("host")
    mod = rt3d.build(model, target=target, passes=fused_pipeline(target))
    impls = [layer.impl for layer in mod.layers if layer.op.startswith("sparse")]
    assert len(impls) == 1 and impls[0].startswith("sparse_conv3d.sep("), impls
    # the first conv reads its tile's window (no padded copy of the whole input) at unit stride on a blocked input,
    # which block-layout makes of these inputs when their channels fill whole blocks (of the target's lanes: 8 input
    # channels fill one on AVX2)
    assert ("windowed" in impls[0]) == (stride1 == 1 and cin % target.vector_lanes == 0), impls
    assert mod.macs == rt3d.build(model, target=target, passes=always_sparse(target)).macs  # kept MACs of both
    assert_close(mod.run(*feeds.values()), ort_run(model, feeds)[0], rtol=1e-4)


@pytest.mark.parametrize("case,why", [
    (dict(extra_user=True), "the intermediate has other users"),
    # the cost model: a 256 KiB intermediate, and a strided first conv (a padded copy of the whole input)
    (dict(k=3, shape=(1, 16, 4, 64, 64), stride1=2, stride2=2), "stays in cache"),
])
def test_fuse_sep_convs_declines_with_a_reason(case, why):
    rng = np.random.default_rng(0)
    args = dict(cin=16, mid=16, cout=16, k=3, shape=(1, 16, 4, 8, 8)) | case
    model, _ = sep_net(rng, **args)
    cost = "extra_user" not in case
    target = replace(VECTOR, l2_bytes=2 << 20)  # the cost model weighs the intermediate against the L2
    mod = rt3d.build(model, target=target, passes=fused_pipeline(target, cost_model=cost))
    assert not any(layer.impl.startswith("sparse_conv3d.sep(") for layer in mod.layers)
    notes = [n for r in mod.meta["passes"] if r["name"] == "fuse-sep-convs" for n in r["notes"]]
    assert any(why in n for n in notes), notes


def test_fuse_sep_convs_fuses_a_windowed_pair_whatever_its_intermediate():
    """A unit-stride first conv on a blocked input reads its tile's window: the pair is fused even where its
    intermediate (1 MiB here) would stay in cache."""
    model, _ = sep_net(np.random.default_rng(0), cin=16, mid=16, cout=16, k=3, shape=(1, 16, 4, 64, 64))
    target = replace(VECTOR, l2_bytes=2 << 20)
    mod = rt3d.build(model, target=target, passes=fused_pipeline(target, cost_model=True))
    (impl,) = [layer.impl for layer in mod.layers if layer.op.startswith("sparse")]
    assert impl.startswith("sparse_conv3d.sep(") and "windowed ->" in impl, impl
    notes = [n for r in mod.meta["passes"] if r["name"] == "fuse-sep-convs" for n in r["notes"]]
    assert any("fused (1.0 MiB not written)" in n for n in notes), notes


def test_sep_pair_problem_names_what_the_fused_kernel_lacks():
    from rt3d.ir.ops import SparseConvAttrs, sep_pair_problem
    spatial = SparseConvAttrs(kernel=(1, 3, 3), pad=(0, 1, 1, 0, 1, 1), in_block=16, out_block=16)
    temporal = SparseConvAttrs(kernel=(3, 1, 1), pad=(1, 0, 0, 1, 0, 0), in_block=16, out_block=16)
    assert sep_pair_problem(spatial, temporal, 16) == ""
    assert sep_pair_problem(replace(spatial, stride=(1, 2, 2)), replace(temporal, stride=(2, 1, 1)), 16) == ""
    assert "strides along depth" in sep_pair_problem(replace(spatial, stride=(2, 2, 2)), temporal, 16)
    assert "unit spatial stride" in sep_pair_problem(spatial, replace(temporal, stride=(1, 2, 2)), 16)
    assert "blocked by 8 channels, not 16" in sep_pair_problem(replace(spatial, in_block=8), temporal, 16)
    assert "kx1x1" in sep_pair_problem(spatial, spatial, 16)
    assert "residual" in sep_pair_problem(replace(spatial, residual=True), temporal, 16)
    # which first convs read their tile's window rather than a padded copy of the whole input
    from rt3d.ir.ops import sep_first_windowed
    assert sep_first_windowed(spatial, 16) and sep_first_windowed(replace(spatial, stride=(1, 1, 1)), 16)
    assert not sep_first_windowed(replace(spatial, stride=(1, 2, 2)), 16)
    assert not sep_first_windowed(replace(spatial, in_block=0), 16) and not sep_first_windowed(spatial, 8)


def test_position_tiles_are_chosen_for_the_busiest_thread(monkeypatch):
    """Where the threads split a flat mode's position tiles, the tile size is chosen for the thread with the most
    tiles: C3D's 4x14x14 geometry on padded rows (884 flat positions) is 19 tiles of 3 vectors on one thread, but 28
    tiles of 2 on two (14 each; 19 tiles of 3 leave one thread 10 and the other 9, 960 positions' time for 912). On
    rows without pad columns (826 positions, SparsePlan.masked) 18 tiles of 3 split evenly and are kept. Where the
    input fits the L2's share, the threads split the row blocks instead, and the tiles stay as few as they can be."""
    from rt3d.targets.arm_neon import sparse_conv3d
    from rt3d.targets.arm_neon.sparse_conv3d import computed_positions, sparse_plan
    from tests.targets.test_registers import layer
    node = layer(VECTOR, cin=256, cout=16, sparse=True, shape=(1, 256, 4, 14, 14))  # a 1.4 MB padded copy
    masked = sparse_plan(node, 16, 2, 1 << 20)
    assert masked.masked and masked.positions == 826 and masked.default.v == 3, masked
    assert computed_positions(masked, 16) == 864 and masked.units(16, masked.default.v) == 18  # 9 per thread
    monkeypatch.setattr(sparse_conv3d, "MASKED_ROWS", False)
    one, two = (sparse_plan(node, 16, cores, 1 << 20).default for cores in (1, 2))
    padded = sparse_plan(node, 16, 2, 1 << 20)
    assert not padded.masked and padded.positions == 884 and computed_positions(padded, 16) == 896
    assert one.v == 3 and two.v == 2 and two.chunks == 1, (one, two)
    assert -(-884 // (16 * two.v)) % 2 == 0
    fits = sparse_plan(node, 16, 2, 8 << 20).default
    assert fits.v == 3 and fits.tiles > 1 and fits.chunks == 2, fits
