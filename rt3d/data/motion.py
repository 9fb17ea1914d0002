"""A generated video-action data set: classes that differ only by how the actor moves or changes over time.

No video data set can be downloaded here, so the pruning stage trains on this one. Every clip is a deterministic
function of (seed, split, index). One actor (the largest object; its shape, colour, size, start position and
orientation random and independent of the class) does the class's motion; 1 to 3 smaller distractors move, turn
and scale at random; the background is a random smooth gradient with a texture of blobs; pixel noise and a
camera jitter of up to 2 pixels are added to every frame. Positions are uniform in every frame of every class (the
frame wraps around), sizes and colours are drawn for the middle frame over ranges wide enough that zooming and fading
stay inside what other classes show, so one frame says little about the class (tests/data check that a linear model
on one frame is far below one on two frames); the motion over the 16 frames is what tells the classes apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name -> (velocity (x, y) in frame sizes per clip, turns per clip, log2 scale change per clip,
#          brightness change per clip)
CLASSES: dict[str, tuple[tuple[float, float], float, float, float]] = {
    "right-slow": ((0.25, 0.0), 0.0, 0.0, 0.0),
    "right-fast": ((0.6, 0.0), 0.0, 0.0, 0.0),
    "left": ((-0.4, 0.0), 0.0, 0.0, 0.0),
    "up": ((0.0, -0.4), 0.0, 0.0, 0.0),
    "down": ((0.0, 0.4), 0.0, 0.0, 0.0),
    "rotate-cw": ((0.0, 0.0), 0.5, 0.0, 0.0),
    "rotate-ccw": ((0.0, 0.0), -0.5, 0.0, 0.0),
    "zoom-in": ((0.0, 0.0), 0.0, 1.0, 0.0),
    "zoom-out": ((0.0, 0.0), 0.0, -1.0, 0.0),
    "fade-out": ((0.0, 0.0), 0.0, 0.0, -0.6),
}
NAMES = list(CLASSES)
SHAPES = ("square", "triangle", "cross", "bar")  # all rotation-visible (no discs)
MEAN, STD = 0.45, 0.25  # per-pixel normalization of the rendered [0, 1] frames
_SPLITS = {"train": 0, "val": 1, "test": 2}


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in the object's own frame: u, v in units of its half size."""
    if kind == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if kind == "triangle":
        return (v <= 0.7) & (v >= 1.6 * np.abs(u) - 0.9)
    if kind == "cross":
        return ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.3)) | ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.7))
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)  # bar


@dataclass
class _Object:
    kind: str
    pos: np.ndarray  # (x, y) at the middle frame, pixels
    vel: np.ndarray  # pixels per frame
    angle: float  # radians at the middle frame
    spin: float  # radians per frame
    size: float  # half size at the middle frame, pixels
    zoom: float  # log2 scale per frame
    color: np.ndarray  # RGB in [0, 1]
    fade: float  # brightness change per frame


def _draw(frame: np.ndarray, o: _Object, t: float, xx: np.ndarray, yy: np.ndarray) -> None:
    cx, cy = o.pos + o.vel * t
    a = o.angle + o.spin * t
    s = o.size * 2.0 ** (o.zoom * t)
    n = xx.shape[-1]
    dx = (xx - cx + n / 2) % n - n / 2  # the frame wraps around: positions are uniform in every frame
    dy = (yy - cy + n / 2) % n - n / 2
    u = (np.cos(a) * dx + np.sin(a) * dy) / s
    v = (-np.sin(a) * dx + np.cos(a) * dy) / s
    m = _shape_mask(o.kind, u, v)
    light = float(np.clip(1.0 + o.fade * t, 0.0, 2.0))
    frame[:, m] = np.clip(o.color * light, 0.0, 1.0)[:, None]


def make_clip(label: int, rng: np.random.Generator, size: int = 112, frames: int = 16) -> np.ndarray:
    """One (3, frames, size, size) float32 clip of class ``label``, normalized with MEAN/STD."""
    (vx, vy), turns, zoom, fade = CLASSES[NAMES[label]]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mid = (frames - 1) / 2

    def obj(scale: float, velocity, spin, zoom_rate, fade_rate) -> _Object:
        return _Object(SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, 1, 2) * size,
                       np.asarray(velocity, np.float32) * size / frames, rng.uniform(0, 2 * np.pi),
                       spin, scale * size, zoom_rate, rng.uniform(0.35, 1.0, 3).astype(np.float32), fade_rate)

    actor = obj(2 ** rng.uniform(-3.3, -2.0), (vx, vy), 2 * np.pi * turns / frames, zoom / frames, fade / frames)
    distractors = [obj(rng.uniform(0.03, 0.06), rng.uniform(-0.3, 0.3, 2), rng.uniform(-0.15, 0.15),
                       rng.uniform(-0.04, 0.04), 0.0) for _ in range(rng.integers(1, 4))]
    g = rng.uniform(-0.25, 0.25, 3)
    base = rng.uniform(0.15, 0.35, 3)[:, None, None] + (g[0] * xx + g[1] * yy)[None] / size
    blobs = np.zeros((size, size), np.float32)
    for _ in range(6):
        bx, by, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.05, 0.2) * size
        blobs += rng.uniform(-0.08, 0.08) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * r * r))
    background = (base + blobs[None]).astype(np.float32)
    clip = np.empty((3, frames, size, size), np.float32)
    for f in range(frames):
        t = f - mid
        jx, jy = rng.integers(-2, 3, 2)
        frame = background.copy()
        for d in distractors:
            _draw(frame, d, t, xx - jx, yy - jy)
        _draw(frame, actor, t, xx - jx, yy - jy)
        frame += rng.normal(0.0, 0.04, frame.shape).astype(np.float32)
        clip[:, f] = frame
    return (clip - MEAN) / STD


def _split_id(split: str) -> int:
    if split not in _SPLITS:
        raise ValueError(f"unknown split '{split}': use one of {', '.join(_SPLITS)}")
    return _SPLITS[split]


def motion_clip(index: int, seed: int = 0, split: str = "train", size: int = 112,
                frames: int = 16) -> tuple[np.ndarray, int]:
    """Clip ``index`` of a split: (clip (3, T, H, W), label). Labels cycle through the classes, so any run of
    len(CLASSES) consecutive indices is balanced."""
    label = index % len(NAMES)
    rng = np.random.default_rng([seed, _split_id(split), index])
    return make_clip(label, rng, size, frames), label


class MotionDataset:
    """A torch-style data set (``len``, indexing -> (clip tensor, label)) of ``n`` generated clips."""

    classes = NAMES

    def __init__(self, n: int, split: str = "train", seed: int = 0, size: int = 112, frames: int = 16):
        _split_id(split)
        self.n, self.split, self.seed, self.size, self.frames = n, split, seed, size, frames

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch
        if not 0 <= i < self.n:
            raise IndexError(f"clip {i} of a data set of {self.n}")
        clip, label = motion_clip(i, self.seed, self.split, self.size, self.frames)
        return torch.from_numpy(clip), label

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All clips as one (n, 3, T, H, W) array and the labels."""
        items = [motion_clip(i, self.seed, self.split, self.size, self.frames) for i in range(self.n)]
        return np.stack([c for c, _ in items]), np.array([lab for _, lab in items])
