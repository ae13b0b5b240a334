"""`VideoCaptioner`: frame features -> shared recurrent encoder -> shared attentive decoder."""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf
from keras import layers, ops

from shared.backbones import RecurrentBackbone, length_mask, masked_mean
from shared.seq2seq import AttentiveDecoder, decode
from shared.vocab import BOS_ID, EOS_ID


@keras.saving.register_keras_serializable(package="rnnsuite")
class VideoCaptioner(keras.Model):
    """Describes a clip in words from its frames' CNN features.

    Per-frame features go through layer norm (each stream's own, where `streams` gives the
    widths of several side by side) and dropout and a masked `RecurrentBackbone`
    encoder (bidirectional by default) whose outputs are the memory of an
    `AttentiveDecoder`: at every word the decoder attends over the clip's frames (the
    attention variant of S2VT). Trained with teacher forcing; `generate` decodes greedily
    or with beam search in graph code, so it exports.

    Args:
        vocab_size: caption vocabulary size (ids 0 pad, 1 unknown, 2 BOS, 3 EOS).
        embedding_dim: word embedding width.
        cell, units: the encoder's and decoder's recurrent cell and width.
        encoder_layers, decoder_layers, bidirectional: the recurrent stacks.
        attention: `"bahdanau"` or `"luong"`.
        dropout: between recurrent layers and before the logits.
        input_dropout: on the frame features.
        num_classes: with 2 or more, the encoder also classifies the clip (its action) from
            its mean memory, a second output trained beside the captions so that the
            encoder keeps what tells the actions apart; 0: captions only.
        streams: widths of the feature streams side by side (e.g. `[256, 24]`: CNN features
            and attribute posteriors), each normalised on its own so that neither's scale
            drowns the other; None: one stream.
        use_cudnn: passed to both stacks; exports rebuild with `False` or hide GPUs.

    Call arguments:
        inputs: `(features [batch, time, feature_dim], length [batch], caption_in
            [batch, words])`; steps from `length` on are masked, `caption_in` starts with
            the BOS id and is 0-padded.

    Returns:
        Logits `[batch, words, vocab_size]`; with `num_classes`, `{"caption": those,
        "action": class logits [batch, num_classes]}`.

    Example:
        >>> import numpy as np
        >>> model = VideoCaptioner(vocab_size=50, units=32)
        >>> model((np.zeros((2, 8, 64)), np.array([8, 5]), np.ones((2, 6), "int32"))).shape
        TensorShape([2, 6, 50])
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim=128,
        cell="lstm",
        units=256,
        encoder_layers=1,
        decoder_layers=1,
        bidirectional=True,
        attention="bahdanau",
        dropout=0.2,
        input_dropout=0.2,
        num_classes=0,
        streams=None,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.units = units
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.bidirectional = bidirectional
        self.attention = attention
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.num_classes = int(num_classes)
        self.streams = [int(width) for width in streams] if streams else None
        self.use_cudnn = use_cudnn
        # Per-frame layer norm: CNN features come in any scale.
        self.feature_norms = [
            layers.LayerNormalization(name="feature_norm" + (f"_{number}" if number else ""))
            for number in range(len(self.streams or [None]))
        ]
        self.feature_dropout = layers.Dropout(input_dropout, name="feature_dropout")
        self.encoder = RecurrentBackbone(
            cell,
            units,
            encoder_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            use_cudnn=use_cudnn,
            name="encoder",
        )
        self.decoder = AttentiveDecoder(
            vocab_size,
            embedding_dim,
            cell,
            units,
            decoder_layers,
            attention,
            dropout=dropout,
            use_cudnn=use_cudnn,
            name="decoder",
        )
        self.classifier = layers.Dense(num_classes, name="action") if num_classes else None

    def encode(self, features, length, training=None):
        """Encoder memory `[batch, time, units (x2)]` and its mask `[batch, time]`."""
        mask = length_mask(length, ops.shape(features)[1])
        if self.streams and len(self.streams) > 1:
            parts = ops.split(features, list(itertools.accumulate(self.streams[:-1])), axis=-1)
            norms = zip(self.feature_norms, parts, strict=True)
            x = ops.concatenate([norm(part) for norm, part in norms], axis=-1)
        else:
            x = self.feature_norms[0](features)
        x = self.feature_dropout(x, training=training)
        return self.encoder(x, mask=mask, training=training), mask

    def call(self, inputs, training=None):
        features, length, caption_in = inputs
        memory, mask = self.encode(features, length, training=training)
        logits = self.decoder(caption_in, memory, memory_mask=mask, training=training)
        if self.classifier is None:
            return logits
        return {"caption": logits, "action": self.classifier(masked_mean(memory, mask))}

    def generate(self, features, length, beam_width=1, length_penalty=0.6, max_length=30):
        """Caption ids `[batch, steps]` (EOS included, 0 after it), as graph code."""
        memory, mask = self.encode(features, length, training=False)
        tokens, _, _ = decode(
            self.decoder, memory, mask, BOS_ID, EOS_ID, max_length, beam_width, length_penalty
        )
        return tokens

    def build_for(self, feature_dim, steps=2):
        """Creates the variables by running on a dummy batch."""
        features = ops.zeros((1, steps, feature_dim))
        self((features, tf.constant([steps]), ops.ones((1, 2), dtype="int32")), training=False)
        return self

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "cell": self.cell,
            "units": self.units,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "bidirectional": self.bidirectional,
            "attention": self.attention,
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "num_classes": self.num_classes,
            "streams": self.streams,
            "use_cudnn": self.use_cudnn,
        }
