"""Pipeline strings, options, errors, print-after-all and timing."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import pytest

import rt3d
from rt3d.errors import PassError
from rt3d.ir import parse_graph
from rt3d.passes import PASSES, Pass, PassManager, parse_pipeline, register_pass

G = """graph g(%x: f32[1,1,2,2,2]) {
  @w: f32[2,1,1,1,1] = [0.5, -2]
  %0 = conv3d(%x, @w) {stride=[1,1,1], pad=[0,0,0,0,0,0], dilation=[1,1,1], groups=1} : f32[1,2,2,2,2]
  %1 = relu(%0) : f32[1,2,2,2,2]
  %2 = sigmoid(%x) : f32[1,1,2,2,2]
  return %1
}"""


def test_parse_pipeline_with_options():
    ps = parse_pipeline("fold-constants{max_elements=10}, fuse{residual=false,activation=true},dce")
    assert [p.name for p in ps] == ["fold-constants", "fuse", "dce"]
    assert ps[0].max_elements == 10 and ps[1].residual is False and ps[1].activation is True


@pytest.mark.parametrize("text,msg", [
    ("fold-constants,frobnicate", "unknown pass 'frobnicate'.*registered passes: .*fold-bn"),
    ("fuse{colour=red}", "pass 'fuse' has no option 'colour'; options: residual, activation"),
    ("fuse{residual=maybe}", "option residual='maybe' is not a valid bool"),
    ("fuse{residual}", "must be key=value"),
    ("fold-constants{max_elements=x}", "not a valid int"),
])
def test_pipeline_errors(text, msg):
    with pytest.raises(PassError, match=msg):
        parse_pipeline(text)


def test_print_after_all_and_timing():
    out = io.StringIO()
    pm = PassManager("fuse,dce", print_after_all=True, stream=out)
    g = pm.run(parse_graph(G))
    text = out.getvalue()
    assert "// ---- after fuse" in text and "// ---- after dce" in text and "1 activation fused" in text
    assert text.count("graph g(") == 2
    assert g.ops() == ["conv3d"]
    table = pm.timing_table()
    assert "fuse" in table and "3 -> 2" in table and "2 -> 1" in table


def test_broken_pass_is_caught_by_the_verifier():
    @dataclass(frozen=True)
    class Breaker(Pass):
        name: ClassVar[str] = "test-breaker"

        def apply(self, graph, report):
            graph.nodes.reverse()
            return graph
    register_pass(Breaker)
    try:
        with pytest.raises(PassError, match="after pass 'test-breaker': invalid IR.*not defined before use"):
            PassManager("test-breaker").run(parse_graph(G))
    finally:
        del PASSES["test-breaker"]


def test_register_pass_rejects_bad_classes():
    class NotAPass:
        name = "x"
    with pytest.raises(PassError, match="subclass of rt3d.passes.Pass"):
        register_pass(NotAPass)
    with pytest.raises(PassError, match="has no name"):
        register_pass(dataclass(frozen=True)(type("Nameless", (Pass,), {})))


def test_build_accepts_pass_objects_and_does_not_touch_the_callers_graph():
    g = parse_graph(G)
    mod = rt3d.build(g, passes=[PASSES["fuse"](), PASSES["dce"]()])
    assert len(mod.layers) == 1 and len(g.nodes) == 3
