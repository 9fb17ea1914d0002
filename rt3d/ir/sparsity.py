"""Structured sparsity of conv weights (paper section 3): schemes, masks, detection and the packed KGS form.

A conv weight W[M, N, *K] has S = prod(K) kernel positions. Groups are gM filters x gN channels; there are
P = ceil(M/gM) row blocks and Q = ceil(N/gN) column blocks (the last ones may be partial).
  * filter:  whole filters (rows of W) are zero;
  * vanilla: whole kernel groups W[p-block, q-block, :] are zero;
  * kgs:     for each group (p, q) and position s, the gM x gN weights W[p-block, q-block, s] are zero together.
Filter is a special case of vanilla, and vanilla of KGS; the packed form (``pack``) is KGS-granular and serves all
three. The pruning stage learns these masks; this module only describes, detects and packs them.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import numpy as np

SCHEMES = ("filter", "vanilla", "kgs")
# group sizes detect() tries, coarsest first; the paper uses 8x4 and 4x4
DETECT_GROUPS = ((16, 16), (16, 8), (8, 8), (16, 4), (8, 4), (4, 8), (4, 4), (8, 2), (4, 2), (2, 4), (2, 2))


@dataclass(frozen=True)
class Sparsity:
    """A sparsity scheme and its group size (gM filters, gN channels); Filter has no channel group."""

    scheme: str
    group: tuple[int, int] = (8, 4)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown sparsity scheme '{self.scheme}' (schemes: {', '.join(SCHEMES)})")
        gm, gn = self.group
        if gm < 1 or gn < 1:
            raise ValueError(f"group sizes must be positive, got {gm}x{gn}")

    def __str__(self) -> str:
        return "filter" if self.scheme == "filter" else f"{self.scheme}({self.group[0]}x{self.group[1]})"

    @staticmethod
    def parse(text: str) -> "Sparsity":
        """``filter``, ``vanilla(8x4)`` or ``kgs(4x4)``."""
        m = re.fullmatch(r"\s*(\w+)\s*(?:\(\s*(\d+)\s*x\s*(\d+)\s*\))?\s*", text)
        if not m:
            raise ValueError(f"cannot read sparsity '{text}': expected e.g. kgs(8x4), vanilla(4x4) or filter")
        scheme, gm, gn = m.groups()
        if scheme != "filter" and gm is None:
            raise ValueError(f"sparsity '{text}' needs a group size, e.g. {scheme}(8x4)")
        return Sparsity(scheme, (int(gm), int(gn)) if gm else (1, 1))


def _blocks(w: np.ndarray, group: tuple[int, int]) -> np.ndarray:
    """W[M, N, *K] zero-padded to whole groups, as [P, gM, Q, gN, S]."""
    gm, gn = group
    m, n = w.shape[:2]
    s = int(np.prod(w.shape[2:], dtype=np.int64))
    p, q = -(-m // gm), -(-n // gn)
    full = np.zeros((p * gm, q * gn, s), dtype=w.dtype)
    full[:m, :n] = w.reshape(m, n, s)
    return full.reshape(p, gm, q, gn, s)


def kgs_keep(w: np.ndarray, group: tuple[int, int]) -> np.ndarray:
    """bool [P, Q, S]: which (row block, column block, position) groups hold a nonzero weight."""
    return np.any(_blocks(w, group) != 0, axis=(1, 3))


def structure(w: np.ndarray, sp: Sparsity) -> np.ndarray:
    """The structural keep mask of ``w`` under ``sp``: bool [M] (filter), [P, Q] (vanilla) or [P, Q, S] (kgs)."""
    if sp.scheme == "filter":
        return np.any(w.reshape(w.shape[0], -1) != 0, axis=1)
    keep = kgs_keep(w, sp.group)
    return keep.any(axis=2) if sp.scheme == "vanilla" else keep


def expand(keep: np.ndarray, sp: Sparsity, wshape: tuple[int, ...]) -> np.ndarray:
    """A structural keep mask (see ``structure``) as a bool mask of the weight's shape."""
    m, n = wshape[:2]
    s = int(np.prod(wshape[2:], dtype=np.int64))
    if sp.scheme == "filter":
        return np.broadcast_to(keep.reshape((m,) + (1,) * (len(wshape) - 1)), wshape).copy()
    if sp.scheme == "vanilla":
        keep = np.repeat(keep[:, :, None], s, axis=2)
    gm, gn = sp.group
    full = np.repeat(np.repeat(keep, gm, axis=0), gn, axis=1)[:m, :n]
    return full.reshape(wshape)


def density(w: np.ndarray, sp: Sparsity) -> float:
    """Fraction of the weights inside kept structures (1.0: nothing pruned)."""
    return float(expand(structure(w, sp), sp, w.shape).mean())


def _explains(w: np.ndarray, sp: Sparsity, zeros: int, tolerance: float) -> bool:
    kept = expand(structure(w, sp), sp, w.shape)
    stray = int(np.count_nonzero((w == 0) & kept))  # zeros inside kept structures: not explained by sp
    return stray <= tolerance * zeros


def detect(w: np.ndarray, min_pruned: float = 0.1, tolerance: float = 0.02,
           groups: tuple[tuple[int, int], ...] = DETECT_GROUPS) -> Sparsity | None:
    """The coarsest scheme and largest group whose pruned structures hold (nearly) all zeros of ``w``.

    None when fewer than ``min_pruned`` of the weights are zero, or when the zeros follow no structure (fewer than
    ``1 - tolerance`` of them lie in pruned groups of even the finest candidate).
    """
    zeros = int(np.count_nonzero(w == 0))
    if zeros < min_pruned * w.size:
        return None
    if _explains(w, Sparsity("filter"), zeros, tolerance):
        return Sparsity("filter")
    m, n = w.shape[:2]
    fitting = [g for g in groups if g[0] <= m and g[1] <= n]  # larger groups are indistinguishable from these
    for scheme in ("vanilla", "kgs"):
        for g in sorted(fitting, key=lambda g: (-g[0] * g[1], -g[0])):
            sp = Sparsity(scheme, g)
            if _explains(w, sp, zeros, tolerance):
                return sp
    return None


def random_mask(wshape: tuple[int, ...], sp: Sparsity, density: float, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of ``wshape`` keeping a random ``density`` share of the structures of ``sp``."""
    m, n = wshape[:2]
    s = int(np.prod(wshape[2:], dtype=np.int64))
    gm, gn = sp.group
    shape = {"filter": (m,), "vanilla": (-(-m // gm), -(-n // gn)), "kgs": (-(-m // gm), -(-n // gn), s)}[sp.scheme]
    total = int(np.prod(shape))
    k = min(total, max(1, int(round(density * total))))
    keep = np.zeros(total, bool)
    keep[rng.choice(total, size=k, replace=False)] = True
    return expand(keep.reshape(shape), sp, wshape)


def outside_mask(w: np.ndarray, sp: Sparsity, keep: np.ndarray) -> int:
    """How many weights of ``w`` are nonzero in groups the structural keep mask ``keep`` prunes (0: the zeros agree
    with the mask). Raises ValueError when the mask does not fit the weight."""
    return int(np.count_nonzero(w[~expand(np.asarray(keep, bool), sp, tuple(w.shape))]))


def encode_keep(keep: np.ndarray) -> dict:
    """A structural keep mask as JSON-able {"shape", "keep": base64 of its packed bits}."""
    keep = np.asarray(keep, bool)
    return {"shape": list(keep.shape), "keep": base64.b64encode(np.packbits(keep.reshape(-1))).decode()}


def decode_keep(entry: dict) -> np.ndarray:
    """The inverse of ``encode_keep``."""
    shape = tuple(int(v) for v in entry["shape"])
    bits = np.unpackbits(np.frombuffer(base64.b64decode(entry["keep"]), np.uint8))
    n = int(np.prod(shape, dtype=np.int64))
    if bits.size < n:
        raise ValueError(f"keep mask of {bits.size} bits, but shape {shape} needs {n}")
    return bits[:n].astype(bool).reshape(shape)


# ---- the packed (column-eliminated) form ------------------------------------------------------------------------

@dataclass
class Packed:
    """KGS column elimination of one conv weight.

    Row r of the packed weight computes filter ``perm[r]`` (rows past M, and rows of an identity perm past M, are
    zero padding). For row block p, its kept columns are ``cols[start(p):start(p)+kept[p]]``, each column c encoding
    (channel block q, kernel position s) as q*S + s, with weights ``values[b] = W[rows of p, channels of q, s].T``
    ([gN, gM], channel-major so that one channel's gM weights are contiguous).
    """

    values: np.ndarray  # [nnz, gN, gM] float
    cols: np.ndarray  # [nnz] int32
    kept: tuple[int, ...]  # per row block
    perm: tuple[int, ...]  # filter of each row, length P*gM (-1: padding); () means identity


def pack(w: np.ndarray, group: tuple[int, int], perm: tuple[int, ...] = ()) -> Packed:
    gm, gn = group
    m = w.shape[0]
    p = -(-m // gm)
    rows = [f for f in perm if f >= 0] if perm else list(range(m))  # (a packed perm lists padding rows as -1)
    if sorted(rows) != list(range(m)):
        raise ValueError(f"perm must be a permutation of the {m} filters")
    rows += [-1] * (p * gm - m)
    wp = np.zeros((p * gm,) + w.shape[1:], dtype=w.dtype)
    for r, f in enumerate(rows):
        if f >= 0:
            wp[r] = w[f]
    blocks = _blocks(wp, group)  # [P, gM, Q, gN, S]
    keep = np.any(blocks != 0, axis=(1, 3))  # [P, Q, S]
    s = blocks.shape[-1]
    vals, cols, kept = [], [], []
    for pi in range(p):
        qs, ss = np.nonzero(keep[pi])
        kept.append(len(qs))
        cols.extend((qs * s + ss).tolist())
        vals.append(blocks[pi][:, qs, :, ss].transpose(0, 2, 1) if len(qs) else np.zeros((0, gn, gm), w.dtype))
    values = np.ascontiguousarray(np.concatenate(vals, axis=0)).astype(np.float32)
    return Packed(values, np.asarray(cols, dtype=np.int32), tuple(kept),
                  tuple(rows) if perm else ())


def unpack(values: np.ndarray, cols: np.ndarray, kept: tuple[int, ...], perm: tuple[int, ...],
           wshape: tuple[int, ...]) -> np.ndarray:
    """The dense weight [M, N, *K] of a packed form (inverse of ``pack``)."""
    m, n = wshape[:2]
    s = int(np.prod(wshape[2:], dtype=np.int64))
    gn, gm = values.shape[1], values.shape[2]
    p, q = len(kept), -(-n // gn)
    blocks = np.zeros((p, gm, q, gn, s), dtype=values.dtype)
    b = 0
    for pi, k in enumerate(kept):
        for c in cols[b:b + k]:
            blocks[pi, :, c // s, :, c % s] = values[b].T
            b += 1
    wp = blocks.reshape(p * gm, q * gn, s)[:, :n]
    rows = perm if perm else tuple(range(m)) + (-1,) * (p * gm - m)
    w = np.zeros((m, n, s), dtype=values.dtype)
    for r, f in enumerate(rows):
        if f >= 0:
            w[f] = wp[r]
    return w.reshape(wshape)


def chunk_sizes(blocks: int, chunks: int) -> list[int]:
    """How many of ``blocks`` row blocks each of ``chunks`` contiguous thread chunks takes (the first ones one more)."""
    chunks = max(1, min(chunks, blocks))
    return [blocks // chunks + (i < blocks % chunks) for i in range(chunks)]


def block_macs(kept_cols: np.ndarray, kept: tuple[int, ...], group: tuple[int, int], m: int, n: int,
               s: int) -> int:
    """Weights applied per output position by a packed weight, counting partial edge groups exactly."""
    gm, gn = group
    rows = np.array([min(gm, m - pi * gm) for pi in range(len(kept))])
    row_of = np.repeat(rows, kept)
    chan = np.minimum(gn, n - (kept_cols // s) * gn)
    return int(np.sum(row_of * chan))
