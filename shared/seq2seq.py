"""Attentive sequence decoding: the `AttentiveDecoder` layer and graph-mode search.

Training is teacher-forced and parallel over time (`AttentiveDecoder.__call__`).
Inference advances the same weights one token at a time (`AttentiveDecoder.step`) inside
`greedy_decode` or `beam_search`, both plain `tf.while_loop`s: they run in a `tf.function`
and export in a SavedModel.

Decoding conventions: token id 0 is padding and is never generated. The `tokens` a search
returns include `end_id` when a hypothesis finished, `lengths` count it, and every position
after it is 0; a hypothesis that never produced `end_id` has length `max_length`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from shared.attention import make_attention
from shared.backbones import RecurrentBackbone, masked_mean

# Stands in for -inf in float32 log-probs: sums of a few stay finite, so no NaNs appear.
_NEG = -1e9


@keras.saving.register_keras_serializable(package="rnnsuite")
class AttentiveDecoder(layers.Layer):
    """An attentive recurrent decoder over an encoder memory.

    Embedding (id 0 masked) → unidirectional `RecurrentBackbone` whose initial states come
    from a bridge (`Dense` + tanh per state of every layer) over the masked mean of the
    memory → attention with the recurrent outputs as queries over the memory →
    `Dense(vocab_size)` logits on `[rnn_output, context]`.

    With `attentional_layer`, Luong's attentional hidden state `Dense(units, tanh)` on
    `[rnn_output, context]` comes before the logits. It is off by default: on Bible verses
    a translator with it stayed on the unigram plateau (always the most frequent token)
    for hundreds of steps where the same model without it fitted a batch in 300.

    Args:
        vocab_size: output vocabulary size (logit width); ids also index the embedding.
        embedding_dim: width of the target token embedding.
        cell: `"rnn"`, `"lstm"` or `"gru"`.
        units: width of the recurrent layers, the attention and the attentional layer.
        num_layers: recurrent layers in the stack.
        attention: `"bahdanau"` or `"luong"`.
        dropout: dropout between recurrent layers and before the logits.
        residual: residual connections between recurrent layers (from the second on).
        layer_norm: layer-normalise every recurrent layer's output.
        use_cudnn: passed to the backbone; exports use `False`.
        attentional_layer: a `Dense(units, tanh)` between `[rnn_output, context]` and
            the logits (Luong et al. 2015).

    Call arguments:
        target_in: int `[batch, time]`, the target shifted right (starting with the start
            id); id 0 is padding.
        memory: the encoder outputs, `[batch, source_time, features]`.
        memory_mask: optional boolean `[batch, source_time]`, True on valid source steps;
            taken from the Keras mask of `memory` when omitted. Padded memory steps never
            influence the output. Pass it by keyword when it may be None (Keras fills a
            None mask argument itself, and a positional None then arrives twice).
        training: whether dropout is active.

    Returns:
        Logits `[batch, time, vocab_size]`, carrying the mask `target_in != 0` so that Keras
        losses and metrics skip padded targets.

    Example:
        >>> decoder = AttentiveDecoder(vocab_size=12, embedding_dim=8, units=16)
        >>> memory = keras.ops.ones((2, 5, 10))
        >>> decoder(keras.ops.ones((2, 4), dtype="int32"), memory).shape
        TensorShape([2, 4, 12])
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim=64,
        cell="lstm",
        units=128,
        num_layers=1,
        attention="bahdanau",
        dropout=0.0,
        residual=False,
        layer_norm=False,
        use_cudnn="auto",
        attentional_layer=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.attentional_layer = attentional_layer
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.units = units
        self.num_layers = num_layers
        self.attention = attention
        self.dropout = dropout
        self.residual = residual
        self.layer_norm = layer_norm
        self.use_cudnn = use_cudnn
        self.supports_masking = True

        policy = self.dtype_policy  # sublayers compute in the decoder's (mixed) precision
        self.embedding = layers.Embedding(
            vocab_size, embedding_dim, mask_zero=True, name="embedding", dtype=policy
        )
        self.backbone = RecurrentBackbone(
            cell,
            units=units,
            num_layers=num_layers,
            bidirectional=False,
            dropout=dropout,
            residual=residual,
            layer_norm=layer_norm,
            return_sequences=True,
            use_cudnn=use_cudnn,
            name="backbone",
            dtype=policy,
        )
        states_per_layer = 2 if cell == "lstm" else 1
        self.bridges = [
            [
                layers.Dense(units, activation="tanh", name=f"bridge_{index}_{state}", dtype=policy)
                for state in range(states_per_layer)
            ]
            for index in range(num_layers)
        ]
        self.attention_layer = make_attention(attention, units, name="attention", dtype=policy)
        self.combine = (
            layers.Dense(units, activation="tanh", name="combine", dtype=policy)
            if attentional_layer
            else None
        )
        self.output_dropout = layers.Dropout(dropout, name="output_dropout", dtype=policy)
        # Under a mixed policy the logits are computed in float32, as softmax needs.
        mixed = policy.compute_dtype != policy.variable_dtype
        self.projection = layers.Dense(
            vocab_size, name="logits", dtype="float32" if mixed else policy
        )

    def build(self, target_in_shape, memory_shape, memory_mask_shape=None):
        batch, time = tuple(target_in_shape)[:2]
        memory_shape = tuple(memory_shape)
        self.embedding.build((batch, time))
        self.backbone.build((batch, time, self.embedding_dim))
        for bridge in self.bridges:
            for dense in bridge:
                dense.build((batch, memory_shape[-1]))
        self.attention_layer.build((batch, time, self.units), memory_shape)
        hidden = self.units + memory_shape[-1]
        if self.combine is not None:
            self.combine.build((batch, time, hidden))
            hidden = self.units
        self.projection.build((batch, time, hidden))
        self.built = True

    def call(self, target_in, memory, memory_mask=None, training=None):
        embedded = self.embedding(target_in)
        target_mask = ops.not_equal(target_in, 0)
        states = self.initial_states(memory, memory_mask)
        outputs = self.backbone(embedded, mask=target_mask, training=training, initial_state=states)
        # Masks go by keyword: Keras fills a `values_mask` left at None from the Keras mask
        # of `values`, and a positional None would then be passed twice.
        context, _ = self.attention_layer(outputs, memory, values_mask=memory_mask)
        return self._logits(outputs, context, training)

    def compute_mask(self, inputs, previous_mask):
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, target_in_shape, memory_shape, memory_mask_shape=None):
        return (*tuple(target_in_shape)[:2], self.vocab_size)

    def _logits(self, outputs, context, training=None):
        hidden = ops.concatenate([outputs, ops.cast(context, outputs.dtype)], -1)
        if self.combine is not None:
            hidden = self.combine(hidden)
        return self.projection(self.output_dropout(hidden, training=training))

    # -- step-wise use -------------------------------------------------------------------
    def initial_states(self, memory, memory_mask=None):
        """Decoder states for the first step: one list of tensors per recurrent layer."""
        summary = masked_mean(memory, memory_mask)
        return [[dense(summary) for dense in bridge] for bridge in self.bridges]

    def decoding_context(self, memory, memory_mask):
        """The context nest for `decoder_step_fn`: memory, mask and pre-projected keys."""
        return (memory, memory_mask, self.attention_layer.project_keys(memory))

    def step(self, tokens, states, memory, memory_mask=None, keys=None):
        """One decoding step, computing exactly what `call` computes at that position.

        Args:
            tokens: int `[batch]`, the previous token (the start id on the first step).
            states: as returned by `initial_states` or a previous `step`.
            memory: `[batch, source_time, features]`.
            memory_mask: optional boolean `[batch, source_time]`.
            keys: optional `decoding_context(...)[2]`, saves re-projecting the memory.

        Returns:
            `(logits [batch, vocab_size], new_states, attention_weights [batch, source_time])`.
        """
        # A [batch, 1] lookup as in `call`; slicing also drops the padding mask, which
        # means nothing for a single step and would only trip the cells' mask warning.
        embedded = self.embedding(ops.expand_dims(tokens, 1))[:, 0]
        outputs, new_states = self.backbone.step(embedded, states)
        context, weights = self.attention_layer(outputs, memory, values_mask=memory_mask, keys=keys)
        return self._logits(outputs, context, training=False), new_states, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embedding_dim=self.embedding_dim,
            cell=self.cell,
            units=self.units,
            num_layers=self.num_layers,
            attention=self.attention,
            dropout=self.dropout,
            residual=self.residual,
            layer_norm=self.layer_norm,
            use_cudnn=self.use_cudnn,
            attentional_layer=self.attentional_layer,
        )
        return config


def decoder_step_fn(decoder):
    """Adapts `AttentiveDecoder.step` to the `step_fn` of `greedy_decode`/`beam_search`.

    The context is `(memory, memory_mask)` or `decoder.decoding_context(memory, memory_mask)`
    (which adds the projected keys, so they are computed once instead of every step).
    """

    def step_fn(tokens, states, context):
        memory, memory_mask, *keys = context
        logits, new_states, _ = decoder.step(
            tokens, states, memory, memory_mask, keys=keys[0] if keys else None
        )
        return logits, new_states

    return step_fn


def decode(
    decoder, memory, memory_mask, start_id, end_id, max_length, beam_width=1, length_penalty=0.6
):
    """Decodes an `AttentiveDecoder` over `memory`: greedy for `beam_width == 1`, else beam search.

    `memory_mask` may be None (every step valid). Returns `(tokens, lengths, scores)` as the
    search does: greedy scores are summed log-probs, beam scores are length-normalised.
    """
    _check_built(decoder)
    batch_size = tf.shape(memory)[0]
    if memory_mask is None:  # the search tiles every context tensor, so None won't do
        memory_mask = tf.ones(tf.shape(memory)[:2], tf.bool)
    states = decoder.initial_states(memory, memory_mask)
    context = decoder.decoding_context(memory, memory_mask)
    step_fn = decoder_step_fn(decoder)
    if beam_width == 1:
        return greedy_decode(step_fn, states, context, batch_size, start_id, end_id, max_length)
    return beam_search(
        step_fn,
        states,
        context,
        batch_size,
        start_id,
        end_id,
        max_length,
        beam_width,
        length_penalty,
    )


def _check_built(decoder):
    if not decoder.built:
        raise ValueError(
            "The decoder is not built: call it once on a batch (or load its weights into "
            "a built one) before decoding; its layers are made when it is built."
        )


# -- search ------------------------------------------------------------------------------
def greedy_attention(decoder, memory, memory_mask, start_id, end_id, max_length):
    """Greedy decoding of one sequence, eagerly, with the attention weights of each step.

    For reports (attention heatmaps); it picks what `greedy_decode` picks.
    Args:
        memory: `[1, source_time, features]`; `memory_mask` `[1, source_time]` or None.
    Returns:
        `(token ids: list, end_id included when reached; weights [steps, source_time])`.
    """
    _check_built(decoder)
    states = decoder.initial_states(memory, memory_mask)
    keys = decoder.attention_layer.project_keys(memory)
    token, ids, rows = tf.constant([start_id]), [], []
    for _ in range(max_length):
        logits, states, weights = decoder.step(token, states, memory, memory_mask, keys)
        # Padding (id 0) is never generated, as in the graph searches.
        token = tf.argmax(logits[:, 1:], axis=-1, output_type=tf.int32) + 1
        ids.append(int(token[0]))
        rows.append(ops.convert_to_numpy(weights[0]))
        if ids[-1] == end_id:
            break
    return ids, np.stack(rows)


def gnmt_length_penalty(lengths, alpha):
    """GNMT length penalty `((5 + length) / 6) ** alpha`; scores are divided by it."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, tf.cast(alpha, tf.float32))


def _relaxed(value):
    """A while-loop shape invariant leaving the leading (batch or batch×beam) axis free."""
    shape = value.shape
    return shape if shape.rank in (None, 0) else tf.TensorShape([None]).concatenate(shape[1:])


def _write(buffer, index, values):
    """`buffer[..., index] = values` for an int buffer `[..., max_length]`."""
    hot = tf.one_hot(index, tf.shape(buffer)[-1], dtype=buffer.dtype)
    return buffer + values[..., None] * hot


def _log_probs(logits):
    """Float32 log-probabilities with padding (id 0) banned: it is never a real output."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return tf.where(tf.range(tf.shape(log_probs)[-1]) == 0, _NEG, log_probs)


def greedy_decode(step_fn, initial_state, context, batch_size, start_id, end_id, max_length):
    """Greedy decoding with a `tf.while_loop` (runs eagerly, in `tf.function` and exported).

    Args:
        step_fn: `step_fn(tokens [N], state, context) -> (logits [N, vocab], new_state)`.
        initial_state: nest of tensors with leading batch axis.
        context: nest of tensors with leading batch axis, passed unchanged every step.
        batch_size: int or scalar int tensor.
        start_id: token fed on the first step.
        end_id: token that finishes a hypothesis.
        max_length: most tokens generated (end_id included); int or scalar int tensor.

    Returns:
        `tokens` int32 `[batch, steps]` (`steps <= max_length`: the loop stops once every row
        finished), `end_id` included and 0 after it; `lengths` int32 `[batch]` (end_id
        counted); `scores` float32 `[batch]`, the summed log-probabilities of the tokens.
    """
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    tokens = tf.fill([batch_size], tf.constant(start_id, tf.int32))
    finished = tf.zeros([batch_size], tf.bool)
    lengths = tf.zeros([batch_size], tf.int32)
    scores = tf.zeros([batch_size], tf.float32)
    output = tf.zeros([batch_size, max_length], tf.int32)

    def cond(step, tokens, state, finished, lengths, scores, output):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(step, tokens, state, finished, lengths, scores, output):
        logits, state = step_fn(tokens, state, context)
        log_probs = _log_probs(logits)
        best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        best_log_prob = tf.gather(log_probs, best, batch_dims=1)
        alive = tf.logical_not(finished)
        best = tf.where(alive, best, 0)
        scores += tf.where(alive, best_log_prob, 0.0)
        lengths += tf.cast(alive, tf.int32)
        finished = tf.logical_or(finished, tf.equal(best, end_id))
        return step + 1, best, state, finished, lengths, scores, _write(output, step, best)

    loop_vars = (tf.constant(0), tokens, initial_state, finished, lengths, scores, output)
    steps, _, _, _, lengths, scores, output = tf.while_loop(
        cond,
        body,
        loop_vars,
        shape_invariants=tf.nest.map_structure(_relaxed, loop_vars),
        maximum_iterations=max_length,
    )
    return output[:, :steps], lengths, scores


def beam_search(
    step_fn,
    initial_state,
    context,
    batch_size,
    start_id,
    end_id,
    max_length,
    beam_width=4,
    length_penalty=0.6,
):
    """Beam search with GNMT length normalisation, as one `tf.while_loop`.

    Hypotheses are ranked by `log_prob / ((5 + length) / 6) ** length_penalty` (length
    counts end_id; `length_penalty=0` ranks by summed log-prob). A finished hypothesis
    keeps its slot and its score while it stays among the best `beam_width`; the search
    stops after `max_length` steps, or earlier once every example's best hypothesis is
    finished and no live beam can still overtake it (always the case when every beam
    finished). With `beam_width=1` it picks exactly the tokens of `greedy_decode`.

    Args:
        step_fn: `step_fn(tokens [N], state, context) -> (logits [N, vocab], new_state)`,
            called with `N = batch * beam_width`.
        initial_state: nest of tensors with leading batch axis; tiled per beam and
            reordered by each beam's parent every step.
        context: nest of tensors with leading batch axis; tiled per beam only.
        batch_size: int or scalar int tensor.
        start_id: token fed on the first step.
        end_id: token that finishes a hypothesis.
        max_length: most tokens generated (end_id included); int or scalar int tensor.
        beam_width: hypotheses kept per example (a Python int).
        length_penalty: the GNMT alpha, >= 0 (the early stop relies on it).

    Returns:
        The best hypothesis per example: `tokens` int32 `[batch, steps]` with end_id
        included and 0 after it, `lengths` int32 `[batch]` (end_id counted) and `scores`
        float32 `[batch]`, the length-normalised log-probability.
    """
    width = int(beam_width)
    if width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    alpha = length_penalty
    max_length = tf.convert_to_tensor(max_length, tf.int32)

    def tile(value):
        return tf.repeat(value, width, axis=0)

    def by_parent(value, parents):
        """Reorders a `[batch * width, ...]` tensor so row (b, k) holds beam (b, parents[b, k])."""
        shape = tf.shape(value)
        split = tf.reshape(value, tf.concat([[batch_size, width], shape[1:]], 0))
        return tf.reshape(tf.gather(split, parents, batch_dims=1), shape)

    state = tf.nest.map_structure(tile, initial_state)
    context = tf.nest.map_structure(tile, context)
    tokens = tf.fill([batch_size * width], tf.constant(start_id, tf.int32))
    # Only the first beam is live at the start, so the first step expands one hypothesis.
    log_probs = tf.tile(tf.constant([[0.0] + [_NEG] * (width - 1)]), [batch_size, 1])
    scores = tf.zeros([batch_size, width], tf.float32)
    finished = tf.zeros([batch_size, width], tf.bool)
    lengths = tf.zeros([batch_size, width], tf.int32)
    output = tf.zeros([batch_size, width, max_length], tf.int32)

    best_possible_penalty = gnmt_length_penalty(max_length, alpha)

    def cond(step, tokens, state, log_probs, scores, finished, lengths, output):
        # Log-probs only fall and the penalty is largest at max_length, so no live beam can
        # end above log_prob / penalty(max_length): once the best beam is finished and at
        # least that good, further steps cannot change the result.
        alive_bound = tf.reduce_max(tf.where(finished, _NEG, log_probs), axis=1)
        settled = tf.logical_and(
            finished[:, 0], scores[:, 0] >= alive_bound / best_possible_penalty
        )
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(settled)))

    def body(step, tokens, state, log_probs, scores, finished, lengths, output):
        logits, state = step_fn(tokens, state, context)
        vocab = tf.shape(logits)[-1]
        step_log_probs = tf.reshape(_log_probs(logits), [batch_size, width, vocab])
        # A finished beam has a single continuation, padding at no cost, so it survives
        # with its score unchanged while it stays in the top `width`.
        pad_only = tf.where(tf.range(vocab) == 0, 0.0, _NEG)
        step_log_probs = tf.where(finished[..., None], pad_only, step_log_probs)
        total = log_probs[..., None] + step_log_probs
        candidate_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        normalised = total / gnmt_length_penalty(candidate_lengths, alpha)[..., None]
        scores, index = tf.math.top_k(tf.reshape(normalised, [batch_size, -1]), k=width)
        parents, tokens = index // vocab, index % vocab
        log_probs = tf.gather(tf.reshape(total, [batch_size, -1]), index, batch_dims=1)
        was_finished = tf.gather(finished, parents, batch_dims=1)
        lengths = tf.gather(candidate_lengths, parents, batch_dims=1)
        finished = tf.logical_or(was_finished, tf.equal(tokens, end_id))
        output = _write(tf.gather(output, parents, batch_dims=1), step, tokens)
        state = tf.nest.map_structure(lambda value: by_parent(value, parents), state)
        return (
            step + 1,
            tf.reshape(tokens, [-1]),
            state,
            log_probs,
            scores,
            finished,
            lengths,
            output,
        )

    loop_vars = (tf.constant(0), tokens, state, log_probs, scores, finished, lengths, output)
    steps, _, _, _, scores, _, lengths, output = tf.while_loop(
        cond,
        body,
        loop_vars,
        shape_invariants=tf.nest.map_structure(_relaxed, loop_vars),
        maximum_iterations=max_length,
    )
    # top_k sorts every step, so beam 0 is the best hypothesis.
    return output[:, 0, :steps], lengths[:, 0], scores[:, 0]


def sequence_log_prob(decoder, memory, memory_mask, tokens, lengths, start_id):
    """Summed log-probability of `tokens` `[batch, time]` (first `lengths` positions) under
    teacher forcing, i.e. the raw score a search assigns to that hypothesis."""
    tokens = tf.cast(tokens, tf.int32)
    start = tf.fill([tf.shape(tokens)[0], 1], tf.constant(start_id, tf.int32))
    target_in = tf.concat([start, tokens[:, :-1]], axis=1)
    logits = decoder(target_in, memory, memory_mask=memory_mask, training=False)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    token_log_probs = tf.gather(log_probs, tokens, batch_dims=2)
    valid = tf.sequence_mask(lengths, tf.shape(tokens)[1], dtype=tf.float32)
    return tf.reduce_sum(token_log_probs * valid, axis=1)
