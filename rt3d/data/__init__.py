"""Data: the generated video-action data set (no data set can be downloaded here), real videos read with PyAV,
and a synthetic demo clip."""
from .clips import moving_shapes_clip
from .motion import CLASSES, NAMES, MotionDataset, make_clip, motion_clip
from .video import read_video, video_files, write_video

__all__ = ["moving_shapes_clip", "MotionDataset", "motion_clip", "make_clip", "CLASSES", "NAMES", "read_video",
           "video_files", "write_video"]
