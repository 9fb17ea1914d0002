"""Errors a user can meet. Each names what was wrong and where (model, node, op)."""
from __future__ import annotations


class Rt3dError(Exception):
    """Base class of every error rt3d raises on purpose."""


class ModelLoadError(Rt3dError):
    """The file is not a readable ONNX model, or the model cannot be used as given."""


class UnsupportedOpsError(Rt3dError):
    """The model uses ONNX ops (or op versions) that rt3d cannot import. Lists all of them at once."""

    def __init__(self, model: str, unsupported: list[tuple[str, str, int]], supported: list[str]):
        self.unsupported = unsupported
        lines = [f"model '{model}' uses {len(unsupported)} unsupported ONNX op node(s):"]
        for op, node, opset in unsupported:
            lines.append(f"  unsupported ONNX op '{op}' (node '{node}', opset {opset})")
        lines.append("supported: " + ", ".join(sorted(supported)))
        super().__init__("\n".join(lines))


class ConversionError(Rt3dError):
    """A supported ONNX op has attributes or inputs rt3d cannot represent."""


class IRError(Rt3dError):
    """An IR graph is malformed (verifier, shape inference or parser)."""


class PassError(Rt3dError):
    """A pass failed or was named wrongly in a pipeline."""


class BuildError(Rt3dError):
    """Lowering or code generation failed for a node."""


class InputError(Rt3dError):
    """A run-time input does not match what the built module expects."""


class TuneError(Rt3dError):
    """A tuning session cannot go on (no devices left under the key, an unreadable tracker address...)."""


class FarmError(Rt3dError):
    """The loopback device farm (tracker + RPC servers) cannot be started, found or stopped."""
