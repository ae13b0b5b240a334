"""Attention over an encoder memory: additive (Bahdanau) and multiplicative (Luong).

Both layers share one calling convention, `attention(query, values, values_mask=None)`,
and return `(context, weights)`. The key projection depends only on `values`, so a
decoder running token by token computes it once with `project_keys` and passes it back
as `keys=` on every step.
"""

from __future__ import annotations

import keras
from keras import layers, ops


def large_negative(dtype):
    """A score that makes softmax weight ~0 and stays finite in `dtype` (float16 included)."""
    return -3e4 if keras.backend.standardize_dtype(dtype) == "float16" else -1e9


class _Attention(layers.Layer):
    """The masking, softmax and single-step handling shared by both scores."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def project_keys(self, values):
        """Keys for `values` `[batch, time, features]`; pass them as `keys=` to reuse."""
        raise NotImplementedError

    def _score(self, query, keys):
        """Scores `[batch, query_time, key_time]` of `query` against projected `keys`."""
        raise NotImplementedError

    def call(self, query, values, values_mask=None, keys=None):
        single_step = len(query.shape) == 2
        if single_step:
            query = ops.expand_dims(query, 1)
        if keys is None:
            keys = self.project_keys(values)
        scores = self._score(query, keys)
        if values_mask is not None:
            valid = ops.expand_dims(ops.cast(values_mask, "bool"), 1)
            scores = ops.where(valid, scores, ops.cast(large_negative(scores.dtype), scores.dtype))
            weights = ops.softmax(scores, axis=-1)
            # A row whose keys are all masked would otherwise spread weight over padding.
            weights = weights * ops.cast(valid, weights.dtype)
        else:
            weights = ops.softmax(scores, axis=-1)
        context = ops.matmul(weights, ops.cast(values, weights.dtype))
        if single_step:
            context, weights = ops.squeeze(context, 1), ops.squeeze(weights, 1)
        return context, weights

    def compute_mask(self, inputs, previous_mask):
        # The context follows the query's time axis, so it keeps the query's mask.
        return previous_mask, None

    def compute_output_shape(
        self, query_shape, values_shape, values_mask_shape=None, keys_shape=None
    ):
        if len(query_shape) == 2:
            return (query_shape[0], values_shape[-1]), (query_shape[0], values_shape[1])
        return (*query_shape[:2], values_shape[-1]), (*query_shape[:2], values_shape[1])


@keras.saving.register_keras_serializable(package="rnnsuite")
class BahdanauAttention(_Attention):
    """Additive attention: `score(q, k) = vᵀ tanh(W_q q + W_k k + b)`.

    Args:
        units: width of the hidden layer inside the score.

    Call arguments:
        query: `[batch, query_time, query_dim]`, or `[batch, query_dim]` for one decoder
            step (the outputs then have no query-time axis).
        values: the memory, `[batch, key_time, value_dim]`.
        values_mask: optional boolean `[batch, key_time]`, True on valid steps; taken from
            the Keras mask of `values` when omitted (pass it by keyword when it may be
            None). Masked keys get exactly zero weight, so the context never depends on
            padded values; a row with no valid key gets all-zero weights and a zero context.
        keys: optional `project_keys(values)`, to skip re-projecting the memory every step.

    Returns:
        `(context [batch, query_time, value_dim], weights [batch, query_time, key_time])`.

    Example:
        >>> attention = BahdanauAttention(16)
        >>> context, weights = attention(keras.ops.ones((2, 3, 8)), keras.ops.ones((2, 5, 6)))
        >>> context.shape, weights.shape
        (TensorShape([2, 3, 6]), TensorShape([2, 3, 5]))
    """

    def __init__(self, units=128, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query_dense = layers.Dense(
            units, use_bias=False, name="query", dtype=self.dtype_policy
        )
        self.key_dense = layers.Dense(units, use_bias=True, name="key", dtype=self.dtype_policy)
        self.score_dense = layers.Dense(1, use_bias=False, name="score", dtype=self.dtype_policy)

    def build(self, query_shape, values_shape, values_mask_shape=None, keys_shape=None):
        self.query_dense.build(tuple(query_shape))
        self.key_dense.build(tuple(values_shape))
        self.score_dense.build((None, None, None, self.units))
        self.built = True

    def project_keys(self, values):
        return self.key_dense(values)

    def _score(self, query, keys):
        hidden = ops.tanh(ops.expand_dims(self.query_dense(query), 2) + ops.expand_dims(keys, 1))
        return ops.squeeze(self.score_dense(hidden), -1)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package="rnnsuite")
class LuongAttention(_Attention):
    """Multiplicative ("general") attention: `score(q, k) = qᵀ W k`, optionally scaled.

    `W` maps the values to the query width, so the keys `W k` are projected once and every
    score is a dot product.

    Args:
        scale: divide scores by `sqrt(query_dim)` (keeps softmax soft for wide queries).

    Call arguments:
        query: `[batch, query_time, query_dim]`, or `[batch, query_dim]` for one decoder
            step (the outputs then have no query-time axis).
        values: the memory, `[batch, key_time, value_dim]`.
        values_mask: optional boolean `[batch, key_time]`, True on valid steps; taken from
            the Keras mask of `values` when omitted (pass it by keyword when it may be
            None). Masked keys get exactly zero weight, so the context never depends on
            padded values; a row with no valid key gets all-zero weights and a zero context.
        keys: optional `project_keys(values)`, to skip re-projecting the memory every step.

    Returns:
        `(context [batch, query_time, value_dim], weights [batch, query_time, key_time])`.

    Example:
        >>> attention = LuongAttention()
        >>> context, weights = attention(keras.ops.ones((2, 8)), keras.ops.ones((2, 5, 6)))
        >>> context.shape, weights.shape
        (TensorShape([2, 6]), TensorShape([2, 5]))
    """

    def __init__(self, scale=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.key_dense = None  # its width is the query's, known at build time

    def build(self, query_shape, values_shape, values_mask_shape=None, keys_shape=None):
        self.query_dim = int(query_shape[-1])
        self.key_dense = layers.Dense(
            self.query_dim, use_bias=False, name="key", dtype=self.dtype_policy
        )
        self.key_dense.build(tuple(values_shape))
        self.built = True

    def project_keys(self, values):
        return self.key_dense(values)

    def _score(self, query, keys):
        scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1)))
        if self.scale:
            scores = scores * ops.cast(self.query_dim**-0.5, scores.dtype)
        return scores

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config


ATTENTIONS = {"bahdanau": BahdanauAttention, "luong": LuongAttention}


def make_attention(kind, units, **kwargs):
    """Builds attention by name: `"bahdanau"` (`units` wide score) or `"luong"`.

    Luong's score projects the keys to the query width, so it does not use `units`.
    """
    if kind == "bahdanau":
        return BahdanauAttention(units, **kwargs)
    if kind == "luong":
        return LuongAttention(**kwargs)
    raise ValueError(f"Unknown attention {kind!r}; choose one of {sorted(ATTENTIONS)}.")
