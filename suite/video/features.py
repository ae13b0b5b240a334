"""Frame features: a CNN run on every sampled frame, its features cached per clip.

The frame CNN is a `keras.applications` backbone (MobileNetV3, EfficientNet, MobileNet,
ResNet50; `ARCHITECTURES`) or `convnet`, a plain 5-layer CNN. Where its weights come from
(`frames.weights`):

- a path: ImageNet (or other) weights for `frames.cnn` from a local file, loaded by
  `keras.applications` (the `*_notop` file of the architecture); nothing is downloaded.
- `imagenet`: Keras downloads the weights, which works only where the internet is reachable
  (or the file is in `~/.keras/models` already); otherwise a `DataError` says what to do.
- empty (the default): no package ships ImageNet weights, so the CNN starts from random
  weights and is **trained on the training clips' frames first**, as a Temporal Segment
  Network (Wang et al., 2016): each step takes `cnn.segments` frames of a clip (one at a
  random position in each equal part of it), runs the CNN on every frame on its own,
  averages the frame features and classifies the action from that average. Clips are
  augmented (crop, flip, brightness, contrast, greyscale); the epoch with the best
  validation accuracy is kept and its batch-norm statistics are recalibrated. The CNN is
  then frozen and the recurrent classifier trains on its cached features. With a weights
  file the CNN stays frozen unless `cnn.tune_pretrained` is set. `model.finetune` instead
  puts the CNN inside the recurrent model and trains both end to end on frames.

Measured on the embedded corpus (2 CPU cores): on plain RGB frames, neither `convnet`
nor MobileNetV3Small / MobileNet v1 leave chance level on held-out camera views within 12
epochs; without augmentation the CNN memorises the clips' random backgrounds rather than
the small figure (about 3 % of the pixels). On frame differences (`frames.modality=diff`,
the default) the static scene cancels out and the moving figure remains: with 100
training clips per action the CNN reaches 66 % on unseen views in 20 epochs, and the GRU
over its features 91 % top-1 (`small` preset; issue 4's note has the run). Differences
lose the figure's colours, which captions name: the captioner's second CNN sees the frame
beside its difference (`rgb_diff`, 6 channels) and learns the colours as extra heads
(`train_frame_encoder` takes any number of them; `ClipHeads`, kept with the CNN, give the
captioner their probabilities).

Frames are prepared by graph code (`prepare_frames`: pick `num_frames` by `length`, resize,
round to uint8) that the training pipeline and the export both run, so a served clip meets
exactly the pixels its training clips had. Features are computed in batches of clips and
cached as one `.npz` per clip under `<data dir>/video/features/<cnn identity>/`, where the
identity hashes the architecture, the input size, the sampling and the CNN's weights: the
recurrent training never recomputes the CNN, and a retrained CNN never meets stale features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from shared.backbones import length_mask, masked_mean
from shared.config import data_dir
from shared.errors import DataError

# name -> (keras.applications constructor, extra kwargs, preprocessing outside the model).
# "builtin": the model rescales [0, 255] input itself; "tf": x / 127.5 - 1; "caffe": BGR
# minus the ImageNet means (what `keras.applications.resnet.preprocess_input` does).
ARCHITECTURES = {
    "mobilenet_v3_small": ("MobileNetV3Small", {"include_preprocessing": True}, "builtin"),
    "mobilenet_v3_small_minimalistic": (
        "MobileNetV3Small",
        {"include_preprocessing": True, "minimalistic": True},
        "builtin",
    ),
    "mobilenet_v3_large": ("MobileNetV3Large", {"include_preprocessing": True}, "builtin"),
    "efficientnet_b0": ("EfficientNetB0", {}, "builtin"),
    "efficientnet_v2_b0": ("EfficientNetV2B0", {"include_preprocessing": True}, "builtin"),
    "mobilenet_v2": ("MobileNetV2", {}, "tf"),
    # MobileNet v1: plain ReLU and batch norm, quick to train from scratch; the quarter
    # width is a small, quickly traced graph for tests and demos.
    "mobilenet_v1": ("MobileNet", {}, "tf"),
    "mobilenet_v1_0.5": ("MobileNet", {"alpha": 0.5}, "tf"),
    "mobilenet_v1_0.25": ("MobileNet", {"alpha": 0.25}, "tf"),
    "resnet50": ("ResNet50", {}, "caffe"),
    # Not from keras.applications: a plain 5-layer CNN that trains from scratch in minutes.
    "convnet": ("convnet", {}, "tf"),
}
SAMPLING_MODES = ("uniform", "strided")
# What the CNN sees of each sampled frame: the frame itself, its difference from the
# previous sampled frame (TSN's RGB-difference modality: the moving figure, not the scene),
# or both as 6 channels (the difference finds the figure, the frame shows its colours).
MODALITIES = ("rgb", "diff", "rgb_diff")
_CAFFE_MEANS = (103.939, 116.779, 123.68)


# -- frame preparation (graph code: training pipeline and export) -----------------------
def sample_positions(length, num_frames: int, mode: str = "uniform", stride: int = 2):
    """Which frames of each clip to take, as `frames.sample_indices` picks them.

    Args:
        length: int [batch], frames in each clip (at least 1).
        num_frames: T, frames to take.
        mode: `uniform` (spread over the clip, repeating frames of a short one) or
            `strided` (every `stride`-th frame of the window centred in the clip).
    Returns:
        `(indices int32 [batch, T], valid int32 [batch])`: `valid` counts the positions that
        lie inside the clip; a strided window that runs past a short clip's end repeats
        its last frame there, and those steps are masked by the model.
    """
    length = tf.maximum(tf.cast(length, tf.int32), 1)
    steps = tf.range(num_frames)
    if mode == "uniform":
        if num_frames == 1:
            indices = tf.zeros_like(length)[:, None] + steps[None, :]
        else:
            # numpy.linspace's arithmetic (float64 i * step, last = stop) and its rounding
            # (half to even), so that the graph picks what `frames.sample_indices` picks.
            last = tf.cast(length - 1, tf.float64)[:, None]
            step = last / float(num_frames - 1)
            positions = tf.cast(steps, tf.float64)[None, :] * step
            positions = tf.concat([positions[:, :-1], last], axis=1)
            indices = tf.cast(tf.round(positions), tf.int32)
        valid = tf.fill(tf.shape(length), num_frames)
    elif mode == "strided":
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        span = (num_frames - 1) * stride + 1
        start = tf.maximum(0, (length - span) // 2)
        raw = start[:, None] + stride * steps[None, :]
        indices = tf.minimum(raw, length[:, None] - 1)
        valid = tf.minimum(num_frames, (length - 1 - start) // stride + 1)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; have {', '.join(SAMPLING_MODES)}")
    return indices, valid


def resize_frames(frames, size: int):
    """Frames [..., height, width, 3] of any size and dtype -> uint8 [..., size, size, 3].

    Bilinear with antialiasing (area-like when shrinking), rounded to uint8 so that the
    pipeline's cached frames and the export's frames are the same pixels.
    """
    shape = tf.shape(frames)
    images = tf.reshape(frames, tf.concat([[-1], shape[-3:]], axis=0))
    resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.reshape(resized, tf.concat([shape[:-3], [size, size, 3]], axis=0))


def modality_channels(modality: str) -> int:
    """Channels of the images the CNN sees for `modality` (3, or 6 for `rgb_diff`)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; have {', '.join(MODALITIES)}")
    return 6 if modality == "rgb_diff" else 3


def frame_differences(frames):
    """uint8 [batch, time, S, S, 3] -> uint8 images of `(x[t] - x[t-1]) / 2 + 128`.

    The first step (nothing before it) is flat grey. A step only looks back, so valid steps
    never see the padding after a clip's end.
    """
    frames = tf.cast(frames, tf.float32)
    previous = tf.concat([frames[:, :1], frames[:, :-1]], axis=1)
    difference = tf.round((frames - previous) / 2.0 + 128.0)
    return tf.cast(tf.clip_by_value(difference, 0.0, 255.0), tf.uint8)


def prepare_frames(
    frames, length, num_frames: int, size: int, mode="uniform", stride=2, modality="rgb"
):
    """Raw clips -> what the frame CNN sees.

    Args:
        frames: uint8 [batch, time, height, width, 3], right-padded in time.
        length: int [batch], valid frames of each clip (clamped to [1, time]).
        modality: `rgb` (the sampled frames), `diff` (`frame_differences` of them) or
            `rgb_diff` (both, the frame's channels first).
    Returns:
        `(uint8 [batch, num_frames, size, size, C], valid int32 [batch])`, C as
        `modality_channels` says.
    """
    modality_channels(modality)  # validates
    frames = tf.convert_to_tensor(frames)
    time = tf.shape(frames)[1]
    length = tf.clip_by_value(tf.cast(length, tf.int32), 1, tf.maximum(time, 1))
    indices, valid = sample_positions(length, num_frames, mode, stride)
    picked = resize_frames(tf.gather(frames, indices, batch_dims=1), size)
    if modality == "diff":
        return frame_differences(picked), valid
    if modality == "rgb_diff":
        return tf.concat([picked, frame_differences(picked)], axis=-1), valid
    return picked, valid


# -- the CNN ----------------------------------------------------------------------------
def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise DataError(
            f"unknown frame CNN {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )


def plain_convnet(size: int, widths=(32, 64, 128, 128, 256), channels: int = 3) -> keras.Model:
    """Conv-BN-ReLU blocks (3x3; stride 2 but for the fourth), global max pooling."""
    inputs = keras.Input((size, size, channels), name="images")
    x = inputs
    for number, width in enumerate(widths):
        stride = 1 if number == 3 else 2
        x = layers.Conv2D(width, 3, stride, "same", use_bias=False, name=f"conv{number}")(x)
        x = layers.BatchNormalization(name=f"bn{number}")(x)
        x = layers.ReLU(name=f"relu{number}")(x)
    outputs = layers.GlobalMaxPooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="convnet")


@keras.saving.register_keras_serializable(package="rnnsuite")
class FrameEncoder(layers.Layer):
    """A `keras.applications` CNN applied to every frame of a clip.

    Args:
        architecture: a key of `ARCHITECTURES` (e.g. `"mobilenet_v3_small"`).
        size: frames are `size` x `size` (see `prepare_frames`).
        channels: 3, or 6 for `rgb_diff` frames (a CNN trained from scratch only: pretrained
            weights expect 3).

    Call arguments:
        frames: `[batch, time, size, size, channels]`, uint8 or float in [0, 255].
        length: optional int `[batch]`, each clip's valid frames. With it, only those go
            through the CNN and padded steps get zero features, so padding changes nothing,
            also in training, where batch norm's statistics would otherwise include padded
            frames. Without it, every frame is encoded.

    Returns:
        Features `[batch, time, feature_dim]` (the CNN's globally pooled output: average for
        `keras.applications`, max for `convnet`).

    Example:
        >>> encoder = FrameEncoder("mobilenet_v3_small", size=64)
        >>> encoder(np.zeros((2, 5, 64, 64, 3), "uint8")).shape
        TensorShape([2, 5, 576])
    """

    def __init__(self, architecture="mobilenet_v3_small", size=112, channels=3, **kwargs):
        super().__init__(**kwargs)
        _check_architecture(architecture)
        self.architecture, self.size, self.channels = architecture, size, channels
        constructor, extra, self._preprocessing = ARCHITECTURES[architecture]
        if channels != 3 and self._preprocessing == "caffe":
            raise DataError(f"{architecture} takes RGB images only (3 channels, BGR means)")
        if constructor == "convnet":
            self.cnn = plain_convnet(size, channels=channels)
        else:
            self.cnn = getattr(keras.applications, constructor)(
                input_shape=(size, size, channels),
                include_top=False,
                weights=None,
                pooling="avg",
                **extra,
            )
        self.feature_dim = int(self.cnn.output_shape[-1])

    def build(self, input_shape):
        self.built = True

    def _preprocess(self, images):
        if self._preprocessing == "tf":
            return images / 127.5 - 1.0
        if self._preprocessing == "caffe":
            return images[..., ::-1] - ops.convert_to_tensor(_CAFFE_MEANS, images.dtype)
        return images

    def embed_images(self, images, training=None):
        """Features `[n, feature_dim]` of images `[n, size, size, channels]`."""
        images = self._preprocess(ops.cast(images, "float32"))
        return self.cnn(images, training=training)

    def call(self, frames, length=None, training=None):
        shape = ops.shape(frames)
        images = ops.reshape(frames, (-1, self.size, self.size, self.channels))
        if length is None:
            features = self.embed_images(images, training=training)
        else:
            valid = tf.where(ops.reshape(length_mask(length, shape[1]), (-1,)))
            features = self.embed_images(tf.gather_nd(images, valid), training=training)
            features = tf.scatter_nd(valid, features, (shape[0] * shape[1], self.feature_dim))
        return ops.reshape(features, (shape[0], shape[1], self.feature_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.feature_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "architecture": self.architecture,
            "size": self.size,
            "channels": self.channels,
        }


def build_frame_encoder(
    architecture: str, size: int, weights: str = "", channels: int = 3
) -> FrameEncoder:
    """A built `FrameEncoder` with random weights, weights from a file, or `imagenet`.

    Raises:
        DataError: for an unknown architecture, a missing or mismatched weights file,
            `imagenet` weights that cannot be downloaded here, or weights for 6 channels.
    """
    _check_architecture(architecture)
    if weights and channels != 3:
        raise DataError(
            f"frames.weights: pretrained weights take RGB frames, not {channels} channels; "
            "use frames.modality=rgb or diff with them, or train the CNN (frames.weights='')"
        )
    encoder = FrameEncoder(architecture, size, channels, name="frame_encoder")
    encoder.build((None, None, size, size, channels))
    if not weights:
        return encoder
    constructor, extra, _ = ARCHITECTURES[architecture]
    if weights == "imagenet" and constructor == "convnet":
        raise DataError("frames.cnn=convnet has no ImageNet weights; pick a keras.applications CNN")
    if weights == "imagenet":
        try:
            reference = getattr(keras.applications, constructor)(
                input_shape=(size, size, 3),
                include_top=False,
                weights="imagenet",
                pooling="avg",
                **extra,
            )
        except Exception as error:  # noqa: BLE001 (URL errors, HTTP errors, timeouts)
            raise DataError(
                f"could not get the ImageNet weights of {architecture} ({error}); this machine "
                "has no internet: download the `*_notop` weights file where it is reachable and "
                "pass it with --set frames.weights=PATH, or leave frames.weights empty to train "
                "the frame CNN on the training clips"
            ) from None
        encoder.cnn.set_weights(reference.get_weights())
        return encoder
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such weights file (frames.weights)")
    try:
        encoder.cnn.load_weights(str(path))
    except Exception as error:  # noqa: BLE001 (h5py, shape and layer-count mismatches)
        raise DataError(
            f"{path}: cannot load it into {architecture} without its top "
            f"({str(error).splitlines()[0][:200]}); is it the `*_notop` file of this architecture?"
        ) from None
    return encoder


def weights_digest(encoder: FrameEncoder) -> str:
    """A hash of the encoder's architecture, size and every weight value."""
    digest = hashlib.sha1(f"{encoder.architecture}:{encoder.size}".encode())
    # 6-channel CNNs differ in their first kernel's shape, which the values below miss.
    if encoder.channels != 3:
        digest.update(f":{encoder.channels}".encode())
    for weight in encoder.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


# -- training the CNN on clips (Temporal Segment Network) --------------------------------
@keras.saving.register_keras_serializable(package="rnnsuite")
class ClipHeads(keras.Model):
    """The frame CNN's classifiers: a clip's classes from its frames' features.

    TSN's consensus: the mean feature of the valid frames, layer norm, dropout, then one
    softmax per head (the action, a colour, ...). `train_frame_encoder` trains them with the
    CNN; `posteriors` turns a clip's features into what the heads say, e.g. the figure's
    colours for the captioner without the rest of what the features know.

    Args:
        classes: `{head: number of classes}`.
        dropout: before the heads, in training.

    Call arguments:
        features: `[batch, time, feature_dim]`.
        valid: frames per clip `[batch]`; None: all of them.

    Returns:
        `{head: probabilities [batch, classes]}`.
    """

    def __init__(self, classes: dict[str, int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.dropout = dict(classes), dropout
        # CNN features come in any scale (ReLU6-bounded, unbounded, max-pooled): normalised,
        # the classifier starts near uniform instead of confidently wrong.
        self.norm = layers.LayerNormalization(name="norm")
        self.drop = layers.Dropout(dropout, name="dropout")
        self.heads = [
            layers.Dense(count, activation="softmax", name=head)
            for head, count in self.classes.items()
        ]

    def call(self, features, valid=None, training=None):
        mask = None if valid is None else length_mask(valid, ops.shape(features)[1])
        pooled = self.drop(self.norm(masked_mean(features, mask)), training=training)
        return {head: layer(pooled) for head, layer in zip(self.classes, self.heads, strict=True)}

    def posteriors(self, features, valid):
        """Every head's probabilities side by side, the same at every frame: `[batch, time,
        sum of classes]`, in the shape of frame features so a recurrent model can read them."""
        features = ops.cast(features, self.compute_dtype)
        probabilities = ops.concatenate(list(self(features, valid).values()), axis=-1)
        return ops.expand_dims(probabilities, 1) * ops.ones_like(features[..., :1])

    def build_for(self, feature_dim: int) -> ClipHeads:
        """Creates the variables (before loading weights)."""
        self(ops.zeros((1, 1, feature_dim)))
        return self

    @property
    def width(self) -> int:
        return sum(self.classes.values())

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "dropout": self.dropout}


def _mean_accuracy(logs: dict, prefix: str = "val_") -> float | None:
    """The mean of the `accuracy` entries of `logs` that start with `prefix` (None if none)."""
    values = [
        value
        for name, value in logs.items()
        if name.startswith(prefix)
        and name.endswith("accuracy")
        and (prefix or not name.startswith("val_"))
    ]
    return float(np.mean(values)) if values else None


class _KeepBest(keras.callbacks.Callback):
    """Restores the weights of the epoch with the best mean accuracy at the end of training.

    `prefix` picks the logs: `val_` for the validation accuracies, "" for the training ones.
    """

    def __init__(self, prefix="val_"):
        super().__init__()
        self.prefix, self.best, self.weights, self.best_epoch = prefix, -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = _mean_accuracy(logs or {}, self.prefix)
        if value is not None and value > self.best:
            self.best, self.weights, self.best_epoch = value, self.model.get_weights(), epoch + 1

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


def _batch_norms(encoder: FrameEncoder) -> list:
    return [layer for layer in encoder.cnn.layers if isinstance(layer, layers.BatchNormalization)]


def recalibrate_batch_norm(encoder: FrameEncoder, dataset, batches: int = 50) -> int:
    """Sets every batch norm's moving statistics to their mean over `batches` batches.

    "Precise BN": a short training run leaves moving averages that lag behind the weights;
    averaging the batch statistics of the final weights over clean training frames gives
    inference the statistics it will meet. Returns the number of batches used.
    """
    norms = _batch_norms(encoder)
    if not norms:
        return 0
    momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        # Bypasses Keras attribute tracking: the variable must not join the layer's weights.
        object.__setattr__(layer, "momentum", momentum)

    @tf.function
    def update(frames):
        encoder(frames, training=True)

    used = 0
    try:
        for frames, _ in dataset.take(batches):
            momentum.assign(used / (used + 1))  # a running mean of the batch statistics
            update(frames)
            used += 1
    finally:
        for layer, value in zip(norms, saved, strict=True):
            object.__setattr__(layer, "momentum", value)
    return used


def segment_positions(valid, segments: int, random: bool):
    """One frame position in each of `segments` equal parts of `[0, valid)` (TSN sampling)."""
    valid = tf.cast(tf.maximum(valid, 1), tf.float32)
    edges = tf.linspace(0.0, 1.0, segments + 1) * valid
    width = edges[1:] - edges[:-1]
    offset = tf.random.uniform([segments]) if random else tf.fill([segments], 0.5)
    positions = tf.cast(tf.floor(edges[:-1] + offset * width), tf.int32)
    return tf.clip_by_value(positions, 0, tf.cast(valid, tf.int32) - 1)


def augment_clip(frames, greyscale: float = 0.15):
    """One random crop, flip and colour change for all frames of a clip [K, S, S, C] float.

    The colour change (contrast, brightness, and greyscale with probability `greyscale`)
    touches the first 3 channels only: the frame of `rgb_diff` input, not its difference.
    """
    size = tf.shape(frames)[1]
    scale = tf.random.uniform([], 0.8, 1.0)
    aspect = tf.random.uniform([], 0.85, 1.0 / 0.85)
    height = tf.minimum(1.0, scale * tf.sqrt(aspect))
    width = tf.minimum(1.0, scale / tf.sqrt(aspect))
    top = tf.random.uniform([], 0.0, 1.0 - height + 1e-6)
    left = tf.random.uniform([], 0.0, 1.0 - width + 1e-6)
    box = tf.stack([top, left, top + height, left + width])
    count = tf.shape(frames)[0]
    frames = tf.image.crop_and_resize(
        frames, tf.tile(box[None], [count, 1]), tf.range(count), tf.stack([size, size])
    )
    frames = tf.cond(
        tf.random.uniform([]) < 0.5, lambda: tf.reverse(frames, axis=[2]), lambda: frames
    )
    rgb, rest = frames[..., :3], frames[..., 3:]
    contrast = tf.random.uniform([], 0.75, 1.25)
    brightness = tf.random.uniform([], -30.0, 30.0)
    mean = tf.reduce_mean(rgb, axis=[1, 2, 3], keepdims=True)
    rgb = (rgb - mean) * contrast + mean + brightness
    grey = tf.reduce_sum(rgb * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    rgb = tf.cond(
        tf.random.uniform([]) < greyscale, lambda: tf.tile(grey, [1, 1, 1, 3]), lambda: rgb
    )
    return tf.clip_by_value(tf.concat([rgb, rest], axis=-1), 0.0, 255.0)


def segment_dataset(
    frames, valid, labels, segments, batch_size, training, seed=0, augment=None, greyscale=0.15
):
    """Batches of `(segment frames float32 [B, K, S, S, C], labels)` from an array of clips.

    `frames` is uint8 [N, T, S, S, C], in memory or a `numpy.memmap`; `labels` an int array
    [N] or a dict of them (one per output head). `training` shuffles and draws random
    positions in the segments; `augment` (default: `training`) also changes crop, flip and
    colours (greyscale with probability `greyscale`).
    """
    augment = training if augment is None else augment
    count = len(valid)
    valid = np.asarray(valid, np.int32)
    labels = tf.nest.map_structure(lambda ids: tf.constant(np.asarray(ids, np.int32)), labels)
    shape = frames.shape[1:]

    def fetch(index):
        return np.asarray(frames[int(index)])

    def load(index):
        clip = tf.numpy_function(fetch, [index], tf.uint8)
        clip = tf.ensure_shape(clip, shape)
        positions = segment_positions(tf.gather(valid, index), segments, training)
        picked = tf.cast(tf.gather(clip, positions), tf.float32)
        if augment:
            picked = augment_clip(picked, greyscale)
        return picked, tf.nest.map_structure(lambda ids: tf.gather(ids, index), labels)

    dataset = tf.data.Dataset.range(count)
    if training:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_frame_encoder(
    encoder: FrameEncoder,
    num_classes: int | dict[str, int] | ClipHeads,
    train: tuple,
    valid: tuple | None = None,
    segments: int = 4,
    epochs: int = 10,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    dropout: float = 0.3,
    augment: bool = True,
    seed: int = 0,
    verbose: int = 2,
) -> dict:
    """Trains `encoder` in place as a Temporal Segment Network classifier.

    One head classifies the action; more heads (`num_classes` as a dict `{head: classes}`,
    labels as a dict of arrays alike) make it multi-task, e.g. the figure's colours beside
    the action, so that the features carry what a captioner needs to say. Passing
    `ClipHeads` trains them in place too, to be kept with the CNN. A label of -1 is
    unknown and adds no loss. The epoch with the best mean validation accuracy over the
    heads is kept. Batch norms train with momentum 0.9 (the 0.999 of some architectures
    suits ImageNet's long schedules, not a few epochs) and are recalibrated on clean frames.

    Args:
        train, valid: `(frames uint8 [N, T, S, S, C], valid frames [N], labels)`, labels
            an int array [N] (one head) or a dict of them keyed like `num_classes`.
        dropout: before the heads built here (`ClipHeads` bring their own).
    Returns:
        A summary: epochs, the best epoch and its validation accuracy (per head too), the
        last train accuracy.
    """
    if isinstance(num_classes, int):  # one head: the action
        num_classes = {"action": num_classes}
        train = (*train[:2], {"action": train[2]})
        valid = (*valid[:2], {"action": valid[2]}) if valid else None
    classifier = num_classes
    if not isinstance(classifier, ClipHeads):
        classifier = ClipHeads(num_classes, dropout, name="heads")
    heads = classifier.classes
    size = encoder.size
    for layer in _batch_norms(encoder):
        layer.momentum = 0.9
    inputs = keras.Input((segments, size, size, encoder.channels), dtype="float32", name="segments")
    model = keras.Model(inputs, classifier(encoder(inputs)), name="segment_network")

    # Colours are labels here: no augmentation may turn a clip grey.
    greyscale = 0.15 if list(heads) == ["action"] else 0.0
    train_ds = segment_dataset(
        *train, segments, batch_size, True, seed, augment=augment, greyscale=greyscale
    )
    valid_ds = segment_dataset(*valid, segments, batch_size, False) if valid else None
    steps = max(1, epochs * int(train_ds.cardinality()))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=0.01, warmup_target=learning_rate, warmup_steps=min(100, steps // 10)
    )
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=1e-4, clipnorm=1.0),
        loss={head: keras.losses.SparseCategoricalCrossentropy(ignore_class=-1) for head in heads},
        metrics={head: ["accuracy"] for head in heads},
    )
    keep = _KeepBest("val_" if valid_ds is not None else "")
    history = model.fit(
        train_ds,
        validation_data=valid_ds,
        epochs=epochs,
        callbacks=[keep],
        shuffle=False,  # the dataset shuffles
        verbose=verbose,
    )
    clean = segment_dataset(*train, segments, batch_size, True, seed + 1, augment=False)
    recalibrate_batch_norm(encoder, clean)
    summary = {}
    if valid_ds is not None:
        scores = model.evaluate(valid_ds, verbose=0, return_dict=True)
        summary["recalibrated_val_accuracy"] = _mean_accuracy(scores, prefix="")
        if len(heads) > 1:
            summary["recalibrated_val_accuracy_per_head"] = {
                head: float(scores[f"{head}_accuracy"]) for head in heads
            }
    last = {name: values[-1] for name, values in history.history.items()}
    return {
        **summary,
        "epochs": epochs,
        "heads": heads,
        "best_epoch": keep.best_epoch,
        ("best_val_accuracy" if valid_ds is not None else "best_accuracy"): float(keep.best),
        "last_accuracy": _mean_accuracy(last, prefix=""),
    }


# -- feature cache ----------------------------------------------------------------------
def sampling_tag(num_frames: int, mode: str, stride: int, modality: str = "rgb") -> str:
    tag = f"{num_frames}{mode}" + (f"{stride}" if mode == "strided" else "")
    return tag if modality == "rgb" else f"{tag}-{modality}"


class FeatureCache:
    """One `.npz` per clip (`features` float32 [T, D], `valid`, `label`) under a folder per CNN."""

    def __init__(self, encoder: FrameEncoder, num_frames, mode, stride, modality="rgb", root=None):
        root = Path(root) if root is not None else data_dir() / "video" / "features"
        sampling = sampling_tag(num_frames, mode, stride, modality)
        self.identity = (
            f"{encoder.architecture}-{encoder.size}px-{sampling}-{weights_digest(encoder)}"
        )
        self.folder = root / self.identity

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> tuple[np.ndarray, int, str]:
        """`(features [T, D], valid frames, label)` of a cached clip."""
        with np.load(self.path(key)) as stored:
            return stored["features"], int(stored["valid"]), str(stored["label"])

    def save(self, key: str, features: np.ndarray, valid: int, label: str = "") -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(
            partial,
            features=features.astype(np.float32),
            valid=np.int32(valid),
            label=np.str_(label),
        )
        os.replace(partial, path)  # a reader never sees half a file


def encode_clips(
    encoder: FrameEncoder,
    cache: FeatureCache,
    stream: Iterable[tuple[str, np.ndarray, int, str]],
    total: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> int:
    """Runs the CNN on batches of prepared clips and caches each clip's features.

    Args:
        stream: `(key, frames uint8 [T, S, S, 3], valid, label)` of the clips to compute.
    Returns:
        How many clips were computed.
    """
    from tqdm.auto import tqdm

    run = tf.function(lambda frames: encoder(frames, training=False), reduce_retracing=True)
    bar = tqdm(total=total, desc="frame features", unit="clip", disable=not progress or None)
    computed = 0
    batch: list[tuple[str, np.ndarray, int, str]] = []

    def flush():
        nonlocal computed
        features = run(tf.constant(np.stack([item[1] for item in batch]))).numpy()
        for (key, _, valid, label), clip_features in zip(batch, features, strict=True):
            cache.save(key, clip_features, valid, label)
        computed += len(batch)
        bar.update(len(batch))
        batch.clear()

    for item in stream:
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return computed
