"""Toy videos for the video tests: one bright shape on a dark background that `grow`s,
`shrink`s, `blink`s or stays `still`.

A grow clip played backwards is a shrink clip, so no single frame (nor the set of frames)
tells them apart: a model must read the order. Chance is 25 %.
"""

import cv2
import numpy as np

CLASSES = ("blink", "grow", "shrink", "still")
CHANCE = 1 / len(CLASSES)


def toy_clip(kind, rng, frames=10, size=48):
    """One clip [frames, size, size, 3] uint8 of `kind`."""
    background = rng.integers(0, 60, 3)  # a dark background and a bright shape
    colour = rng.integers(170, 256, 3)
    centre = rng.integers(size // 3, 2 * size // 3, 2)
    low, high = rng.uniform(2, 5), rng.uniform(15, 21)
    radii = {
        "grow": np.linspace(low, high, frames),
        "shrink": np.linspace(high, low, frames),
        "still": np.full(frames, rng.uniform(low, high)),
        "blink": np.where(np.arange(frames) % 2 == 0, rng.uniform(8, high), 0.0),
    }[kind]
    clip = np.empty((frames, size, size, 3), np.uint8)
    for number, radius in enumerate(radii):
        clip[number] = background
        if radius > 0:
            cv2.circle(
                clip[number], tuple(int(c) for c in centre), int(radius), colour.tolist(), -1
            )
    return clip


def write_video(path, frames, fps=8):
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def toy_folder(root, per_class=16, seed=0):
    """A UCF101-style folder: one subfolder of .avi files per class."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for number in range(per_class):
            write_video(root / kind / f"{kind}_{number:02d}.avi", toy_clip(kind, rng))
    return root


# How the video tasks read the toy folder (either task's config): 16 clips per class split
# 10/2/4, 8 frames of 48 px, and a random frame CNN: the classes differ in the size of one
# shape over time, which random convolution features carry (training the CNN is tested
# on its own).
TOY_CLIP_SETTINGS = [
    "data.valid_fraction=0.125",
    "data.test_fraction=0.25",
    "frames.cnn=convnet",
    "frames.size=48",
    "frames.num_frames=8",
    "cnn.epochs=0",
]
