"""The ONNX frontend: one converter per op, versioned by opset; every unsupported op is reported at once."""
from .importer import import_model, load_model
from .registry import supported_ops

__all__ = ["import_model", "load_model", "supported_ops"]
