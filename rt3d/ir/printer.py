"""The IR text form. Example::

    graph tiny(%x: f32[1,3,8,16,16]) {
      @conv1.w: f32[8,3,3,3,3] #1a2b3c4d
      @scale: f32[2] = [0.5, 2]
      %1 = conv3d(%x, @conv1.w) {stride=[1,1,1], pad=[1,1,1,1,1,1], dilation=[1,1,1], groups=1} : f32[1,8,8,16,16]  # conv1
      return %1
    }

Constants with at most INLINE_MAX elements print their values (so golden tests can hold real weights);
larger ones print a short content hash.
"""
from __future__ import annotations

from dataclasses import MISSING, fields

import numpy as np

INLINE_MAX = 16
# epilogue fields print only when set, so a plain conv reads as plainly as the design's example
_QUIET = {"act", "act_params", "residual", "in_block", "out_block", "block", "sparsity", "order", "perm", "pool"}


def format_scalar(v) -> str:
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, np.floating):
        return _short_float(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _short_float(v: np.floating) -> str:
    s = str(v)  # numpy prints the shortest string that round-trips in the value's own precision
    return s[:-2] if s.endswith(".0") else s


def format_attr_value(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(format_scalar(x) for x in v) + "]"
    return format_scalar(v)


def format_attrs(attrs) -> str:
    parts = []
    for f in fields(attrs):
        v = getattr(attrs, f.name)
        if f.name in _QUIET and f.default is not MISSING and v == f.default:
            continue
        parts.append(f"{f.name}={format_attr_value(v)}")
    return "{" + ", ".join(parts) + "}" if parts else ""


def format_node(node) -> str:
    args = ", ".join(v.ref() for v in node.inputs)
    attrs = format_attrs(node.attrs)
    text = f"%{node.output.name} = {node.op}({args})" + (f" {attrs}" if attrs else "") + f" : {node.output.type}"
    return text + (f"  # {node.name}" if node.name else "")


def format_const(v) -> str:
    head = f"@{v.name}: {v.type}"
    if v.data is not None and v.data.size <= INLINE_MAX:
        return head + " = [" + ", ".join(format_scalar(x) for x in v.data.reshape(-1)) + "]"
    return head + f" #{v.digest}"


def print_graph(graph) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"graph {graph.name}({ins}) {{"]
    lines += ["  " + format_const(v) for v in graph.consts.values()]
    lines += ["  " + format_node(n) for n in graph.nodes]
    lines.append("  return " + ", ".join(v.ref() for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
