"""TE helpers shared by the CPU lowerings, and the default schedule for simple (injective/reduction) kernels."""
from __future__ import annotations

import numpy as np
from tvm import te, tirx

from ...ir import Value
from ...ir.ops import ACTIVATIONS


def placeholder(v: Value | np.ndarray, name: str) -> te.Tensor:
    shape = v.type.shape if isinstance(v, Value) else v.shape
    dtype = v.type.dtype if isinstance(v, Value) else str(v.dtype)
    return te.placeholder(tuple(int(d) for d in shape), dtype, name=name)


def dtype_of(e) -> str:
    if hasattr(e, "tensor"):  # a TensorSlice (tensor element access)
        return str(e.tensor.dtype)
    return str(e.ty)


def activation(e, act: str, params: tuple[float, ...]):
    assert act in ACTIVATIONS  # verified IR never gets here otherwise
    dt = dtype_of(e)
    if act == "relu":
        return tirx.max(e, tirx.const(0, dt))
    if act == "clip":
        lo, hi = params
        if np.isfinite(lo):
            e = tirx.max(e, tirx.const(lo, dt))
        if np.isfinite(hi):
            e = tirx.min(e, tirx.const(hi, dt))
        return e
    if act == "leaky_relu":
        return tirx.Select(e >= tirx.const(0, dt), e, e * tirx.const(params[0], dt))
    if act == "sigmoid":
        return tirx.sigmoid(e)
    return e


def epilogue_placeholders(node) -> tuple[te.Tensor | None, te.Tensor | None]:
    """The bias and residual inputs of a conv3d/dense node as TE placeholders (None where absent)."""
    from ...ir.ops import epilogue_inputs
    has_bias, has_res = epilogue_inputs(node.attrs, len(node.inputs))
    return (placeholder(node.inputs[2], "bias") if has_bias else None,
            placeholder(node.inputs[-1], "residual") if has_res else None)


def epilogue(node, acc, channel, out_idx, bias: te.Tensor | None, residual: te.Tensor | None):
    """act(acc + bias[channel] + residual[out_idx]) for a conv3d/dense node's fused epilogue, in acc's type (a
    float32 accumulator of float16 tensors reads the bias and residual widened)."""
    dt = dtype_of(acc)
    if bias is not None:
        acc = acc + (bias[channel] if bias.dtype == dt else bias[channel].astype(dt))
    if residual is not None:
        r = residual[tuple(broadcast_index(residual, out_idx))]
        acc = acc + (r if residual.dtype == dt else r.astype(dt))
    return activation(acc, node.attrs.act, node.attrs.act_params)


def broadcast_index(t: te.Tensor, out_idx) -> list:
    """Indices into ``t`` for an output index under numpy broadcasting (t's rank <= output rank)."""
    r = len(t.shape)
    tail = list(out_idx)[len(out_idx) - r:] if r else []
    return [tirx.const(0, "int32") if int(t.shape[i]) == 1 else tail[i] for i in range(r)]


def is_reduction(sch, block) -> bool:
    return any(iv.iter_type == 2 for iv in sch.get(block).iter_vars)


def n_spatial(sch, block) -> int:
    """How many leading iteration variables of ``block`` are spatial (the rest reduce)."""
    n = 0
    for iv in sch.get(block).iter_vars:
        if iv.iter_type != 0:
            break
        n += 1
    return n


def inline_injective(sch, root) -> None:
    """Inline every stage under ``root`` that is neither an output nor a reduction, where TVM can."""
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
    for b in sch.get_child_blocks(root):
        if sch.get(b).name_hint not in outputs and not is_reduction(sch, b):
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001  (a ScheduleError or ValueError: the stage stays materialized)
                pass


def schedule_default(sch, target, root_name: str = "root") -> None:
    """Inline non-output injective stages; parallelize outer loops; vectorize an innermost spatial loop. On a GPU
    target (``target.gpu_threads``) the output's spatial loops are bound to blocks x threads instead and the
    remaining stages are computed per thread (one kernel per function, no intermediate buffers).

    Good enough for pooling, elementwise and layout ops, so that the end-to-end time stays conv-bound.
    """
    if target.gpu_threads:
        from ..opencl.schedule import schedule_gpu_default
        schedule_gpu_default(sch, target.gpu_threads, root_name)
        return
    root = sch.get_sblock(root_name)
    inline_injective(sch, root)
    for b in sch.get_child_blocks(root):
        _schedule_block(sch, b, target.vector_lanes)


def _schedule_block(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    ns = n_spatial(sch, block)
    spatial = loops[:ns]
    if not spatial:
        return
    extents = [int(sch.get(lp).extent) for lp in spatial]
    reduction = ns < len(loops)
    if reduction:
        # parallel over the spatial part; the reduction runs serially inside
        if len(spatial) > 1:
            fused = sch.fuse(*spatial)
        else:
            fused = spatial[0]
        sch.parallel(fused)
        return
    inner = extents[-1]
    if len(spatial) > 1:
        outer = sch.fuse(*spatial[:-1])
        sch.parallel(outer)
        if inner % lanes == 0:
            _, vi = sch.split(spatial[-1], [None, lanes])
            sch.vectorize(vi)
        elif inner in (2, 4, 8, 16):
            sch.vectorize(spatial[-1])
    else:
        if inner % lanes == 0 and inner > lanes:
            o, vi = sch.split(spatial[0], [None, lanes])
            sch.parallel(o)
            sch.vectorize(vi)
        else:
            sch.parallel(spatial[0])


def to_5d(shape) -> tuple[int, ...]:
    """NC + spatial dims padded with leading ones to NCDHW."""
    shape = tuple(int(d) for d in shape)
    return shape[:2] + (1,) * (5 - len(shape)) + shape[2:]


def spatial_5d(vals, fill, rank_spatial: int) -> tuple:
    """A per-spatial-dim attribute extended to 3 dims (D, H, W) with ``fill`` in front."""
    return (fill,) * (3 - rank_spatial) + tuple(vals)


def make_func(tensors: list[te.Tensor], name: str):
    return te.create_prim_func(tensors).with_attr("global_symbol", name)


def threads_split_units(units: int, cores: int) -> bool:
    """Whether a sparse kernel's threads share its parallel units (position tiles) among themselves, each running
    all row blocks; with fewer than 4 units per thread they split the row blocks into chunks instead."""
    return units >= 4 * cores
