"""Autotuning: search-space records, a tuning database (JSON lines) and tuning sessions on this machine."""
from .db import Record, TuningDB
from .space import conv_space, tunable, workload_key
from .tuner import TuneReport, apply_db, tune_graph

__all__ = ["TuningDB", "Record", "conv_space", "tunable", "workload_key", "tune_graph", "apply_db", "TuneReport"]
