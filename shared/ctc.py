"""Connectionist temporal classification over a `Vocabulary` id space.

Logits have `num_classes = vocabulary.size + 1` classes: ids `0 … vocabulary.size - 1` are
the vocabulary's, and the blank is the LAST class (`blank_index = num_classes - 1`), which
is TensorFlow's native CTC convention and never collides with padding id 0. Labels are
padded with 0 and always come with their true lengths; padding is never a valid target, and
the decoders never emit it.

Decoders return vocabulary ids, so `vocabulary.decode(ids)` turns them into text; they are
TensorFlow graph ops and work inside `tf.function` and exported SavedModels (beam search
has a CPU kernel only; TensorFlow places it there).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from shared.vocab import PAD_ID


def num_ctc_classes(vocabulary_size):
    """Number of logits a CTC head needs for a vocabulary of `vocabulary_size` ids."""
    return int(vocabulary_size) + 1


def blank_index(num_classes):
    """Index of the CTC blank: the last class."""
    return int(num_classes) - 1


def ctc_loss(labels, logits, label_length, logit_length):
    """Per-example CTC negative log-likelihood.

    Args:
        labels: int `[batch, max_label_length]`, vocabulary ids, padded (with anything; 0
            by convention) beyond `label_length`.
        logits: float `[batch, time, num_classes]`, unnormalised, blank last. Computed in
            float32 whatever their dtype, so float16 / mixed-precision models are safe.
        label_length: int `[batch]`, true label lengths.
        logit_length: int `[batch]`, true numbers of frames.

    Returns:
        float32 `[batch]`. An example whose frames cannot hold its label (fewer frames than
        labels plus the blanks needed between repeats) has loss 0 and no gradient, as
        PyTorch's `zero_infinity`: one such utterance must not turn a batch into NaNs.
    """
    # Sparse labels select TensorFlow's C++ CTC kernel (blank last, as here); dense labels
    # would select a graph-op implementation 10x slower on a CPU, a third of a speech
    # training step.
    sparse_labels = tf.RaggedTensor.from_tensor(
        tf.cast(labels, tf.int32), lengths=tf.cast(label_length, tf.int32)
    ).to_sparse()
    loss = tf.compat.v1.nn.ctc_loss(
        sparse_labels,
        tf.cast(logits, tf.float32),
        tf.cast(logit_length, tf.int32),
        ignore_longer_outputs_than_inputs=True,
        time_major=False,
    )
    # Labels longer than the frames are ignored above; repeats that need more blanks than
    # there are frames give inf, whose gradient the kernel leaves at 0.
    return tf.where(tf.math.is_finite(loss), loss, 0.0)


def _time_major(logits):
    """float32 time-major logits in which padding (id 0) can never win."""
    logits = tf.cast(logits, tf.float32)
    # Padding is never a target, so its logit is untrained noise; ruling it out keeps the
    # decoded ids free of 0 and their padding unambiguous.
    num_classes = tf.shape(logits)[-1]
    never = tf.one_hot(PAD_ID, num_classes, on_value=-1e9, off_value=0.0)
    return tf.transpose(logits + never, [1, 0, 2])


def _to_padded(sparse):
    ragged = tf.RaggedTensor.from_sparse(sparse)
    ids = tf.cast(ragged.to_tensor(default_value=PAD_ID), tf.int32)
    return ids, tf.cast(ragged.row_lengths(), tf.int32)


def _unless_empty(logits, decode):
    """`decode()`, or nothing for an empty batch, which tf.nn's CTC decoders refuse."""

    def nothing():
        return tf.zeros([0, 0], tf.int32), tf.zeros([0], tf.int32)

    return tf.cond(tf.shape(logits)[0] > 0, decode, nothing)


def ctc_greedy_decode(logits, logit_length):
    """Best-path decoding: argmax per frame, repeats merged, blanks removed.

    Args:
        logits: float `[batch, time, num_classes]`, blank last.
        logit_length: int `[batch]`, true numbers of frames.

    Returns:
        `(ids, lengths)`: int32 `[batch, max_length]` vocabulary ids padded with 0, and
        int32 `[batch]` lengths.
    """

    def decode():
        decoded, _ = tf.nn.ctc_greedy_decoder(
            _time_major(logits), tf.cast(logit_length, tf.int32), merge_repeated=True
        )
        return _to_padded(decoded[0])

    return _unless_empty(logits, decode)


def ctc_beam_decode(logits, logit_length, beam_width=8):
    """Prefix beam search; returns the most probable labelling.

    Args:
        logits: float `[batch, time, num_classes]`, blank last.
        logit_length: int `[batch]`, true numbers of frames.
        beam_width: beams kept per step.

    Returns:
        `(ids, lengths)` as `ctc_greedy_decode`.
    """

    def decode():
        decoded, _ = tf.nn.ctc_beam_search_decoder(
            _time_major(logits), tf.cast(logit_length, tf.int32), beam_width=beam_width, top_paths=1
        )
        return _to_padded(decoded[0])

    return _unless_empty(logits, decode)


def ctc_decode(logits, logit_length, method="greedy", beam_width=8):
    """`ctc_greedy_decode` (`method="greedy"`) or `ctc_beam_decode` (`method="beam"`)."""
    if method == "greedy":
        return ctc_greedy_decode(logits, logit_length)
    if method == "beam":
        return ctc_beam_decode(logits, logit_length, beam_width=beam_width)
    raise ValueError(f"Unknown CTC decoding method {method!r}; choose 'greedy' or 'beam'.")


@keras.saving.register_keras_serializable(package="rnnsuite")
class CTCHead(keras.layers.Layer):
    """Projects features to CTC logits (`num_classes`, blank last), always in float32.

    Args:
        num_classes: `vocabulary.size + 1` (see `num_ctc_classes`).

    Call arguments:
        inputs: `[batch, time, features]`. Returns float32 `[batch, time, num_classes]`;
            an incoming mask is passed on unchanged.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.supports_masking = True
        # float32 logits keep softmax/CTC stable under a mixed-precision policy.
        self.dense = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

    @property
    def blank_index(self):
        return blank_index(self.num_classes)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
