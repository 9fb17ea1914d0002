"""The pass base class and registry. A pass is a frozen dataclass with a ``name`` and ``apply(graph) -> graph``.

User code registers its own passes the same way::

    @rt3d.passes.register_pass
    @dataclass(frozen=True)
    class CountConvs(rt3d.passes.Pass):
        name: ClassVar[str] = "count-convs"
        def apply(self, graph, report):
            report.note(f"{graph.ops().count('conv3d')} convs")
            return graph
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import PassError
from ..ir import Graph


@dataclass
class PassReport:
    """What one pass did: notes (including reasons it declined to act) and its run time."""

    name: str
    notes: list[str] = field(default_factory=list)
    ms: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0

    def note(self, msg: str) -> None:
        self.notes.append(msg)


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses set ``name`` and implement ``apply``; option fields are dataclass fields."""

    name: ClassVar[str] = ""

    def apply(self, graph: Graph, report: PassReport) -> Graph:
        raise NotImplementedError(f"pass '{self.name}' does not implement apply()")


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its ``name`` in pipeline strings."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise PassError(f"register_pass expects a subclass of rt3d.passes.Pass, got {cls!r}")
    if not cls.name:
        raise PassError(f"pass class {cls.__name__} has no name")
    if not dataclasses.is_dataclass(cls):
        raise PassError(f"pass class {cls.__name__} must be a @dataclass(frozen=True)")
    PASSES[cls.name] = cls
    return cls
