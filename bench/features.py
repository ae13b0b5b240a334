"""Speech features: rnnsuite's in-graph MFCC against librosa, utterances per second.

Both compute what the speech task feeds its model: 13 MFCCs from 40 mel bands of a 512-point
FFT over 25 ms windows every 10 ms (20–7600 Hz), plus first and second deltas over ±2
frames, on synthetic 16 kHz utterances (tones and noise; content does not change the work).

    rnnsuite  `suite.speech.features.SpeechFeatures` (tf.signal) in a `tf.function`;
              the features are copied back to numpy, as a data pipeline would see them
    librosa   `librosa.feature.mfcc(..., center=False, htk=True)` + `librosa.feature.delta`
              (width 5), on `[batch, samples]` arrays when batched (librosa vectorises
              over leading axes)

Each is timed batched (one call on `[batch, samples]`) and one by one (a Python loop of
batch-1 calls over the same utterances).

    python -m bench.features --profile quick --threads 1 --out FILE
"""

from __future__ import annotations

import os
import sys

import numpy as np

from bench import machine
from bench.timing import Timer, interleave

RATE = 16000


def synthetic_utterances(count: int, seconds: float, seed: int) -> np.ndarray:
    """`[count, samples]` float32: a few random tones with noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    rows = []
    for _ in range(count):
        signal = sum(
            rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) for _ in range(3)
        )
        rows.append(signal + rng.normal(0, 0.02, t.shape))
    return np.clip(np.stack(rows), -1, 1).astype(np.float32)


def librosa_mfcc(waveform: np.ndarray) -> np.ndarray:
    """librosa's equivalent of `SpeechFeatures()`: `[..., 39, frames]`."""
    import librosa

    mfcc = librosa.feature.mfcc(
        y=waveform,
        sr=RATE,
        n_mfcc=13,
        n_fft=512,
        hop_length=160,
        win_length=400,
        n_mels=40,
        fmin=20.0,
        fmax=7600.0,
        center=False,
        htk=True,
    )
    first = librosa.feature.delta(mfcc, width=5, order=1)
    second = librosa.feature.delta(mfcc, width=5, order=2)
    return np.concatenate([mfcc, first, second], axis=-2)


def rnnsuite_mfcc():
    """A function of a `[batch, samples]` numpy array that returns numpy features."""
    import tensorflow as tf

    from suite.speech.features import SpeechFeatures

    layer = SpeechFeatures()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def features(waveform, length):
        return layer(waveform, length)[0]

    def run(waveform):
        lengths = np.full([waveform.shape[0]], waveform.shape[1], np.int32)
        return features(waveform, lengths).numpy()

    return run


def run(profile, threads, log) -> list[dict]:
    batch = synthetic_utterances(profile.feature_batch, profile.utterance_seconds, profile.seed)
    contenders = {"rnnsuite": rnnsuite_mfcc(), "librosa": librosa_mfcc}
    timers = []
    for name, compute in contenders.items():
        timers.append(Timer(f"{name}|batched", lambda c=compute: c(batch)))
        timers.append(
            Timer(f"{name}|one by one", lambda c=compute: [c(row[None]) for row in batch])
        )
    for timer in timers:
        timer.warm_up(profile.warmup, profile.min_time)
    interleave(timers, profile.repeats)
    rows = []
    audio_seconds = profile.feature_batch * profile.utterance_seconds
    for timer in timers:
        implementation, mode = timer.name.split("|")
        summary = timer.summary()
        rows.append(
            {
                "implementation": implementation,
                "mode": mode,
                "threads": threads,
                "batch": profile.feature_batch if mode == "batched" else 1,
                "utterances": profile.feature_batch,
                "utterance_seconds": profile.utterance_seconds,
                "utterances_per_s": profile.feature_batch / summary["median_s"],
                "x_real_time": audio_seconds / summary["median_s"],
                "timing": summary,
            }
        )
        log(rows[-1])
    return rows


def main(argv=None) -> int:
    return machine.section_main(
        __doc__.splitlines()[0],
        run,
        argv,
        threads_help="0: every usable core; N also caps numpy's BLAS (set by bench.run's environment)",
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
