"""A device farm on loopback (TVM's tracker + two RPC servers): a session tunes through it, one server is killed
mid-session, the session completes on the other and the database stays intact."""
from __future__ import annotations

import io
import json

import pytest

from rt3d.cli import main
from rt3d.errors import FarmError, TuneError
from rt3d.frontend.onnx import import_model
from rt3d.models import export_onnx, get_model
from rt3d.passes import PassManager
from rt3d.targets import get_target
from rt3d.tune import RPCRunner, TuningDB, farm, tune_graph
from rt3d.tune.session import SESSION


class _KillAfterFirstRound(RPCRunner):
    """Kills server 0 while the second round of trials is being measured."""

    def __init__(self, f, **kw):
        super().__init__(f.tracker, f.key, **kw)
        self.farm, self.rounds = f, 0

    def run(self, batch):
        if all(b.config is not None for b in batch):
            self.rounds += 1
            if self.rounds == 2:
                self.farm.kill_server(0)
        return super().run(batch)


def test_farm_session_survives_a_dead_server(tmp_path, capsys):
    state = tmp_path / "farm"
    port = farm.free_port()
    assert main(["farm", "up", "--servers", "2", "--state", str(state), "--port", str(port), "--key", "t"]) == 0
    f = farm.load(state)
    try:
        assert f.servers() == 2
        assert main(["farm", "status", "--state", str(state)]) == 0
        assert "key 't': 2 registered" in capsys.readouterr().out
        with pytest.raises(FarmError, match="already up"):
            farm.up(servers=1, state_dir=state, port=port)

        model, shape = get_model("c3d_small")
        tgt = get_target("host")
        g = PassManager(tgt.default_passes()).run(import_model(export_onnx(model, shape)))
        db_path = tmp_path / "farm.jsonl"
        runner = _KillAfterFirstRound(f, timeout=30)
        assert runner.devices() == 2
        out = io.StringIO()
        report = tune_graph(g, tgt, TuningDB(db_path), runner, trials=14, out=out)
        assert report.trials == 14 and report.stopped == "budget spent"
        assert "2 device(s)" in out.getvalue() and "1 device(s)" in out.getvalue()
        assert f.servers() == 1
        db = TuningDB(db_path)
        assert not db.problems  # every line parses
        lines = db_path.read_text().splitlines()
        assert all(json.loads(line) for line in lines)
        trials = [r for r in db.records if r.session == report.session and r.workload != SESSION and not r.stage]
        assert len(trials) == 14
        assert sum(r.ok for r in trials) >= 12 and report.est_best_ms > 0
        assert all(r.error.startswith("rpc failed") for r in trials if not r.ok)
    finally:
        assert main(["farm", "down", "--state", str(state)]) == 0
    assert farm.load(state, missing_ok=True) is None
    with pytest.raises(TuneError, match="no RPC tracker answers at 127.0.0.1"):
        RPCRunner(f"127.0.0.1:{port}", "t")
    with pytest.raises(FarmError, match="no farm is up"):
        farm.load(state)
