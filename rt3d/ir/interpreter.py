"""The numpy reference interpreter: walks the graph node by node. It is the reference for every numeric test.

Errors are re-raised with the node that failed (as torch.fx's interpreter does).
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from ..errors import InputError, IRError
from .graph import Graph, Node, sep_nodes
from .ops import Epilogue, epilogue_inputs

KERNELS: dict[str, Callable] = {}


def kernel(*names):
    def wrap(fn):
        for n in names:
            KERNELS[n] = fn
        return fn
    return wrap


def activation(y: np.ndarray, act: str, params: tuple[float, ...]) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0)
    if act == "clip":
        return np.clip(y, params[0], params[1]).astype(y.dtype)
    if act == "leaky_relu":
        return np.where(y >= 0, y, y * np.asarray(params[0], y.dtype))
    if act == "sigmoid":
        return (1 / (1 + np.exp(-y.astype(np.float64)))).astype(y.dtype)
    return y


def _epilogue(y: np.ndarray, a: Epilogue, args: list[np.ndarray], bias_shape) -> np.ndarray:
    has_bias, has_res = epilogue_inputs(a, len(args))
    if has_bias:
        y = y + args[2].reshape(bias_shape)
    if has_res:
        y = y + args[-1]
    return activation(y, a.act, a.act_params)


def to_blocked(x: np.ndarray, b: int) -> np.ndarray:
    """NC... -> N, ceil(C/b), ..., b with zero-filled channels."""
    n, c = x.shape[:2]
    cb = -(-c // b)
    full = np.zeros((n, cb * b) + x.shape[2:], x.dtype)
    full[:, :c] = x
    full = full.reshape((n, cb, b) + x.shape[2:])
    return np.ascontiguousarray(np.moveaxis(full, 2, -1))


def from_blocked(x: np.ndarray, channels: int) -> np.ndarray:
    y = np.moveaxis(x, -1, 2)
    return np.ascontiguousarray(y.reshape((y.shape[0], y.shape[1] * y.shape[2]) + y.shape[3:])[:, :channels])


@kernel("to_blocked")
def _to_blocked(node, args):
    return to_blocked(args[0], node.attrs.block)


@kernel("from_blocked")
def _from_blocked(node, args):
    return from_blocked(args[0], node.attrs.channels)


@kernel("conv3d")
def _conv(node: Node, args):
    a = node.attrs
    x = from_blocked(args[0], args[1].shape[1] * a.groups) if a.in_block else args[0]
    res = list(args)
    if epilogue_inputs(a, len(args))[1] and a.out_block:
        res[-1] = from_blocked(args[-1], args[1].shape[0])
    y = _conv_plain(node, [x] + res[1:], (x.shape[0], args[1].shape[0]) + conv_out_spatial(node))
    if a.pool:  # max over the disjoint windows: split each spatial dim into (windows, window) and reduce the latter
        split = y.shape[:2] + tuple(v for o, p in zip(y.shape[2:], a.pool) for v in (o // p, p))
        y = y.reshape(split).max(axis=tuple(range(3, len(split), 2)))
    return to_blocked(y, a.out_block) if a.out_block else y


@kernel("sparse_conv3d")
def _sparse_conv(node: Node, args):
    """Unpack the KGS-packed weight and run the dense reference (the packing is what is being checked)."""
    from types import SimpleNamespace

    from .ops import ConvAttrs
    from .sparsity import unpack
    a = node.attrs
    x, values, cols = args[0], args[1], args[2]
    if a.in_block:
        x = from_blocked(x, x.shape[1] * a.in_block)  # the zero-filled tail channels are input channels too
    rest = list(args[3:])
    if a.residual and a.out_block:
        rest[-1] = from_blocked(rest[-1], a.filters)
    w = unpack(values, cols, a.kept, a.perm, (a.filters, x.shape[1]) + tuple(a.kernel))
    if not a.kernel:  # fully connected
        return _epilogue(x.astype(np.float64) @ w.T.astype(np.float64), a, [x, w] + rest, (1, -1)).astype(x.dtype)
    ca = ConvAttrs(act=a.act, act_params=a.act_params, residual=a.residual, stride=a.stride, pad=a.pad,
                   dilation=a.dilation)
    y = _conv_plain(SimpleNamespace(attrs=ca), [x, w] + rest,
                    (x.shape[0], a.filters) + node_out_spatial(node, a.out_block))
    return to_blocked(y, a.out_block) if a.out_block else y


@kernel("sparse_sep_conv3d")
def _sparse_sep_conv(node: Node, args):
    """The two sparse convs one after the other."""
    n1, n2 = sep_nodes(node)
    k = len(n1.inputs)
    return _sparse_conv(n2, [_sparse_conv(n1, list(args[:k]))] + list(args[k:]))


def node_out_spatial(node: Node, block: int) -> tuple[int, ...]:
    shape = node.output.type.shape
    return shape[2:-1] if block else shape[2:]


def conv_out_spatial(node: Node) -> tuple[int, ...]:
    """A conv3d's own output positions: its output's, times the windows of a fused pool (ConvAttrs.pool)."""
    sp = node_out_spatial(node, node.attrs.out_block)
    pool = getattr(node.attrs, "pool", ()) or (1,) * len(sp)
    return tuple(o * p for o, p in zip(sp, pool))


def _conv_plain(node: Node, args, out_shape):
    x, w = args[0], args[1]
    a = node.attrs
    r = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(a.pad[i], a.pad[r + i]) for i in range(r)])
    g = a.groups
    cin, cout = x.shape[1] // g, w.shape[0] // g
    y = np.zeros(out_shape, dtype=np.float64)
    for k in itertools.product(*[range(s) for s in w.shape[2:]]):
        sl = tuple(slice(k[i] * a.dilation[i], k[i] * a.dilation[i] + (out_shape[2 + i] - 1) * a.stride[i] + 1,
                         a.stride[i]) for i in range(r))
        patch = xp[(slice(None), slice(None)) + sl]  # N, C, *O
        for gi in range(g):
            wk = w[(slice(gi * cout, (gi + 1) * cout), slice(None)) + k]  # cout, cin
            xs = patch[:, gi * cin:(gi + 1) * cin]
            y[:, gi * cout:(gi + 1) * cout] += np.einsum("mc,nc...->nm...", wk.astype(np.float64), xs)
    return _epilogue(y, a, args, (1, -1) + (1,) * r).astype(x.dtype)


@kernel("dense")
def _dense(node, args):
    y = args[0].astype(np.float64) @ args[1].T.astype(np.float64)
    return _epilogue(y, node.attrs, args, (1, -1)).astype(args[0].dtype)


@kernel("matmul")
def _matmul(node, args):
    return np.matmul(args[0].astype(np.float64), args[1]).astype(args[0].dtype)


@kernel("batch_norm")
def _bn(node, args):
    x, s, b, m, v = args
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = s.astype(np.float64) / np.sqrt(v.astype(np.float64) + node.attrs.epsilon)
    return ((x - m.reshape(shape)) * inv.reshape(shape) + b.reshape(shape)).astype(x.dtype)


@kernel("relu")
def _relu(node, args):
    return activation(args[0], "relu", ())


@kernel("sigmoid")
def _sigmoid(node, args):
    return activation(args[0], "sigmoid", ())


@kernel("clip")
def _clip(node, args):
    return activation(args[0], "clip", (node.attrs.min, node.attrs.max))


@kernel("leaky_relu")
def _leaky(node, args):
    return activation(args[0], "leaky_relu", (node.attrs.alpha,))


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


@kernel(*_BINARY)
def _binary(node, args):
    return _BINARY[node.op](args[0], args[1]).astype(args[0].dtype)


def _pool(node: Node, x: np.ndarray, reduce: str) -> np.ndarray:
    a = node.attrs
    if a.block:
        c = x.shape[1] * a.block
        y = _pool_plain(node, from_blocked(x, c), reduce, (x.shape[0], c) + node_out_spatial(node, a.block))
        return to_blocked(y, a.block)
    return _pool_plain(node, x, reduce, node.output.type.shape)


def pool_extra_pad(a, in_sp, out_sp) -> list[int]:
    """End padding beyond the explicit pads that ceil_mode windows reach into (per spatial dim)."""
    r = len(in_sp)
    return [max(0, (out_sp[i] - 1) * a.stride[i] + (a.kernel[i] - 1) * a.dilation[i] + 1
                - (in_sp[i] + a.pad[i] + a.pad[r + i])) for i in range(r)]


def pool_windows(a, out_sp):
    """For every kernel offset, the slices of the padded input that the output positions see."""
    r = len(out_sp)
    for k in itertools.product(*[range(s) for s in a.kernel]):
        yield tuple(slice(k[i] * a.dilation[i], k[i] * a.dilation[i] + (out_sp[i] - 1) * a.stride[i] + 1,
                          a.stride[i]) for i in range(r))


def pool_counts(a, in_sp, out_sp) -> np.ndarray:
    """Per output position, how many window elements an average divides by: the real input, plus the explicit
    pads when count_include_pad (never the ceil_mode overhang). At least 1."""
    r = len(in_sp)
    extra = pool_extra_pad(a, in_sp, out_sp)
    if a.count_include_pad:
        inside = np.pad(np.ones([in_sp[i] + a.pad[i] + a.pad[r + i] for i in range(r)]), [(0, e) for e in extra])
    else:
        inside = np.pad(np.ones(in_sp), [(a.pad[i], a.pad[r + i] + extra[i]) for i in range(r)])
    cnt = np.zeros(out_sp)
    for sl in pool_windows(a, out_sp):
        cnt += inside[sl]
    return np.maximum(cnt, 1)


def _pool_plain(node: Node, x: np.ndarray, reduce: str, out_shape) -> np.ndarray:
    a = node.attrs
    r = x.ndim - 2
    in_sp, out_sp = x.shape[2:], tuple(out_shape[2:])
    extra = pool_extra_pad(a, in_sp, out_sp)
    widths = [(0, 0), (0, 0)] + [(a.pad[i], a.pad[r + i] + extra[i]) for i in range(r)]
    fill = -np.inf if reduce == "max" else 0.0
    xp = np.pad(x.astype(np.float64), widths, constant_values=fill)
    acc = np.full(out_shape, fill, dtype=np.float64)
    for sl in pool_windows(a, out_sp):
        patch = xp[(slice(None), slice(None)) + sl]
        acc = np.maximum(acc, patch) if reduce == "max" else acc + patch
    if reduce == "avg":
        acc = acc / pool_counts(a, in_sp, out_sp)
    return acc.astype(x.dtype)


@kernel("max_pool3d")
def _maxpool(node, args):
    return _pool(node, args[0], "max")


@kernel("avg_pool3d")
def _avgpool(node, args):
    return _pool(node, args[0], "avg")


@kernel("global_avg_pool")
def _gap(node, args):
    x = args[0]
    axes = tuple(range(2, x.ndim - 1)) if node.attrs.block else tuple(range(2, x.ndim))
    return x.astype(np.float64).mean(axis=axes, keepdims=True).astype(x.dtype)


@kernel("reduce_mean")
def _reduce_mean(node, args):
    x, a = args[0], node.attrs
    axes = tuple(ax % x.ndim for ax in a.axes) if a.axes else None
    return x.astype(np.float64).mean(axis=axes, keepdims=a.keepdims).astype(x.dtype)


@kernel("concat")
def _concat(node, args):
    return np.concatenate(args, axis=node.attrs.axis)


@kernel("reshape")
def _reshape(node, args):
    return args[0].reshape(node.attrs.shape)


@kernel("transpose")
def _transpose(node, args):
    return np.ascontiguousarray(args[0].transpose(node.attrs.perm))


@kernel("softmax")
def _softmax(node, args):
    x = args[0].astype(np.float64)
    e = np.exp(x - x.max(axis=node.attrs.axis, keepdims=True))
    return (e / e.sum(axis=node.attrs.axis, keepdims=True)).astype(args[0].dtype)


@kernel("pad")
def _pad(node, args):
    x, a = args[0], node.attrs
    r = x.ndim
    widths = [(a.pads[i], a.pads[r + i]) for i in range(r)]
    if a.mode == "constant":
        return np.pad(x, widths, constant_values=a.value)
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge"}[a.mode])


def evaluate_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    if node.op not in KERNELS:
        raise IRError(f"reference interpreter has no kernel for op '{node.op}' (node: {node})")
    try:
        return np.asarray(KERNELS[node.op](node, args))
    except IRError:
        raise
    except Exception as e:  # re-raise with the node that failed
        raise IRError(f"reference interpreter failed at node: {node}\n  {type(e).__name__}: {e}") from e


def run_graph(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run ``graph`` on numpy inputs (in graph-input order) and return its outputs as a list."""
    if len(inputs) != len(graph.inputs):
        raise InputError(f"graph '{graph.name}' takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {}
    for v, x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        if tuple(x.shape) != v.type.shape:
            raise InputError(f"graph '{graph.name}': input %{v.name} must have shape {list(v.type.shape)}, "
                             f"got {list(x.shape)}")
        env[v] = x.astype(v.type.dtype, copy=False)
    for c in graph.consts.values():
        if c.data is None:
            raise IRError(f"graph '{graph.name}': constant @{c.name} has no data (parsed without params)")
        env[c] = c.data
    for node in graph.nodes:
        env[node.output] = evaluate_node(node, [env[v] for v in node.inputs])
    return [env[v] for v in graph.outputs]
