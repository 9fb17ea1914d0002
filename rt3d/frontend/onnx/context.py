"""Import state shared by the converters: the IR graph being built and what each ONNX tensor name became.

An ONNX tensor is either an IR Value (data computed at run time) or a static numpy array (initializers,
Constant outputs, and shape arithmetic folded at import time). Static arrays become IR constants only when a
run-time op consumes them.
"""
from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ConversionError
from ...ir import Graph, Value

_BAD = re.compile(r"[^A-Za-z0-9_.:/\-]")


def sanitize(name: str) -> str:
    name = _BAD.sub("_", name.strip("/")) or "t"
    return name


class Context:
    def __init__(self, graph: Graph, opset: int, model_name: str):
        self.graph = graph
        self.opset = opset
        self.model_name = model_name
        self.env: dict[str, Value | np.ndarray] = {}
        self._const_values: dict[str, Value] = {}
        self.node: onnx.NodeProto | None = None
        # initializer name -> (Sparsity, structural keep mask) from the model's rt3d.sparsity metadata
        self.sparsity: dict = {}

    # ---- errors ----------------------------------------------------------------------------------------------
    def fail(self, msg: str) -> ConversionError:
        n = self.node
        where = f"node '{n.name}' (op {n.op_type}, opset {self.opset})" if n is not None else "graph"
        return ConversionError(f"model '{self.model_name}', {where}: {msg}")

    # ---- attributes ------------------------------------------------------------------------------------------
    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                if isinstance(v, bytes):
                    v = v.decode()
                if isinstance(v, onnx.TensorProto):
                    v = numpy_helper.to_array(v)
                return v
        return default

    # ---- inputs ----------------------------------------------------------------------------------------------
    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def static(self, i: int) -> np.ndarray | None:
        """The i-th input as a numpy array if it is known at import time, else None."""
        if not self.has_input(i):
            return None
        v = self.env[self.node.input[i]]
        return v if isinstance(v, np.ndarray) else None

    def require_static(self, i: int, what: str) -> np.ndarray:
        v = self.static(i)
        if v is None:
            raise self.fail(f"input {i} ({what}, '{self.node.input[i]}') must be a constant; "
                            "rt3d needs it at compile time")
        return v

    def value(self, i: int) -> Value:
        """The i-th input as an IR Value (a static array becomes an IR constant, once)."""
        name = self.node.input[i]
        v = self.env[name]
        if isinstance(v, Value):
            return v
        if name not in self._const_values:
            data = v if v.dtype != np.float64 else v.astype(np.float32)
            self._const_values[name] = self.graph.add_const(sanitize(name), data)
        return self._const_values[name]

    def const(self, hint: str, data: np.ndarray) -> Value:
        return self.graph.add_const(self.graph.fresh_name(sanitize(hint)), data)

    def all_static(self) -> bool:
        return all(self.static(i) is not None for i in range(len(self.node.input)) if self.has_input(i))

    def add(self, op: str, inputs: list[Value], attrs=None) -> Value:
        return self.graph.add(op, inputs, attrs, name=self.node.name or self.node.op_type)
