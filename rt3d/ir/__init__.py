"""rt3d's graph IR: one node type, one op table, a text form that round-trips, a verifier and a numpy interpreter."""
from .graph import Graph, Node, Value, digest
from .interpreter import run_graph
from .ops import OPS, get_op
from .parser import parse_graph
from .printer import print_graph
from .types import TensorType
from .verifier import verify

__all__ = ["Graph", "Node", "Value", "TensorType", "OPS", "get_op", "parse_graph", "print_graph", "verify",
           "run_graph", "digest"]
