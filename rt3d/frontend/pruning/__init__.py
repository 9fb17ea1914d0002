"""The pruning stage (PyTorch): structured sparsity schemes, group norms, masks and FLOPs counting."""
from .schemes import (NORMS, LayerFlops, count_flops, element_mask, group_norms, group_rows, group_sizes, keep_top,
                      structure_shape)

__all__ = ["NORMS", "LayerFlops", "count_flops", "element_mask", "group_norms", "group_rows", "group_sizes",
           "keep_top", "structure_shape"]
