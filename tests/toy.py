"""A tiny task for testing the shared machinery: recall the first token of a sequence.

Sequences of 5–10 random tokens (ids 1–4, 0 pads) are labelled with their first token,
so a model must carry information across the whole (masked) sequence. Chance is 25 %.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from shared.backbones import RecurrentBackbone
from shared.config import TrainConfig
from shared.export import export_endpoint
from shared.task import Task

LABELS = ["one", "two", "three", "four"]


def make_sequences(count, seed, min_len=5, max_len=10):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((count, max_len), np.int32)
    for row in range(count):
        length = rng.integers(min_len, max_len + 1)
        tokens[row, :length] = rng.integers(1, 5, length)
    return tokens, tokens[:, 0] - 1


def recall_model(backbone: RecurrentBackbone) -> keras.Model:
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(5, 8, mask_zero=True)(inputs)
    x = backbone(x)
    outputs = keras.layers.Dense(4, dtype="float32")(x)
    return keras.Model(inputs, outputs)


@dataclass
class ToyModelConfig:
    cell: str = "gru"
    units: int = 24
    num_layers: int = 1
    bidirectional: bool = False


@dataclass
class ToyConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    samples: int = 1024
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=4, batch_size=32, learning_rate=0.01, verbose=0)
    )


class KillAt(keras.callbacks.Callback):
    """Kills the process hard in the middle of an epoch, as a power cut would."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.target, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.target:
            os._exit(137)


class ToyTask(Task):
    name = "toy"
    summary = "recall the first token of a sequence"
    config_class = ToyConfig
    presets = {"tiny": {"samples": 256}, "small": {}, "base": {"model": {"units": 64}}}

    def datasets(self, config, data, run_dir):
        x, y = make_sequences(config.samples, seed=1)
        vx, vy = make_sequences(128, seed=2)
        batch = config.train.batch_size
        train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024, seed=3).batch(batch)
        return train, tf.data.Dataset.from_tensor_slices((vx, vy)).batch(batch)

    def build_model(self, config, run_dir):
        m = config.model
        backbone = RecurrentBackbone(
            m.cell, m.units, m.num_layers, m.bidirectional, return_sequences=False
        )
        return recall_model(backbone)

    def callbacks(self, config, run_dir):
        if not os.environ.get("TOY_KILL_AT"):
            return []
        epoch, batch = map(int, os.environ["TOY_KILL_AT"].split(","))
        return [KillAt(epoch, batch)]

    def compile_args(self, config):
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": ["accuracy"],
        }

    def evaluate(self, model, config, data, run_dir):
        x, y = make_sequences(256, seed=4)
        predictions = np.argmax(model.predict(x, verbose=0), -1)
        return {"accuracy": float(np.mean(predictions == y))}

    def export(self, model, config, run_dir, out_dir):
        labels = tf.constant(LABELS)

        def serve(tokens):
            digits = tf.strings.to_number(tf.strings.bytes_split(tokens), tf.int32)
            logits = model(digits.to_tensor(), training=False)
            probabilities = tf.nn.softmax(logits)
            return {
                "label": tf.gather(labels, tf.argmax(logits, -1)),
                "probabilities": probabilities,
            }

        spec = [tf.TensorSpec([None], tf.string, name="tokens")]
        return export_endpoint(out_dir, serve, spec, track=[model])

    def predict(self, export_dir, inputs):
        from shared.export import serve

        outputs = serve(export_dir, {"tokens": np.asarray(inputs, dtype=bytes)})
        return [label.decode() for label in outputs["label"]]
