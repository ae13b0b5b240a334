"""In-graph speech features: pinned values, agreement with librosa, masking, normalisation."""

import librosa
import numpy as np
import pytest
import tensorflow as tf

from suite.speech.features import SpeechFeatures, warp_frequencies


def chirp(seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 1800 * t) * t)).astype("float32")


def test_logmel_agrees_with_librosa_htk_uncentred():
    signal = chirp()
    layer = SpeechFeatures("logmel", num_mel_bins=40, deltas=False, frame_length=512)
    ours, frames = layer.raw(signal[None], [len(signal)])
    mel = librosa.feature.melspectrogram(
        y=signal,
        sr=16000,
        n_fft=512,
        win_length=512,
        hop_length=160,
        center=False,
        n_mels=40,
        fmin=20.0,
        fmax=7600.0,
        htk=True,
        norm=None,
        power=2.0,
        window="hann",
    )
    theirs = np.log(mel.T + 1e-6)
    assert int(frames[0]) == theirs.shape[0] == 47
    ours = ours.numpy()[0]
    # Triangles are built on the mel axis (TF) vs the Hz axis (librosa): close, not equal.
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    assert np.median(np.abs(ours - theirs)) < 0.2


# MFCC 0-3 of frame 10 of the chirp, computed when the feature code was written.
GOLDEN_MFCC_FRAME_10 = [-84.495, 27.9541, 4.4116, -13.4739]


def test_mfcc_values_are_pinned():
    signal = chirp()
    features, _ = SpeechFeatures("mfcc", num_mfcc=13, deltas=True).raw(signal[None], [len(signal)])
    features = features.numpy()[0]
    assert features.shape == (48, 39)
    # Golden values: a change in framing, window, mel scale or DCT moves them.
    np.testing.assert_allclose(features[10, :4], GOLDEN_MFCC_FRAME_10, rtol=1e-4, atol=1e-4)
    # Deltas of a constant signal are zero.
    flat, _ = SpeechFeatures("mfcc").raw(np.full((1, 8000), 0.1, "float32"), [8000])
    np.testing.assert_allclose(flat.numpy()[0, :, 13:], 0.0, atol=1e-4)


def test_padding_never_changes_valid_frames_and_is_zeroed():
    layer = SpeechFeatures("mfcc")
    signal = chirp(0.4)
    padded = np.concatenate([signal, np.random.default_rng(0).normal(size=4000)]).astype("float32")
    a, frames_a = layer(signal[None], tf.constant([len(signal)]))
    b, frames_b = layer(padded[None], tf.constant([len(signal)]))
    assert int(frames_a[0]) == int(frames_b[0])
    n = int(frames_a[0])
    np.testing.assert_allclose(a.numpy()[0, :n], b.numpy()[0, :n], atol=1e-4)
    assert np.all(b.numpy()[0, n:] == 0)


def test_adapt_normalises_to_zero_mean_unit_variance():
    layer = SpeechFeatures("logmel", num_mel_bins=20, deltas=False)
    batches = [(chirp(0.5)[None] * gain, tf.constant([8000])) for gain in (0.1, 0.5, 1.0)]
    layer.adapt(batches)
    features, _ = layer(np.concatenate([b[0] for b in batches]), tf.constant([8000] * 3))
    values = features.numpy().reshape(-1, 20)
    np.testing.assert_allclose(values.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(values.std(0), 1.0, atol=1e-2)


def test_short_and_empty_inputs_keep_shapes():
    features, frames = SpeechFeatures("mfcc")(np.zeros((2, 100), "float32"), tf.constant([100, 0]))
    assert features.shape[0] == 2 and features.shape[2] == 39
    assert frames.numpy().tolist() == [0, 0]


def test_bad_kind_is_refused():
    with pytest.raises(ValueError, match="Unknown feature kind 'spectrum'"):
        SpeechFeatures("spectrum")


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_utterance_mean_removes_a_fixed_gain_and_ignores_padding(kind):
    # Broadband, so that no mel bin sits at the log floor (where a gain is not a shift).
    signal = chirp(0.4) + 0.1 * np.random.default_rng(1).normal(size=6400).astype("float32")
    padded = np.concatenate([signal, np.random.default_rng(0).normal(size=4000)]).astype("float32")
    batch = np.stack([padded, np.pad(0.25 * signal, (0, 4000))])
    length = tf.constant([len(signal)] * 2)
    features, frames = SpeechFeatures(kind, utterance_mean=True)(batch, length)
    n = int(frames[0])
    np.testing.assert_allclose(features[0, :n], features[1, :n], atol=1e-3)
    plain, _ = SpeechFeatures(kind)(batch, length)
    assert np.abs(plain[0, :n] - plain[1, :n]).max() > 0.5  # the gain shows without it


def tone_power(hz, rate=16000):
    t = np.arange(rate // 2) / rate
    stft = tf.signal.stft(np.sin(2 * np.pi * hz * t).astype("float32")[None], 400, 160, 512)
    return tf.square(tf.abs(stft))


def test_warp_frequencies_moves_a_tone_by_its_factor_and_keeps_the_band():
    power = tone_power(1000.0)
    peak_hz = [
        int(np.argmax(warp_frequencies(power, [factor])[0, 5])) * 8000 / 256
        for factor in (0.9, 1.0, 1.2)
    ]
    assert peak_hz == pytest.approx([900, 1000, 1200], abs=8000 / 256)
    np.testing.assert_array_equal(warp_frequencies(power, [1.0]), power)
    top = tone_power(7900.0)  # above the knee: squeezed, never pushed past Nyquist
    assert int(np.argmax(warp_frequencies(top, [1.2])[0, 5])) > 240


def test_vtlp_warps_only_in_training():
    signal = chirp()[None]
    length = tf.constant([signal.shape[1]])
    layer = SpeechFeatures("logmel", vtlp=0.2)
    plain, _ = SpeechFeatures("logmel")(signal, length)
    np.testing.assert_array_equal(layer(signal, length)[0], plain)
    warped, _ = layer(signal, length, training=True)
    assert np.abs(warped - plain).max() > 0.1
