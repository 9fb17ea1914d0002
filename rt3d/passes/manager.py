"""The pass manager: pipelines from strings, verification after each pass, print-after-all and timing.

Pipeline strings are comma-separated pass names, each optionally with options:
``"fold-constants,fold-bn,fuse{residual=false},dce"``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..errors import IRError, PassError
from ..ir import Graph, verify
from .base import PASSES, Pass, PassReport

DEFAULT_PIPELINE = "fold-constants,fold-bn,fuse,dce"


def _split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _field_type(f: dataclasses.Field) -> type:
    """A pass option's type; annotations may be strings (``from __future__ import annotations``)."""
    t = f.type
    if isinstance(t, str):
        return _SCALARS.get(t.strip(), str)
    return t if t in _SCALARS.values() else str


def _option(cls, key: str, raw: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise PassError(f"pass '{cls.name}' has no option '{key}'; options: {', '.join(fields) or 'none'}")
    hint = _field_type(fields[key])
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        return hint(raw)
    except (TypeError, ValueError):
        raise PassError(f"pass '{cls.name}': option {key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}")


def parse_pipeline(text: str | list) -> list[Pass]:
    """Turn a pipeline string (or a list of names / Pass objects) into pass instances."""
    items = _split(text) if isinstance(text, str) else list(text)
    passes = []
    for item in items:
        if isinstance(item, Pass):
            passes.append(item)
            continue
        name, _, rest = item.partition("{")
        name = name.strip()
        if name not in PASSES:
            raise PassError(f"unknown pass '{name}' in pipeline '{text}'; registered passes: "
                            f"{', '.join(sorted(PASSES))}")
        cls = PASSES[name]
        kwargs = {}
        if rest:
            if not rest.endswith("}"):
                raise PassError(f"pass '{name}': options must be written as {name}{{key=value,...}}")
            for kv in filter(None, (s.strip() for s in rest[:-1].split(","))):
                k, eq, v = kv.partition("=")
                if not eq:
                    raise PassError(f"pass '{name}': option '{kv}' must be key=value")
                kwargs[k.strip()] = _option(cls, k.strip(), v.strip())
        passes.append(cls(**kwargs))
    return passes


@dataclass
class PassManager:
    """Run passes in order, verifying the graph after each one.

    ``print_after_all`` writes the IR after every pass to ``stream``; ``reports`` holds each pass's notes and time.
    """

    pipeline: str | list = DEFAULT_PIPELINE
    print_after_all: bool = False
    verify_each: bool = True
    stream: TextIO | None = None
    reports: list[PassReport] = field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        out = self.stream or sys.stdout
        for p in parse_pipeline(self.pipeline):
            report = PassReport(p.name, nodes_before=len(graph.nodes))
            t0 = time.perf_counter()
            try:
                result = p.apply(graph, report)
            except (PassError, IRError):
                raise
            except Exception as e:
                raise PassError(f"pass '{p.name}' failed on graph '{graph.name}': {type(e).__name__}: {e}") from e
            if not isinstance(result, Graph):
                raise PassError(f"pass '{p.name}' returned {type(result).__name__}, expected a Graph")
            graph = result
            report.ms = (time.perf_counter() - t0) * 1e3
            report.nodes_after = len(graph.nodes)
            if self.verify_each:
                try:
                    verify(graph)
                except IRError as e:
                    raise PassError(f"after pass '{p.name}': invalid IR: {e}") from None
            self.reports.append(report)
            if self.print_after_all:
                print(f"// ---- after {p.name} ({report.ms:.1f} ms, {report.nodes_before} -> "
                      f"{report.nodes_after} nodes) ----", file=out)
                for n in report.notes:
                    print(f"// {n}", file=out)
                print(graph, file=out)
        return graph

    def timing_table(self) -> str:
        rows = [f"{'pass':<24}{'ms':>9}{'nodes':>14}  notes"]
        for r in self.reports:
            rows.append(f"{r.name:<24}{r.ms:>9.2f}{f'{r.nodes_before} -> {r.nodes_after}':>14}  "
                        + "; ".join(r.notes[:3]) + (" ..." if len(r.notes) > 3 else ""))
        return "\n".join(rows)


def run_pipeline(graph: Graph, pipeline: str | list = DEFAULT_PIPELINE, **kw) -> Graph:
    return PassManager(pipeline, **kw).run(graph)
