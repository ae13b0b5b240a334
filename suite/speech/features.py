"""Speech features in the graph: log-mel and MFCC with `tf.signal`, plus normalisation.

`SpeechFeatures` is a Keras layer, so the very same code computes features in training
and inside the exported SavedModel (waveform in, text out).

Differences from librosa's defaults, on purpose (documented rather than hidden):
- mel scale: HTK (`tf.signal.linear_to_mel_weight_matrix`), triangles built on the mel
  axis; librosa defaults to Slaney mels with area normalisation (`htk=False, norm="slaney"`).
- log: natural log of the mel power plus 1e-6; librosa's `power_to_db` is 10·log10 with a
  top_db clip.
- framing: no centre padding (frames start at sample 0); librosa centres by default.
- MFCC: `tf.signal.mfccs_from_log_mel_spectrograms` (orthonormal DCT-II of the natural-log
  mels); librosa applies its DCT to the dB mels, so its coefficients are 10/ln(10) larger.
With `htk=True, norm=None, center=False` librosa's log-mels agree with ours to within a
small tolerance (tests/speech/test_features.py pins both our values and that agreement).
"""

from __future__ import annotations

import keras
import tensorflow as tf

SAMPLE_RATE = 16000
LOG_FLOOR = 1e-6


@keras.saving.register_keras_serializable(package="rnnsuite")
class SpeechFeatures(keras.layers.Layer):
    """Waveforms to normalised log-mel or MFCC frames.

    Args:
        kind: `"mfcc"` or `"logmel"`.
        num_mel_bins: mel filters.
        num_mfcc: MFCC coefficients kept (kind `mfcc`).
        deltas: append first and second time derivatives (×3 width).
        utterance_mean: subtract each utterance's own mean of the static features
            (cepstral mean normalisation), which removes a voice's or a channel's fixed
            spectral colouring before the stored statistics apply.
        vtlp: training only: stretch each utterance's frequency axis by a random factor
            in [1 - vtlp, 1 + vtlp] (vocal tract length perturbation, Jaitly & Hinton
            2013): formants move as between speakers, while the tempo stays.
        frame_length, frame_step, fft_length: STFT sizes in samples (25 ms / 10 ms at 16 kHz).
        lower_hz, upper_hz: mel filterbank range.
        sample_rate: of the waveform; 16 kHz everywhere in this project.

    Call arguments:
        waveform: float32 `[batch, samples]` in [-1, 1], right-padded.
        length: int `[batch]` valid samples per row.

    Returns:
        `(features [batch, frames, width], frame_length [batch])`; frames past a row's
        length are zero. Features are normalised with the mean and standard deviation
        that `adapt` stored (identity until then); both are saved with the model.
    """

    def __init__(
        self,
        kind="mfcc",
        num_mel_bins=40,
        num_mfcc=13,
        deltas=True,
        utterance_mean=False,
        vtlp=0.0,
        frame_length=400,
        frame_step=160,
        fft_length=512,
        lower_hz=20.0,
        upper_hz=7600.0,
        sample_rate=SAMPLE_RATE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in ("mfcc", "logmel"):
            raise ValueError(f"Unknown feature kind {kind!r}; choose 'mfcc' or 'logmel'.")
        self.kind = kind
        self.num_mel_bins = num_mel_bins
        self.num_mfcc = num_mfcc
        self.deltas = deltas
        self.utterance_mean = utterance_mean
        self.vtlp = vtlp
        self.seed_generator = keras.random.SeedGenerator(23) if vtlp else None
        self.frame_length = frame_length
        self.frame_step = frame_step
        self.fft_length = fft_length
        self.lower_hz = lower_hz
        self.upper_hz = upper_hz
        self.sample_rate = sample_rate
        base = num_mfcc if kind == "mfcc" else num_mel_bins
        self.width = base * (3 if deltas else 1)
        self.mean = self.add_weight(
            shape=(self.width,), initializer="zeros", trainable=False, name="mean"
        )
        self.std = self.add_weight(
            shape=(self.width,), initializer="ones", trainable=False, name="std"
        )

    def frames_for(self, length):
        """Number of whole frames in `length` samples."""
        length = tf.cast(length, tf.int32)
        return tf.maximum(0, 1 + (length - self.frame_length) // self.frame_step)

    def raw(self, waveform, length, warp=None):
        """Unnormalised features and frame lengths; `warp` ([batch] factors) stretches
        each row's frequency axis (`warp_frequencies`)."""
        waveform = tf.cast(waveform, tf.float32)
        # At least one frame's samples, so inputs shorter than a frame keep their shape.
        short = tf.maximum(0, self.frame_length - tf.shape(waveform)[1])
        waveform = tf.pad(waveform, [[0, 0], [0, short]])
        stft = tf.signal.stft(
            waveform, self.frame_length, self.frame_step, self.fft_length, pad_end=False
        )
        power = tf.math.square(tf.abs(stft))
        if warp is not None:
            power = warp_frequencies(power, warp)
        mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            self.num_mel_bins,
            self.fft_length // 2 + 1,
            self.sample_rate,
            self.lower_hz,
            self.upper_hz,
        )
        features = tf.math.log(tf.tensordot(power, mel_matrix, 1) + LOG_FLOOR)
        if self.kind == "mfcc":
            features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., : self.num_mfcc]
        frames = self.frames_for(length)
        if self.utterance_mean:
            valid = tf.sequence_mask(frames, tf.shape(features)[1], dtype=features.dtype)
            count = tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)[:, None, None]
            features -= tf.reduce_sum(features * valid[..., None], axis=1, keepdims=True) / count
        if self.deltas:
            first = _delta(_hold_last(features, frames))
            second = _delta(_hold_last(first, frames))
            features = tf.concat([features, first, second], axis=-1)
        mask = tf.sequence_mask(frames, tf.shape(features)[1], dtype=features.dtype)
        return features * mask[..., None], frames

    def call(self, waveform, length, training=None):
        warp = None
        if training and self.vtlp:
            seed = self.seed_generator.next()[:2]
            batch = tf.shape(waveform)[:1]
            warp = tf.random.stateless_uniform(batch, seed, 1.0 - self.vtlp, 1.0 + self.vtlp)
        features, frames = self.raw(waveform, length, warp)
        features = (features - self.mean) / self.std
        mask = tf.sequence_mask(frames, tf.shape(features)[1], dtype=features.dtype)
        return features * mask[..., None], frames

    def adapt(self, batches):
        """Stores the mean and std of the features over `(waveform, length)` batches."""
        total = tf.zeros([self.width], tf.float64)
        square = tf.zeros([self.width], tf.float64)
        count = tf.constant(0.0, tf.float64)
        for waveform, length in batches:
            features, frames = self.raw(waveform, length)
            features = tf.cast(features, tf.float64)
            total += tf.reduce_sum(features, axis=[0, 1])
            square += tf.reduce_sum(tf.square(features), axis=[0, 1])
            count += tf.cast(tf.reduce_sum(frames), tf.float64)
        if count == 0:
            raise ValueError("No feature frames to adapt the normalisation on.")
        mean = total / count
        std = tf.sqrt(tf.maximum(square / count - tf.square(mean), 1e-8))
        self.mean.assign(tf.cast(mean, tf.float32))
        self.std.assign(tf.cast(std, tf.float32))

    def compute_output_shape(self, waveform_shape, length_shape):
        return (waveform_shape[0], None, self.width), (waveform_shape[0],)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "num_mel_bins": self.num_mel_bins,
            "num_mfcc": self.num_mfcc,
            "deltas": self.deltas,
            "utterance_mean": self.utterance_mean,
            "vtlp": self.vtlp,
            "frame_length": self.frame_length,
            "frame_step": self.frame_step,
            "fft_length": self.fft_length,
            "lower_hz": self.lower_hz,
            "upper_hz": self.upper_hz,
            "sample_rate": self.sample_rate,
        }


def warp_frequencies(power, factors, boundary=0.8):
    """Spectra `[batch, frames, bins]` with each row's frequency axis stretched by its
    factor (>1 moves formants up): piecewise linear, frequency f shows what was at
    f / factor up to a knee, then a straight line to the Nyquist bin (unmoved, so no
    band is lost or invented); linear interpolation between bins."""
    bins = tf.shape(power)[-1]
    nyquist = tf.cast(bins - 1, tf.float32)
    factors = tf.cast(factors, tf.float32)[:, None]
    frequency = tf.range(bins, dtype=tf.float32)[None, :]
    knee = boundary * nyquist * tf.minimum(factors, 1.0)
    upper = knee / factors + (nyquist - knee / factors) * (frequency - knee) / (nyquist - knee)
    source = tf.clip_by_value(tf.where(frequency <= knee, frequency / factors, upper), 0.0, nyquist)
    left = tf.minimum(tf.cast(source, tf.int32), bins - 2)
    weight = (source - tf.cast(left, tf.float32))[:, None, :]
    below = tf.gather(power, left, axis=2, batch_dims=1)
    above = tf.gather(power, left + 1, axis=2, batch_dims=1)
    return below * (1.0 - weight) + above * weight


def _hold_last(features, frames):
    """Repeats each row's last valid frame over its padding, so deltas near the end see
    the same edge as an unpadded utterance does."""
    last = tf.maximum(frames - 1, 0)[:, None]
    steps = tf.minimum(tf.range(tf.shape(features)[1])[None, :], last)
    return tf.gather(features, steps, batch_dims=1)


def _delta(features, width=2):
    """Regression deltas over ±`width` frames (HTK formula), edges padded by repetition."""
    padded = tf.concat(
        [
            tf.repeat(features[:, :1], width, axis=1),
            features,
            tf.repeat(features[:, -1:], width, axis=1),
        ],
        axis=1,
    )
    time = tf.shape(features)[1]
    numerator = tf.add_n(
        [
            float(n)
            * (padded[:, width + n : width + n + time] - padded[:, width - n : width - n + time])
            for n in range(1, width + 1)
        ]
    )
    return numerator / float(2 * sum(n * n for n in range(1, width + 1)))
