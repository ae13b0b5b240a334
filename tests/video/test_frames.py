"""Decoding, sampling and resizing video frames; UCF101-style class folders."""

import cv2
import numpy as np
import pytest

from shared.errors import DataError
from suite.video.frames import (
    MIN_FRAMES,
    read_class_folders,
    read_video,
    resize_frames,
    sample_frames,
    sample_indices,
)


def _write(path, frames, fps=10, fourcc="mp4v"):
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _clip(count=7, height=40, width=56):
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = 220  # red, so a BGR/RGB mix-up shows
    for number in range(count):
        frames[number, 5:15, 4 * number : 4 * number + 8] = (0, 200, 0)  # a moving square
    return frames


@pytest.mark.parametrize(("name", "fourcc"), [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_reads_real_videos_as_rgb(tmp_path, name, fourcc):
    path = _write(tmp_path / name, _clip(), fourcc=fourcc)
    frames = read_video(path)
    assert frames.shape == (7, 40, 56, 3) and frames.dtype == np.uint8
    assert frames[0, 30, 50, 0] > 180 and frames[0, 30, 50, 2] < 60  # red stays red
    assert not np.array_equal(frames[0], frames[-1])
    assert read_video(path, max_frames=3).shape[0] == 3


def test_refuses_a_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.mp4: no such video file"):
        read_video(tmp_path / "nowhere.mp4")


def test_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    with pytest.raises(DataError, match=r"noise\.mp4: (not a video|no frames)"):
        read_video(path)


def test_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.avi: empty file \(0 bytes\)"):
        read_video(path)
    with pytest.raises(DataError, match=r": a folder, not a video file"):
        read_video(tmp_path)


def test_refuses_a_too_short_video_and_states_the_minimum(tmp_path):
    path = _write(tmp_path / "blink.mp4", _clip(count=1))
    with pytest.raises(DataError, match=rf"blink\.mp4: only 1 frame, need at least {MIN_FRAMES}"):
        read_video(path)
    with pytest.raises(DataError, match="need at least 8"):
        read_video(_write(tmp_path / "short.mp4", _clip(count=5)), min_frames=8)
    assert len(read_video(path, min_frames=1)) == 1


def test_uniform_sampling_spans_the_clip():
    assert sample_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # short clips repeat frames
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 4, 6, 3), np.uint8)
    picked = sample_frames(frames, 4)
    assert picked.shape == (4, 4, 6, 3) and picked[:, 0, 0, 0].tolist() == [0, 3, 6, 9]


def test_strided_sampling():
    assert sample_indices(20, 4, "strided", stride=3).tolist() == [5, 8, 11, 14]  # centred
    assert sample_indices(20, 4, "strided", stride=3, start=0).tolist() == [0, 3, 6, 9]
    assert sample_indices(5, 4, "strided", stride=2, start=0).tolist() == [0, 2, 4, 4]
    with pytest.raises(ValueError, match="unknown sampling mode 'random'"):
        sample_indices(5, 2, "random")
    with pytest.raises(ValueError):
        sample_indices(0, 2)


def test_resizing():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 80, 3), np.uint8)
    assert resize_frames(frames, 32).shape == (3, 32, 32, 3)
    assert resize_frames(frames, (20, 30)).shape == (3, 20, 30, 3)
    assert resize_frames(frames, (120, 160)).shape == (3, 120, 160, 3)
    # keep_aspect crops the middle instead of squashing: a left-edge marker disappears.
    frames[:, :, :10] = 255
    cropped = resize_frames(frames, 40, keep_aspect=True)
    assert cropped.shape == (3, 40, 40, 3) and cropped[:, :, 0].mean() < 250
    grey = frames[..., :1]
    assert resize_frames(grey, 16).shape == (3, 16, 16, 1)


def test_class_folders(tmp_path):
    for label, names in {
        "jump": ["a.mp4", "B.AVI", "notes.txt", ".hidden.mp4"],
        "walk": ["c.mkv"],
    }.items():
        (tmp_path / label).mkdir()
        for name in names:
            (tmp_path / label / name).write_bytes(b"x")
    (tmp_path / "walk" / "extra").mkdir()
    (tmp_path / "walk" / "extra" / "d.mov").write_bytes(b"x")
    (tmp_path / "stray.mp4").write_bytes(b"x")  # not in a class folder
    found = [
        (path.relative_to(tmp_path).as_posix(), label)
        for path, label in read_class_folders(tmp_path)
    ]
    assert found == [
        ("jump/B.AVI", "jump"),
        ("jump/a.mp4", "jump"),
        ("walk/c.mkv", "walk"),
        ("walk/extra/d.mov", "walk"),
    ]


def test_class_folders_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="missing: no such folder"):
        read_class_folders(tmp_path / "missing")
    with pytest.raises(DataError, match="no class folders"):
        read_class_folders(tmp_path)
    (tmp_path / "walk").mkdir()
    (tmp_path / "walk" / "readme.txt").write_text("no videos here")
    with pytest.raises(DataError, match=f"{tmp_path.name}: no video files"):
        read_class_folders(tmp_path)
