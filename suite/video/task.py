"""The action-recognition task: clips -> frame CNN -> `ActionClassifier`, and its export.

`datasets` first gets the run's frame CNN (trained on the training clips' frames when no
ImageNet weights are given, see `suite.video.features`), stores it in the run dir
(`frame_cnn.weights.h5`, `frame_cnn.json`) with the class list (`labels.json`), then caches
the CNN features of every clip, so the recurrent model trains on features only. With
`model.finetune` the CNN sits inside the model instead and trains with it on frames.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.config import TrainConfig, data_dir
from shared.errors import DataError, problems_error
from shared.export import (
    check_exported_by,
    export_endpoint,
    load_endpoint,
    write_metadata,
)
from shared.plots import draw_heatmap
from shared.task import Task
from suite.video.action import ActionClassifier
from suite.video.features import (
    MODALITIES,
    ClipHeads,
    build_frame_encoder,
    modality_channels,
    train_frame_encoder,
)
from suite.video.frames import frame_shapes, read_video
from suite.video.pipeline import (
    FramesSpec,
    clip_attributes,
    clip_features,
    clip_frames,
    corpus_root,
    load_labels,
    load_source,
    make_dataset,
    prepare_batch,
    save_labels,
)

# The name of a run's frame CNN files (`cnn_files`); a captioner's second CNN has its own.
FRAME_CNN = "frame_cnn"


@dataclass
class ActionDataConfig:
    # Embedded corpus: clips of every action in each split, and how they are rendered.
    # 100 training clips per action: 40 left the frame CNN at 40 % on unseen views, 100
    # took it to 66 % (and the classifier from 62 % to 91 % top-1).
    train_clips: int = 100
    valid_clips: int = 8
    test_clips: int = 12
    render_frames: int = 32
    render_size: int = 112
    seed: int = 0
    # Rendering processes (pybullet) and video-decoding threads.
    workers: int = 2
    # A subset of the 15 actions (empty: all).
    actions: list[str] = field(default_factory=list)
    # Class folders (`--data DIR`) and TFDS sets: the share held out for valid and test.
    valid_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class FramesConfig:
    num_frames: int = 16
    size: int = 96
    sampling: str = "uniform"  # uniform | strided
    stride: int = 2
    # rgb | diff | rgb_diff: the CNN sees each sampled frame minus the one before (TSN's RGB
    # difference). On the embedded corpus, whose small figure moves over busy static
    # scenes, the difference is what a CNN trained from scratch can learn from; rgb_diff
    # gives it the frame too (6 channels), for what only the frame shows (colours).
    modality: str = "diff"
    # Frame CNN: a key of suite.video.features.ARCHITECTURES. The default `convnet` is a
    # plain CNN that trains from scratch quickly; keras.applications nets (mobilenet_v3_small,
    # efficientnet_b0, ...) are the choice with ImageNet weights (frames.weights).
    cnn: str = "convnet"
    # "" (train the CNN on the training clips), a weights file (e.g. ImageNet *_notop), or
    # "imagenet" (downloaded by Keras where the internet is reachable).
    weights: str = ""
    # Clips per batch when computing features.
    batch_size: int = 32


@dataclass
class CnnTrainConfig:
    """Training the frame CNN on training clips (Temporal Segment Network) before caching."""

    epochs: int = 20
    segments: int = 4
    batch_size: int = 16
    learning_rate: float = 1e-3
    dropout: float = 0.3
    augment: bool = True
    # With frames.weights set, the CNN stays frozen unless this is true.
    tune_pretrained: bool = False
    # Reuse a CNN trained before on the same clips with the same settings (any run's).
    reuse: bool = True
    # Render parameters (manifest columns) the CNN also learns to classify, e.g.
    # upper_color, lower_color: multi-task, so that its features carry them.
    attributes: list[str] = field(default_factory=list)
    # Whether it learns the action (false: the attributes only).
    action: bool = True


@dataclass
class ActionModelConfig:
    cell: str = "gru"
    units: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.3
    input_dropout: float = 0.2
    # End to end: the frame CNN inside the model, trained with it on frames (slow on CPU).
    finetune: bool = False


@dataclass
class ActionConfig:
    data: ActionDataConfig = field(default_factory=ActionDataConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    cnn: CnnTrainConfig = field(default_factory=CnnTrainConfig)
    model: ActionModelConfig = field(default_factory=ActionModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=40, batch_size=32, learning_rate=2e-3, lr_schedule="cosine"
        )
    )


PRESETS = {
    "tiny": {
        "data": {
            "train_clips": 2,
            "valid_clips": 1,
            "test_clips": 1,
            "render_frames": 12,
            "render_size": 48,
            "workers": 1,
        },
        "frames": {"num_frames": 8, "size": 48, "batch_size": 16},
        "cnn": {"epochs": 1, "segments": 2, "batch_size": 8},
        "model": {"units": 32},
        "train": {"epochs": 3, "batch_size": 8},
    },
    # The frame CNN trains 40 epochs (~30 min on 2 cores, once: cached): after 20 its
    # validation accuracy was 71 % and still rising, after 40 about 79 %; test top-1 of the
    # GRU on its features 88.9 -> 92.8 %, and the captioner on them BLEU-4 39.1 -> 41.2,
    # right action 83.3 -> 87.8 % (one run each, `--set cnn.epochs=40`).
    "small": {"cnn": {"epochs": 40}},
    "base": {
        "data": {"train_clips": 100, "valid_clips": 12, "test_clips": 20, "render_size": 160},
        "frames": {"size": 112},
        "cnn": {"epochs": 40, "batch_size": 32},
        "model": {"units": 256, "num_layers": 2, "bidirectional": True},
        "train": {"epochs": 60, "batch_size": 64},
    },
}


def frames_spec(config) -> FramesSpec:
    f = config.frames
    if f.sampling not in ("uniform", "strided"):
        raise DataError(f"frames.sampling must be uniform or strided, got {f.sampling!r}")
    if f.modality not in MODALITIES:
        raise DataError(
            f"frames.modality must be one of {', '.join(MODALITIES)}, got {f.modality!r}"
        )
    if f.num_frames < 1 or f.size < 32:
        raise DataError("frames.num_frames must be >= 1 and frames.size >= 32")
    return FramesSpec(f.num_frames, f.size, f.sampling, f.stride, f.modality)


def cnn_files(run_dir: Path, name: str = FRAME_CNN) -> tuple[Path, Path]:
    """Where a run keeps its CNN `name`: the weights file and the info file beside them."""
    return Path(run_dir) / f"{name}.weights.h5", Path(run_dir) / f"{name}.json"


def heads_file(run_dir: Path, name: str = FRAME_CNN) -> Path:
    """Where a run keeps the classifiers (`ClipHeads`) its CNN `name` was trained with."""
    return Path(run_dir) / f"{name}.heads.weights.h5"


def save_frame_encoder(run_dir: Path, encoder, name: str = FRAME_CNN, heads=None, **info) -> None:
    """Stores the frame CNN (and its `heads`, if any) where `load_frame_encoder` and
    `load_clip_heads` find them, with `info` beside them."""
    weights_path, info_path = cnn_files(run_dir, name)
    encoder.cnn.save_weights(str(weights_path))
    info = {
        "architecture": encoder.architecture,
        "size": encoder.size,
        "channels": encoder.channels,
        "feature_dim": encoder.feature_dim,
        **info,
    }
    if heads is not None:
        heads.save_weights(str(heads_file(run_dir, name)))
        info["heads"] = heads.classes
    info_path.write_text(json.dumps(info, indent=1))


def copy_frame_encoder(source_dir: Path, target_dir: Path, name=FRAME_CNN, **info) -> None:
    """Copies a stored frame CNN (weights, heads and info file), adding `info` to the latter."""
    weights, info_path = cnn_files(source_dir, name)
    target_weights, target_info = cnn_files(target_dir, name)
    shutil.copyfile(weights, target_weights)
    if heads_file(source_dir, name).is_file():
        shutil.copyfile(heads_file(source_dir, name), heads_file(target_dir, name))
    stored = json.loads(info_path.read_text())
    target_info.write_text(json.dumps({**stored, **info}, indent=1))


def load_frame_encoder(run_dir: Path, name: str = FRAME_CNN):
    """The run's frame CNN `name`, as `datasets` stored it."""
    weights_path, info_path = cnn_files(run_dir, name)
    if not (info_path.is_file() and weights_path.is_file()):
        raise DataError(f"{run_dir}: no {weights_path.name}; is this a run dir made by `train`?")
    info = json.loads(info_path.read_text())
    encoder = build_frame_encoder(
        info["architecture"], info["size"], channels=info.get("channels", 3)
    )
    encoder.cnn.load_weights(str(weights_path))
    return encoder


def load_clip_heads(run_dir: Path, name: str = FRAME_CNN) -> ClipHeads:
    """The classifiers the run's frame CNN `name` was trained with."""
    info_path = cnn_files(run_dir, name)[1]
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    path = heads_file(run_dir, name)
    if "heads" not in info or not path.is_file():
        raise DataError(
            f"{run_dir}: no {path.name}: its frame CNN {name} was stored without the "
            "classifiers it was trained with; train it again in a new --run-dir"
        )
    heads = ClipHeads(info["heads"], name=f"{name}_heads").build_for(info["feature_dim"])
    heads.load_weights(str(path))
    return heads


def trained_cnn_dir(config, source, labels) -> Path:
    """Where a frame CNN trained on `source` with `config` is kept for later runs.

    Keyed by everything that shapes the trained weights (the clips and their labels, the
    frames, the CNN's training, the seed), so an action run and a caption run on the same
    clips train the CNN once and cache features from the same weights.
    """
    frames = {k: v for k, v in dataclasses.asdict(config.frames).items() if k != "batch_size"}
    cnn = {k: v for k, v in dataclasses.asdict(config.cnn).items() if k != "reuse"}
    # CNNs trained before `attributes` and `action` existed keep their key.
    for key, default in (("attributes", []), ("action", True)):
        if cnn.get(key) == default:
            del cnn[key]
    shaping = {
        "clips": [(c.key, c.label) for s in ("train", "valid") for c in source.clips(s)],
        "labels": list(labels),
        "frames": frames,
        "cnn": cnn,
        "seed": config.train.seed,
    }
    digest = hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    return data_dir() / "video" / "frame_cnn" / digest


def cnn_targets(source, labels, attributes, arrays, action=True) -> tuple[dict, dict]:
    """What the frame CNN learns: the action (unless not `action`) and each clip attribute.

    Args:
        arrays: `{split: ClipArrays}` of the splits it trains and validates on.
    Returns:
        `(heads {name: classes}, {split: {name: int32 labels [N]}})`. An attribute's classes
        are its values on the training clips, sorted; a value the frames cannot show, or
        one the training clips never have, is -1 (no loss).
    """
    heads = {"action": len(labels)} if action else {}
    targets = {split: {"action": clips.labels} if action else {} for split, clips in arrays.items()}
    values = {split: clip_attributes(source, split, attributes) for split in arrays}
    if attributes and not values["train"]:
        raise DataError(f"{source.description}: no render parameters to learn {attributes} from")
    for name, train_values in values["train"].items():
        classes = sorted({value for value in train_values if value is not None})
        index = {value: number for number, value in enumerate(classes)}
        heads[name] = len(classes)
        for split in arrays:
            ids = [index.get(value, -1) for value in values[split][name]]
            targets[split][name] = np.asarray(ids, np.int32)
    return heads, targets


def run_frame_encoder(config, run_dir, source, labels, spec, name=FRAME_CNN):
    """The run's frame CNN `name`: loaded from the run dir, or built (and trained) and stored.

    The CNN trains on the training clips' labels (TSN) and `cnn.attributes` unless
    `frames.weights` brings pretrained weights; with fewer than two labels (and no
    attributes) there is nothing to train it on. A CNN trained before on the same clips
    with the same settings (`trained_cnn_dir`) is reused.
    Returns `(encoder, train_frames or None)`; the frames are kept for fine-tuning.
    """
    run_dir = Path(run_dir)
    f, c = config.frames, config.cnn
    if cnn_files(run_dir, name)[0].is_file():
        encoder = load_frame_encoder(run_dir, name)
        have = (encoder.architecture, encoder.size, encoder.channels)
        if have != (f.cnn, f.size, modality_channels(f.modality)):
            raise DataError(
                f"{run_dir}: its frame CNN is {encoder.architecture} at {encoder.size}px on "
                f"{encoder.channels} channels, the config asks for {f.cnn} at {f.size}px on "
                f"{f.modality} frames; use a new --run-dir"
            )
        return encoder, None
    encoder = build_frame_encoder(f.cnn, f.size, f.weights, modality_channels(f.modality))
    progress = config.train.verbose != 0
    learns = bool(c.attributes) or (c.action and len(labels) > 1)
    if not f.weights and not learns:
        print(
            "warning: no action labels to train the frame CNN on, so its features are "
            "random projections; set frames.weights to an ImageNet weights file for better ones"
        )
    trained, train_frames, heads = {}, None, None
    if c.epochs > 0 and learns and (not f.weights or c.tune_pretrained):
        cached = trained_cnn_dir(config, source, labels)
        # A CNN learning attributes is read through its heads (the captioner's appearance
        # stream): one cached before heads were kept trains again.
        complete = not c.attributes or heads_file(cached, name).is_file()
        if c.reuse and cnn_files(cached, name)[1].is_file() and complete:
            copy_frame_encoder(cached, run_dir, name, reused_from=str(cached))
            print(f"{name}: trained before on these clips, reused from {cached}")
            return load_frame_encoder(run_dir, name), None
        workers = config.data.workers
        train_frames = clip_frames(source, "train", labels, spec, workers, progress)
        valid = source.clips("valid")
        valid_frames = (
            clip_frames(source, "valid", labels, spec, workers, progress) if valid else None
        )
        arrays = {"train": train_frames, **({"valid": valid_frames} if valid_frames else {})}
        classes, targets = cnn_targets(source, labels, c.attributes, arrays, c.action)
        heads = ClipHeads(classes, c.dropout, name=f"{name}_heads")
        trained = train_frame_encoder(
            encoder,
            heads,
            (train_frames.inputs, train_frames.valid, targets["train"]),
            (valid_frames.inputs, valid_frames.valid, targets["valid"]) if valid_frames else None,
            segments=min(c.segments, spec.num_frames),
            epochs=c.epochs,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            augment=c.augment,
            seed=config.train.seed,
            verbose=2 if config.train.verbose else 0,
        )
    save_frame_encoder(
        run_dir,
        encoder,
        name,
        heads,
        weights=f.weights
        or ("trained on the training clips" if trained else "random (not trained)"),
        training=trained,
    )
    if trained:  # into a scratch folder first: a killed run leaves no half-written CNN
        scratch = cached.with_name(cached.name + ".part")
        scratch.mkdir(parents=True, exist_ok=True)
        copy_frame_encoder(run_dir, scratch, name)
        shutil.rmtree(cached, ignore_errors=True)
        scratch.rename(cached)
    return encoder, train_frames


class ActionTask(Task):
    name = "action"
    summary = "action recognition: frame CNN features -> GRU -> softmax (default: rendered mocap)"
    config_class = ActionConfig
    presets = PRESETS
    predict_inputs = "video files"

    def demo_inputs(self, config) -> list[str]:
        """Test clips of the embedded corpus as `config` renders it (by `train`)."""
        from suite.video import corpus

        d = config.data
        counts = {"train": d.train_clips, "valid": d.valid_clips, "test": d.test_clips}
        root = corpus_root(d.render_frames, d.render_size, counts, d.seed, corpus.ACTIONS)
        paths = []
        for label in ("walk", "cartwheel", "punch"):
            params = corpus.sample_params(label, "test", 0, d.seed, d.render_frames, d.render_size)
            paths.append(str(root / "test" / label / f"{params.clip_id}{corpus.VIDEO_SUFFIX}"))
        return paths

    # -- data ----------------------------------------------------------------------------
    def prepare(self, config, data):
        source = self._source(config, data)
        source.check(config.data.workers)
        return source.summary()

    def _source(self, config, data):
        return load_source(data, config.data, progress=config.train.verbose != 0)

    def datasets(self, config, data, run_dir):
        spec = frames_spec(config)
        source = self._source(config, data)
        labels = save_labels(run_dir, source.labels)
        encoder, train_frames = run_frame_encoder(config, run_dir, source, labels, spec)
        d, t = config.data, config.train
        progress = t.verbose != 0
        has_valid = bool(source.clips("valid"))
        if config.model.finetune:
            train = train_frames or clip_frames(source, "train", labels, spec, d.workers, progress)
            valid = (
                clip_frames(source, "valid", labels, spec, d.workers, progress)
                if has_valid
                else None
            )
        else:
            batch = config.frames.batch_size

            def features(split):
                return clip_features(
                    source, split, labels, spec, encoder, batch, d.workers, progress
                )

            train = features("train")
            valid = features("valid") if has_valid else None
        return (
            make_dataset(train, t.batch_size, shuffle=True, seed=t.seed),
            make_dataset(valid, t.batch_size) if valid is not None else None,
        )

    # -- model ---------------------------------------------------------------------------
    def build_model(self, config, run_dir):
        labels = load_labels(run_dir)
        m = config.model
        encoder = load_frame_encoder(run_dir)
        model = ActionClassifier(
            len(labels),
            cell=m.cell,
            units=m.units,
            num_layers=m.num_layers,
            bidirectional=m.bidirectional,
            dropout=m.dropout,
            input_dropout=m.input_dropout,
            frame_encoder=encoder if m.finetune else None,
        )
        return model.build_for(feature_dim=encoder.feature_dim)

    def compile_args(self, config):
        import keras

        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(),
            "metrics": [
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
            ],
        }

    # -- evaluation ----------------------------------------------------------------------
    def test_arrays(self, model, config, data, run_dir, split="test"):
        """The split as the model's input arrays (cached features, or frames to fine-tune)."""
        labels = load_labels(run_dir)
        source = self._source(config, data)
        spec = frames_spec(config)
        d, progress = config.data, config.train.verbose != 0
        if model.frame_encoder is not None:
            return labels, clip_frames(source, split, labels, spec, d.workers, progress)
        encoder = load_frame_encoder(run_dir)
        arrays = clip_features(
            source, split, labels, spec, encoder, config.frames.batch_size, d.workers, progress
        )
        return labels, arrays

    def evaluate(self, model, config, data, run_dir):
        run_dir = Path(run_dir)
        labels, arrays = self.test_arrays(model, config, data, run_dir)
        # One-element tuples: Keras would read a pair as (inputs, targets).
        dataset = make_dataset(arrays, config.train.batch_size).map(lambda inputs, _: (inputs,))
        probabilities = model.predict(dataset, verbose=0)
        truth = arrays.labels
        ranked = np.argsort(-probabilities, axis=1)
        predicted = ranked[:, 0]
        top5 = (ranked[:, :5] == truth[:, None]).any(axis=1)
        classes = len(labels)
        confusion = np.zeros((classes, classes), np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        per_class = {
            label: float(confusion[i, i] / confusion[i].sum())
            for i, label in enumerate(labels)
            if confusion[i].sum()
        }
        scores = {
            "clips": int(len(truth)),
            "top1": float((predicted == truth).mean()),
            "top5": float(top5.mean()),
            "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        }
        scores.update({f"accuracy_{label}": value for label, value in per_class.items()})
        with open(run_dir / "predictions.tsv", "w", encoding="utf-8") as handle:
            handle.write("clip\tlabel\tpredicted\tconfidence\n")
            for clip, true, guess, probs in zip(
                arrays.clips, truth, predicted, probabilities, strict=True
            ):
                where = clip.path or clip.key
                handle.write(f"{where}\t{labels[true]}\t{labels[guess]}\t{probs[guess]:.4f}\n")
        with open(run_dir / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *labels])
            for label, row in zip(labels, confusion, strict=True):
                writer.writerow([label, *row.tolist()])
        draw_confusion_matrix(confusion, labels, run_dir / "confusion_matrix.png")
        return scores

    # -- export and serving --------------------------------------------------------------
    def export(self, model, config, run_dir, out_dir):
        labels = load_labels(run_dir)
        spec = frames_spec(config)
        encoder = model.frame_encoder or load_frame_encoder(run_dir)
        names = tf.constant(labels)

        def classify(frames, length):
            picked, valid = prepare_batch(frames, length, spec)
            inputs = picked if model.frame_encoder is not None else encoder(picked, training=False)
            probabilities = model((inputs, valid), training=False)
            return {
                "label": tf.gather(names, tf.argmax(probabilities, axis=-1)),
                "probabilities": probabilities,
            }

        signature = [
            tf.TensorSpec([None, None, None, None, 3], tf.uint8, name="frames"),
            tf.TensorSpec([None], tf.int32, name="length"),
        ]
        track = [model] if model.frame_encoder is not None else [encoder, model]
        path = export_endpoint(out_dir, classify, signature, track=track)
        write_metadata(
            path,
            {
                "task": self.name,
                "labels": labels,
                "num_frames": spec.num_frames,
                "size": spec.size,
                "sampling": spec.sampling,
                "stride": spec.stride,
                "cnn": encoder.architecture,
            },
        )
        return path

    def predict(self, export_dir, inputs, batch_size: int = 8):
        outputs = serve_videos(self.name, export_dir, inputs, batch_size)
        return [
            f"{path}\t{out['label'].decode('utf-8')}\t{out['probabilities'].max():.4f}"
            for path, out in zip(inputs, outputs, strict=True)
        ]


def serve_videos(task_name: str, export_dir, inputs, batch_size: int = 8) -> list[dict]:
    """Runs a frames-in export on video files; one dict of output arrays per file.

    Every file is opened first, so that all bad ones are named before any work is done;
    then clips of one frame size are decoded and run a batch at a time (padded to the
    longest), so memory holds one batch of clips, not all of them.
    """
    if not inputs:
        raise DataError("no video files given")
    check_exported_by(export_dir, task_name)
    shapes, errors = frame_shapes(inputs)
    if errors:
        raise problems_error(f"{len(errors)} of {len(inputs)} video files unusable", errors, None)
    by_size: dict[tuple, list[int]] = {}
    for number, shape in enumerate(shapes):
        by_size.setdefault(shape, []).append(number)
    endpoint = load_endpoint(export_dir)
    results: list[dict | None] = [None] * len(inputs)
    for numbers in by_size.values():
        for start in range(0, len(numbers), batch_size):
            chunk = numbers[start : start + batch_size]
            clips = [read_video(inputs[n]) for n in chunk]
            longest = max(len(clip) for clip in clips)
            batch = np.zeros((len(chunk), longest, *clips[0].shape[1:]), np.uint8)
            for row, clip in enumerate(clips):
                batch[row, : len(clip)] = clip
            length = np.array([len(clip) for clip in clips], np.int32)
            out = endpoint(frames=tf.constant(batch), length=tf.constant(length))
            out = {key: value.numpy() for key, value in out.items()}
            for row, n in enumerate(chunk):
                results[n] = {key: value[row] for key, value in out.items()}
    return results


def draw_confusion_matrix(confusion: np.ndarray, labels: list[str], path: Path) -> Path:
    """Draws a confusion matrix (rows: true class, columns: predicted) as a PNG.

    Cells are shaded by the share of their row and show their count.
    """
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    counts = [[str(int(n)) if n else "" for n in row] for row in confusion]
    return draw_heatmap(confusion / totals, labels, labels, path, counts, "true", "predicted")
