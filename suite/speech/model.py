"""`SpeechRecognizer`: in-graph features → conv front end → shared backbone → CTC head."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from shared.backbones import RecurrentBackbone, length_mask
from shared.ctc import CTCHead, ctc_decode, ctc_loss
from suite.speech.features import SpeechFeatures


@keras.saving.register_keras_serializable(package="rnnsuite")
class SpecAugment(layers.Layer):
    """SpecAugment time and frequency masks, applied only in training.

    Args:
        time_masks, time_width: how many time masks, each up to `time_width` frames (and
            at most a fifth of the utterance).
        freq_masks, freq_width: how many frequency masks, each up to `freq_width` bins
            (and at most a fifth of the feature width: 7 of MFCC + deltas' 39).
    """

    def __init__(self, time_masks=2, time_width=20, freq_masks=2, freq_width=6, **kwargs):
        super().__init__(**kwargs)
        self.time_masks = time_masks
        self.time_width = time_width
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.seed_generator = keras.random.SeedGenerator(17)

    def _masks(self, count, width, size, limit, batch):
        """`[batch, size]` float keep-mask with `count` random zeroed spans per row."""
        keep = tf.ones([batch, size])
        positions = tf.range(size)[None, :]
        for _ in range(count):
            seed = self.seed_generator.next()
            widths = tf.random.stateless_uniform([batch, 1], seed[:2], 0, width + 1, tf.int32)
            widths = tf.minimum(widths, tf.maximum(limit[:, None], 0))
            starts = tf.cast(
                tf.random.stateless_uniform([batch, 1], seed[:2] + 1)
                * tf.cast(tf.maximum(limit[:, None] * 5 - widths, 1), tf.float32),
                tf.int32,
            )
            inside = (positions >= starts) & (positions < starts + widths)
            keep *= 1.0 - tf.cast(inside, tf.float32)
        return keep

    def call(self, features, frames, training=None):
        if not training:
            return features
        batch, time, width = tf.shape(features)[0], tf.shape(features)[1], tf.shape(features)[2]
        time_keep = self._masks(self.time_masks, self.time_width, time, frames // 5, batch)
        freq_limit = tf.fill([batch], width)
        freq_keep = self._masks(self.freq_masks, self.freq_width, width, freq_limit // 5, batch)
        keep = time_keep[:, :, None] * freq_keep[:, None, :]
        return features * tf.cast(keep, features.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
        }


@keras.saving.register_keras_serializable(package="rnnsuite")
class SpeechRecognizer(keras.Model):
    """CTC speech recognizer over raw 16 kHz waveforms.

    `SpeechFeatures` (MFCC or log-mel, normalised) → SpecAugment (training only) → 2-D
    convolutions that subsample time by `time_stride` → a bidirectional `RecurrentBackbone`
    → `CTCHead` over the character vocabulary (blank last).

    Call arguments:
        inputs: dict with `waveform` float32 `[batch, samples]` and `length` int `[batch]`.

    Returns:
        dict with `logits` `[batch, frames, num_classes]` and `length` `[batch]` (valid
        frames after subsampling). Training minimises CTC (`compute_loss`) against labels
        of vocabulary ids padded with 0.
    """

    def __init__(
        self,
        num_classes,
        features=None,
        spec_augment=None,
        conv_filters=32,
        time_stride=2,
        cell="gru",
        units=192,
        num_layers=3,
        dropout=0.1,
        residual=True,
        layer_norm=False,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.features_config = dict(features or {})
        self.spec_augment_config = dict(spec_augment or {})
        self.conv_filters = conv_filters
        self.time_stride = time_stride
        self.cell = cell
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.residual = residual
        self.layer_norm = layer_norm
        self.use_cudnn = use_cudnn

        # float32 under mixed precision too: the features are the export's (a float32
        # graph), and a waveform rounded to 8 bits of mantissa would give others.
        self.featurizer = SpeechFeatures(**self.features_config, name="features", dtype="float32")
        self.augment = SpecAugment(**self.spec_augment_config, name="spec_augment")
        self.convs = [
            layers.Conv2D(
                conv_filters,
                (5, 5),
                strides=(time_stride, 2),
                padding="same",
                activation="relu",
                name="conv_0",
            ),
            layers.Conv2D(
                conv_filters,
                (3, 3),
                strides=(1, 2),
                padding="same",
                activation="relu",
                name="conv_1",
            ),
        ]
        self.projection = layers.Dense(units, activation="relu", name="projection")
        self.backbone = RecurrentBackbone(
            cell,
            units,
            num_layers,
            bidirectional=True,
            dropout=dropout,
            residual=residual,
            layer_norm=layer_norm,
            use_cudnn=use_cudnn,
            name="backbone",
        )
        self.head = CTCHead(num_classes, name="ctc_head")

    def call(self, inputs, training=None):
        features, frames = self.featurizer(inputs["waveform"], inputs["length"], training=training)
        features = self.augment(features, frames, training=training)
        # A recording's outputs must not depend on the batch's padding. So time is padded
        # to a multiple of the stride (then "same" padding puts the same zeros before the
        # first frame whatever the batch's length), and each convolution's outputs past
        # the recording are zeroed, as "same" padding would see them alone.
        stride = self.time_stride
        padding = (stride - tf.shape(features)[1] % stride) % stride
        features = tf.pad(features, [[0, 0], [0, padding], [0, 0]])
        length = (frames + stride - 1) // stride
        mask = length_mask(length, tf.shape(features)[1] // stride)  # every layer's steps
        x = features[..., None]
        for conv in self.convs:
            x = conv(x) * tf.cast(mask, x.dtype)[:, :, None, None]
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], x.shape[2] * x.shape[3]])
        x = self.projection(x)
        x = self.backbone(x, mask=mask, training=training)
        return {"logits": self.head(x), "length": length}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = tf.cast(y, tf.int32)
        label_length = tf.reduce_sum(tf.cast(labels > 0, tf.int32), axis=1)
        loss = ctc_loss(labels, y_pred["logits"], label_length, y_pred["length"])
        return tf.reduce_mean(loss)

    def decode(self, inputs, method="greedy", beam_width=8):
        """Vocabulary ids `[batch, labels]` (0-padded) and their lengths, as graph code."""
        outputs = self(inputs, training=False)
        return ctc_decode(outputs["logits"], outputs["length"], method, beam_width)

    def build_for(self, samples=16000):
        self({"waveform": tf.zeros([1, samples]), "length": tf.constant([samples])})
        return self

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "features": self.features_config,
            "spec_augment": self.spec_augment_config,
            "conv_filters": self.conv_filters,
            "time_stride": self.time_stride,
            "cell": self.cell,
            "units": self.units,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "residual": self.residual,
            "layer_norm": self.layer_norm,
            "use_cudnn": self.use_cudnn,
        }
