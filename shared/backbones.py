"""Recurrent backbones: one configurable stack of SimpleRNN, LSTM or GRU layers.

Every domain builds its recurrent part from `RecurrentBackbone`; nothing else in the
project stacks recurrent layers by hand.
"""

from __future__ import annotations

import contextlib

import keras
from keras import layers, ops
from keras.src.backend.common import global_state

from shared import recurrent

# `rnn` is the classic Elman cell: h_t = tanh(W_h·h_{t-1} + W_x·x_t + b_h). Keras' layers,
# with the input projection out of the time loop on a CPU (`shared.recurrent`).
CELLS = {"rnn": recurrent.SimpleRNN, "lstm": recurrent.LSTM, "gru": recurrent.GRU}
MERGE_MODES = ("concat", "sum", "ave", "mul")


@contextlib.contextmanager
def _no_object_sharing():
    """Builds layers with Keras' object sharing off, as it is outside `load_model`.

    `load_model` shares objects by Python `id()`, and `Bidirectional` copies its layer by
    serialising it: an `id()` freed and reused during loading made the copy an object seen
    before, so a reloaded model's backward layer could be its forward layer (or another
    layer's). Keras 3.15; `test_bidirectional_layers_are_built_apart_while_loading`.
    """
    key = "shared_objects/id_to_config_map"
    sharing = global_state.get_global_attribute(key)
    global_state.set_global_attribute(key, None)
    try:
        yield
    finally:
        global_state.set_global_attribute(key, sharing)


def length_mask(length, steps):
    """Boolean `[batch, steps]`: True on each row's first `length[row]` steps."""
    return ops.expand_dims(ops.arange(steps), 0) < ops.expand_dims(ops.cast(length, "int32"), 1)


def masked_mean(sequence, mask=None):
    """The mean over time of `sequence` `[batch, time, ...]`, of the steps where `mask`
    `[batch, time]` is true (all of them without a mask; 0 for a sequence with none)."""
    if mask is None:
        return ops.mean(sequence, axis=1)
    weights = ops.cast(mask, sequence.dtype)
    weights = ops.reshape(weights, (*ops.shape(weights), *[1] * (len(sequence.shape) - 2)))
    count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1, sequence.dtype))
    return ops.sum(sequence * weights, axis=1) / count


@keras.saving.register_keras_serializable(package="rnnsuite")
class RecurrentBackbone(layers.Layer):
    """A stack of recurrent layers with optional bidirectionality, residuals and layer norm.

    Args:
        cell: `"rnn"` (SimpleRNN), `"lstm"` or `"gru"`.
        units: units per direction in every layer.
        num_layers: how many recurrent layers are stacked.
        bidirectional: wrap every layer in `keras.layers.Bidirectional`.
        merge_mode: how the two directions are combined (`concat`, `sum`, `ave`, `mul`).
        dropout: dropout on the outputs of every layer but the last.
        recurrent_dropout: dropout on the recurrent state (disables cuDNN).
        residual: add each layer's input to its output from the second layer on (GNMT style);
            the first layer changes the width, so it has no residual.
        layer_norm: layer-normalise every layer's output.
        return_sequences: return every step (`[batch, time, width]`) or only the final
            state (`[batch, width]`, the output at the last valid step; for a bidirectional
            stack the backward direction's final state is its output at step 0).
        use_cudnn: passed to LSTM/GRU (`"auto"`, `True`, `False`); exports use `False`.

    Call arguments:
        inputs: `[batch, time, features]`.
        mask: optional boolean `[batch, time]`, True on valid steps; also taken from an
            upstream `Embedding(mask_zero=True)` or `Masking` layer. Padded steps never
            change any output: padded positions of a sequence output are zeros.
        initial_state: optional list with one state list per layer (unidirectional only).

    Example:
        >>> backbone = RecurrentBackbone("gru", units=64, num_layers=2, bidirectional=True)
        >>> backbone(keras.ops.zeros((2, 7, 13))).shape
        TensorShape([2, 7, 128])
    """

    def __init__(
        self,
        cell="gru",
        units=128,
        num_layers=1,
        bidirectional=False,
        merge_mode="concat",
        dropout=0.0,
        recurrent_dropout=0.0,
        residual=False,
        layer_norm=False,
        return_sequences=True,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"Unknown cell {cell!r}; choose one of {sorted(CELLS)}.")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Unknown merge_mode {merge_mode!r}; choose one of {MERGE_MODES}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        self.cell = cell
        self.units = units
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.merge_mode = merge_mode
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.residual = residual
        self.layer_norm = layer_norm
        self.return_sequences = return_sequences
        self.use_cudnn = use_cudnn
        self.supports_masking = True

        self.recurrent_layers = []
        self.norm_layers = []
        self.dropout_layers = []
        for index in range(num_layers):
            last = index == num_layers - 1
            rnn_kwargs = dict(
                units=units,
                return_sequences=return_sequences or not last,
                recurrent_dropout=recurrent_dropout,
                name=f"{cell}_{index}",
                dtype=self.dtype_policy,
            )
            if cell != "rnn":
                rnn_kwargs["use_cudnn"] = use_cudnn
            rnn = CELLS[cell](**rnn_kwargs)
            if bidirectional:
                with _no_object_sharing():
                    rnn = layers.Bidirectional(
                        rnn,
                        merge_mode=merge_mode,
                        name=f"bi_{cell}_{index}",
                        dtype=self.dtype_policy,
                    )
            self.recurrent_layers.append(rnn)
            self.norm_layers.append(
                layers.LayerNormalization(name=f"norm_{index}", dtype=self.dtype_policy)
                if layer_norm
                else None
            )
            self.dropout_layers.append(
                layers.Dropout(dropout, name=f"dropout_{index}", dtype=self.dtype_policy)
                if dropout and not last
                else None
            )

    @property
    def output_width(self):
        """Width of the features this backbone returns."""
        if self.bidirectional and self.merge_mode == "concat":
            return 2 * self.units
        return self.units

    def _uses_residual(self, index):
        last_returns_state = index == self.num_layers - 1 and not self.return_sequences
        return self.residual and index > 0 and not last_returns_state

    def build(self, input_shape):
        shape = tuple(input_shape)
        for index, rnn in enumerate(self.recurrent_layers):
            rnn.build(shape)
            returns_sequences = self.return_sequences or index < self.num_layers - 1
            out_shape = (
                (*shape[:2], self.output_width)
                if returns_sequences
                else (
                    shape[0],
                    self.output_width,
                )
            )
            if self.norm_layers[index] is not None:
                self.norm_layers[index].build(out_shape)
            shape = out_shape
        self.built = True

    def call(self, inputs, mask=None, training=None, initial_state=None):
        if initial_state is not None and self.bidirectional:
            raise ValueError("initial_state is only supported for unidirectional backbones.")
        x = inputs
        for index, rnn in enumerate(self.recurrent_layers):
            state = None if initial_state is None else initial_state[index]
            y = rnn(x, mask=mask, training=training, initial_state=state)
            if self.norm_layers[index] is not None:
                y = self.norm_layers[index](y)
            if self._uses_residual(index):
                y = x + y
            if self.dropout_layers[index] is not None:
                y = self.dropout_layers[index](y, training=training)
            x = y
        if mask is not None and self.return_sequences:
            # LayerNorm maps the zero outputs of padded steps to its bias: zero them again.
            x = x * keras.ops.cast(keras.ops.expand_dims(mask, -1), x.dtype)
        return x

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (*tuple(input_shape)[:2], self.output_width)
        return (input_shape[0], self.output_width)

    # -- step-wise use (decoders) -------------------------------------------------------
    def initial_states(self, batch_size, dtype="float32"):
        """Zero states for `step`: one list of tensors per layer."""
        self._require_unidirectional()
        states = []
        for rnn in self.recurrent_layers:
            sizes = rnn.cell.state_size
            sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
            states.append([keras.ops.zeros((batch_size, size), dtype=dtype) for size in sizes])
        return states

    def step(self, inputs, states):
        """Advance one time step: `inputs` `[batch, features]`, `states` as `initial_states`.

        Computes exactly what `call` computes at one step (inference mode), so a decoder
        trained on whole sequences can be run token by token.
        """
        self._require_unidirectional()
        x = inputs
        new_states = []
        for index, rnn in enumerate(self.recurrent_layers):
            y, state = rnn.cell(x, states[index], training=False)
            new_states.append(list(state) if isinstance(state, (list, tuple)) else [state])
            if self.norm_layers[index] is not None:
                y = self.norm_layers[index](y)
            if self._uses_residual(index):
                y = x + y
            x = y
        return x, new_states

    def _require_unidirectional(self):
        if self.bidirectional:
            raise ValueError("Step-wise use needs a unidirectional backbone.")

    def get_config(self):
        config = super().get_config()
        config.update(
            cell=self.cell,
            units=self.units,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            merge_mode=self.merge_mode,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            residual=self.residual,
            layer_norm=self.layer_norm,
            return_sequences=self.return_sequences,
            use_cudnn=self.use_cudnn,
        )
        return config
