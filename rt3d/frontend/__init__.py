"""Frontends: ONNX import, and (separately) the pruning stage."""
