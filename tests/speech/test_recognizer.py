"""SpeechRecognizer: learning (a toy tone language; a handful of spoken utterances), decoding, export, augmentation."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import metrics
from shared.ctc import num_ctc_classes
from shared.export import export_endpoint, serve_in_fresh_process
from shared.vocab import Vocabulary
from suite.speech.audio import load_audio
from suite.speech.corpus import engine_for
from suite.speech.model import SpeechRecognizer
from suite.speech.pipeline import AugmentConfig, augment, change_speed, make_dataset, telephone
from suite.speech.task import pad, speech_vocabulary

RATE = 16000
# Each letter is a tone; words are 2-4 tones with short gaps, like syllables.
TONES = {"a": 400.0, "b": 900.0, "c": 1600.0, "d": 2600.0}


def tone_utterance(text, rng):
    pieces = []
    for letter in text:
        seconds = rng.uniform(0.08, 0.14)
        t = np.arange(int(seconds * RATE)) / RATE
        pieces.append(0.5 * np.sin(2 * np.pi * TONES[letter] * t))
        pieces.append(np.zeros(int(rng.uniform(0.03, 0.06) * RATE)))
    signal = np.concatenate(pieces) + rng.normal(0, 0.01, sum(len(p) for p in pieces))
    return signal.astype(np.float32)


def tone_corpus(count, seed):
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list(TONES), rng.integers(2, 5))) for _ in range(count)]
    return [tone_utterance(text, rng) for text in texts], texts


def small_recognizer(vocab, waveforms, **settings):
    """A one-layer SpeechRecognizer without SpecAugment or dropout, its features
    normalised on `waveforms`, compiled."""
    model = SpeechRecognizer(
        num_ctc_classes(vocab.size),
        spec_augment={"time_masks": 0, "freq_masks": 0},
        num_layers=1,
        dropout=0.0,
        **settings,
    ).build_for()
    model.featurizer.adapt((w[None], tf.constant([len(w)])) for w in waveforms)
    model.compile(keras.optimizers.Adam(3e-3))
    return model


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(1)
    vocab = Vocabulary(list(TONES), level="char")
    waveforms, texts = tone_corpus(256, seed=0)
    labels = [np.array(row, np.int32) for row in vocab.encode(tf.constant(texts)).to_list()]
    model = small_recognizer(
        vocab,
        waveforms[:64],
        features={"kind": "logmel", "num_mel_bins": 24, "deltas": False},
        conv_filters=8,
        units=32,
    )
    dataset = make_dataset(waveforms, labels, 16, shuffle=True)
    history = model.fit(dataset, epochs=10, verbose=0, shuffle=False)
    return model, vocab, history.history["loss"]


def transcribe(model, vocab, waveforms, method="greedy"):
    batch, lengths = pad(waveforms)
    ids, _ = model.decode({"waveform": batch, "length": lengths}, method)
    return [t.decode() for t in vocab.decode(ids).numpy()]


@pytest.mark.slow
def test_recognizer_learns_a_tone_language(trained):
    model, vocab, losses = trained
    assert losses[-1] < 0.3 * losses[0]
    waveforms, texts = tone_corpus(48, seed=7)
    for method in ("greedy", "beam"):
        hypotheses = transcribe(model, vocab, waveforms, method)
        # Chance CER is about 0.75 (four letters); a learned model is near zero.
        assert metrics.cer(texts, hypotheses) < 0.1, (method, hypotheses[:5], texts[:5])


@pytest.mark.slow
def test_recognizer_overfits_a_handful_of_spoken_utterances(tmp_path):
    engine = engine_for("espeak:en-us+m1")
    if not engine.available():
        pytest.skip("espeak-ng not installed")
    keras.utils.set_random_seed(1)
    texts = ["turn on the light", "seven four two", "b c x", "good morning"]
    waveforms = []
    for number, text in enumerate(texts):
        engine.synthesize(text, tmp_path / f"{number}.wav", random.Random(number))
        waveforms.append(load_audio(tmp_path / f"{number}.wav"))
    vocab = speech_vocabulary()
    labels = [np.array(row, np.int32) for row in vocab.encode(tf.constant(texts)).to_list()]
    model = small_recognizer(vocab, waveforms, conv_filters=16, units=64)
    dataset = make_dataset(waveforms, labels, len(texts), shuffle=False).repeat(25)
    losses = model.fit(dataset, epochs=8, verbose=0, shuffle=False).history["loss"]
    hypotheses = transcribe(model, vocab, waveforms)
    assert metrics.cer(texts, hypotheses) <= 0.05, hypotheses  # ~0 once memorised
    assert losses[-1] < 0.05 * losses[0]


@pytest.mark.parametrize("stride", [2, 3])
def test_padding_never_changes_a_recordings_outputs(stride):
    # However many frames of padding a batch adds (here 1-100), the strided convolutions
    # must see the recording's frames at the same offsets, or the (bidirectional) outputs
    # and the transcript would depend on the other recordings of the batch.
    keras.utils.set_random_seed(3)
    vocab = speech_vocabulary()
    model = SpeechRecognizer(
        num_ctc_classes(vocab.size), conv_filters=4, units=8, num_layers=1, time_stride=stride
    ).build_for()
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
    alone = model({"waveform": waveform[None], "length": tf.constant([8000])})
    frames = int(alone["length"][0])
    for extra in (160, 320, 480, 16000):
        padded = np.concatenate([waveform, np.zeros(extra, np.float32)])[None]
        outputs = model({"waveform": padded, "length": tf.constant([8000])})
        assert int(outputs["length"][0]) == frames
        np.testing.assert_allclose(
            outputs["logits"][0, :frames], alone["logits"][0, :frames], atol=1e-5, err_msg=extra
        )


@pytest.mark.slow
def test_padding_does_not_change_a_transcript(trained):
    model, vocab, _ = trained
    waveforms, _ = tone_corpus(3, seed=9)
    alone = transcribe(model, vocab, waveforms[:1])
    padded = transcribe(model, vocab, [waveforms[0], np.concatenate([waveforms[1]] * 3)])
    assert padded[0] == alone[0]


@pytest.mark.slow
def test_export_serves_raw_audio_in_a_fresh_process(trained, tmp_path):
    model, vocab, _ = trained

    def endpoint(waveform, length):
        ids, _ = model.decode({"waveform": waveform, "length": length})
        return {"text": vocab.decode(ids)}

    spec = [
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int32, name="length"),
    ]
    path = export_endpoint(tmp_path / "export", endpoint, spec, track=[model, vocab])
    waveforms, _ = tone_corpus(4, seed=11)
    batch, lengths = pad(waveforms)
    served = serve_in_fresh_process(path, {"waveform": batch, "length": lengths})
    assert [t.decode() for t in served["text"]] == transcribe(model, vocab, waveforms)


def test_features_are_float32_under_mixed_precision():
    """Training with `train.mixed_precision` sees the features the float32 export computes."""
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 8000)).astype(np.float32)
    inputs = (waveform, tf.constant([8000]))
    exact = SpeechRecognizer(10).featurizer(*inputs)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = SpeechRecognizer(10).featurizer(*inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(mixed[0], exact[0], atol=1e-5)


def test_spec_augment_is_off_at_inference():
    model = SpeechRecognizer(10, conv_filters=4, units=8, num_layers=1).build_for()
    waveform = np.random.default_rng(0).normal(0, 0.1, (1, 8000)).astype(np.float32)
    inputs = {"waveform": waveform, "length": np.array([8000])}
    first = model(inputs, training=False)["logits"]
    np.testing.assert_allclose(model(inputs, training=False)["logits"], first)
    assert not np.allclose(model(inputs, training=True)["logits"], first)


def test_telephone_channel_removes_out_of_band_energy():
    t = np.arange(RATE) / RATE
    low, mid, high = (np.sin(2 * np.pi * f * t).astype(np.float32) * 0.3 for f in (100, 1000, 6000))
    for tone, kept in ((low, False), (mid, True), (high, False)):
        out = telephone(tf.constant(tone)).numpy()
        ratio = np.sqrt(np.mean(out**2) / np.mean(tone**2))
        assert (ratio > 0.8) if kept else (ratio < 0.1), ratio


def test_speed_and_noise_augmentations():
    waveform = tf.constant(np.sin(np.arange(16000) / 5.0).astype(np.float32) * 0.5)
    assert change_speed(waveform, 1.1).shape[0] == int(16000 / 1.1)
    assert change_speed(waveform, 0.9).shape[0] == int(16000 / 0.9)
    noisy = augment(
        waveform,
        AugmentConfig(
            speed_probability=0,
            gain_db=0,
            noise_probability=1,
            snr_db_min=10,
            snr_db_max=10,
            telephone_probability=0,
        ),
    ).numpy()
    snr = 10 * np.log10(np.mean(waveform.numpy() ** 2) / np.mean((noisy - waveform.numpy()) ** 2))
    assert 9 < snr < 11
    assert np.abs(noisy).max() <= 1.0
