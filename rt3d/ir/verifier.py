"""Graph verifier: def-before-use, unique names, arity, attributes and types re-inferred. Errors quote the node."""
from __future__ import annotations

from ..errors import IRError
from .graph import Graph
from .ops import ShapeError, get_op


def verify(graph: Graph) -> Graph:
    """Check the graph's invariants; return it unchanged, or raise IRError quoting the offending node."""
    defined = set(graph.inputs) | set(graph.consts.values())
    names: set[str] = set()
    for v in defined:
        if v.name in names:
            raise IRError(f"graph '{graph.name}': duplicate value name '{v.name}'")
        names.add(v.name)
    for v in graph.consts.values():
        if v.data is not None and tuple(v.data.shape) != v.type.shape:
            raise IRError(f"graph '{graph.name}': constant @{v.name} data shape {v.data.shape} != {v.type}")
    for node in graph.nodes:
        where = f"graph '{graph.name}', node: {node}"
        try:
            opdef = get_op(node.op)
        except KeyError as e:
            raise IRError(f"{where}: {e.args[0]}") from None
        if not isinstance(node.attrs, opdef.attrs):
            raise IRError(f"{where}: attributes are {type(node.attrs).__name__}, expected {opdef.attrs.__name__}")
        allowed = opdef.arity(node.attrs)
        n = len(node.inputs)
        ok = n >= 1 if allowed == -1 else (n in allowed if isinstance(allowed, tuple) else n == allowed)
        if not ok:
            raise IRError(f"{where}: {n} inputs, op '{node.op}' takes {allowed}")
        for v in node.inputs:
            if v not in defined:
                raise IRError(f"{where}: input {v.ref()} is not defined before use")
        if node.output.node is not node:
            raise IRError(f"{where}: output value is not linked to its node")
        if node.output.name in names:
            raise IRError(f"{where}: value %{node.output.name} defined twice")
        try:
            ty = opdef.infer([v.type for v in node.inputs], node.attrs)
        except ShapeError as e:
            raise IRError(f"{where}: {e}") from None
        if ty != node.output.type:
            raise IRError(f"{where}: output type should be {ty}")
        names.add(node.output.name)
        defined.add(node.output)
    if not graph.outputs:
        raise IRError(f"graph '{graph.name}' has no outputs")
    for v in graph.outputs:
        if v not in defined:
            raise IRError(f"graph '{graph.name}': output {v.ref()} is not defined")
    return graph
