"""A deterministic synthetic clip: bright shapes moving over a noisy background, normalized like video models expect."""
from __future__ import annotations

import numpy as np


def moving_shapes_clip(shape: tuple[int, ...] = (1, 3, 16, 112, 112), seed: int = 0) -> np.ndarray:
    """An (N, 3, T, H, W) float32 clip of a few squares and discs moving at constant velocity."""
    n, c, t, h, w = shape
    rng = np.random.default_rng(seed)
    clip = rng.normal(0.0, 0.1, size=shape).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for b in range(n):
        for _ in range(3):
            size = rng.uniform(0.08, 0.2) * min(h, w)
            y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
            vy, vx = rng.uniform(-0.04, 0.04, size=2) * np.array([h, w])
            color = rng.uniform(0.5, 1.5, size=c).astype(np.float32)
            disc = rng.random() < 0.5
            for f in range(t):
                cy, cx = (y0 + vy * f) % h, (x0 + vx * f) % w
                if disc:
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size ** 2 / 4
                else:
                    mask = (np.abs(yy - cy) <= size / 2) & (np.abs(xx - cx) <= size / 2)
                clip[b, :, f][:, mask] += color[:, None]
    return clip
