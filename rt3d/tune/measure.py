"""Measurement of schedule candidates: built here, timed locally (in a worker process) or on the devices of a TVM
RPC tracker, several at once. A candidate that fails to build, crashes, hangs past the timeout, or loses its device
mid-measurement comes back as a failed ``Result`` with the reason; it never stops the session.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TuneError
from .space import Task


@dataclass
class Built:
    """A candidate compiled to a shared library, with its arguments (build-time arrays or ("rand", shape, dtype))."""

    task: Task
    config: object
    path: str = ""
    args: list = dataclasses.field(default_factory=list)
    out: tuple = ()  # (shape, dtype) of the output
    error: str = ""  # set when the build failed


@dataclass
class Result:
    ms: float = 0.0
    error: str = ""
    device: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def build_candidate(task: Task, config, target, workdir: str | os.PathLike) -> Built:
    """Lower ``task``'s node with ``config`` (None: the kernel as the target lowers it) and export a library."""
    import tvm
    b = Built(task, config)
    try:
        tgt = dataclasses.replace(target, tuned={task.workload: config} if config is not None else {})
        k = tgt.lower(task.node)
        lib = tvm.compile(tvm.IRModule({"main": k.func}), target=tgt.tvm())
        path = Path(workdir) / f"cand-{uuid.uuid4().hex[:12]}.so"
        link, cc = target.link, target.linker()
        if link.get("kind", "native") != "native" and cc is None:
            raise RuntimeError(f"target '{target.name}' needs a device linker to measure on a device"
                               + (f": set {link['cc_env']}" if link.get("cc_env") else ""))
        lib.export_library(str(path), **({"cc": cc} if cc else {}))  # cross targets: linked for the device
        b.path = str(path)
        for a in k.args:
            arr = a if isinstance(a, np.ndarray) else a.data
            b.args.append(np.ascontiguousarray(arr) if arr is not None else ("rand", tuple(a.type.shape), a.type.dtype))
        b.out = (tuple(task.node.output.type.shape), task.node.output.type.dtype)
    except Exception as e:  # noqa: BLE001 - any build failure is a failed trial, with its reason
        b.error = f"build failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return b


def measure_node(node, config, target, runner=None) -> tuple[float, float]:
    """Time one node's kernel with the schedule record ``config`` (None: the target's own choice) on this machine or
    ``runner``: (ms, GFLOP/s). For sweeps outside a tuning session (bench/tile_sweep.py); a failure raises TuneError
    with its reason."""
    from ..ir.flops import node_macs
    from .space import task_key
    task = Task(task_key(node), node, 1)
    work = Workdir()
    try:
        built = build_candidate(task, config, target, work.path)
        res = (runner or LocalRunner()).run([built])[0]
    finally:
        work.close()
    if not res.ok:
        raise TuneError(f"{task.describe()} with {config}: {res.error}")
    return res.ms, 2 * node_macs(node) / (res.ms * 1e6)


def _arrays(args, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for a in args:
        if isinstance(a, tuple):
            _, shape, dtype = a
            out.append(rng.standard_normal(shape).astype(dtype) if dtype.startswith("float")
                       else np.zeros(shape, dtype))
        else:
            out.append(a)
    return out


def time_module(mod, dev, args, out, repeat: int, min_repeat_ms: int) -> float:
    """Median milliseconds of ``mod['main'](*args, out)`` on ``dev`` (local or remote)."""
    import tvm
    tensors = [tvm.runtime.tensor(a, device=dev) for a in _arrays(args)]
    y = tvm.runtime.empty(out[0], out[1], dev)
    r = mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)(*tensors, y)
    return float(np.median(r.results)) * 1e3


def _local_worker(path: str, args, out, repeat: int, min_repeat_ms: int) -> float:
    import tvm
    return time_module(tvm.runtime.load_module(path), tvm.cpu(0), args, out, repeat, min_repeat_ms)


class LocalRunner:
    """Times candidates on this machine in a worker process, so that a crash or a hang (past ``timeout`` s) costs
    that trial only: the worker is replaced and the session goes on."""

    name = "local"

    def __init__(self, timeout: float = 60.0, repeat: int = 5, min_repeat_ms: int = 40):
        from tvm.support.popen_pool import PopenPoolExecutor
        self.timeout, self.repeat, self.min_repeat_ms = timeout, repeat, min_repeat_ms
        self._pool = PopenPoolExecutor(max_workers=1, timeout=timeout)

    def devices(self) -> int:
        return 1

    def run(self, batch: list[Built]) -> list[Result]:
        results = []
        for b in batch:
            if b.error:
                results.append(Result(error=b.error, device="local"))
                continue
            fut = self._pool.submit(_local_worker, b.path, b.args, b.out, self.repeat, self.min_repeat_ms)
            try:
                results.append(Result(ms=fut.result(), device="local"))
            except TimeoutError:
                results.append(Result(error=f"timeout: no result within {self.timeout:.0f} s", device="local"))
            except ChildProcessError as e:
                results.append(Result(error=f"crashed: the measuring process died ({e})", device="local"))
            except Exception as e:  # noqa: BLE001 - a run-time error of the kernel
                results.append(Result(error=f"run failed: {type(e).__name__}: {str(e).splitlines()[0]}"[:300],
                                      device="local"))
        return results

    def close(self) -> None:
        self._pool.shutdown()


def parse_tracker(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise TuneError(f"tracker address must be HOST:PORT, got '{addr}'")
    return host, int(port)


def tracker_summary(host: str, port: int, probe_timeout: float = 5.0) -> dict:
    """The tracker's summary; a port nobody listens on fails at once (TVM's own client retries for a minute)."""
    import socket
    from tvm import rpc
    with socket.create_connection((host, port), timeout=probe_timeout):
        pass
    return rpc.connect_tracker(host, port).summary()


def count_servers(summary: dict, key: str) -> int:
    """How many servers a tracker summary lists under ``key``."""
    return sum(1 for s in summary.get("server_info", []) if s.get("key") == f"server:{key}")


class RPCRunner:
    """Times candidates on the devices a TVM RPC tracker holds under ``key``, as many at once as there are devices.

    Every trial takes its own session from the tracker (``session_timeout`` = the trial timeout, so a server kills a
    hung measurement itself and goes back to the pool); a session that cannot be had, breaks, or outlives the timeout
    is a failed trial. Devices that leave the tracker mid-session simply stop being counted.
    """

    name = "rpc"

    def __init__(self, tracker: str, key: str, timeout: float = 60.0, repeat: int = 5, min_repeat_ms: int = 40,
                 request_timeout: float = 120.0):
        self.host, self.port = parse_tracker(tracker)
        self.key, self.timeout, self.repeat, self.min_repeat_ms = key, timeout, repeat, min_repeat_ms
        self.request_timeout = request_timeout
        self.devices()  # fails early, with the address, when no tracker answers

    def summary(self) -> dict:
        try:
            return tracker_summary(self.host, self.port)
        except Exception as e:  # noqa: BLE001
            raise TuneError(f"no RPC tracker answers at {self.host}:{self.port} ({type(e).__name__}: {e})") from None

    def devices(self) -> int:
        return count_servers(self.summary(), self.key)

    def _trial(self, b: Built, box: dict) -> None:
        from tvm import rpc
        try:
            t0 = time.monotonic()
            remote = rpc.connect_tracker(self.host, self.port).request(
                self.key, priority=1, session_timeout=self.timeout)
            box["device"] = f"{self.key}@{time.monotonic() - t0:.1f}s-wait"
            remote.upload(b.path)
            mod = remote.load_module(os.path.basename(b.path))
            box["ms"] = time_module(mod, remote.cpu(0), b.args, b.out, self.repeat, self.min_repeat_ms)
        except Exception as e:  # noqa: BLE001 - a lost device, a crashed kernel, a server-side timeout
            msg = str(e).strip().splitlines()
            box["error"] = f"rpc failed: {type(e).__name__}: {msg[-1] if msg else ''}"[:300]

    def run(self, batch: list[Built]) -> list[Result]:
        boxes, threads = [], []
        for b in batch:
            box: dict = {}
            boxes.append(box)
            if b.error:
                box["error"] = b.error
                continue
            t = threading.Thread(target=self._trial, args=(b, box), daemon=True)
            t.start()
            threads.append((t, box))
        deadline = time.monotonic() + self.request_timeout + self.timeout
        for t, box in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():  # the thread is abandoned; the server ends the session at its own timeout
                box.setdefault("error", f"timeout: no result within {self.request_timeout + self.timeout:.0f} s")
        return [Result(ms=box.get("ms", 0.0), error=box.get("error", "" if "ms" in box else "no result"),
                       device=box.get("device", self.key)) for box in boxes]

    def close(self) -> None:
        pass


class Workdir:
    """A temporary folder for candidate libraries, removed at the end of the session."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="rt3d-tune-")

    def clean(self, built: list[Built]) -> None:
        for b in built:
            if b.path:
                Path(b.path).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
