"""Parse the text form printed by ``printer.py`` back into a Graph (see the example there).

``parse_graph(text, params)`` takes constant data from ``params`` (name -> array) for constants printed by hash;
without it such constants carry only their hash (enough for structural passes and golden tests).
"""
from __future__ import annotations

import re
import typing
from dataclasses import fields

import numpy as np

from ..errors import IRError
from .graph import Graph, Value
from .ops import get_op
from .types import TensorType

NAME = r"[A-Za-z0-9_.:/\-]+"
TYPE = r"([a-z0-9]+)\[([0-9,]*)\]"
_HEADER = re.compile(rf"^graph ({NAME})\((.*)\) \{{$")
_ARG = re.compile(rf"^%({NAME}): {TYPE}$")
_CONST = re.compile(rf"^@({NAME}): {TYPE}(?: #([0-9a-f]+)| = \[(.*)\])$")
_NODE = re.compile(rf"^%({NAME}) = ([a-z0-9_]+)\((.*?)\)(?: (\{{.*\}}))? : {TYPE}(?:  # (.*))?$")
_RETURN = re.compile(r"^return (.*)$")


def _type(short: str, dims: str) -> TensorType:
    return TensorType(tuple(int(d) for d in dims.split(",") if d), TensorType.short_to_dtype(short))


def _scalar(tok: str):
    tok = tok.strip()
    if tok in ("true", "false"):
        return tok == "true"
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    try:
        return float(tok)
    except ValueError:
        return tok


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def _coerce(value, hint):
    origin = typing.get_origin(hint)
    if origin is tuple:
        elem = typing.get_args(hint)[0]
        return tuple(elem(x) for x in value)
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    if hint is bool:
        return bool(value)
    return value


def parse_attrs(op: str, text: str | None):
    cls = get_op(op).attrs
    if not text:
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for item in _split_top(text[1:-1]):
        key, _, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if key not in known:
            raise IRError(f"op '{op}' has no attribute '{key}' (has: {', '.join(sorted(known))})")
        if raw.startswith("["):
            val = [_scalar(t) for t in _split_top(raw[1:-1])]
        else:
            val = _scalar(raw)
        kwargs[key] = _coerce(val, hints[key])
    return cls(**kwargs)


def parse_graph(text: str, params: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse a graph's text form. Raises IRError naming the line that is wrong."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("//")]
    if not lines:
        raise IRError("empty IR text")
    m = _HEADER.match(lines[0])
    if not m:
        raise IRError(f"line 1: expected 'graph NAME(%in: TYPE, ...) {{', got: {lines[0]}")
    g = Graph(m.group(1))
    env: dict[str, Value] = {}
    for arg in filter(None, (a.strip() for a in _split_top(m.group(2)))):
        am = _ARG.match(arg)
        if not am:
            raise IRError(f"line 1: bad graph input '{arg}'")
        env["%" + am.group(1)] = g.add_input(am.group(1), _type(am.group(2), am.group(3)))
    ended = False
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            if line == "}":
                ended = True
                break
            if (cm := _CONST.match(line)):
                env["@" + cm.group(1)] = _parse_const(g, cm, params)
            elif (nm := _NODE.match(line)):
                out, op, args, attrs, short, dims, where = nm.groups()
                ins = []
                for a in filter(None, (a.strip() for a in args.split(","))):
                    if a not in env:
                        raise IRError(f"use of undefined value {a}")
                    ins.append(env[a])
                node = g.make_node(op, ins, parse_attrs(op, attrs), name=where or "", out_name=out,
                                   out_type=_type(short, dims))
                if node.output.name != out:
                    raise IRError(f"value %{out} defined twice")
                g.nodes.append(node)
                env["%" + out] = node.output
            elif (rm := _RETURN.match(line)):
                for r in (r.strip() for r in rm.group(1).split(",")):
                    if r not in env:
                        raise IRError(f"return of undefined value {r}")
                    g.outputs.append(env[r])
            else:
                raise IRError("cannot parse")
        except (IRError, KeyError, ValueError, TypeError) as e:
            msg = e.args[0] if e.args else str(e)
            raise IRError(f"line {lineno}: {msg}: {line}") from None
    if not ended:
        raise IRError("missing closing '}'")
    if not g.outputs:
        raise IRError("graph has no 'return'")
    return g


def _parse_const(g: Graph, m: re.Match, params) -> Value:
    name, short, dims, dig, inline = m.groups()
    ty = _type(short, dims)
    if inline is not None:
        vals = [_scalar(t) for t in _split_top(inline)]
        vals = [v if not isinstance(v, str) else float(v) for v in vals]
        data = np.array(vals, dtype=ty.dtype).reshape(ty.shape)
        return g.add_const(name, data)
    if params is not None and params.get(name) is not None:
        data = np.asarray(params[name])
        if TensorType.of(data) != ty:
            raise IRError(f"constant @{name} is {ty} in the text but {TensorType.of(data)} in params")
        v = g.add_const(name, data)
        if v.digest != dig:
            raise IRError(f"constant @{name}: params data hash {v.digest} differs from #{dig}")
        return v
    return g.add_const(name, None, type=ty, digest_=dig)


