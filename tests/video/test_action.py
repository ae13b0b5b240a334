"""Action recognition end to end on a toy clip set that only temporal order separates.

The toy set has four classes of short videos of one shape on a plain background: it
`grow`s, `shrink`s, `blink`s or stays `still`. A grow clip played backwards is a shrink
clip, so no single frame (nor the set of frames) tells them apart: the recurrent model must
read the order. Chance is 25 %.
"""

import json
import os
import re

import cv2
import numpy as np
import pytest
from toy_video import CLASSES, TOY_CLIP_SETTINGS, toy_clip, toy_folder, write_video

from shared import config as config_lib
from shared.errors import DataError
from shared.export import serve_in_fresh_process
from shared.training import restore_model, train
from suite.video import ActionClassifier
from suite.video.features import FeatureCache, prepare_frames, sample_positions
from suite.video.frames import sample_indices
from suite.video.pipeline import (
    FramesSpec,
    clip_features,
    load_labels,
    load_source,
    prepare_clip,
    split_videos,
)
from suite.video.task import ActionConfig, ActionTask, frames_spec, load_frame_encoder

TOY_SETTINGS = [
    *TOY_CLIP_SETTINGS,
    "model.units=32",
    "model.dropout=0.0",
    "model.input_dropout=0.0",
    "train.epochs=40",
    "train.batch_size=8",
    "train.learning_rate=0.01",
    "train.verbose=0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("action")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNSUITE_DATA_DIR", str(root / "data"))
        data = str(toy_folder(root / "videos"))
        config = config_lib.resolve(
            ActionConfig, ActionTask.presets, "tiny", overrides=TOY_SETTINGS
        )
        summary = train(ActionTask(), config, root / "run", data)
        yield root, data, summary


@pytest.mark.slow
def test_learns_temporal_order_far_above_chance(trained):
    root, data, summary = trained
    task = ActionTask()
    config, model = restore_model(task, root / "run")
    scores = task.evaluate(model, config, data, root / "run")
    assert scores["clips"] == 16  # a quarter of each class's 16 clips
    assert scores["top1"] >= 0.75, scores  # chance: 0.25
    assert scores["top5"] == 1.0  # four classes
    assert {f"accuracy_{kind}" for kind in CLASSES} <= set(scores)
    image = cv2.imread(str(root / "run" / "confusion_matrix.png"))
    assert image is not None and image.shape[0] > 4 * 34 and image.shape[1] > 4 * 34
    assert (root / "run" / "predictions.tsv").read_text().count("\n") == 17
    assert load_labels(root / "run") == list(CLASSES)


@pytest.mark.slow
def test_features_are_cached_and_keyed_by_the_cnn(trained, monkeypatch):
    root, data, _ = trained
    monkeypatch.setenv("RNNSUITE_DATA_DIR", str(root / "data"))
    config = config_lib.load(ActionConfig, root / "run")
    source = load_source(data, config.data)
    spec = frames_spec(config)
    assert spec == FramesSpec(8, 48, modality="diff")
    encoder = load_frame_encoder(root / "run")
    cache = FeatureCache(encoder, 8, "uniform", 2, "diff")
    train_clips = source.clips("train")
    assert len(train_clips) == 40 and all(cache.has(clip.key) for clip in train_clips)
    files = [cache.path(clip.key) for clip in train_clips]
    before = {path: path.stat().st_mtime_ns for path in files}
    labels = list(CLASSES)
    again = clip_features(source, "train", labels, spec, encoder, progress=False)
    assert again.computed == 0 and [c.key for c in again.clips] == [c.key for c in train_clips]
    assert {path: path.stat().st_mtime_ns for path in files} == before
    # Other CNN weights are another cache: nothing stale is ever read.
    encoder.cnn.weights[0].assign(encoder.cnn.weights[0] * 1.5)
    changed = clip_features(source, "valid", labels, spec, encoder, progress=False)
    assert changed.computed == len(changed.clips) == 8
    assert FeatureCache(encoder, 8, "uniform", 2, "diff").folder != cache.folder
    assert (
        FeatureCache(encoder, 8, "uniform", 2, "rgb").folder
        != FeatureCache(encoder, 8, "uniform", 2, "diff").folder
    )


@pytest.mark.slow
def test_export_in_a_fresh_process_agrees_with_keras(trained, tmp_path):
    root, data, _ = trained
    task = ActionTask()
    config, model = restore_model(task, root / "run")
    path = task.export(model, config, root / "run", tmp_path / "export")

    rng = np.random.default_rng(7)
    clips = [
        toy_clip(kind, rng, frames=n) for kind, n in zip(CLASSES, (10, 13, 9, 11), strict=True)
    ]
    longest = 16
    frames = rng.integers(0, 256, (len(clips) + 1, longest, 48, 48, 3), dtype=np.uint8)
    for row, clip in enumerate(clips):
        frames[row, : len(clip)] = clip  # junk after each clip's end
    frames[-1, : len(clips[0])] = clips[0]
    frames[-1, len(clips[0]) :] = 0  # the first clip again, padded with zeros
    length = np.array([len(c) for c in clips] + [len(clips[0])], np.int32)
    served = serve_in_fresh_process(path, {"frames": frames, "length": length})

    spec = frames_spec(config)
    encoder = load_frame_encoder(root / "run")
    prepared = [prepare_clip(clip, spec) for clip in clips]
    features = encoder(np.stack([picked for picked, _ in prepared]), training=False)
    valid = np.array([count for _, count in prepared], np.int32)
    expected = np.asarray(model((features, valid), training=False))
    labels = load_labels(root / "run")
    np.testing.assert_allclose(served["probabilities"][:-1], expected, atol=1e-5)
    assert [label.decode() for label in served["label"][:-1]] == [
        labels[i] for i in expected.argmax(1)
    ]
    np.testing.assert_allclose(served["probabilities"][-1], served["probabilities"][0], atol=1e-6)
    assert served["probabilities"].shape == (5, len(CLASSES))


@pytest.mark.slow
def test_predict_names_labels_and_refuses_a_corrupt_video(trained, tmp_path):
    root, _, _ = trained
    task = ActionTask()
    config, model = restore_model(task, root / "run")
    path = task.export(model, config, root / "run", tmp_path / "export")
    rng = np.random.default_rng(3)
    videos = [write_video(tmp_path / f"{kind}.avi", toy_clip(kind, rng)) for kind in CLASSES]
    lines = task.predict(path, [str(v) for v in videos])
    fields = [line.split("\t") for line in lines]
    assert [f[0] for f in fields] == [str(v) for v in videos]
    assert all(f[1] in CLASSES and 0.25 <= float(f[2]) <= 1.0 for f in fields)
    assert sum(f[1] == kind for f, kind in zip(fields, CLASSES, strict=True)) >= 3

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(5000))
    with pytest.raises(DataError, match=r"2 of 3 video files unusable") as caught:
        task.predict(path, [str(videos[0]), str(broken), str(tmp_path / "gone.avi")])
    assert re.search(r"broken\.mp4: (not a video|no frames)", str(caught.value))
    assert "gone.avi: no such video file" in str(caught.value)


def test_steps_past_length_never_change_the_output():
    model = ActionClassifier(5, units=16, num_layers=2, bidirectional=True, dropout=0.0)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 9, 12)).astype("float32")
    length = np.array([9, 4, 1], np.int32)
    out = np.asarray(model((features, length)))
    junk = features.copy()
    for row, count in enumerate(length):
        junk[row, count:] = rng.normal(size=junk[row, count:].shape) * 100
    np.testing.assert_allclose(np.asarray(model((junk, length))), out, atol=1e-6)
    assert np.allclose(out.sum(axis=1), 1.0)
    inside = features.copy()
    inside[1, 2] += rng.normal(size=12) * 3  # a valid step does change it
    assert not np.allclose(np.asarray(model((inside, length)))[1], out[1], atol=1e-4)


def test_padded_frames_change_no_frame_features_even_in_training():
    """With `length`, batch norm's training statistics see only the valid frames."""
    from suite.video.features import FrameEncoder

    encoder = FrameEncoder("convnet", size=32)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8")
    length = np.array([4, 2], np.int32)
    junk = frames.copy()
    junk[1, 2:] = 255 - junk[1, 2:]
    for training in (True, False):
        clean = np.asarray(encoder(frames, length, training=training))
        padded = np.asarray(encoder(junk, length, training=training))
        np.testing.assert_allclose(padded, clean, atol=1e-5, err_msg=training)
        assert not clean[1, 2:].any() and clean[1, :2].any()


def test_action_classifier_saves_and_loads(tmp_path):
    import keras

    model = ActionClassifier(4, cell="lstm", units=8, dropout=0.1).build_for(feature_dim=6)
    inputs = (np.random.default_rng(1).normal(size=(2, 5, 6)).astype("float32"), np.array([5, 3]))
    path = tmp_path / "action.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ActionClassifier) and loaded.cell == "lstm"
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=1e-6)
    clone = ActionClassifier.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("mode", ["uniform", "strided"])
def test_graph_sampling_picks_what_the_frame_reader_picks(mode):
    lengths = np.arange(1, 70)
    for num_frames in (1, 3, 8, 16):
        indices, valid = sample_positions(lengths, num_frames, mode, stride=3)
        for length, row, count in zip(lengths, indices.numpy(), valid.numpy(), strict=True):
            assert row.tolist() == sample_indices(length, num_frames, mode, stride=3).tolist()
            if mode == "uniform":
                assert count == num_frames
                continue
            # Strided: the valid steps are distinct frames; a window that runs past a short
            # clip's end repeats its last frame there, and those steps are not valid.
            assert 1 <= count <= num_frames and np.all(np.diff(row[:count]) == 3)
            if count < num_frames:
                assert np.all(row[count:] == length - 1) and row[count - 1] + 3 > length - 1


def test_prepared_frames_are_resized_uint8_and_ignore_padding():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 12, 32, 40, 3), dtype=np.uint8)
    picked, valid = prepare_frames(frames, [12, 5], num_frames=4, size=32)
    assert picked.shape == (2, 4, 32, 32, 3) and picked.dtype == "uint8"
    assert valid.numpy().tolist() == [4, 4]
    frames[1, 5:] = 0
    assert np.array_equal(prepare_frames(frames, [12, 5], 4, 32)[0][1], picked[1])
    same, _ = prepare_frames(frames[:, :, :, :32], [12, 12], 12, 32)
    assert np.array_equal(same[0], frames[0, :, :, :32])  # no resizing at the model's size


def test_difference_frames_look_back_one_sampled_frame_and_never_at_padding():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 12, 32, 32, 3), dtype=np.uint8)
    rgb, _ = prepare_frames(frames, [12, 5], 4, 32)
    diff, valid = prepare_frames(frames, [12, 5], 4, 32, modality="diff")
    assert diff.dtype == "uint8" and valid.numpy().tolist() == [4, 4]
    assert np.all(diff.numpy()[:, 0] == 128)  # nothing before the first frame
    expected = np.round((rgb.numpy()[:, 1:].astype(float) - rgb.numpy()[:, :-1]) / 2 + 128)
    np.testing.assert_array_equal(diff.numpy()[:, 1:], expected)
    frames[1, 5:] = 0
    again, _ = prepare_frames(frames, [12, 5], 4, 32, modality="diff")
    np.testing.assert_array_equal(again[1], diff[1])
    with pytest.raises(ValueError, match="unknown modality 'flow'"):
        prepare_frames(frames, [12, 5], 4, 32, modality="flow")


def test_prepare_names_every_unreadable_video(tmp_path):
    root = toy_folder(tmp_path / "videos", per_class=4)
    (root / CLASSES[0] / "noise.avi").write_bytes(bytes(range(256)) * 40)
    (root / CLASSES[1] / "empty.avi").write_bytes(b"")
    config = config_lib.resolve(ActionConfig, ActionTask.presets, "tiny")
    with pytest.raises(DataError, match=r"2 unreadable video file\(s\)") as caught:
        ActionTask().prepare(config, str(root))
    assert "noise.avi: " in str(caught.value) and "empty.avi: empty file" in str(caught.value)


def test_class_folders_split_deterministically_and_by_ucf_group(tmp_path):
    videos = [
        (tmp_path / c / f"v_{c}_g{g:02d}_c{k}.avi", c)
        for c in "ab"
        for g in range(1, 11)
        for k in (1, 2)
    ]
    splits = split_videos(videos, tmp_path, valid_fraction=0.1, test_fraction=0.2)
    shuffled = split_videos(list(reversed(videos)), tmp_path, 0.1, 0.2)
    assert {s: set(rows) for s, rows in splits.items()} == {
        s: set(rows) for s, rows in shuffled.items()
    }
    groups = {s: {p.name.split("_g")[1][:2] for p, _ in rows} for s, rows in splits.items()}
    assert len(groups["test"]) == 2 and len(groups["valid"]) == 1 and len(groups["train"]) == 7
    assert not (groups["test"] & groups["train"]) and not (groups["valid"] & groups["train"])
    plain = [(tmp_path / "a" / f"{k}.mp4", "a") for k in range(10)]
    plain.append((tmp_path / "b" / "x.mp4", "b"))
    splits = split_videos(plain, tmp_path, 0.1, 0.2)
    assert sorted(len(rows) for rows in splits.values()) == [1, 2, 8]
    assert [p for p, label in splits["train"] if label == "b"] == [tmp_path / "b" / "x.mp4"]


def test_weights_that_cannot_be_had_are_refused_clearly(tmp_path, monkeypatch):
    import keras

    from suite.video.features import build_frame_encoder

    with pytest.raises(DataError, match=r"nowhere\.h5: no such weights file \(frames\.weights\)"):
        build_frame_encoder("mobilenet_v1_0.25", 32, str(tmp_path / "nowhere.h5"))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(DataError, match=r"no internet.*--set frames\.weights=PATH"):
        build_frame_encoder("mobilenet_v1_0.25", 128, "imagenet")
    with pytest.raises(DataError, match="unknown frame CNN 'alexnet'"):
        build_frame_encoder("alexnet", 32)


@pytest.mark.slow
def test_frame_cnn_trains_on_clips_and_recalibrates_batch_norm():
    from suite.video.features import build_frame_encoder, train_frame_encoder

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 3).astype(np.int32)
    frames = np.stack([toy_clip(CLASSES[k], rng, frames=4, size=32) for k in labels])
    encoder = build_frame_encoder("convnet", 32)
    before = [np.array(w) for w in encoder.cnn.weights]
    data = (frames, np.full(len(labels), 4), labels)
    summary = train_frame_encoder(
        encoder, len(CLASSES), data, data, segments=2, epochs=1, batch_size=4, verbose=0
    )
    assert summary["best_epoch"] == 1 and 0 <= summary["recalibrated_val_accuracy"] <= 1
    after = {w.path: np.array(w) for w in encoder.cnn.weights}
    names = [w.path for w in encoder.cnn.weights]
    changed = [n for n, old in zip(names, before, strict=True) if not np.allclose(after[n], old)]
    assert any("kernel" in n for n in changed)  # trained
    assert any("moving_mean" in n for n in changed) and any("moving_variance" in n for n in changed)
    assert all(layer.momentum == 0.9 for layer in encoder.cnn.layers if "bn" in layer.name)


def test_a_trained_frame_cnn_is_reused_by_later_runs_on_the_same_clips(tmp_path, data_dir):
    import suite.video.task as action_task
    from suite.video.task import load_source, run_frame_encoder

    data = str(toy_folder(tmp_path / "videos"))
    settings = [*TOY_CLIP_SETTINGS, "cnn.epochs=1", "cnn.batch_size=4", "train.verbose=0"]

    def encoder_for(run_dir, extra=()):
        config = config_lib.resolve(
            ActionConfig, ActionTask.presets, "tiny", overrides=[*settings, *extra]
        )
        source = load_source(data, config.data, progress=False)
        run_dir.mkdir()
        encoder, _ = run_frame_encoder(config, run_dir, source, source.labels, frames_spec(config))
        return [np.array(w) for w in encoder.cnn.weights]

    first = encoder_for(tmp_path / "first")
    trainings = []
    real_training = action_task.train_frame_encoder

    def counted(*args, **kwargs):
        trainings.append(1)
        return real_training(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(action_task, "train_frame_encoder", counted)
        again = encoder_for(tmp_path / "again")
        assert trainings == []  # same clips, same settings: reused
        info = json.loads((tmp_path / "again" / "frame_cnn.json").read_text())
        assert info["reused_from"] and info["training"]["epochs"] == 1
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        encoder_for(tmp_path / "other-seed", ["train.seed=7"])
        assert trainings == [1]
