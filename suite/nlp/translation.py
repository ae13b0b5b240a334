"""`Translator`: the shared bidirectional encoder + attentive decoder over token ids."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from shared.backbones import RecurrentBackbone
from shared.seq2seq import AttentiveDecoder, decode, greedy_attention
from shared.vocab import BOS_ID, EOS_ID, PAD_ID


@keras.saving.register_keras_serializable(package="rnnsuite")
class Translator(keras.Model):
    """Attentive recurrent encoder–decoder (Bahdanau or Luong attention).

    Embedding → bidirectional `RecurrentBackbone` encoder → `AttentiveDecoder`, trained
    with teacher forcing; `generate` decodes greedily or with beam search in graph code.

    Call arguments:
        inputs: `(source_ids [batch, source_time], target_in [batch, time])`, int, 0 pads;
            `target_in` starts with the BOS id.

    Returns:
        Logits `[batch, time, target_vocab_size]`.
    """

    def __init__(
        self,
        source_vocab_size,
        target_vocab_size,
        embedding_dim=256,
        cell="lstm",
        units=256,
        encoder_layers=1,
        decoder_layers=1,
        attention="bahdanau",
        dropout=0.0,
        residual=False,
        layer_norm=False,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.units = units
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.attention = attention
        self.dropout = dropout
        self.residual = residual
        self.layer_norm = layer_norm
        self.use_cudnn = use_cudnn
        self.source_embedding = layers.Embedding(
            source_vocab_size, embedding_dim, mask_zero=True, name="source_embedding"
        )
        self.encoder = RecurrentBackbone(
            cell,
            units,
            encoder_layers,
            bidirectional=True,
            dropout=dropout,
            residual=residual,
            layer_norm=layer_norm,
            use_cudnn=use_cudnn,
            name="encoder",
        )
        self.decoder = AttentiveDecoder(
            target_vocab_size,
            embedding_dim,
            cell,
            units,
            decoder_layers,
            attention,
            dropout=dropout,
            residual=residual,
            layer_norm=layer_norm,
            use_cudnn=use_cudnn,
            name="decoder",
        )

    def encode(self, source_ids, training=None):
        """Encoder memory `[batch, source_time, 2*units]` and its mask."""
        mask = ops.not_equal(source_ids, PAD_ID)
        memory = self.encoder(self.source_embedding(source_ids), mask=mask, training=training)
        return memory, mask

    def call(self, inputs, training=None):
        source_ids, target_in = inputs
        memory, mask = self.encode(source_ids, training=training)
        return self.decoder(target_in, memory, mask, training=training)

    def generate(self, source_ids, beam_width=1, length_penalty=0.6, max_length=None):
        """Target ids `[batch, steps]` (EOS included, 0 after it), as graph code.

        `max_length` defaults to twice the longest source plus 10 tokens.
        """
        memory, mask = self.encode(source_ids, training=False)
        if max_length is None:
            max_length = 2 * tf.shape(source_ids)[1] + 10
        tokens, _, _ = decode(
            self.decoder, memory, mask, BOS_ID, EOS_ID, max_length, beam_width, length_penalty
        )
        return tokens

    def attention_map(self, source_ids, max_length=None):
        """Greedy translation of one sentence, step by step, with the attention of each step.

        Eager code for reports (the export decodes in the graph, with the same result).
        Args:
            source_ids: int `[1, source_time]`.
        Returns:
            `(target ids: list, EOS included when reached; weights [steps, source_time])`.
        """
        memory, mask = self.encode(source_ids, training=False)
        max_length = max_length or 2 * int(source_ids.shape[1]) + 10
        return greedy_attention(self.decoder, memory, mask, BOS_ID, EOS_ID, max_length)

    def build_for(self, batch=1, length=2):
        """Creates the variables by running on a dummy batch."""
        ids = ops.ones((batch, length), dtype="int32")
        self((ids, ids), training=False)
        return self

    def get_config(self):
        return {
            **super().get_config(),
            "source_vocab_size": self.source_vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "embedding_dim": self.embedding_dim,
            "cell": self.cell,
            "units": self.units,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "attention": self.attention,
            "dropout": self.dropout,
            "residual": self.residual,
            "layer_norm": self.layer_norm,
            "use_cudnn": self.use_cudnn,
        }
