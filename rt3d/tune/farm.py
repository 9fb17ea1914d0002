"""A device farm for development: a TVM RPC tracker and N RPC servers on loopback, as background processes.

``rt3d farm up --servers 2`` starts them and waits until every server has registered; ``rt3d farm status`` shows
what the tracker holds; ``rt3d farm down`` stops them. The state (process ids, ports, key, logs) lives in a folder
(``$RT3D_FARM_DIR``, default ``~/.cache/rt3d/farm``), written atomically. These are TVM's own tracker and servers
(``python -m tvm.exec.rpc_tracker`` / ``rpc_server``): a farm of phones registers with a tracker the same way.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FarmError
from ..runtime.artifact import atomic_write_bytes
from .measure import count_servers, tracker_summary


def default_dir() -> Path:
    return Path(os.environ.get("RT3D_FARM_DIR", Path.home() / ".cache" / "rt3d" / "farm"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class Farm:
    host: str
    port: int  # the tracker's
    key: str
    tracker_pid: int
    server_pids: list[int] = field(default_factory=list)
    dir: str = ""

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"

    def summary(self) -> dict:
        try:
            return tracker_summary(self.host, self.port)
        except Exception as e:  # noqa: BLE001
            raise FarmError(f"the farm's tracker at {self.tracker} does not answer ({type(e).__name__}: {e})") from None

    def servers(self) -> int:
        return count_servers(self.summary(), self.key)

    def status(self) -> str:
        state = "running" if _alive(self.tracker_pid) else "DEAD"
        lines = [f"tracker {self.tracker} (pid {self.tracker_pid}, {state})"]
        for i, pid in enumerate(self.server_pids):
            lines.append(f"server {i} (pid {pid}, key '{self.key}', {'running' if _alive(pid) else 'DEAD'})")
        if _alive(self.tracker_pid):
            s = self.summary()
            for key, q in sorted(s.get("queue_info", {}).items()):
                n = count_servers(s, key)
                lines.append(f"key '{key}': {n} registered, {q.get('free', 0)} free, {q.get('pending', 0)} pending")
        return "\n".join(lines)

    def kill_server(self, i: int) -> None:
        """Kill server ``i`` abruptly (SIGKILL), as a device dropping off the network would."""
        _stop(self.server_pids[i], sig=signal.SIGKILL)

    def down(self) -> None:
        for pid in self.server_pids + [self.tracker_pid]:
            _stop(pid)
        if self.dir:
            (Path(self.dir) / "farm.json").unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()


def _stop(pid: int, sig=signal.SIGTERM, wait: float = 5.0) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return
    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < wait:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _spawn(args: list[str], log: Path, env: dict) -> int:
    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, "-m", *args], stdout=f, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    return p.pid


def up(servers: int = 2, key: str = "local", host: str = "127.0.0.1", port: int = 9190, threads: int | None = None,
       state_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Farm:
    """Start a tracker on ``host:port`` (the next free port up to port+9 if taken) and ``servers`` RPC servers."""
    d = Path(state_dir) if state_dir else default_dir()
    d.mkdir(parents=True, exist_ok=True)
    existing = load(d, missing_ok=True)
    if existing is not None and _alive(existing.tracker_pid):
        raise FarmError(f"a farm is already up (tracker {existing.tracker}, state in {d}); `rt3d farm down` first")
    if servers < 1:
        raise FarmError(f"a farm needs at least one server, got --servers {servers}")
    env = dict(os.environ)
    env["TVM_NUM_THREADS"] = str(threads or env.get("TVM_NUM_THREADS") or os.cpu_count() or 1)
    tlog = d / "tracker.log"
    tlog.write_bytes(b"")
    tpid = _spawn(["tvm.exec.rpc_tracker", "--host", host, "--port", str(port), "--port-end", str(port + 10)],
                  tlog, env)
    farm = Farm(host, port, key, tpid, [], str(d))
    t0 = time.monotonic()
    while True:  # the tracker logs the port it bound to
        m = re.search(rf"bind to {re.escape(host)}:(\d+)", tlog.read_text(errors="replace"))
        if m:
            farm.port = int(m.group(1))
            break
        if not _alive(tpid) or time.monotonic() - t0 > timeout:
            _stop(tpid)
            raise FarmError(f"the RPC tracker did not start on {host}:{port}..{port + 9}; its log "
                            f"({tlog}):\n{tlog.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    for i in range(servers):
        sport = free_port(host)
        farm.server_pids.append(_spawn(
            ["tvm.exec.rpc_server", "--host", host, "--port", str(sport), "--port-end", str(sport + 100),
             "--tracker", farm.tracker, "--key", key], d / f"server{i}.log", env))
    _save(farm, d)
    while True:
        try:
            if farm.servers() >= servers:
                break
        except FarmError:
            pass
        dead = [i for i, pid in enumerate(farm.server_pids) if not _alive(pid)]
        if dead or time.monotonic() - t0 > timeout:
            log = (d / f"server{dead[0] if dead else 0}.log").read_text(errors="replace")[-2000:]
            farm.down()
            raise FarmError(f"RPC servers did not register with the tracker at {farm.tracker} "
                            f"({'server ' + str(dead[0]) + ' exited' if dead else 'timeout'}); log:\n{log}")
        time.sleep(0.2)
    return farm


def _save(farm: Farm, d: Path) -> None:
    atomic_write_bytes(d / "farm.json", json.dumps(asdict(farm), indent=1).encode())


def load(state_dir: str | os.PathLike | None = None, missing_ok: bool = False) -> Farm | None:
    d = Path(state_dir) if state_dir else default_dir()
    f = d / "farm.json"
    if not f.exists():
        if missing_ok:
            return None
        raise FarmError(f"no farm is up (no {f}); start one with `rt3d farm up --servers N`")
    try:
        return Farm(**json.loads(f.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise FarmError(f"unreadable farm state {f}: {e}") from None
