"""Tuning sessions: measure schedule candidates of every distinct conv layer of a graph, locally or on a device
farm, and append every result (failures too) to the tuning database.

A session has a trial budget for the whole model. Each round it takes as many candidates as there are devices:
first the default schedule of every layer (and one measurement of every kernel without knobs, for the end-to-end
estimate), then the candidates the search proposes for the layers that weigh most in the estimated end-to-end
latency (count x best time, discounted by the trials they already had). A session header in the database
records the budget, so ``resume=True`` continues the last session of this model and target where it stopped;
candidates already in the database (from any session or model with the same layers) are never measured again.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

from ..errors import TuneError
from .db import Record, TuningDB
from .measure import Workdir, build_candidate
from .search import Search
from .space import Task, config_key, extract_tasks, schedule_record, task_key, tunable

SESSION = "@session"


@dataclass
class LayerResult:
    workload: str
    node: str
    op: str
    count: int
    tunable: bool
    default_ms: float | None = None
    best_ms: float | None = None
    default_gflops: float | None = None
    best_gflops: float | None = None
    best: dict | None = None
    trials: int = 0  # in this session
    failures: int = 0


@dataclass
class TuneReport:
    session: str = ""
    trials: int = 0
    failures: int = 0
    budget: int = 0
    seconds: float = 0.0
    stopped: str = ""
    est_default_ms: float = 0.0
    est_best_ms: float = 0.0
    layers: list[LayerResult] = field(default_factory=list)

    def __str__(self) -> str:
        rows = [f"session {self.session}: {self.trials} trials ({self.failures} failed) of {self.budget} in "
                f"{self.seconds:.0f} s; {self.stopped}",
                f"{'layer':<26}{'x':>3}{'trials':>7}{'default ms':>12}{'best ms':>10}{'GF/s':>7}  best schedule"]
        for r in self.layers:
            if not r.tunable:
                continue
            d = f"{r.default_ms:.2f}" if r.default_ms else "-"
            b = f"{r.best_ms:.2f}" if r.best_ms else "-"
            g = f"{r.best_gflops:.0f}" if r.best_gflops else "-"
            rows.append(f"{r.workload:<26}{r.count:>3}{r.trials:>7}{d:>12}{b:>10}{g:>7}  {r.best or ''}")
        rows.append(f"estimated end to end (sum of kernels): default {self.est_default_ms:.1f} ms -> tuned "
                    f"{self.est_best_ms:.1f} ms")
        return "\n".join(rows)

    def to_json(self) -> dict:
        return asdict(self)


class _State:
    def __init__(self, task: Task):
        self.task = task
        self.by_key = {config_key(c): c for c in task.space}  # the search space by config key
        self.default_key = config_key(task.space[0]) if task.space else "{}"
        self.measured: dict[str, float] = {}  # config key -> ms (0 for failed), search trials
        self.validated: dict[str, list[float]] = {}  # config key -> ms of the final re-measurements
        self.trials = self.failures = 0

    def ok_ms(self, final: bool = False) -> dict[str, float]:
        """ms of every successful schedule: the search's measurements, or with ``final`` the mean of the last
        side-by-side re-measurements where there are any (what TuningDB.best, and so rt3d.build, goes by)."""
        if final and self.validated:
            return {k: sum(v) / len(v) for k, v in self.validated.items()}
        return {k: v for k, v in self.measured.items() if v > 0}

    def default_ms(self, final: bool = False) -> float | None:
        v = self.ok_ms(final).get(self.default_key)
        return v if v else None

    def best(self, final: bool = False) -> tuple[str | None, float | None]:
        ok = self.ok_ms(final)
        if not ok:
            return None, None
        k = min(ok, key=ok.get)
        return k, ok[k]

    def gflops(self, ms: float | None) -> float | None:
        return 2 * self.task.macs / (ms * 1e6) if ms else None


class Progress:
    """One status line: trials, failures, devices, the layer being tuned with its best so far, and the estimated
    end-to-end latency. Redrawn in place on a terminal; in a log, one line every ``every`` seconds at most."""

    def __init__(self, out: TextIO | None, every: float = 5.0):
        self.out = out
        self.tty = bool(out is not None and getattr(out, "isatty", lambda: False)())
        self.width = 0
        self.every, self.last, self.pending = every, -math.inf, ""

    def show(self, text: str, force: bool = False) -> None:
        if self.out is None:
            return
        if not self.tty and not force and time.monotonic() - self.last < self.every:
            self.pending = text
            return
        if force and self.pending and self.pending != text:
            pending, self.pending = self.pending, ""
            self.show(pending, force=True)
        self.last, self.pending = time.monotonic(), ""
        if self.tty:
            self.out.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.pending:
            self.show(self.pending, force=True)
        if self.out is not None and self.tty:
            self.out.write("\n")
            self.out.flush()


def model_digest(tasks: list[Task], target_key: str) -> str:
    return hashlib.sha1(json.dumps([sorted(t.workload for t in tasks), target_key]).encode()).hexdigest()[:12]


def tune_graph(graph, target, db: TuningDB, runner, trials: int = 64, search: str = "guided", resume: bool = False,
               time_budget: float | None = None, seed: int = 0, out: TextIO | None = sys.stderr,
               validate: int = 3, validate_rounds: int = 2, builder=None) -> TuneReport:
    """Run (or with ``resume`` continue) a tuning session of ``graph`` (after passes) on ``runner``'s devices.

    At the end, the ``validate`` fastest candidates of every tuned layer are measured again next to its default,
    ``validate_rounds`` times in turn; ``rt3d.build`` then takes the best mean of those re-measurements.
    ``builder(task, config, target, workdir) -> Built`` replaces ``build_candidate`` (e.g. to replay recorded
    measurements when comparing search strategies, bench/search_compare.py)."""
    build = builder or build_candidate
    t_start = time.monotonic()
    tasks = extract_tasks(graph, target)
    tkey = target.key()
    digest = model_digest(tasks, tkey)
    if resume:
        heads = [r for r in db.records
                 if r.workload == SESSION and r.target == tkey and r.config.get("model") == digest]
        if not heads:
            raise TuneError(f"nothing to resume: {db.path} has no session of model '{graph.name}' for target {tkey}")
        head = heads[-1]
        sid, budget, search = head.config["id"], int(head.config["trials"]), head.config.get("search", search)
    else:
        sid, budget = f"{digest}-{int(time.time() * 1000):x}", trials
        db.append(Record(SESSION, tkey, {"id": sid, "model": digest, "name": graph.name, "trials": trials,
                                         "search": search}, session=sid))
    done_before = sum(1 for r in db.records if r.session == sid and r.workload != SESSION and not r.stage)
    states = {t.workload: _State(t) for t in tasks}
    for r in db.records:
        st = states.get(r.workload)
        if st is not None and r.target == tkey and r.stage != "validate":
            st.measured[config_key(r.config)] = r.ms if r.ok and r.ms > 0 else 0.0
    for st in states.values():  # the last session's re-measurements decide, as in TuningDB.best
        st.validated = {k: [r.ms for r in rs] for k, rs in db.validated(st.task.workload, tkey).items()}
    strategy = Search(search, seed=seed)
    report = TuneReport(session=sid, budget=budget)
    progress = Progress(out)
    work = Workdir()
    remaining = budget - done_before

    def estimate(which: str, final: bool = False) -> tuple[float, int]:
        total, known = 0.0, 0
        for st in states.values():
            ms = (st.best(final)[1] if which == "best" or not st.task.space else st.default_ms(final))
            if ms:
                total += st.task.count * ms
                known += 1
        return total, known

    def record(built, res, stage: str = "") -> None:
        """Append a result; search trials (stage "") count against the budget."""
        st = states[built.task.workload]
        cfg = asdict(built.config) if built.config is not None else {}
        gf = st.gflops(res.ms) if res.ok else 0.0
        db.append(Record(built.task.workload, tkey, cfg, gflops=gf or 0.0, ms=res.ms if res.ok else 0.0,
                         ok=res.ok, error=res.error, session=sid, device=res.device, stage=stage))
        if stage == "validate":
            if res.ok:
                st.validated.setdefault(config_key(cfg), []).append(res.ms)
            return
        st.measured[config_key(cfg)] = res.ms if res.ok else 0.0
        if not stage:
            st.trials += 1
            st.failures += int(not res.ok)
            report.trials += 1
            report.failures += int(not res.ok)

    def show(task: Task | None, ndev: int) -> None:
        est, known = estimate("best")
        text = f"[tune {done_before + report.trials}/{budget} trials, {report.failures} failed, {ndev} device(s)]"
        if task is not None and task.space:
            st = states[task.workload]
            _, bms = st.best()
            i = [t.workload for t in tasks if t.space].index(task.workload) + 1
            n = sum(1 for t in tasks if t.space)
            text += (f" layer {i}/{n} {task.workload}: best {st.gflops(bms) or 0:.0f} GF/s"
                     f" (default {st.gflops(st.default_ms()) or 0:.0f})")
        text += f" | est. end to end {est:.1f} ms" + ("" if known == len(tasks) else f" ({known}/{len(tasks)} kernels)")
        progress.show(text)

    try:
        # kernels without knobs: measured once (not trials) for the end-to-end estimate
        fixed = [st for st in states.values() if not st.task.space and not st.measured]
        while fixed:
            ndev = _devices(runner)
            batch, fixed = fixed[:ndev], fixed[ndev:]
            built = [build(st.task, None, target, work.path) for st in batch]
            for b, res in zip(built, runner.run(built)):
                record(b, res, stage="estimate")
            work.clean(built)
            show(None, ndev)

        stopped = "budget spent"
        while remaining > 0:
            if time_budget is not None and time.monotonic() - t_start > time_budget:
                stopped = f"time budget of {time_budget:.0f} s spent"
                break
            ndev = _devices(runner)
            picks = _schedule(states, strategy, min(ndev, remaining))
            if not picks:
                stopped = "every candidate of every layer measured"
                break
            built = [build(t, c, target, work.path) for t, c in picks]
            results = runner.run(built)
            for b, res in zip(built, results):
                record(b, res)
            work.clean(built)
            remaining -= len(picks)
            if strategy.kind == "guided":
                samples, defaults = [], {}
                for st in states.values():
                    if not st.task.space:
                        continue
                    for k, ms in st.ok_ms().items():
                        if k in st.by_key:
                            samples.append((st.task, st.by_key[k], st.gflops(ms)))
                    if st.default_ms():
                        defaults[st.task.workload] = st.gflops(st.default_ms())
                strategy.update(samples, defaults)
            show(picks[-1][0], ndev)
        report.stopped = stopped
        if validate > 0 and report.trials > 0:
            _validate(states, target, runner, work, record, validate, validate_rounds, progress, build)
    finally:
        progress.done()
        work.close()
        runner.close()
    report.seconds = time.monotonic() - t_start
    report.est_default_ms, _ = estimate("default", final=True)
    report.est_best_ms, _ = estimate("best", final=True)
    for st in states.values():
        t = st.task
        bkey, bms = st.best(final=True)
        dms = st.default_ms(final=True) if t.space else bms
        report.layers.append(LayerResult(
            t.workload, t.describe(), t.node.op, t.count, bool(t.space), dms, bms, st.gflops(dms), st.gflops(bms),
            json.loads(bkey) if bkey and t.space else None, st.trials, st.failures))
    return report


def _validate(states, target, runner, work, record, top: int, rounds: int, progress, build) -> None:
    """Re-measure each tuned layer's ``top`` fastest search results and its default, in turn, ``rounds`` times."""
    finalists = []
    for st in states.values():
        if not st.task.space:
            continue
        ok = {k: v for k, v in st.measured.items() if v > 0 and k in st.by_key}
        if len(ok) < 2:
            continue
        keys = sorted(ok, key=ok.get)[:top]
        if st.default_key in ok and st.default_key not in keys:
            keys.append(st.default_key)
        st.validated = {}  # this session's re-measurements decide from now on (older ones stay in the database)
        for k in keys:
            finalists.append(build(st.task, st.by_key[k], target, work.path))
    for r in range(rounds):
        progress.show(f"[validate round {r + 1}/{rounds}: {len(finalists)} finalists re-measured side by side]",
                      force=True)
        order = finalists if r % 2 == 0 else finalists[::-1]
        n = max(1, _devices(runner))
        for i in range(0, len(order), n):
            batch = order[i:i + n]
            for b, res in zip(batch, runner.run(batch)):
                record(b, res, stage="validate")
    work.clean(finalists)


def _devices(runner) -> int:
    n = runner.devices()
    if n <= 0:
        raise TuneError(f"no devices left under the runner ({getattr(runner, 'key', runner.name)}); the records "
                        "measured so far are in the database: start servers and continue with --resume")
    return n


def _schedule(states: dict[str, _State], search: Search, n: int) -> list[tuple[Task, object]]:
    """Up to ``n`` (task, config) candidates: unmeasured defaults first, then by weight in the end-to-end time."""
    picks: list[tuple[Task, object]] = []
    taken: dict[str, set[str]] = {}
    for _ in range(n):
        best, best_w = None, None
        for st in states.values():
            if not st.task.space:
                continue
            seen = set(st.measured) | taken.get(st.task.workload, set())
            if st.by_key.keys() <= seen:
                continue
            if st.default_key not in seen:
                w = (1, 0.0, st.task.macs)  # defaults first, heavier layers first
            else:
                ms = st.best()[1] or st.default_ms() or 1.0
                w = (0, st.task.count * ms / math.sqrt(1 + st.trials + len(taken.get(st.task.workload, ()))),
                     st.task.macs)
            if best_w is None or w > best_w:
                best, best_w = st, w
        if best is None:
            break
        seen = set(best.measured) | taken.get(best.task.workload, set())
        cand = search.propose(best.task, seen, 1)
        if not cand:
            break
        taken.setdefault(best.task.workload, set()).add(config_key(cand[0]))
        picks.append((best.task, cand[0]))
    return picks


def apply_db(graph, target, db: TuningDB):
    """The target with its ``tuned`` table filled from the best records of ``db`` for this graph's layers."""
    import dataclasses
    tuned, tkey = {}, target.key()
    for n in graph.nodes:
        if tunable(n):
            key = task_key(n)
            rec = db.best(key, tkey)
            if rec is not None and rec.config:
                try:
                    tuned[key] = schedule_record(n.op, rec.config)
                except TypeError:
                    continue  # a record of another kernel version: the default stays
    return dataclasses.replace(target, tuned=tuned), len(tuned)


__all__ = ["tune_graph", "apply_db", "TuneReport", "LayerResult"]
