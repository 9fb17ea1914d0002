"""The pruning stage (PyTorch): structured sparsity schemes, the heuristic / group-lasso / reweighted algorithms,
masked retraining (DDP-ready), FLOPs counting and ONNX export with exact zeros plus the masks."""
from .algorithms import ALGORITHMS, RegConfig, Regularizer, heuristic, regularize, retrain, select_global
from .api import LayerReport, PruneReport, masks_of, prune
from .export import export_pruned
from .layers import Layer, find_layers
from .schemes import (NORMS, LayerFlops, count_flops, element_mask, group_norms, group_rows, group_sizes, keep_top,
                      structure_shape)

__all__ = ["ALGORITHMS", "NORMS", "Layer", "LayerFlops", "LayerReport", "PruneReport", "RegConfig", "Regularizer",
           "count_flops", "element_mask", "export_pruned", "find_layers", "group_norms", "group_rows", "group_sizes",
           "heuristic", "keep_top", "masks_of", "prune", "regularize", "retrain", "select_global",
           "structure_shape"]
