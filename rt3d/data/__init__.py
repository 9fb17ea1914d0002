"""Generated video clips (no data set can be downloaded here)."""
from .clips import moving_shapes_clip

__all__ = ["moving_shapes_clip"]
