"""Graph, Node and Value: the one node type of the IR.

A Value is a graph input (%name), a constant (@name, holding a numpy array) or the output of exactly one Node.
Nodes are kept in topological order. Graphs are mutated by passes through the small API below.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterable, Iterator

import numpy as np

from ..errors import IRError
from .ops import ShapeError, get_op
from .types import TensorType


def digest(array: np.ndarray) -> str:
    """Short content hash of a constant, printed in the text form."""
    h = hashlib.sha1(str(array.dtype).encode() + str(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:8]


class Value:
    """An SSA value: a graph input, a constant or a node's output."""

    __slots__ = ("name", "type", "node", "data", "_digest")

    def __init__(self, name: str, type: TensorType, node: "Node | None" = None,
                 data: np.ndarray | None = None, digest_: str | None = None):
        self.name = name
        self.type = type
        self.node = node
        self.data = data
        self._digest = digest_

    @property
    def is_const(self) -> bool:
        return self.data is not None or self._digest is not None

    @property
    def digest(self) -> str:
        if self.data is not None:
            return digest(self.data)
        return self._digest or ""

    def ref(self) -> str:
        return ("@" if self.is_const else "%") + self.name

    def __repr__(self) -> str:
        return f"{self.ref()}: {self.type}"


class Node:
    """One operation: op name (from the op table), inputs, typed attributes, one output Value."""

    __slots__ = ("op", "inputs", "attrs", "output", "name")

    def __init__(self, op: str, inputs: list[Value], attrs, output: Value, name: str = ""):
        self.op = op
        self.inputs = list(inputs)
        self.attrs = attrs
        self.output = output
        self.name = name  # where it came from (the ONNX node name), for error messages

    def with_attrs(self, **changes) -> None:
        self.attrs = replace(self.attrs, **changes)

    def __str__(self) -> str:
        from .printer import format_node
        return format_node(self)

    __repr__ = __str__


def sep_nodes(node: Node) -> tuple[Node, Node]:
    """The two sparse_conv3d nodes a sparse_sep_conv3d computes, the intermediate tensor a Value of its own (not in
    any graph): what the interpreter, the FLOPs counter and the kernel generator work from."""
    from .ops import OPS, sep_parts, sep_split_inputs
    a1, a2 = sep_parts(node.attrs)
    i1, i2 = sep_split_inputs(node.attrs, node.inputs)
    first, _, second = node.name.partition("+")
    mid = Value(f"{node.output.name}.mid", OPS["sparse_conv3d"].infer([v.type for v in i1], a1))
    n1 = Node("sparse_conv3d", i1, a1, mid, first)
    mid.node = n1
    return n1, Node("sparse_conv3d", [mid] + i2, a2, node.output, second or first)


class Graph:
    """A dataflow graph in topological order. ``print(graph)`` shows its text form."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.consts: dict[str, Value] = {}
        self._names: set[str] = set()
        self._counter = 0

    # ---- building ------------------------------------------------------------------------------------------
    def fresh_name(self, hint: str = "") -> str:
        if hint and hint not in self._names:
            return hint
        while True:
            name = f"{hint}{self._counter}" if hint else str(self._counter)
            self._counter += 1
            if name not in self._names:
                return name

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self._claim(name), type)
        self.inputs.append(v)
        return v

    def add_const(self, name: str, data: np.ndarray | None, type: TensorType | None = None,
                  digest_: str | None = None) -> Value:
        if data is not None:
            data = np.require(data, requirements="C")  # keeps 0-d arrays 0-d
            type = TensorType.of(data)
        v = Value(self._claim(self.fresh_name(name)), type, data=data, digest_=digest_)
        self.consts[v.name] = v
        return v

    def infer(self, op: str, inputs: list[Value], attrs, where: str = "") -> TensorType:
        try:
            return get_op(op).infer([v.type for v in inputs], attrs)
        except ShapeError as e:
            at = f" at node '{where}'" if where else ""
            raise IRError(f"{op}{at}: {e}") from None

    def make_node(self, op: str, inputs: list[Value], attrs=None, name: str = "", out_name: str = "",
                  out_type: TensorType | None = None) -> Node:
        """Create a node (not yet inserted), inferring its output type."""
        opdef = get_op(op)
        attrs = opdef.attrs() if attrs is None else attrs
        ty = out_type or self.infer(op, inputs, attrs, name)
        node = Node(op, inputs, attrs, Value(self._claim(self.fresh_name(out_name)), ty), name)
        node.output.node = node
        return node

    def add(self, op: str, inputs: list[Value], attrs=None, name: str = "", out_name: str = "") -> Value:
        """Append a node and return its output. Example: ``y = g.add("relu", [x])``."""
        node = self.make_node(op, inputs, attrs, name, out_name)
        self.nodes.append(node)
        return node.output

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise IRError(f"duplicate value name '{name}' in graph '{self.name}'")
        self._names.add(name)
        return name

    # ---- editing (used by passes) --------------------------------------------------------------------------
    def users(self) -> dict[Value, list[Node]]:
        uses: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v, []).append(n)
        return uses

    def replace_uses(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_unused(self) -> int:
        """Drop nodes and constants nothing depends on. Returns how many nodes were removed."""
        live = set(self.outputs)
        kept = []
        for n in reversed(self.nodes):
            if n.output in live:
                kept.append(n)
                live.update(n.inputs)
        removed = len(self.nodes) - len(kept)
        self.nodes = kept[::-1]
        for name in [k for k, v in self.consts.items() if v not in live]:
            del self.consts[name]
            self._names.discard(name)
        return removed

    def retype(self, node: Node) -> None:
        node.output.type = self.infer(node.op, node.inputs, node.attrs, node.name)

    # ---- reading -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.data for k, v in self.consts.items() if v.data is not None}

    def copy(self) -> "Graph":
        """A structural copy with the same names (constant arrays are shared, they are never mutated in place)."""
        g = Graph(self.name)
        g._counter = self._counter
        new: dict[Value, Value] = {}
        for v in self.inputs:
            new[v] = g.add_input(v.name, v.type)
        for v in self.consts.values():
            new[v] = g.add_const(v.name, v.data, type=v.type, digest_=v._digest)
        for n in self.nodes:
            node = g.make_node(n.op, [new[v] for v in n.inputs], n.attrs, n.name, n.output.name, n.output.type)
            g.nodes.append(node)
            new[n.output] = node.output
        g.outputs = [new[v] for v in self.outputs]
        return g

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)

    def values(self) -> Iterable[Value]:
        yield from self.inputs
        yield from self.consts.values()
        for n in self.nodes:
            yield n.output
