"""Reading real videos for ``rt3d run``: a video file or a folder of them, decoded with PyAV (FFmpeg).

A clip is ``frames`` frames sampled evenly over the video, each resized (shorter side to ``size``, then centre
crop) and normalized like the generated data set, as an (1, 3, T, H, W) float32 array.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .motion import MEAN, STD

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def _resize_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    h, w = frame.shape[:2]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    y0, x0 = (nh - th) // 2, (nw - tw) // 2
    return x[:, y0:y0 + th, x0:x0 + tw].numpy()


def read_video(path: str | Path, frames: int = 16, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """``frames`` evenly spaced frames of the video at ``path`` as a normalized (1, 3, T, H, W) clip."""
    import av
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"'{path}' has no video stream")
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"cannot decode video '{path}': {e}") from None
    if not decoded:
        raise InputError(f"video '{path}' has no frames")
    idx = np.linspace(0, len(decoded) - 1, frames).round().astype(int)
    clip = np.stack([_resize_crop(decoded[i], size) for i in idx], axis=1) / 255.0
    return ((clip - MEAN) / STD).astype(np.float32)[None]


def video_files(folder: str | Path) -> list[Path]:
    """The video files of a folder, sorted by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise InputError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in folder '{folder}'")
    return files


def write_video(path: str | Path, clip: np.ndarray, fps: int = 16) -> None:
    """Write a (3, T, H, W) clip normalized like the data set (or (1, 3, T, H, W)) as an MPEG-4 video."""
    import av
    c = clip[0] if clip.ndim == 5 else clip
    rgb = np.clip((c * STD + MEAN) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = rgb.shape[2], rgb.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
