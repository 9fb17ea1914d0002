"""The tuning database: append-only, survives torn writes, reports and skips corrupt lines."""
from __future__ import annotations

import json

from rt3d.tune import Record, TuningDB


def test_append_reload_best(tmp_path):
    db = TuningDB(tmp_path / "t.jsonl")
    db.append(Record("w1", "host:x", {"th": 1, "tw": 8, "tm": 2}, gflops=300.0, ms=1.0))
    db.append(Record("w1", "host:x", {"th": 2, "tw": 4, "tm": 2}, gflops=320.0, ms=0.9))
    db.append(Record("w1", "host:x", {"th": 4, "tw": 4, "tm": 2}, ok=False, error="BuildError: boom"))
    db.append(Record("w1", "arm:y", {"th": 1, "tw": 4, "tm": 1}, gflops=999.0))
    again = TuningDB(tmp_path / "t.jsonl")
    assert len(again.records) == 4 and not again.problems
    assert again.best("w1", "host:x").config == {"th": 2, "tw": 4, "tm": 2}  # failures and other targets ignored
    assert again.best("w2", "host:x") is None
    assert len(again.measured("w1", "host:x")) == 3


def test_torn_and_corrupt_lines_are_reported_and_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    db = TuningDB(path)
    db.append(Record("w1", "t", {"th": 1, "tw": 8, "tm": 2}, gflops=300.0))
    with open(path, "ab") as f:  # a crash in the middle of writing a record
        f.write(b'{"workload": "w1", "target": "t", "conf')
    db2 = TuningDB(path)
    assert len(db2.records) == 1 and len(db2.problems) == 1 and ":2: skipped" in db2.problems[0]
    db2.append(Record("w1", "t", {"th": 2, "tw": 4, "tm": 2}, gflops=310.0))
    with open(path, "a") as f:
        f.write("not json at all\n")
    db3 = TuningDB(path)
    assert [r.gflops for r in db3.records] == [300.0, 310.0]
    assert len(db3.problems) == 2
    lines = path.read_text().splitlines()
    assert json.loads(lines[2])["gflops"] == 310.0  # the torn line stayed a line of its own


def test_best_prefers_the_last_sessions_side_by_side_remeasurement(tmp_path):
    db = TuningDB(tmp_path / "t.jsonl")
    a, b = {"th": 1, "tw": 8, "tm": 2}, {"th": 2, "tw": 4, "tm": 2}
    db.append(Record("w", "t", a, gflops=300.0, ms=1.0, session="s1"))
    db.append(Record("w", "t", b, gflops=400.0, ms=0.75, session="s1"))  # a lucky search measurement
    assert db.best("w", "t").config == b
    for ms_a, ms_b in ((0.95, 1.0), (0.97, 1.02)):
        db.append(Record("w", "t", a, gflops=300 / ms_a, ms=ms_a, session="s1", stage="validate"))
        db.append(Record("w", "t", b, gflops=300 / ms_b, ms=ms_b, session="s1", stage="validate"))
    best = TuningDB(tmp_path / "t.jsonl").best("w", "t")
    assert best.config == a and abs(best.ms - 0.96) < 1e-9 and best.stage == "validate"
    db.append(Record("w", "t", b, gflops=400.0, ms=0.9, session="s2", stage="validate"))  # a later session
    assert TuningDB(tmp_path / "t.jsonl").best("w", "t").config == b
    db.append(Record("w", "t", {}, gflops=0.0, ms=0.1, session="s2", stage="estimate"))
    assert TuningDB(tmp_path / "t.jsonl").best("w", "t").config == b  # kernels without knobs never win
