"""Every domain model and layer round-trips through `.keras` save/load with equal outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from suite.nlp.translation import Translator
from suite.speech.features import SpeechFeatures
from suite.speech.model import SpeechRecognizer


def translator():
    model = Translator(
        20,
        30,
        embedding_dim=8,
        units=8,
        attention="luong",
        residual=True,
        encoder_layers=2,
        decoder_layers=2,
    ).build_for()
    ids = np.random.default_rng(0).integers(1, 20, (2, 5))
    return model, (ids, ids)


def recognizer():
    model = SpeechRecognizer(
        10, features={"kind": "logmel", "num_mel_bins": 16}, conv_filters=4, units=8, num_layers=2
    ).build_for()
    model.featurizer.mean.assign(np.full([48], 0.5, "float32"))
    waveform = np.random.default_rng(0).normal(0, 0.1, (2, 8000)).astype("float32")
    return model, {"waveform": waveform, "length": np.array([8000, 6000])}


def features():
    inputs = keras.Input((None,)), keras.Input((), dtype="int32")
    layer = SpeechFeatures("mfcc")
    layer.std.assign(np.full([39], 2.0, "float32"))
    model = keras.Model(inputs, layer(*inputs))
    waveform = np.random.default_rng(0).normal(0, 0.1, (2, 4000)).astype("float32")
    return model, (waveform, np.array([4000, 3000]))


@pytest.mark.parametrize("make", [translator, recognizer, features])
def test_save_load_round_trip(make, tmp_path):
    model, inputs = make()
    expected = tf.nest.flatten(model(inputs, training=False))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    actual = tf.nest.flatten(restored(inputs, training=False))
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
