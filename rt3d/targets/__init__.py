"""Targets: a registry of small classes, each a TVM target plus a lowering table."""
from __future__ import annotations

from ..errors import BuildError
from .base import Kernel, Target

_FACTORIES = {}


def register_target(name: str):
    def wrap(factory):
        _FACTORIES[name] = factory
        return factory
    return wrap


def get_target(name: str) -> Target:
    """The Target called ``name`` (see ``target_names()``)."""
    if isinstance(name, Target):
        return name
    if name not in _FACTORIES:
        raise BuildError(f"unknown target '{name}'; known targets: {', '.join(target_names())}")
    return _FACTORIES[name]()


def target_names() -> list[str]:
    return list(_FACTORIES)


from . import arm_neon  # noqa: E402,F401  (registers the CPU targets)
from . import opencl  # noqa: E402,F401  (registers the GPU target)

__all__ = ["Target", "Kernel", "get_target", "target_names", "register_target"]
