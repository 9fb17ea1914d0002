"""Autotuning: search-space records, a tuning database (JSON lines), measurement on this machine or on a device
farm through a TVM RPC tracker, guided search, and tuning sessions."""
from .db import Record, TuningDB
from .measure import LocalRunner, RPCRunner
from .search import CostModel, Search
from .session import TuneReport, apply_db, tune_graph
from .space import Task, conv_space, extract_tasks, sparse_space, tunable, workload_key

__all__ = ["TuningDB", "Record", "Task", "conv_space", "sparse_space", "tunable", "workload_key", "extract_tasks",
           "tune_graph", "apply_db", "TuneReport", "LocalRunner", "RPCRunner", "Search", "CostModel"]
