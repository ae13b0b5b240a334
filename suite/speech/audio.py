"""Reading and writing audio files: any format, rate and channel count in, 16 kHz mono out.

Files are decoded with soundfile (libsndfile: wav, flac, ogg, mp3 with libsndfile >= 1.1)
and, where it cannot, with librosa (audioread/ffmpeg backends). Channels are averaged and
the rate converted with soxr.

Bad input is refused with a `DataError` that names the file: missing, a folder,
unreadable or corrupt, empty, silent (peak below `SILENCE_PEAK`), channels that cancel
when mixed to mono, shorter than one feature frame (`MIN_SECONDS`), or longer than
`max_seconds` (default `MAX_SECONDS`; long recordings must be cut before transcription).

Clipping policy: a file with more than `CLIP_FRACTION` of its samples at full scale is
clipped. Clipped speech is still intelligible, so by default (`clipping="warn"`) it is
loaded and a `ClippingWarning` naming the file is issued; `clipping="error"` refuses it
and `clipping="ignore"` says nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile
import soxr

from shared.errors import DataError

SAMPLE_RATE = 16000
MAX_SECONDS = 60.0
# The shortest transcribable audio: one 25 ms feature frame.
MIN_SECONDS = 0.025
# Peak amplitude (full scale = 1) below which a file is taken to hold no signal (-60 dBFS).
SILENCE_PEAK = 1e-3
# Samples at or above this magnitude count as clipped ...
CLIP_LEVEL = 0.999
# ... and a file is clipped when more than this fraction of its samples are.
CLIP_FRACTION = 0.001
CLIPPING_POLICIES = ("warn", "error", "ignore")


class ClippingWarning(UserWarning):
    """A file's waveform is clipped at full scale."""


def load_audio(
    path,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float | None = MAX_SECONDS,
    clipping: str = "warn",
) -> np.ndarray:
    """Reads an audio file as a float32 mono waveform in [-1, 1] at `target_rate`.

    Args:
        path: a wav, flac, ogg or mp3 file (anything soundfile or librosa decode).
        target_rate: output sample rate in Hz.
        max_seconds: longest accepted duration (None: no limit).
        clipping: "warn", "error" or "ignore" (see the module docstring).

    Raises:
        DataError: naming the file, if it is missing, unreadable, empty, silent, too
            long, or clipped under `clipping="error"`.
    """
    if clipping not in CLIPPING_POLICIES:
        raise ValueError(f"clipping must be one of {CLIPPING_POLICIES}, got {clipping!r}")
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not an audio file")
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    samples, rate = _decode(path, max_seconds)
    if samples.size == 0:
        raise DataError(f"{path}: empty audio file (0 samples)")
    peak = float(np.max(np.abs(samples)))
    if not np.isfinite(peak):
        raise DataError(f"{path}: corrupt audio (samples are NaN or infinite)")
    if peak < SILENCE_PEAK:
        raise DataError(
            f"{path}: silent audio (peak {peak:.2g} is below {SILENCE_PEAK:g}, i.e. -60 dBFS)"
        )
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
        if float(np.max(np.abs(samples))) < SILENCE_PEAK:
            raise DataError(
                f"{path}: its channels cancel out when mixed to mono (one is the other "
                "inverted); keep one channel"
            )
    seconds = samples.size / rate
    _check_length(path, seconds, max_seconds)
    if seconds < MIN_SECONDS:
        raise DataError(
            f"{path}: audio is {seconds * 1000:.1f} ms long, too short to transcribe "
            f"(at least {MIN_SECONDS * 1000:g} ms, one feature frame)"
        )
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION and clipping != "ignore":
        message = f"{path}: clipped audio ({clipped:.1%} of samples at full scale)"
        if clipping == "error":
            raise DataError(message)
        warnings.warn(message, ClippingWarning, stacklevel=2)
    if rate != target_rate:
        samples = soxr.resample(samples, rate, target_rate, quality="HQ")
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def load_each(paths, max_seconds: float | None = MAX_SECONDS, origins=None, progress=False):
    """`load_audio` of every file, so that all bad ones can be named at once.

    Returns the waveforms of the readable files and one message per refused file, led by
    its entry of `origins` (e.g. a manifest row) when given.
    """
    from tqdm.auto import tqdm

    origins = origins or [""] * len(paths)
    waveforms, problems = [], []
    for path, origin in zip(
        tqdm(paths, desc="decoding audio", unit="file", disable=not progress), origins, strict=True
    ):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ClippingWarning)
                waveforms.append(load_audio(path, max_seconds=max_seconds))
        except DataError as error:
            problems.append(f"{origin}: {error}" if origin else str(error))
        for warning in caught:  # a clipped file's warning names its manifest row too
            message = f"{origin}: {warning.message}" if origin else str(warning.message)
            warnings.warn(message, warning.category, stacklevel=2)
    return waveforms, problems


def write_audio(path, samples, rate: int = SAMPLE_RATE) -> Path:
    """Writes a mono (or [samples, channels]) waveform in [-1, 1] as 16-bit PCM.

    The format follows the suffix (.wav, .flac, .ogg); parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    subtype = "VORBIS" if path.suffix.lower() == ".ogg" else "PCM_16"
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def duration(path) -> float:
    """Seconds of audio in a file, from its header."""
    return soundfile.info(str(path)).duration


def _decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError):
        return _decode_with_librosa(path)
    # Refuse from the header before decoding an hour of audio.
    if info.frames > 0:
        _check_length(path, info.frames / info.samplerate, max_seconds)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise DataError(f"{path}: corrupt audio file ({error})") from None
    missing = _missing_wav_bytes(path)
    if missing:
        raise DataError(
            f"{path}: truncated WAV file (its header promises {missing} more bytes of audio "
            "than the file holds)"
        )
    return samples, rate


def _missing_wav_bytes(path: Path) -> int:
    """How many bytes of a RIFF WAV's data chunk its header promises but the file lacks
    (0 when complete or not a WAV). libsndfile reads a cut-off WAV without complaint."""
    with open(path, "rb") as handle:
        if handle.read(12)[8:] != b"WAVE":
            return 0
        while chunk := handle.read(8):
            if len(chunk) < 8:
                return 0
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF mark a stream written before its length was known.
                if size in (0, 0xFFFFFFFF):
                    return 0
                return max(0, handle.tell() + size - path.stat().st_size)
            handle.seek(size + size % 2, 1)
    return 0


def _decode_with_librosa(path: Path) -> tuple[np.ndarray, int]:
    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns about its audioread fallback
            samples, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception as error:  # audioread and its backends raise many unrelated types
        reason = str(error) or type(error).__name__
        raise DataError(
            f"{path}: unreadable or corrupt audio file ({reason}); expected wav, flac, ogg or mp3"
        ) from None
    # librosa puts channels first.
    return (samples.T if samples.ndim == 2 else samples), int(rate)


def _check_length(path: Path, seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise DataError(
            f"{path}: audio is {seconds:.1f} s long, over the {max_seconds:g} s limit; "
            "cut it into shorter pieces"
        )
