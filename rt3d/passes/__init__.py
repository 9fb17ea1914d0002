"""Passes, one per file, and the pass manager. ``PASSES`` maps each pass name to its class."""
# the built-in passes register themselves when imported
from . import block_layout, dce, fold_batchnorm, fold_constants, fp16, fuse, fuse_pool, sparse  # noqa: F401
from .base import PASSES, Pass, PassReport, register_pass
from .manager import DEFAULT_PIPELINE, PassManager, parse_pipeline, run_pipeline

__all__ = ["Pass", "PassReport", "PASSES", "register_pass", "PassManager", "parse_pipeline", "run_pipeline",
           "DEFAULT_PIPELINE"]
