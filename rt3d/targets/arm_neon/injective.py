"""Elementwise and layout ops: activations, broadcasting arithmetic, inference batch norm, reshape, transpose,
concat and pad. Each is one injective TE stage under the default schedule."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from ...ir import Node
from ..base import Kernel
from .common import activation, broadcast_index, make_func, placeholder, schedule_default


def _finish(node: Node, target, tensors, args, impl: str) -> Kernel:
    sch = tvm.s_tir.Schedule(make_func(tensors, "main"))
    schedule_default(sch, target)
    return Kernel(sch.mod["main"], args, impl)


def lower_activation(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    a = node.attrs
    params = {"relu": (), "sigmoid": (), "clip": (getattr(a, "min", 0), getattr(a, "max", 0)),
              "leaky_relu": (getattr(a, "alpha", 0),)}[node.op]
    Y = te.compute(X.shape, lambda *i: activation(X[i], node.op, params), name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], f"{node.op}.elementwise")


_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b}


def lower_binary(node: Node, target) -> Kernel:
    A = placeholder(node.inputs[0], "a")
    B = placeholder(node.inputs[1], "b")
    fn = _BINARY[node.op]
    Y = te.compute(node.output.type.shape,
                   lambda *i: fn(A[tuple(broadcast_index(A, i))], B[tuple(broadcast_index(B, i))]), name="out")
    return _finish(node, target, [A, B, Y], list(node.inputs), f"{node.op}.elementwise")


def lower_batch_norm(node: Node, target) -> Kernel:
    """Inference batch norm as y = x * scale + shift, with scale/shift computed at build time when constant."""
    x, s, b, m, v = node.inputs
    if all(t.data is not None for t in (s, b, m, v)):
        scale = (s.data / np.sqrt(v.data.astype(np.float64) + node.attrs.epsilon)).astype(np.float32)
        shift = (b.data - m.data * scale).astype(np.float32)
        X = placeholder(x, "x")
        S = te.placeholder(scale.shape, "float32", name="scale")
        T = te.placeholder(shift.shape, "float32", name="shift")
        Y = te.compute(X.shape, lambda *i: X[i] * S[i[1]] + T[i[1]], name="out")
        return _finish(node, target, [X, S, T, Y], [x, scale, shift], "batch_norm.scale_shift")
    X, S, Bb, Mm, V = (placeholder(t, n) for t, n in zip(node.inputs, ("x", "s", "b", "m", "v")))
    eps = tirx.const(node.attrs.epsilon, "float32")
    Y = te.compute(X.shape, lambda *i: (X[i] - Mm[i[1]]) * S[i[1]] / tirx.sqrt(V[i[1]] + eps) + Bb[i[1]],
                   name="out")
    return _finish(node, target, [X, S, Bb, Mm, V, Y], list(node.inputs), "batch_norm.direct")


def lower_reshape(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    in_shape = node.inputs[0].type.shape
    out_shape = node.output.type.shape
    in_strides = [int(np.prod(in_shape[i + 1:])) for i in range(len(in_shape))]
    out_strides = [int(np.prod(out_shape[i + 1:])) for i in range(len(out_shape))]

    def f(*i):
        flat = sum((i[k] * out_strides[k] for k in range(len(out_shape))), tirx.const(0, "int32"))
        src = [(flat // in_strides[k]) % in_shape[k] for k in range(len(in_shape))]
        return X[tuple(src)]
    Y = te.compute(out_shape, f, name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], "reshape.copy")


def lower_transpose(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    perm = node.attrs.perm
    inv = [perm.index(k) for k in range(len(perm))]
    Y = te.compute(node.output.type.shape, lambda *i: X[tuple(i[inv[k]] for k in range(len(perm)))], name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], "transpose.copy")


def lower_concat(node: Node, target) -> Kernel:
    ins = [placeholder(v, f"x{i}") for i, v in enumerate(node.inputs)]
    ax = node.attrs.axis % node.output.type.rank
    offsets = np.cumsum([0] + [v.type.shape[ax] for v in node.inputs]).tolist()

    def f(*i):
        # lazy if_then_else, last input first, so no input is read outside its own channel range
        e = None
        for t, lo in reversed(list(zip(ins, offsets[:-1]))):
            idx = list(i)
            idx[ax] = i[ax] - lo
            val = t[tuple(idx)]
            e = val if e is None else tirx.if_then_else(i[ax] < lo + int(t.shape[ax]), val, e)
        return e
    Y = te.compute(node.output.type.shape, f, name="out")
    return _finish(node, target, ins + [Y], list(node.inputs), f"concat.copy({len(ins)})")


def lower_pad(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    a = node.attrs
    shape = node.inputs[0].type.shape
    r = len(shape)
    begins = a.pads[:r]

    def f(*i):
        src = []
        conds = []
        for k in range(r):
            j = i[k] - begins[k]
            if a.mode == "edge":
                j = tirx.max(tirx.min(j, shape[k] - 1), 0)
            elif a.mode == "reflect":
                j = tirx.abs(j)
                j = tirx.Select(j >= shape[k], 2 * (shape[k] - 1) - j, j)
            else:
                conds.append(tirx.all(j >= 0, j < shape[k]))
            src.append(j)
        if a.mode != "constant" or not conds:
            return X[tuple(src)]
        return tirx.if_then_else(tirx.all(*conds), X[tuple(src)], tirx.const(a.value, X.dtype))
    Y = te.compute(node.output.type.shape, f, name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], f"pad.{a.mode}")




def lower_to_blocked(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    b, c = node.attrs.block, node.inputs[0].type.shape[1]

    def f(n, cb, *rest):
        *sp, i = rest
        ch = cb * b + i
        return tirx.if_then_else(ch < c, X[(n, tirx.min(ch, c - 1)) + tuple(sp)], tirx.const(0, X.dtype))
    Y = te.compute(node.output.type.shape, f, name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], f"to_blocked({b})")


def lower_from_blocked(node: Node, target) -> Kernel:
    X = placeholder(node.inputs[0], "x")
    b = node.attrs.block
    Y = te.compute(node.output.type.shape, lambda n, c, *sp: X[(n, c // b) + tuple(sp) + (c % b,)], name="out")
    return _finish(node, target, [X, Y], [node.inputs[0]], f"from_blocked({b})")
