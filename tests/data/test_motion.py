"""The generated data set (deterministic, balanced, motion needed to tell classes apart) and reading real videos."""
from __future__ import annotations

import numpy as np
import pytest

from rt3d.cli import main
from rt3d.data import NAMES, MotionDataset, motion_clip, read_video, write_video
from rt3d.errors import InputError


def test_clips_are_deterministic_balanced_and_normalized():
    a, la = motion_clip(7, seed=3, size=32)
    b, lb = motion_clip(7, seed=3, size=32)
    c, _ = motion_clip(7, seed=4, size=32)
    assert a.shape == (3, 16, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert la == lb == 7 and not np.array_equal(a, c)
    assert not np.array_equal(motion_clip(7, split="val", size=32)[0], motion_clip(7, split="train", size=32)[0])
    ds = MotionDataset(2 * len(NAMES), size=32)
    x, y = ds.arrays()
    assert np.bincount(y).tolist() == [2] * len(NAMES)
    assert abs(float(x.mean())) < 1.0 and 0.4 < float(x.std()) < 1.5
    clip, label = ds[3]
    assert tuple(clip.shape) == (3, 16, 32, 32) and label == 3
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(ValueError, match="unknown split"):
        MotionDataset(4, split="dev")


def _ridge_accuracy(f, y, ft, yt, classes):
    f, ft = np.c_[f, np.ones(len(f))], np.c_[ft, np.ones(len(ft))]
    w = np.linalg.solve(f.T @ f + 10 * np.eye(f.shape[1]), f.T @ np.eye(classes)[y])
    return float((np.argmax(ft @ w, 1) == yt).mean())


def test_one_frame_is_not_enough_two_frames_are_better():
    """A linear model on any single frame is near chance; on the first and last frame together it is not."""
    x, y = MotionDataset(400, size=32).arrays()
    xt, yt = MotionDataset(200, split="val", size=32).arrays()

    def pool(a):  # 8x8 average pooling of (N, 3, H, W)
        n = len(a)
        return a.reshape(n, 3, 8, 4, 8, 4).mean((3, 5)).reshape(n, -1)

    chance = 1 / len(NAMES)
    single = [_ridge_accuracy(pool(x[:, :, f]), y, pool(xt[:, :, f]), yt, len(NAMES)) for f in (0, 7, 15)]
    both = _ridge_accuracy(np.c_[pool(x[:, :, 0]), pool(x[:, :, 15])], y,
                           np.c_[pool(xt[:, :, 0]), pool(xt[:, :, 15])], yt, len(NAMES))
    assert max(single) < 2 * chance, single
    assert both > max(single) + 0.08, (both, single)


def test_video_round_trip_and_rt3d_run_on_a_folder(tmp_path, capsys):
    for i in range(2):
        write_video(tmp_path / f"clip{i}.mp4", motion_clip(i, size=32)[0])
    (tmp_path / "notes.txt").write_text("not a video")
    clip = read_video(tmp_path / "clip0.mp4", frames=8, size=(32, 32))
    assert clip.shape == (1, 3, 8, 32, 32) and clip.dtype == np.float32
    frames = np.linspace(0, 15, 8).round().astype(int)
    ref, other = (motion_clip(i, size=32)[0][:, frames] for i in (0, 1))
    err = np.abs(clip[0] - ref).mean()
    assert err < 0.3 and err < 0.6 * np.abs(clip[0] - other).mean()  # MPEG-4 is lossy (and smooths the noise)
    wide = read_video(tmp_path / "clip1.mp4", frames=16, size=(16, 24))  # shorter side resized, then cropped
    assert wide.shape == (1, 3, 16, 16, 24)

    assert main(["run", "zoo:c3d_small", "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "clip0.mp4:" in out and "clip1.mp4:" in out and out.count("top classes") == 2
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="cannot decode video"):
        read_video(tmp_path / "bad.mp4")
    assert main(["run", "zoo:c3d_small", "--input", str(tmp_path / "bad.mp4")]) == 2
    assert "cannot decode video" in capsys.readouterr().err
