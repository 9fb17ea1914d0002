"""Fully connected layers (weights packed [N/lanes, K, lanes] at build time) and general matmul."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import te

from ...ir import Node
from ..base import Kernel
from .common import broadcast_index, epilogue, epilogue_placeholders, make_func, placeholder, schedule_default


def lower_dense(node: Node, target) -> Kernel:
    if node.inputs[1].data is None:
        return _dense_generic(node, target)
    L = target.vector_lanes
    w = node.inputs[1].data
    N, K = w.shape
    M = node.inputs[0].type.shape[0]
    No = -(-N // L)
    full = np.zeros((No * L, K), w.dtype)
    full[:N] = w
    wp = np.ascontiguousarray(full.reshape(No, L, K).transpose(0, 2, 1))  # [No, K, L]
    X = placeholder(node.inputs[0], "x")
    Wp = te.placeholder(wp.shape, wp.dtype, name="w_packed")
    B, R = epilogue_placeholders(node)
    k = te.reduce_axis((0, K), name="k")
    acc = te.compute((M, No, L), lambda m, no, v: te.sum(X[m, k] * Wp[no, k, v], axis=k), name="acc")

    Y = te.compute((M, N), lambda m, n: epilogue(node, acc[m, n // L, n % L], n, (m, n), B, R), name="out")
    sch = tvm.s_tir.Schedule(make_func([X, Wp] + [t for t in (B, R) if t is not None] + [Y], "main"))
    blk = sch.get_sblock("acc")
    m, no, v, kk = sch.get_loops(blk)
    ko, ki = sch.split(kk, [None, 4] if K % 4 == 0 else [None, 1])
    sch.reorder(no, m, ko, ki, v)
    sch.parallel(no)
    sch.reverse_compute_at(sch.get_sblock("out"), no)
    sch.unroll(ki)
    sch.vectorize(v)
    sch.decompose_reduction(blk, ko)
    return Kernel(sch.mod["main"], [node.inputs[0], wp] + list(node.inputs[2:]), f"dense.packed(lanes={L})")


def _dense_generic(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    W = placeholder(node.inputs[1], "w")
    B, R = epilogue_placeholders(node)
    K = int(X.shape[1])
    k = te.reduce_axis((0, K), name="k")
    acc = te.compute(node.output.type.shape, lambda m, n: te.sum(X[m, k] * W[n, k], axis=k), name="acc")

    Y = te.compute(node.output.type.shape, lambda m, n: epilogue(node, acc[m, n], n, (m, n), B, R), name="out")
    sch = tvm.s_tir.Schedule(make_func([X, W] + [t for t in (B, R) if t is not None] + [Y], "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], list(node.inputs), "dense.generic")


def lower_matmul(node: Node, target) -> Kernel:
    A = placeholder(node.inputs[0], "a")
    Bt = placeholder(node.inputs[1], "b")
    a_shape, b_shape = node.inputs[0].type.shape, node.inputs[1].type.shape
    out = node.output.type.shape
    K = a_shape[-1]
    k = te.reduce_axis((0, K), name="k")

    def f(*idx):
        idx = list(idx)
        if len(a_shape) == 1:
            ai = [k]
        else:
            batch = idx[:len(out) - 2] if len(b_shape) > 1 else idx[:len(out) - 1]
            row = idx[len(out) - 2] if len(b_shape) > 1 else idx[-1]
            ai = broadcast_index(A, batch + [row, row])[:-2] + [row, k] if len(a_shape) > 2 else [row, k]
        if len(b_shape) == 1:
            bi = [k]
        else:
            col = idx[-1]
            batch = idx[:len(out) - 2] if len(a_shape) > 1 else idx[:len(out) - 1]
            bi = broadcast_index(Bt, batch + [col, col])[:-2] + [k, col] if len(b_shape) > 2 else [k, col]
        return te.sum(A[tuple(ai)] * Bt[tuple(bi)], axis=k)
    Y = te.compute(out, f, name="out")
    sch = tvm.s_tir.Schedule(make_func([A, Bt, Y], "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], list(node.inputs), "matmul.direct")
