"""The frame CNN on frames beside their differences (`rgb_diff`), learning clip attributes
(the figure's colours) beside the action, as the captioning task trains it."""

import numpy as np
import pytest

from shared.errors import DataError
from suite.video import pipeline
from suite.video.features import (
    ClipHeads,
    build_frame_encoder,
    prepare_frames,
    train_frame_encoder,
)
from suite.video.pipeline import Clip, FileSource, clip_attributes
from suite.video.task import cnn_targets, load_clip_heads, save_frame_encoder

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


def test_rgb_diff_frames_are_the_frame_then_its_difference():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 12, 32, 40, 3), dtype=np.uint8)
    rgb, _ = prepare_frames(frames, [12, 5], 4, 32)
    diff, _ = prepare_frames(frames, [12, 5], 4, 32, modality="diff")
    both, valid = prepare_frames(frames, [12, 5], 4, 32, modality="rgb_diff")
    assert both.shape == (2, 4, 32, 32, 6) and both.dtype == "uint8"
    np.testing.assert_array_equal(both[..., :3], rgb)
    np.testing.assert_array_equal(both[..., 3:], diff)
    assert valid.numpy().tolist() == [4, 4]


def test_a_six_channel_cnn_takes_rgb_diff_frames_and_refuses_pretrained_weights(tmp_path):
    encoder = build_frame_encoder("convnet", 32, channels=6)
    features = encoder(np.zeros((2, 3, 32, 32, 6), "uint8"))
    assert tuple(features.shape) == (2, 3, encoder.feature_dim)
    with pytest.raises(DataError, match="pretrained weights take RGB frames, not 6 channels"):
        build_frame_encoder("mobilenet_v1_0.25", 32, str(tmp_path / "w.h5"), channels=6)
    with pytest.raises(DataError, match="resnet50 takes RGB images only"):
        build_frame_encoder("resnet50", 32, channels=6)


def moving_square_clip(colour, direction, rng, frames=4, size=32):
    """A square of `colour` crossing a noisy grey scene to the left or the right."""
    clip = np.repeat(rng.integers(60, 190, (1, size, size, 3)), frames, 0).astype(np.uint8)
    top = rng.integers(4, size - 12)
    start = rng.integers(2, 6) if direction == "right" else rng.integers(size - 14, size - 10)
    step = 3 if direction == "right" else -3
    for number in range(frames):
        left = start + step * number
        clip[number, top : top + 8, left : left + 8] = COLOURS[colour]
    return clip


@pytest.mark.slow
def test_frame_cnn_learns_colours_beside_the_action_on_rgb_diff_frames():
    rng = np.random.default_rng(0)
    colours, directions = list(COLOURS), ["left", "right"]
    pairs = [(c, d) for c in range(3) for d in range(2)] * 8
    frames = np.stack(
        [
            np.concatenate(
                [clip, prepare_frames(clip[None], [4], 4, 32, modality="diff")[0][0].numpy()],
                axis=-1,
            )
            for clip in (moving_square_clip(colours[c], directions[d], rng) for c, d in pairs)
        ]
    )
    colour = np.array([c for c, _ in pairs], np.int32)
    colour[:4] = -1  # unknown (a greyscale clip's colour): no loss, no crash
    labels = {"action": np.array([d for _, d in pairs], np.int32), "colour": colour}
    data = (frames, np.full(len(pairs), 4), labels)
    encoder = build_frame_encoder("convnet", 32, channels=6)
    heads = ClipHeads({"action": 2, "colour": 3})
    summary = train_frame_encoder(
        encoder,
        heads,
        data,
        data,
        segments=2,
        epochs=5,
        batch_size=8,
        learning_rate=3e-3,
        dropout=0.0,
        augment=False,
        verbose=0,
    )
    per_head = summary["recalibrated_val_accuracy_per_head"]
    assert summary["heads"] == {"action": 2, "colour": 3}
    assert per_head["colour"] >= 0.7, summary  # chance: 1/3 (the 4 unknowns count as wrong)
    # The trained heads read whole clips: their colour posteriors name the colours.
    posteriors = heads.posteriors(encoder(frames), np.full(len(pairs), 4)).numpy()
    assert posteriors.shape == (len(pairs), 4, 5)
    said = posteriors[:, 0, 2:].argmax(-1)
    assert np.mean(said[colour >= 0] == colour[colour >= 0]) >= 0.7


def test_clip_heads_read_the_valid_frames_and_are_kept_with_the_cnn(tmp_path):
    encoder = build_frame_encoder("convnet", 32)
    heads = ClipHeads({"action": 3, "colour": 2}).build_for(encoder.feature_dim)
    features = np.random.default_rng(0).normal(size=(2, 5, encoder.feature_dim))
    junk = features.copy()
    junk[0, 3:] = 50.0  # after clip 0's 3 valid frames
    posteriors = heads.posteriors(features, np.array([3, 5])).numpy()
    assert posteriors.shape == (2, 5, 5)
    np.testing.assert_allclose(posteriors, heads.posteriors(junk, np.array([3, 5])), atol=1e-6)
    np.testing.assert_allclose(posteriors[:, 0], posteriors[:, 4])  # the same at every frame
    np.testing.assert_allclose(posteriors[..., :3].sum(-1), 1.0, atol=1e-5)

    with pytest.raises(DataError, match=r"no appearance\.heads\.weights\.h5: .* train it again"):
        save_frame_encoder(tmp_path, encoder, "appearance")  # without its heads
        load_clip_heads(tmp_path, "appearance")
    save_frame_encoder(tmp_path, encoder, "appearance", heads)
    loaded = load_clip_heads(tmp_path, "appearance")
    assert loaded.classes == {"action": 3, "colour": 2}
    np.testing.assert_allclose(loaded.posteriors(features, np.array([3, 5])), posteriors, atol=1e-6)


def test_attributes_come_from_the_manifest_and_greyscale_hides_colours(monkeypatch, tmp_path):
    rows = {
        "train": [
            {"clip_id": "a", "upper_color": "red", "greyscale": False},
            {"clip_id": "b", "upper_color": "blue", "greyscale": False},
            {"clip_id": "c", "upper_color": "green", "greyscale": True},
        ],
        "valid": [
            {"clip_id": "d", "upper_color": "blue", "greyscale": False},
            {"clip_id": "e", "upper_color": "pink", "greyscale": False},
        ],
    }
    splits = {
        split: [Clip(row["clip_id"], "walk", tmp_path / "x.mp4") for row in split_rows]
        for split, split_rows in rows.items()
    }
    manifests = {split: tmp_path / split / "manifest.csv" for split in rows}
    source = FileSource("rendered", ["walk", "run"], {**splits, "test": []}, manifests)
    monkeypatch.setattr(pipeline.corpus, "read_manifest", lambda path: rows[path.parent.name])

    assert clip_attributes(source, "train", ["upper_color"]) == {
        "upper_color": ["red", "blue", None]
    }
    with pytest.raises(DataError, match=r"train/manifest\.csv: no column shoe_color"):
        clip_attributes(source, "train", ["shoe_color"])
    assert clip_attributes(FileSource("folder", ["walk"], splits), "train", ["upper_color"]) == {}

    class Arrays:
        def __init__(self, count):
            self.labels = np.zeros(count, np.int32)

    heads, targets = cnn_targets(
        source, ["walk", "run"], ["upper_color"], {"train": Arrays(3), "valid": Arrays(2)}
    )
    assert heads == {"action": 2, "upper_color": 2}  # blue, red: the training clips' values
    assert targets["train"]["upper_color"].tolist() == [1, 0, -1]
    assert targets["valid"]["upper_color"].tolist() == [0, -1]  # pink: never in training
    heads, targets = cnn_targets(
        source, ["walk", "run"], ["upper_color"], {"train": Arrays(3)}, action=False
    )
    assert heads == {"upper_color": 2} and list(targets["train"]) == ["upper_color"]
    folder = FileSource("a folder of videos", ["walk"], splits)
    with pytest.raises(DataError, match="a folder of videos: no render parameters"):
        cnn_targets(folder, ["walk"], ["upper_color"], {"train": Arrays(3)})
