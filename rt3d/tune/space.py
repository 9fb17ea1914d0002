"""Tuning tasks and their search spaces: the schedule knobs of a layer as small frozen records.

A task is one distinct kernel of a graph (after passes): a workload key (shapes and attributes, plus the kept
pattern for sparse layers), how many times the graph runs it, and its space of schedule records with the heuristic's
default first. Kernels without knobs (pools, layout conversions, ...) are tasks with an empty space: they are
measured once so that the session can estimate the end-to-end latency.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from ..ir import Node
from ..ir.flops import node_macs
from ..ir.interpreter import conv_out_spatial
from ..targets.arm_neon.conv3d import ConvTile, default_tile, temporal_footprint, workload_key
from ..targets.arm_neon.sparse_conv3d import (WIDE_TILE, SparseTile, depth_split, max_v, one_position, sep_plan,
                                              sparse_plan, sparse_workload_key, vector_plan)
from ..targets.arm_neon.sparse_direct import direct_budget, direct_default, direct_problem, node_tiles
from .db import config_key

__all__ = ["Task", "extract_tasks", "workload_key", "tunable", "conv_space", "sparse_space", "sep_space",
           "config_key", "schedule_record", "features"]

SPARSE_OPS = ("sparse_conv3d", "sparse_sep_conv3d")  # schedule records: SparseTile


def tunable(node: Node) -> bool:
    if node.op in SPARSE_OPS:
        # a 2-D sparse_conv3d (fully connected), or a conv of one position (one_position), has one schedule: it
        # streams its weights
        return (bool(node.attrs.kernel) and not one_position(node)
                and all(v.data is not None for v in node.inputs[1:] if v.is_const))
    return node.op == "conv3d" and node.attrs.groups == 1 and node.inputs[1].data is not None


def task_key(node: Node) -> str:
    if node.op in SPARSE_OPS:
        return sparse_workload_key(node)
    if node.op == "conv3d" and tunable(node):
        return workload_key(node)
    desc = {"op": node.op, "attrs": repr(node.attrs), "in": [str(v.type) for v in node.inputs],
            "out": str(node.output.type)}
    return node.op + "-" + hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]


def schedule_record(op: str, config: dict):
    """The schedule record type of an op's kernel, built from a database record's config."""
    return (SparseTile if op in SPARSE_OPS else ConvTile)(**config)


@dataclass
class Task:
    workload: str
    node: Node  # the first node of the graph with this workload
    count: int  # how many nodes of the graph share it
    space: list = field(default_factory=list)  # schedule records, the default first; empty: nothing to tune
    lanes: int = 16  # the target's vector lanes, cores and vector registers (the kernels' geometry depends on them)
    cores: int = 1
    registers: int = 32

    @property
    def macs(self) -> int:
        return node_macs(self.node)

    def describe(self) -> str:
        return str(self.node).split("  #")[0][:90]


def conv_space(node: Node, lanes: int, registers: int = 32, l2_bytes: int = 0) -> list[ConvTile]:
    """Register tiles that divide the output plane and fit the register file (accumulators, the tile's weight
    vectors and a broadcast), with and without unrolling the innermost reduction loop, temporal kernels' also in
    bands of rows; the heuristic default first, then the closest to it in accumulator count."""
    sp = conv_out_spatial(node)  # the conv's own plane, a fused pool's windows included
    oh, ow = (sp[-2] if len(sp) >= 2 else 1), sp[-1]
    default = default_tile(node, oh, ow, lanes, registers, l2_bytes)
    tiles = []
    for tm in (1, 2, 3, 4):
        for th in (1, 2, 4):
            for tw in range(1, min(ow, 14) + 1):
                if oh % th == 0 and ow % tw == 0 and 8 <= th * tw * tm <= registers - tm - 1:
                    tiles += [ConvTile(th, tw, tm, ur) for ur in (0, 1)]
    if temporal_footprint(node) and not node.attrs.pool:  # bands of one register tile's rows
        tiles += [replace(t, rows=t.th) for t in tiles]
    acc = default.th * default.tw * default.tm
    rest = sorted((t for t in tiles if t != default),
                  key=lambda t: (abs(t.th * t.tw * t.tm - acc), t.ur, t.th, -t.tw))
    return [default] + rest


def sparse_space(node: Node, lanes: int, cores: int, l2_bytes: int = 0, registers: int = 32,
                 l1_bytes: int = 0) -> list[SparseTile]:
    """Vectors per register tile (up to the register budget, in passes of filter_pass filters; in the flat modes
    also position tiles of WIDE_TILE register tiles) x row-block chunking, and in the flat modes x (a row block
    through all position tiles | the reduction split in 2 or 4 chunks); where the direct mode can run, also its
    largest register tiles of positions x row-block chunking x the reduction split in 1, 2, 4 or the heuristic's
    chunks. The default first."""
    plan = sparse_plan(node, lanes, cores, l2_bytes, registers, l1_bytes)
    gm, gn = node.attrs.group
    blocks = len(node.attrs.kept)
    chunks = sorted({1, min(cores, blocks), min(2 * cores, blocks)})
    space = []
    if not direct_problem(node, lanes):
        tiles = node_tiles(node, lanes, registers)[:4]
        direct = direct_default(node, lanes, cores, registers, l1_bytes)
        splits = sorted({1, 2, 4, direct.split})
        space = [direct] + [SparseTile(1, c, split=s, th=th, tw=tw) for th, tw in tiles for c in chunks
                            for s in splits]
    vector = vector_plan(node, lanes, cores, l2_bytes, registers)
    fm, vmax = vector.default.fm, max_v(gm, gn, registers)
    # the flat modes also take wide position tiles (WIDE_TILE register tiles, run in passes), on any register file
    wide = [] if vector.mode == "pw" else [(vmax * k, vmax) for k in range(2, WIDE_TILE + 1)]
    for v, vp in [(v, 0) for v in range(1, vmax + 1)] + wide:
        tiles = -(-vector.positions // (lanes * v))
        orders = [(1, 1)] if vector.mode == "pw" else [(1, 1), (tiles, 1), (1, 2), (1, 4)]
        space += [SparseTile(v, c, g, s, fm=fm, vp=vp) for c in chunks for g, s in dict.fromkeys(orders)]
    space = [t for t in dict.fromkeys(space) if t != plan.default]
    return [plan.default] + space


def sep_space(node: Node, lanes: int, cores: int, registers: int = 32) -> list[SparseTile]:
    """A fused pair's (sparse_sep_conv3d) vectors per register tile x runs of output depths (1, 2, 4, all: more
    parallel units, each recomputing the first conv at the depths it shares with the run before), each as the
    kernel makes it (depth_split: 4 runs of 6 depths are 3, one record, not two that build the same kernel); the
    default first."""
    plan = sep_plan(node, lanes, cores, registers)
    runs = sorted({depth_split(plan.depths, r)[0] for r in (1, 2, 4, plan.depths) if r <= plan.depths})
    space = [SparseTile(v, runs=r, fm=plan.default.fm) for v in range(1, plan.vmax + 1) for r in runs]
    return [plan.default] + [t for t in space if t != plan.default]


def extract_tasks(graph, target) -> list[Task]:
    """The distinct kernels of ``graph`` (after passes) in graph order, tunable or not."""
    tasks: dict[str, Task] = {}
    for node in graph.nodes:
        key = task_key(node)
        if key in tasks:
            tasks[key].count += 1
            continue
        space = []
        if tunable(node) and node.op in target.lowerings:
            regs = target.vector_registers
            if node.op == "sparse_sep_conv3d":
                space = sep_space(node, target.vector_lanes, target.num_cores, regs)
            elif node.op == "sparse_conv3d":
                space = sparse_space(node, target.vector_lanes, target.num_cores, target.l2_bytes, regs,
                                     target.l1_bytes)
            else:
                space = conv_space(node, target.vector_lanes, regs, target.l2_bytes)
        tasks[key] = Task(key, node, 1, space, target.vector_lanes, target.num_cores, target.vector_registers)
    return list(tasks.values())


def features(task: Task, config) -> np.ndarray:
    """What the cost model sees of a (layer, schedule) pair: the knobs, their interactions with the layer's
    geometry, and register/reuse quantities derived from both."""
    n = task.node
    if n.op == "sparse_sep_conv3d":
        plan = sep_plan(n, task.lanes, task.cores, task.registers)
        gm = max(n.attrs.group[0], n.attrs.first_group[0])
        tiles = -(-plan.positions // (task.lanes * config.v))
        waste = tiles * task.lanes * config.v / max(1, plan.positions) - 1
        acc = config.v / plan.vmax
        runs = config.runs or plan.default.runs
        return np.array([1, 1, 0, acc, acc * acc, 1 / config.v, waste, 0, 1, acc, 0, 0, 1,
                         np.log(runs), (runs - 1) / plan.depths, 0, 0, np.log(acc)])
    if n.op == "sparse_conv3d":
        gm = n.attrs.group[0]
        if config.th:  # the direct mode
            acc = config.th * config.tw * gm / task.lanes / direct_budget(gm, task.lanes, task.registers)
            return np.array([1, 1, 0, acc, acc * acc, 1 / max(1, config.th * config.tw), float(config.th > 1),
                             float(config.chunks > 1), 0, 0, 0, np.log(config.split), 0, 0, 0, 0, 1, np.log(acc)])
        lanes = task.lanes
        plan = vector_plan(n, task.lanes, task.cores, registers=task.registers)
        tiles = -(-plan.positions // (lanes * config.v))
        waste = tiles * lanes * config.v / max(1, plan.positions) - 1
        acc = config.v / max_v(gm, n.attrs.group[1], task.registers)
        return np.array([1, 1, 0, acc, acc * acc, 1 / config.v, waste, float(config.chunks > 1),
                         float(plan.mode == "pw"), float(plan.mode == "pw") * acc, float(config.tiles > 1),
                         np.log(config.split), 0, 0, 0, 0, 0, np.log(acc)])
    t: ConvTile = config
    a = n.attrs
    w = n.inputs[1].type.shape
    acc = t.th * t.tw * t.tm
    strided = float(tuple(a.stride[-2:]) != (1, 1))
    plain_in = float(not a.in_block)
    temporal = float(len(w) == 5 and w[2] > 1 and w[-1] == 1 and w[-2] == 1)
    reuse = acc / (t.th * t.tw + t.tm)  # FMAs per loaded vector (broadcasts + weight vectors)
    return np.array([1, 0, 1, acc / 28, (acc / 28) ** 2, t.tm / 4, t.th / 4, t.tw / 14, reuse / 8, float(t.ur),
                     strided * t.tm / 4, plain_in * acc / 28, temporal * t.tm / 4, float(t.ur) * plain_in,
                     float(t.th > 1), strided * acc / 28, temporal * acc / 28, np.log(acc / 28)])
