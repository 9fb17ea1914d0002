"""The tuning database: append-only JSON lines keyed by workload and target.

Each measurement is one line, written with a single O_APPEND write and fsync, so a crash mid-write can only
damage the line being written: everything recorded before survives. Lines that do not parse are reported (with
their line number) and skipped. One file serves any number of models: records are keyed by the workload (the
op and its shapes and attributes), so models sharing layers share tuning.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Record:
    workload: str
    target: str
    config: dict
    gflops: float = 0.0
    ms: float = 0.0
    ok: bool = True
    error: str = ""
    time: float = field(default_factory=time.time)
    session: str = ""  # the tuning session that measured it ("" for records of older files)
    device: str = ""
    stage: str = ""  # "": a search trial; "estimate": a kernel without knobs; "validate": a final re-measurement


def config_key(config) -> str:
    """A schedule record (a frozen dataclass or its dict) as a canonical string: how records are compared."""
    d = config if isinstance(config, dict) else asdict(config)
    return json.dumps(d, sort_keys=True)


class TuningDB:
    """``TuningDB(path)``: ``append(record)``, ``best(workload, target)``; ``problems`` lists skipped lines."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: list[Record] = []
        self.problems: list[str] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                try:
                    d = json.loads(line)
                    if not isinstance(d, dict) or not isinstance(d.get("config"), dict):
                        raise TypeError("not a record")
                    self.records.append(Record(**d))
                except (json.JSONDecodeError, TypeError) as e:
                    self.problems.append(f"{self.path}:{lineno}: skipped unreadable record ({type(e).__name__})")

    def append(self, record: Record) -> None:
        data = (json.dumps(asdict(record), sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                data = b"\n" + data  # a torn last line from a crash stays a line of its own
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)

    def validated(self, workload: str, target: str) -> dict[str, list[Record]]:
        """The successful side-by-side re-measurements ("validate" records) of the last session that made any for
        this layer, by config key."""
        ok = [r for r in self.records if r.workload == workload and r.target == target and r.ok
              and r.stage == "validate"]
        val: dict[str, list[Record]] = {}
        for r in ok:
            if r.session == ok[-1].session:
                val.setdefault(config_key(r.config), []).append(r)
        return val

    def best(self, workload: str, target: str) -> Record | None:
        """The fastest schedule of a layer. Once a session has re-measured its finalists side by side, the best
        mean of the last such session decides (``validated``): the minimum over many noisy search trials favours
        lucky measurements."""
        val = self.validated(workload, target)
        if val:
            runs = min(val.values(), key=lambda rs: sum(r.ms for r in rs) / len(rs))
            ms = sum(r.ms for r in runs) / len(runs)
            gf = sum(r.gflops for r in runs) / len(runs)
            return Record(workload, target, runs[-1].config, gflops=gf, ms=ms, session=runs[-1].session,
                          stage="validate")
        ok = [r for r in self.records if r.workload == workload and r.target == target and r.ok and r.config]
        return max(ok, key=lambda r: r.gflops, default=None)

    def measured(self, workload: str, target: str) -> set[str]:
        return {config_key(r.config) for r in self.records if r.workload == workload and r.target == target}


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
