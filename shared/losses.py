"""Losses and metrics over padded token sequences (translation, captioning)."""

from __future__ import annotations

import keras
from keras import ops

from shared.vocab import PAD_ID


@keras.saving.register_keras_serializable(package="rnnsuite")
class SequenceCrossentropy(keras.losses.Loss):
    """Token cross-entropy from logits with label smoothing; padding (id 0) costs nothing.

    Returns the per-token loss `[batch, time]` with padded positions zeroed; Keras then
    averages over the valid tokens using the logits' mask.
    """

    def __init__(self, label_smoothing=0.0, name="sequence_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        vocab_size = ops.shape(y_pred)[-1]
        target = ops.one_hot(y_true, vocab_size, dtype=y_pred.dtype)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / ops.cast(
                vocab_size, y_pred.dtype
            )
        loss = keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)
        return loss * ops.cast(ops.not_equal(y_true, PAD_ID), loss.dtype)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="rnnsuite")
def token_accuracy(y_true, y_pred):
    """1.0 where the most likely token is the target, 0.0 elsewhere (padding masked by Keras)."""
    y_true = ops.cast(y_true, "int32")
    predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, y_true), "float32")
