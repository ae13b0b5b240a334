"""`ActionClassifier`: frame features -> shared `RecurrentBackbone` -> softmax over actions."""

from __future__ import annotations

import keras
from keras import layers, ops

from shared.backbones import RecurrentBackbone, length_mask


@keras.saving.register_keras_serializable(package="rnnsuite")
class ActionClassifier(keras.Model):
    """Classifies a clip from its frames' CNN features with a recurrent backbone.

    Per-frame features (or, with a `frame_encoder`, the frames themselves) go through
    layer norm and dropout, a masked `RecurrentBackbone` that returns its state at each clip's last valid
    step, and a softmax layer.

    Args:
        num_classes: how many actions.
        cell, units, num_layers, bidirectional: the `RecurrentBackbone`.
        dropout: dropout between recurrent layers and before the softmax layer.
        input_dropout: dropout on the frame features (a regulariser for small clip sets).
        frame_encoder: optional `FrameEncoder` run inside the model on frames
            `[batch, time, size, size, channels]` and trained with it (end-to-end fine-tuning);
            without one the model takes features `[batch, time, feature_dim]`.
        use_cudnn: passed to the backbone; exports rebuild with `False` or hide GPUs.

    Call arguments:
        inputs: `(features_or_frames, length)`, `length` int `[batch]`: the valid steps of
            each clip. Steps from `length` on are masked: they never change the output.

    Returns:
        Probabilities `[batch, num_classes]` (float32 also under mixed precision).

    Example:
        >>> import numpy as np
        >>> model = ActionClassifier(15, units=64)
        >>> model((np.zeros((2, 16, 576)), np.array([16, 9]))).shape
        TensorShape([2, 15])
    """

    def __init__(
        self,
        num_classes,
        cell="gru",
        units=128,
        num_layers=1,
        bidirectional=False,
        dropout=0.3,
        input_dropout=0.2,
        frame_encoder=None,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(frame_encoder, dict):
            frame_encoder = keras.saving.deserialize_keras_object(frame_encoder)
        self.num_classes = num_classes
        self.cell = cell
        self.units = units
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.frame_encoder = frame_encoder
        self.use_cudnn = use_cudnn
        # Per-frame layer norm: CNN features come in any scale (ReLU6-bounded, unbounded).
        self.feature_norm = layers.LayerNormalization(name="feature_norm")
        self.feature_dropout = layers.Dropout(input_dropout, name="feature_dropout")
        self.backbone = RecurrentBackbone(
            cell,
            units,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            return_sequences=False,
            use_cudnn=use_cudnn,
            name="backbone",
        )
        self.head_dropout = layers.Dropout(dropout, name="head_dropout")
        self.head = layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")

    def features(self, frames, length=None, training=None):
        """Per-frame features of frames (with a frame encoder) or the features themselves."""
        if self.frame_encoder is None:
            return frames
        return self.frame_encoder(frames, length, training=training)

    def call(self, inputs, training=None):
        x, length = inputs
        x = self.features(x, length, training=training)
        mask = length_mask(length, ops.shape(x)[1])
        x = self.feature_dropout(self.feature_norm(x), training=training)
        state = self.backbone(x, mask=mask, training=training)
        return self.head(self.head_dropout(state, training=training))

    def build_for(self, feature_dim=None, frame_size=None, steps=2):
        """Creates the variables by running on a dummy batch of features (or frames)."""
        if self.frame_encoder is not None:
            size = frame_size or self.frame_encoder.size
            channels = self.frame_encoder.channels
            dummy = ops.zeros((1, steps, size, size, channels), dtype="uint8")
        else:
            dummy = ops.zeros((1, steps, feature_dim))
        self((dummy, ops.convert_to_tensor([steps])), training=False)
        return self

    def get_config(self):
        config = {
            **super().get_config(),
            "num_classes": self.num_classes,
            "cell": self.cell,
            "units": self.units,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "use_cudnn": self.use_cudnn,
        }
        if self.frame_encoder is not None:
            config["frame_encoder"] = keras.saving.serialize_keras_object(self.frame_encoder)
        return config
