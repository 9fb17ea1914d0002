"""Golden-text pass tests: tests/passes/<pass>/*.rt3d hold '// RUN: <pipeline>', an input graph, '// CHECK:' and the
expected graph. ``pytest --update-golden`` rewrites the expected part. Graphs whose constants all have data are also
checked numerically: the interpreter gives the same outputs before and after the pipeline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rt3d.ir import parse_graph, run_graph
from rt3d.passes import PASSES, PassManager

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.rt3d"))


def split_case(path: Path) -> tuple[str, str, str]:
    text = path.read_text()
    first, _, rest = text.partition("\n")
    assert first.startswith("// RUN: "), f"{path}: first line must be '// RUN: <pipeline>'"
    inp, sep, expected = rest.partition("// CHECK:\n")
    assert sep, f"{path}: missing '// CHECK:' line"
    return first[len("// RUN: "):].strip(), inp, expected


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_golden(path: Path, update_golden: bool):
    pipeline, inp, expected = split_case(path)
    out = PassManager(pipeline).run(parse_graph(inp))
    got = str(out)
    if update_golden:
        path.write_text(f"// RUN: {pipeline}\n{inp}// CHECK:\n{got}")
        expected = got
    assert got == expected
    before = parse_graph(inp)
    if all(c.data is not None for c in before.consts.values()):
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in before.inputs]
        for a, b in zip(run_graph(before, *xs), run_graph(out, *xs), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_every_pass_has_golden_tests():
    builtin = {"fold-constants", "fold-bn", "dce", "fuse"}
    assert builtin <= set(PASSES)
    for name in builtin:
        assert list((HERE / name).glob("*.rt3d")), f"no golden tests for pass '{name}'"


def test_registry_keys_equal_pass_names():
    for key, cls in PASSES.items():
        assert key == cls.name
