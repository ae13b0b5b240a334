"""Audio input: any format, rate and channel count to 16 kHz mono; bad files named."""

import warnings

import numpy as np
import pytest
import soundfile

from shared.errors import DataError
from suite.speech.audio import (
    MAX_SECONDS,
    ClippingWarning,
    duration,
    load_audio,
    write_audio,
)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the conftest's per-test Keras reset: these tests never touch Keras, and
    importing and clearing it costs seconds here."""
    yield


def _tone(seconds=1.0, rate=16000, frequency=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _peak_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


def test_converts_44k_stereo_to_16k_mono(tmp_path):
    left, right = _tone(rate=44100, frequency=440), _tone(rate=44100, frequency=440, amplitude=0.3)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100)

    samples = load_audio(path)

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 16000) <= 2
    assert _peak_frequency(samples, 16000) == pytest.approx(440, abs=2)
    # Channels are averaged: the mean of 0.5 and 0.3 amplitude tones.
    assert np.max(np.abs(samples)) == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_reads_compressed_formats_at_any_rate(tmp_path, suffix):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, _tone(rate=22050, frequency=1000), 22050)

    samples = load_audio(path)

    # mp3 encoders pad the start with up to ~50 ms.
    assert abs(len(samples) / 16000 - 1.0) < 0.06
    assert _peak_frequency(samples, 16000) == pytest.approx(1000, abs=5)


def test_write_audio_round_trips(tmp_path):
    path = write_audio(tmp_path / "nested" / "out.wav", _tone(0.5), 16000)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert duration(path) == pytest.approx(0.5)
    np.testing.assert_allclose(load_audio(path), _tone(0.5), atol=1e-4)


def test_refuses_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.wav: no such audio file"):
        load_audio(tmp_path / "nothere.wav")


def test_refuses_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"corrupt\.wav: .*corrupt"):
        load_audio(path)


def test_refuses_truncated_wav(tmp_path):
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    soundfile.write(whole, _tone(2.0), 16000, subtype="PCM_16")
    cut.write_bytes(whole.read_bytes()[:32044])  # the header and half the samples
    assert len(load_audio(whole)) == 32000
    with pytest.raises(DataError, match=r"cut\.wav: truncated WAV file .* 32000 more bytes"):
        load_audio(cut)


def test_refuses_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match=r"empty\.wav: empty audio file \(0 samples\)"):
        load_audio(path)


def test_refuses_zero_byte_file_and_folder(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.wav: empty file \(0 bytes\)"):
        load_audio(tmp_path / "zero.wav")
    (tmp_path / "clips.wav").mkdir()
    with pytest.raises(DataError, match=r"clips\.wav: a folder, not an audio file"):
        load_audio(tmp_path / "clips.wav")


def test_refuses_stereo_whose_channels_cancel(tmp_path):
    path = tmp_path / "inverted.wav"
    soundfile.write(path, np.stack([_tone(), -_tone()], axis=1), 16000)
    with pytest.raises(DataError, match=r"inverted\.wav: its channels cancel out"):
        load_audio(path)


def test_refuses_audio_shorter_than_a_frame(tmp_path):
    path = write_audio(tmp_path / "click.wav", _tone(0.001), 16000)
    with pytest.raises(DataError, match=r"click\.wav: audio is 1\.0 ms long, too short"):
        load_audio(path)
    assert len(load_audio(write_audio(tmp_path / "ok.wav", _tone(0.03), 16000))) == 480


def test_refuses_silent_file(tmp_path):
    path = tmp_path / "silent.flac"
    soundfile.write(path, np.full(16000, 1e-5, np.float32), 16000)
    with pytest.raises(DataError, match=r"silent\.flac: silent audio"):
        load_audio(path)


def test_refuses_too_long_file_stating_the_limit(tmp_path):
    path = tmp_path / "long.wav"
    # A low rate keeps the file small; the limit is on seconds.
    soundfile.write(path, _tone(MAX_SECONDS + 1, rate=1000, frequency=100), 1000)
    with pytest.raises(
        DataError, match=rf"long\.wav: audio is 61\.0 s long, over the {MAX_SECONDS:g} s limit"
    ):
        load_audio(path)
    with pytest.raises(DataError, match=r"over the 0\.5 s limit"):
        load_audio(write_audio(tmp_path / "short.wav", _tone(1.0), 16000), max_seconds=0.5)
    assert len(load_audio(path, max_seconds=None)) == 61 * 16000


def test_clipping_policy(tmp_path):
    path = write_audio(tmp_path / "clipped.wav", np.clip(_tone(amplitude=2.0), -1, 1), 16000)
    with pytest.warns(ClippingWarning, match=r"clipped\.wav: clipped audio"):
        load_audio(path)
    with pytest.raises(DataError, match=r"clipped\.wav: clipped audio"):
        load_audio(path, clipping="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, clipping="ignore")
        load_audio(write_audio(tmp_path / "clean.wav", _tone(), 16000))


def test_waveform_cache_survives_another_run_writing_it_at_the_same_time(tmp_path, monkeypatch):
    from suite.speech import pipeline
    from suite.speech.corpus import Utterance

    wave = np.sin(np.arange(8000) / 9.0).astype(np.float32) * 0.5
    write_audio(tmp_path / "a.wav", wave, 16000)
    utterances = [Utterance(tmp_path / "a.wav", "a")]
    cache = tmp_path / "cache"
    savez = np.savez

    def savez_while_another_run_finishes(file, **arrays):
        savez(file, **arrays)
        monkeypatch.setattr(pipeline.np, "savez", savez)
        pipeline.load_waveforms(utterances, cache, progress=False)  # the other run

    monkeypatch.setattr(pipeline.np, "savez", savez_while_another_run_finishes)
    (loaded,) = pipeline.load_waveforms(utterances, cache, progress=False)
    np.testing.assert_allclose(loaded, wave, atol=1e-4)
    assert len(list(cache.iterdir())) == 1  # the cache, no scratch file left behind
    (cached,) = pipeline.load_waveforms(utterances, cache, progress=False)
    np.testing.assert_array_equal(cached, loaded)


def test_waveform_cache_follows_a_rewritten_file_and_the_length_limit(tmp_path):
    from suite.speech.corpus import Utterance
    from suite.speech.pipeline import load_waveforms

    utterances = [Utterance(write_audio(tmp_path / "a.wav", _tone(1.0), 16000), "a")]
    (first,) = load_waveforms(utterances, tmp_path / "cache", progress=False)
    write_audio(tmp_path / "a.wav", _tone(0.5), 16000)
    (rewritten,) = load_waveforms(utterances, tmp_path / "cache", progress=False)
    assert (len(first), len(rewritten)) == (16000, 8000)
    with pytest.raises(DataError, match=r"over the 0\.25 s limit"):
        load_waveforms(utterances, tmp_path / "cache", max_seconds=0.25, progress=False)


def test_unusable_files_are_all_named_with_their_manifest_rows(tmp_path):
    from suite.speech.corpus import Utterance
    from suite.speech.pipeline import load_waveforms

    good = write_audio(tmp_path / "good.wav", _tone(), 16000)
    silent = write_audio(tmp_path / "silent.wav", np.zeros(16000), 16000)
    (tmp_path / "zero.wav").write_bytes(b"")
    rows = [
        Utterance(good, "a", origin="m.csv:2"),
        Utterance(silent, "b", origin="m.csv:3"),
        Utterance(tmp_path / "zero.wav", "c", origin="m.csv:4"),
    ]
    with pytest.raises(DataError) as error:
        load_waveforms(rows, tmp_path / "cache", progress=False)
    message = str(error.value)
    assert message.startswith("2 unusable audio file(s)")
    assert "m.csv:3: " in message and "silent.wav: silent audio" in message
    assert "m.csv:4: " in message and "zero.wav: empty file" in message
    assert "m.csv:2" not in message


def test_a_clipped_files_warning_names_its_manifest_row(tmp_path):
    from suite.speech.audio import load_each

    clipped = write_audio(tmp_path / "loud.wav", np.clip(3 * _tone(), -1, 1), 16000)
    with pytest.warns(ClippingWarning, match=r"^m\.csv:7: .*loud\.wav: clipped audio"):
        waveforms, problems = load_each([clipped], origins=["m.csv:7"])
    assert len(waveforms) == 1 and not problems
