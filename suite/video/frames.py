"""Video frames: decode with OpenCV, sample a fixed number of frames, resize; class folders.

Frames are uint8 RGB arrays [time, height, width, 3] throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shared.errors import DataError

VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".mov",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
)
# A single picture shows no motion: a video needs at least this many frames by default.
MIN_FRAMES = 2
SAMPLING_MODES = ("uniform", "strided")


def read_video(
    path: str | Path, min_frames: int = MIN_FRAMES, max_frames: int | None = None
) -> np.ndarray:
    """Decodes every frame of a video file OpenCV reads, as uint8 RGB [T, H, W, 3].

    Args:
        path: the video file.
        min_frames: fewer decoded frames than this is an error.
        max_frames: stop decoding after this many frames (None: all).

    Raises:
        DataError: naming the file when it is missing, cannot be decoded, has no frames or
            fewer than `min_frames`.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a video file")
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: not a video OpenCV can decode")
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            else:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if frames and frame.shape != frames[0].shape:
                raise DataError(
                    f"{path}: frame {len(frames)} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"the first was {frames[0].shape[1]}x{frames[0].shape[0]}"
                )
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise DataError(f"{path}: no frames could be decoded (empty or not a video)")
    if len(frames) < min_frames:
        raise DataError(
            f"{path}: only {len(frames)} frame{'s' if len(frames) != 1 else ''}, "
            f"need at least {min_frames}"
        )
    return np.stack(frames)


def frame_shapes(paths, workers: int = 1) -> tuple[list[tuple | None], list[str]]:
    """Opens each video and decodes its first `MIN_FRAMES` frames only: each one's frame
    shape `(height, width, 3)` (None if unreadable), and one message per unreadable file."""

    def probe(path):
        try:
            return read_video(path, max_frames=MIN_FRAMES).shape[1:], None
        except DataError as error:
            return None, str(error)

    # OpenCV decodes without the GIL: threads overlap the files.
    with ThreadPoolExecutor(workers) as pool:
        probed = list(pool.map(probe, paths))
    return [shape for shape, _ in probed], [error for _, error in probed if error]


def sample_indices(
    length: int,
    num_frames: int,
    mode: str = "uniform",
    stride: int = 2,
    start: int | None = None,
) -> np.ndarray:
    """Which of `length` frames to take: `num_frames` int indices.

    `uniform` spreads them evenly over the whole video (repeating frames of a short one);
    `strided` takes every `stride`-th frame from `start` (default: the window centred in
    the video), repeating the last frame where the window runs past the end.
    """
    if length < 1:
        raise ValueError(f"cannot sample from {length} frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if mode == "uniform":
        return np.round(np.linspace(0, length - 1, num_frames)).astype(np.int64)
    if mode == "strided":
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        span = (num_frames - 1) * stride + 1
        if start is None:
            start = max(0, (length - span) // 2)
        indices = start + stride * np.arange(num_frames)
        return np.clip(indices, 0, length - 1).astype(np.int64)
    raise ValueError(f"unknown sampling mode {mode!r}; have {', '.join(SAMPLING_MODES)}")


def sample_frames(
    frames: np.ndarray,
    num_frames: int,
    mode: str = "uniform",
    stride: int = 2,
    start: int | None = None,
) -> np.ndarray:
    """`num_frames` frames of a clip [T, ...] picked by `sample_indices`."""
    return frames[sample_indices(len(frames), num_frames, mode, stride, start)]


def resize_frames(
    frames: np.ndarray, size: int | Sequence[int], keep_aspect: bool = False
) -> np.ndarray:
    """Resizes frames [T, H, W, C] to `size` (an int for square, or (height, width)).

    With `keep_aspect`, the shorter side is scaled to fit and the centre is cropped, so
    nothing is stretched. Shrinking uses area averaging, enlarging bilinear interpolation.
    """
    import cv2

    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    source_h, source_w = frames.shape[1:3]
    if keep_aspect:
        scale = max(height / source_h, width / source_w)
        scaled = (max(width, round(source_w * scale)), max(height, round(source_h * scale)))
    else:
        scale = min(height / source_h, width / source_w)
        scaled = (width, height)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((len(frames), height, width, *frames.shape[3:]), frames.dtype)
    for number, frame in enumerate(frames):
        resized = cv2.resize(frame, scaled, interpolation=interpolation)
        if resized.ndim < frame.ndim:
            resized = resized[..., None]  # cv2 drops a single channel axis
        top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
        out[number] = resized[top : top + height, left : left + width]
    return out


def read_class_folders(
    root: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[tuple[Path, str]]:
    """(video path, label) for a UCF101-style tree: one subfolder of videos per class.

    Videos may sit in nested folders below their class folder; files whose extension
    (case-insensitive) is not in `extensions` and hidden files are skipped.

    Raises:
        DataError: naming the folder when it is missing, has no class folders or no videos.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of class folders")
    wanted = {extension.lower() for extension in extensions}
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected one subfolder of videos per class)")
    videos = []
    for folder in classes:
        for path in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if path.is_file() and not hidden and path.suffix.lower() in wanted:
                videos.append((path, folder.name))
    if not videos:
        raise DataError(
            f"{root}: no video files ({', '.join(sorted(wanted))}) in its class folders"
        )
    return videos
