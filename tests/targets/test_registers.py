"""Register tiles fit the register file they are made for. Code for AVX2's 16 vector registers (LLVM x86, compiled
here for any x86 host) reads no FMA operand from the stack, which is what a spilled accumulator or multiplicand
looks like: the FMA peak kernel, the dense conv's default tiles and the sparse direct mode's. Tiles made for 32
registers spilled there (the "peak" read 66 GFLOP/s where 12 chains measure 175, C3D's dense convs ran at 65
instead of 100 GFLOP/s)."""
from __future__ import annotations

import platform
import re
from dataclasses import replace

import numpy as np
import pytest
import tvm

import rt3d
from rt3d.ir.sparsity import Sparsity
from rt3d.targets import get_target
from rt3d.targets.arm_neon.conv3d import ConvTile, default_tile, workload_key
from rt3d.targets.arm_neon.fma_peak import fma_peak_kernel, peak_tile
from rt3d.tune.space import conv_space
from tests.runtime.test_sparse import AVX2, conv_net

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="compiles x86 code with the host's LLVM")


def avx2():
    return replace(AVX2, tvm_target={"kind": "llvm", "mcpu": "haswell", "num-cores": 2})


def stack_operands(func, target) -> tuple[int, int]:
    """(vector operands read back from the stack: by an FMA or into a register, FMAs) in the x86 assembly of
    ``func``."""
    asm = tvm.compile(tvm.IRModule({"main": func}), target=target.tvm()).jit().inspect_source("asm")
    reloads = re.findall(r"vfmadd\w+\s+-?\d*\(%rsp\)|vmov[au]ps\s+-?\d*\(%rsp\),\s*%ymm", asm)
    return len(reloads), len(re.findall(r"vfmadd\w+", asm))


def column_loop_stack_operands(func, target) -> tuple[int, int]:
    """(stack loads and stores, FMAs) in the basic blocks of ``func``'s x86 assembly that hold 12 FMAs or more: the
    sparse kernel's column loops, where a spill costs on every kept column (a pass switch's spills and reloads of
    the other passes' accumulators, once per PASS_COLUMNS columns, are outside them)."""
    asm = tvm.compile(tvm.IRModule({"main": func}), target=target.tvm()).jit().inspect_source("asm")
    stack = fmas = 0
    for block in re.split(r"\n\.?[\w.$]+:", asm):
        n = len(re.findall(r"vfmadd\w+", block))
        if n >= 12:
            fmas += n
            stack += len(re.findall(r"vmov[au]ps\s+(-?\d*\(%rsp\),\s*%ymm|%ymm\d+,\s*-?\d*\(%rsp\))|"
                                    r"vfmadd\w+\s+-?\d*\(%rsp\)", block))
    return stack, fmas


def layer(target, cin=64, cout=128, k=(3, 3, 3), shape=(1, 64, 4, 16, 16), sparse=False):
    rng = np.random.default_rng(0)
    model, _ = conv_net(rng, cin, cout, k, (1, 1, 1), tuple(d // 2 for d in k) * 2, (1, 1, 1), shape,
                        Sparsity("kgs", (8, 4)), 0.3 if sparse else 1.0, True, "relu", False)
    graph = rt3d.passes.run_pipeline(rt3d.import_onnx(model), target.default_passes(always_sparse=True))
    return next(n for n in graph.nodes if n.op in ("conv3d", "sparse_conv3d"))


def test_fma_peak_kernel_keeps_its_chains_in_registers():
    target = avx2()
    rows, vecs = peak_tile(16)
    assert rows * vecs + vecs + 1 <= 16
    spilled, fmas = stack_operands(fma_peak_kernel(2, 8, rows, vecs, 16, 4), target)
    assert fmas >= rows * vecs and spilled == 0


@pytest.mark.parametrize("k", [(3, 3, 3), (1, 3, 3), (3, 1, 1)])
def test_dense_default_tile_fits_16_registers(k):
    target = avx2()
    node = layer(target, k=k)
    oh, ow = node.output.type.shape[-3], node.output.type.shape[-2]
    tile = default_tile(node, oh, ow, 8, 16)
    assert tile.th * tile.tw * tile.tm + tile.tm + 1 <= 16, tile
    assert all(t.th * t.tw * t.tm + t.tm + 1 <= 16 for t in conv_space(node, 8, 16))
    spilled, fmas = stack_operands(target.lower(node).func, target)
    assert fmas and spilled == 0, (tile, spilled, fmas)
    # the check sees spills: the 28 accumulators of a tile made for 32 registers
    big = replace(target, tuned={workload_key(node): ConvTile(1, 8, 2) if k == (3, 1, 1) else ConvTile(1, 8, 3)})
    assert stack_operands(big.lower(node).func, target)[0] > 0


def test_sparse_tiles_fit_16_registers():
    """The default with 8x4 groups: a wide position tile of 6 vectors in four passes of 4 filters x 3 vectors (12
    accumulators next to 3 input vectors and a broadcast), and the narrow tile's two passes: their column loops touch
    no stack, where all 8 filters x 3 vectors at once spill in every column. The direct mode (a tuned record): 12
    positions x 8 filters, where LLVM lets
    each FMA overwrite its broadcast (a broadcast has one use when the filters are one vector), which rotates the
    accumulators through the registers and costs it a spill now and then; 16 positions spill several times per
    column."""
    from rt3d.targets.arm_neon.sparse_conv3d import SparseTile, sparse_workload_key
    target = avx2()
    node = layer(target, sparse=True)
    key = sparse_workload_key(node)
    kernel = target.lower(node)
    assert ".flat3(" in kernel.impl and "tile=4x6x8, passes=4" in kernel.impl, kernel.impl
    narrow = replace(target, tuned={key: SparseTile(3, fm=4)}).lower(node)
    assert "tile=4x3x8, passes=2" in narrow.impl, narrow.impl
    for k in (kernel, narrow):
        spilled, fmas = column_loop_stack_operands(k.func, target)
        assert fmas >= 48 and spilled == 0, (k.impl, spilled, fmas)
    one_pass = replace(target, tuned={key: SparseTile(3)})
    assert column_loop_stack_operands(one_pass.lower(node).func, target)[0] > 0
    direct = replace(target, tuned={key: SparseTile(1, th=3, tw=4)}).lower(node)
    assert ".direct(" in direct.impl and "tile=3x4x8" in direct.impl, direct.impl
    spilled, fmas = stack_operands(direct.func, target)
    assert fmas and spilled <= fmas // 32, (direct.impl, spilled, fmas)
    big = replace(target, tuned={key: SparseTile(1, th=2, tw=8)})
    assert stack_operands(big.lower(node).func, target)[0] > fmas // 32
