"""The speech task: glue between the corpus, the `SpeechRecognizer` and the shared machinery."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import metrics
from shared.backbones import CELLS
from shared.config import ConfigError, TrainConfig, data_dir
from shared.ctc import ctc_decode, num_ctc_classes
from shared.errors import DataError, problems_error
from shared.export import (
    export_endpoint,
    load_endpoint,
    read_metadata,
    resolve_export_dir,
    write_metadata,
)
from shared.task import Task, run_info
from shared.vocab import Vocabulary
from suite.speech import corpus
from suite.speech.audio import SAMPLE_RATE, load_each
from suite.speech.features import SpeechFeatures
from suite.speech.lm import LM_FILE, LexiconSearch, build_language_model
from suite.speech.model import SpeechRecognizer
from suite.speech.pipeline import AugmentConfig, load_waveforms, make_dataset, telephone
from suite.speech.text import ALPHABET, check_transcript, language_model_text, normalize

VOCAB_FILE = "vocab.json"
STATS_FILE = "feature_stats.json"


@dataclass
class SpeechDataConfig:
    # Utterances per split of the embedded corpus. Three times as many training utterances
    # at the same number of steps (small preset, 8 epochs of 12000 against 24 of 4000) gave
    # test WER 46.6 / 46.3 % on seeds 1234 / 7 against 46.5 / 45.6 %: the steps limit it,
    # not the utterances, and the larger corpus takes three times as long to make.
    train_size: int = 4000
    valid_size: int = 200
    test_size: int = 300
    corpus_seed: int = 0
    workers: int = 2
    # Longer recordings are refused with this limit named.
    max_seconds: float = 30.0
    # Utterances used to estimate the feature normalisation.
    stats_utterances: int = 500


@dataclass
class FeatureConfig:
    # mfcc | logmel. Small preset, 24 epochs, embedded corpus (test WER 46.5 %, CER 28.3 %
    # with these defaults): log-mel (40 bins, no deltas) lowered the validation loss (24.8
    # against 25.6) but gave WER 49.0 %, the unseen natural voice slt 71-75 % against 60-63 %;
    # 26 mel bins 48.1 %, 10 coefficients 48.4 %.
    kind: str = "mfcc"
    num_mel_bins: int = 40
    num_mfcc: int = 13
    deltas: bool = True
    # Per-utterance mean normalisation (CMN) before the stored statistics. On the embedded
    # corpus it lowered the validation loss but not the test error on unseen voices (small
    # preset: WER 85.9 %, CER 37.1 % with it; 83.4 %, 36.2 % without; again with the small
    # preset of 4ad03ca held to 24 epochs: 47.7 %, 29.4 % against 46.5 %, 28.3 %), so it
    # stays off.
    utterance_mean: bool = False
    # Training only: random frequency-axis stretch in [1 - vtlp, 1 + vtlp] per utterance
    # (vocal tract length perturbation; 0 is off). On the embedded corpus (small preset, 24
    # epochs) 0.1 gave test WER 45.8 %, CER 28.1 % against 46.5 %, 28.3 % without, and 0.15
    # 45.9 %, 28.1 %; the unseen female voice slt about as bad (WER 62.4 % and 60.3 %, was
    # 63.2 %): within a run's noise, so it stays off; speed perturbation and the female-like
    # twins already move formants. Warping at test time instead (seed 7's full-budget
    # model, 3 or 7 factors in 0.85-1.15, keeping the most confident warp or averaging the
    # posteriors) gave validation / test WER 24.2-25.3 / 36.7-37.8 % against 26.2 / 37.6 %,
    # for 3-7 times the acoustic model's cost: not worth it.
    vtlp: float = 0.0


@dataclass
class SpecAugmentConfig:
    time_masks: int = 2
    time_width: int = 20
    # Small preset with Pico voices, 24 epochs: 4 frequency masks gave test WER 45.6 / 45.4 %
    # (seeds 1234 / 7) against 41.5 / 43.2 % with 2, slt 56-58 %: more masking hurts.
    freq_masks: int = 2
    freq_width: int = 6


@dataclass
class SpeechModelConfig:
    """The recognizer's shape. Its only target is characters: a second CTC head on the
    first recurrent layer over espeak-ng's phonemes of each transcript (70 symbols, loss
    weight 0.3) gave test WER 42.6 %, slt 51-53 %, against 40.6 %, 49-52 % without (small
    preset, 24 epochs, seed 1234, in-graph search)."""

    # Small preset with Pico voices, 24 epochs, seeds 1234 / 7: 64 filters lowered the
    # validation loss (24.2 against 25.9) and greedy WER, but gave test WER 43.8 / 44.3 %
    # against 42.7 / 43.4 % (slt 58 / 55 % against 51-55 %). Batch normalisation after
    # each convolution (seed 1234, LM search that ends last words): val loss 25.2 against
    # 26.0 / 25.4, test WER 44.1 % against 41.5 / 43.2 % (seeds 1234 / 7).
    conv_filters: int = 32
    time_stride: int = 2
    cell: str = "gru"
    # Small preset with Pico voices, 24 epochs, seed 1234: 3 layers of 128 (about the
    # parameters of the preset's 2 of 160) gave test WER 43.1 % against 42.7 %, greedy 74.3
    # against 77.2 %; without Pico the same change took 16 % longer for the same epochs.
    units: int = 192
    num_layers: int = 3
    # Between recurrent layers. Small preset, 24 epochs: 0.3 gave test WER 48.1 % (slt 71 /
    # 65 %) against 46.5 % (63 / 63 %): the model underfits its training set already.
    # With Pico voices, 0 (seed 1234) lowered the validation loss (24.5 against 26.0 /
    # 25.4) but gave test WER 42.4 %, CER 22.7 % against 41.5 / 43.2 %, 23.9 / 24.3 %
    # (seeds 1234 / 7; LM search that ends last words): within a run's noise.
    dropout: float = 0.1
    residual: bool = True
    # After each recurrent layer. Small preset with Pico voices, 24 epochs, seed 1234: test
    # WER 47.4 %, CER 29.9 % with it, 42.7 %, 25.9 % without (its validation loss led for
    # 3 epochs, then fell behind).
    layer_norm: bool = False


@dataclass
class SpeechDecodeConfig:
    # greedy | beam: CTC decoding, characters only. lm: beam search over the words of an
    # n-gram language model (suite.speech.lm). All three run in the graph, export included.
    method: str = "lm"
    beam_width: int = 8  # beam's
    # An ARPA model; "" builds one of order `lm_order` from the training transcripts and,
    # with the embedded corpus, text its audio does not say: the text sources' training
    # sentences and `lm_generated` more generated training transcripts (valid and test
    # sentences held out). Test OOV words: 10.1 % -> 2.8 %; test WER 52.6 % -> 49.0 % (the
    # same small-preset model); 0 reads the training transcripts only. With the small
    # preset's model at its full budget (seed 7, validation / test WER 26.2 / 37.6 %):
    # 30 k generated 26.1 / 38.9 %, 300 k 27.3 / 37.8 %, 300 k at order 4 26.9 / 38.8 %,
    # 50 k of the grammar's kinds only (the pool's sentences once) 26.7 / 38.7 %.
    lm_path: str = ""
    lm_order: int = 3
    lm_generated: int = 100_000
    # Chosen on the embedded corpus's validation voices with the small preset's model
    # (greedy: WER 66.4 %, CER 25.3 %): WER 37.8 %, CER 21.4 %; weights 1.5 / 2.5 gave WER
    # 38.5 / 38.4 %; order 4 about as order 3. Again once the search could end a last word
    # (small preset with Pico voices, 24 epochs): (2.0, 1.0) gave WER 34.2 %; of weights
    # 1.0-3.0 and word scores -1 to 2, none beat it by more than 0.5; nor, with the search
    # in the graph (33.3 %), did weights 1.5-2.5 with word scores 0-2 (best: 32.9 %). LM
    # text from the whole Bible, not only the corpus's 8 books (22 k more clauses):
    # validation 33.2 % against 34.2 %, test 42.7 % against 41.5 %: no gain.
    lm_weight: float = 2.0
    word_score: float = 1.0
    # That model (small preset with Pico voices, 24 epochs, seed 1234), validation / test
    # WER with the in-graph search at beams of 32, 64, 128 and 256: 36.2 / 42.8, 34.5 /
    # 41.4, 33.3 / 40.4, 32.3 / 40.5 %, searching 0.3, 0.4, 0.5 and 0.7 ms a frame (batches
    # of 16, one core). Flashlight's C++ search, which it replaced, gave 34.2 / 41.6 % at a
    # beam of 200 (0.2 ms a frame). Extending each hypothesis by the frame's 12 likeliest
    # tokens instead of 8 changed nothing (33.4 / 40.6 %); by 4 cost 3 points.
    lm_beam_width: int = 128
    # `evaluate` also scores CMU PocketSphinx's US English model (PyPI `pocketsphinx`, an
    # HMM recogniser with its own large-vocabulary LM) on the same test audio, the peer our
    # figures stand beside; it costs ~0.25 s per second of audio on one core.
    peer: bool = True


@dataclass
class SpeechConfig:
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: SpeechModelConfig = field(default_factory=SpeechModelConfig)
    decode: SpeechDecodeConfig = field(default_factory=SpeechDecodeConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=30, batch_size=32, learning_rate=1e-3, clipnorm=5.0
        )
    )


PRESETS = {
    "tiny": {
        "data": {"train_size": 24, "valid_size": 6, "test_size": 6, "stats_utterances": 24},
        "model": {"conv_filters": 8, "units": 32, "num_layers": 1},
        "decode": {"lm_generated": 0},
        "train": {"epochs": 2, "batch_size": 8},
    },
    # Sized for 2 CPU cores: time subsampled by 3 (33 steps/s: enough for CTC on the fastest
    # speech, 26 characters/s, sped up by 1.2) and 2 BiGRU layers. Batches of 16 learn more
    # per second than 32 here (val loss 40.5 after 3 epochs against 41.8 after 4) and than 8
    # (86 ms a step against ~125, but after 650 s of the 30-minute cosine, val loss 29.7 at
    # epoch 14 against 26.4-26.7 at epoch 20). More epochs are planned than fit in 30
    # minutes: the time limit fits the cosine into those that do (23 at ~75 s an epoch; 34
    # at 35-80 s). On one machine, 34 epochs gave test WER 44.9 %, CER 27.6 % against
    # 46.5 %, 28.3 % for 24 (16 min). Speed perturbation up to ±20 % on 70 % of utterances also
    # shifts formants about as far as a male voice is from a female one. Learning rate 3e-3
    # at 24 epochs: test WER 44.6 / 45.5 % against 46.5 / 45.6 % (seeds 1234 / 7) before the
    # Pico voices, 41.9 % against 41.5 / 43.2 % with them; 4e-3 47.3 %: within a run's
    # noise. 256 units took 50 s an epoch against 30 s, and after 100 s of training its
    # validation loss was 50.5 against 46.7-46.9 for 160: wider learns less per second here.
    "small": {
        "augment": {"speed_probability": 0.7, "speed_range": 0.2},
        "model": {"time_stride": 3, "units": 160, "num_layers": 2},
        "train": {
            "epochs": 60,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "lr_schedule": "cosine",
            "warmup_steps": 200,
            "time_limit_minutes": 30,
        },
    },
    "base": {
        "data": {"train_size": 20000, "valid_size": 500, "test_size": 1000},
        "features": {"kind": "logmel", "num_mel_bins": 80, "deltas": False},
        "model": {"units": 512, "num_layers": 5, "layer_norm": True},
        "train": {"epochs": 60, "lr_schedule": "cosine", "warmup_steps": 1000},
    },
}


@dataclass
class Split:
    waveforms: list
    transcripts: list
    voices: list
    origins: list


def speech_vocabulary() -> Vocabulary:
    """Characters the recognizer writes: a–z, space, apostrophe."""
    return Vocabulary(list(ALPHABET), level="char")


class SpeechTask(Task):
    name = "speech"
    summary = "CTC speech recognizer on MFCC features (default: multi-voice TTS corpus)"
    config_class = SpeechConfig
    presets = PRESETS
    predict_inputs = "audio files"
    resumable_sections = ("train", "decode", "augment", "spec_augment")

    # -- data ----------------------------------------------------------------------------
    def _manifests(self, config, data):
        """Split -> list of `Utterance` from the embedded corpus or a user manifest/folder."""
        d = config.data
        if data is None:
            sizes = {"train": d.train_size, "valid": d.valid_size, "test": d.test_size}
            paths = corpus.prepare_corpus(sizes, seed=d.corpus_seed, workers=d.workers)
            return {split: corpus.read_manifest(path) for split, path in paths.items()}
        path = Path(data)
        if path.is_dir():
            found = {}
            for split in corpus.SPLITS:
                candidates = [path / f"{split}.{ext}" for ext in ("csv", "tsv")]
                manifest = next((c for c in candidates if c.is_file()), None)
                if manifest is None:
                    raise DataError(f"{path}: no {split}.csv or {split}.tsv manifest")
                found[split] = corpus.read_manifest(manifest)
            return found
        utterances = corpus.read_manifest(path)
        if len(utterances) < 3:
            raise DataError(f"{path}: need at least 3 utterances to split, got {len(utterances)}")
        shuffled = list(utterances)
        random.Random(0).shuffle(shuffled)
        held = max(1, len(shuffled) // 20)
        return {
            "test": shuffled[:held],
            "valid": shuffled[held : 2 * held],
            "train": shuffled[2 * held :],
        }

    def _splits(self, config, data, names) -> dict[str, Split]:
        """The named splits, decoded; manifests are read (or the corpus made) once."""
        if data is not None and data.startswith("tfds:"):
            name = data[len("tfds:") :]
            return {split: load_tfds_split(name, split, config.data.max_seconds) for split in names}
        manifests = self._manifests(config, data)
        cache = data_dir() / "speech" / "cache"
        splits, errors = {}, []
        for split in names:
            utterances = manifests[split]
            try:
                waveforms = load_waveforms(utterances, cache, config.data.max_seconds)
            except DataError as error:  # named for every split at once
                errors.append(f"{split} split: {error}")
                continue
            splits[split] = Split(
                waveforms,
                [u.transcript for u in utterances],
                [u.voice or "unknown" for u in utterances],
                [u.origin or str(u.path) for u in utterances],
            )
        if errors:
            raise DataError("\n".join(errors))
        return splits

    def check_config(self, config):
        """Refuses, in one line, settings that the layers would reject with a traceback."""
        super().check_config(config)
        f, m = config.features, config.model
        if f.kind not in ("mfcc", "logmel"):
            raise ConfigError(f"features.kind={f.kind!r}: choose mfcc or logmel")
        if f.kind == "mfcc" and not 1 <= f.num_mfcc <= f.num_mel_bins:
            raise ConfigError(
                f"features.num_mfcc={f.num_mfcc}: choose 1 to features.num_mel_bins "
                f"({f.num_mel_bins})"
            )
        if m.cell not in CELLS:
            raise ConfigError(f"model.cell={m.cell!r}: choose one of {', '.join(CELLS)}")
        for name in ("conv_filters", "time_stride", "units", "num_layers"):
            if getattr(m, name) < 1:
                raise ConfigError(f"model.{name}={getattr(m, name)}: must be at least 1")
        if config.decode.lm_beam_width < 1:
            raise ConfigError(
                f"decode.lm_beam_width={config.decode.lm_beam_width}: must be at least 1"
            )

    def prepare(self, config, data):
        self.check_config(config)
        splits = self._splits(config, data, corpus.SPLITS)
        counts = {name: len(split.waveforms) for name, split in splits.items()}
        return "speech data ready: " + ", ".join(f"{k} {v}" for k, v in counts.items())

    def _labels(self, vocab, transcripts):
        ids = vocab.encode(tf.constant(transcripts)).to_list()
        return [np.asarray(row, np.int32) for row in ids]

    def datasets(self, config, data, run_dir):
        run_dir = Path(run_dir)
        vocab = speech_vocabulary()
        vocab.save(run_dir / VOCAB_FILE)
        # The test split's files too, so that a bad one is reported now, not after training
        # (a TFDS set is decoded by TFDS, and its test split may be large).
        tfds = data is not None and data.startswith("tfds:")
        splits = self._splits(config, data, ("train", "valid") if tfds else corpus.SPLITS)
        train, valid = splits["train"], splits["valid"]
        if not (run_dir / STATS_FILE).is_file():
            self._write_stats(config, train.waveforms, run_dir / STATS_FILE)
        self._language_model(config, data, run_dir, train.transcripts)
        batch = config.train.batch_size
        return (
            make_dataset(
                train.waveforms,
                self._labels(vocab, train.transcripts),
                batch,
                shuffle=True,
                augmentation=config.augment,
                seed=config.train.seed,
            ),
            make_dataset(valid.waveforms, self._labels(vocab, valid.transcripts), batch),
        )

    def _write_stats(self, config, waveforms, path):
        """Feature normalisation from (unaugmented) training utterances."""
        layer = SpeechFeatures(**dataclasses.asdict(config.features))
        chosen = waveforms[: config.data.stats_utterances]
        layer.adapt((tf.constant(w[None]), tf.constant([len(w)])) for w in chosen)
        stats = {"mean": layer.mean.numpy().tolist(), "std": layer.std.numpy().tolist()}
        path.write_text(json.dumps(stats))

    def _language_model(self, config, data, run_dir, transcripts=None):
        """The LM file `decode.method=lm` uses: `decode.lm_path`, or the run's own, built
        from the training transcripts the first time it is needed."""
        decode = config.decode
        if decode.method not in ("greedy", "beam", "lm"):
            raise ConfigError(f"decode.method={decode.method!r}: choose greedy, beam or lm")
        if decode.method != "lm":
            return None
        if decode.lm_path:
            path = Path(decode.lm_path)
            if not path.is_file():
                raise DataError(f"{path}: no such language model (decode.lm_path)")
            with open(path, encoding="utf-8", errors="replace") as handle:
                head = [line.strip() for line in itertools.islice(handle, 20)]
            if "\\data\\" not in head:
                raise DataError(f"{path}: not an ARPA language model (no \\data\\ section)")
            return path
        path = Path(run_dir) / LM_FILE
        if not path.is_file():
            if transcripts is None:
                transcripts = self._transcripts(config, data, "train")
            if data is None and decode.lm_generated:
                extra = language_model_text(decode.lm_generated, config.data.corpus_seed)
                transcripts = list(transcripts) + extra
            print(
                f"speech: building a {decode.lm_order}-gram language model of "
                f"{len(transcripts)} sentences of training text -> {path}",
                flush=True,
            )
            build_language_model(transcripts, path, decode.lm_order)
        return path

    def _transcripts(self, config, data, split):
        if data is not None and data.startswith("tfds:"):
            return self._splits(config, data, (split,))[split].transcripts
        return [u.transcript for u in self._manifests(config, data)[split]]

    # -- model ---------------------------------------------------------------------------
    def build_model(self, config, run_dir):
        vocab = speech_vocabulary()
        m = config.model
        model = SpeechRecognizer(
            num_ctc_classes(vocab.size),
            features=dataclasses.asdict(config.features),
            spec_augment=dataclasses.asdict(config.spec_augment),
            conv_filters=m.conv_filters,
            time_stride=m.time_stride,
            cell=m.cell,
            units=m.units,
            num_layers=m.num_layers,
            dropout=m.dropout,
            residual=m.residual,
            layer_norm=m.layer_norm,
        ).build_for()
        stats_path = Path(run_dir) / STATS_FILE
        if stats_path.is_file():
            stats = json.loads(stats_path.read_text())
            model.featurizer.mean.assign(stats["mean"])
            model.featurizer.std.assign(stats["std"])
        return model

    # -- evaluation ---------------------------------------------------------------------
    def transcribe(
        self, model, config, waveforms, search=None, channel=None, greedy=False, batch_size=16
    ):
        """Transcripts of float32 waveforms with the Keras model, as its export gives them
        (`search`: the LM search an export of `decode.method=lm` holds), each through
        `channel` if one is given. `greedy=True` returns `(transcripts, greedy transcripts)`
        of the same pass."""
        vocab = speech_vocabulary()
        endpoint = _endpoint(model, config, vocab, search)

        @tf.function(reduce_retracing=True)
        def run(waveform, length):
            if channel is not None:
                waveform = tf.map_fn(channel, waveform)
            outputs = endpoint(waveform, length)
            if not greedy:
                return [outputs["text"]]
            ids, _ = ctc_decode(outputs["log_probs"], outputs["frames"], "greedy")
            return [outputs["text"], vocab.decode(ids)]

        columns = [[None] * len(waveforms) for _ in range(2 if greedy else 1)]
        order = np.argsort([len(w) for w in waveforms])  # similar lengths batch together
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            texts_of_batch = run(*pad([waveforms[i] for i in chosen]))
            for column, texts in zip(columns, texts_of_batch, strict=True):
                for i, text in zip(chosen, texts.numpy(), strict=True):
                    column[i] = text.decode()
        return tuple(columns) if greedy else columns[0]

    def language_model_search(self, config, lm_path):
        """The in-graph `LexiconSearch` of `lm_path` with the config's search settings."""
        return LexiconSearch(lm_path, speech_vocabulary().get_vocabulary(), **_lm_settings(config))

    def _run_search(self, config, data, run_dir):
        """The search of the run's LM (`_language_model`), or None when the config decodes
        without one."""
        lm_path = self._language_model(config, data, run_dir)
        return self.language_model_search(config, lm_path) if lm_path else None

    def evaluate(self, model, config, data, run_dir):
        search = self._run_search(config, data, run_dir)
        test = self._splits(config, data, ("test",))["test"]
        # Greedy transcripts of the same pass show what the LM adds.
        hypotheses, greedy = self.transcribe(model, config, test.waveforms, search, greedy=True)
        scores = {
            "utterances": len(test.transcripts),
            "wer": metrics.wer(test.transcripts, hypotheses),
            "cer": metrics.cer(test.transcripts, hypotheses),
        }
        if search is not None:
            scores["wer_greedy"] = metrics.wer(test.transcripts, greedy)
            scores["cer_greedy"] = metrics.cer(test.transcripts, greedy)
        telephone_hypotheses = self.transcribe(model, config, test.waveforms, search, telephone)
        scores["wer_telephone"] = metrics.wer(test.transcripts, telephone_hypotheses)
        scores["cer_telephone"] = metrics.cer(test.transcripts, telephone_hypotheses)
        for voice in sorted(set(test.voices)):
            chosen = [i for i, v in enumerate(test.voices) if v == voice]
            refs = [test.transcripts[i] for i in chosen]
            hyps = [hypotheses[i] for i in chosen]
            scores[f"wer[{voice}]"] = metrics.wer(refs, hyps)
            scores[f"cer[{voice}]"] = metrics.cer(refs, hyps)
        columns = {
            "origin": test.origins,
            "voice": test.voices,
            "reference": test.transcripts,
            "hypothesis": hypotheses,
            "hypothesis_telephone": telephone_hypotheses,
        }
        peer = pocketsphinx_transcribe(test.waveforms) if config.decode.peer else None
        if peer is not None:
            scores["pocketsphinx_wer"] = metrics.wer(test.transcripts, peer)
            scores["pocketsphinx_cer"] = metrics.cer(test.transcripts, peer)
            columns["pocketsphinx"] = peer
        with open(Path(run_dir) / "predictions.tsv", "w", encoding="utf-8") as handle:
            handle.write("\t".join(columns) + "\n")
            for row in zip(*columns.values(), strict=True):
                handle.write("\t".join(row) + "\n")
        return scores

    # -- export and serving --------------------------------------------------------------
    def export(self, model, config, run_dir, out_dir):
        # A run made before its LM existed builds it now, from the data it was trained on.
        search = self._run_search(config, run_info(run_dir).get("data"), run_dir)
        spec = [
            tf.TensorSpec([None, None], tf.float32, name="waveform"),
            tf.TensorSpec([None], tf.int32, name="length"),
        ]
        vocab = speech_vocabulary()
        track = [model, vocab] + ([search] if search is not None else [])
        path = export_endpoint(out_dir, _endpoint(model, config, vocab, search), spec, track=track)
        metadata = {
            "task": self.name,
            "sample_rate": SAMPLE_RATE,
            "max_seconds": config.data.max_seconds,
            "decode": config.decode.method,
        }
        if search is not None:
            metadata["lm"] = {"lexicon_words": search.lexicon_size, **_lm_settings(config)}
        write_metadata(path, metadata)
        return path

    def predict(self, export_dir, inputs):
        export_dir = resolve_export_dir(export_dir)
        max_seconds = read_metadata(export_dir).get("max_seconds", 30.0)
        # Every file is read first, and every bad one named, before any work is done.
        waveforms, errors = load_each(inputs, max_seconds)
        if errors:
            raise problems_error(f"{len(errors)} of {len(inputs)} files unusable", errors, None)
        endpoint = load_endpoint(export_dir)
        lines = []
        for start in range(0, len(waveforms), 16):
            batch, lengths = pad(waveforms[start : start + 16])
            outputs = endpoint(waveform=tf.constant(batch), length=tf.constant(lengths))
            lines += [text.decode() for text in outputs["text"].numpy()]
        return [f"{path}\t{text}" for path, text in zip(inputs, lines, strict=True)]


def pocketsphinx_transcribe(waveforms) -> list[str] | None:
    """Transcripts of 16 kHz waveforms by CMU PocketSphinx's bundled US English model (the
    peer), normalised to `ALPHABET`; None when PocketSphinx is not installed."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    from tqdm.auto import tqdm

    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    texts = []
    for waveform in tqdm(waveforms, desc="pocketsphinx (peer)", unit="utt"):
        decoder.start_utt()
        decoder.process_raw(np.round(waveform * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        found = decoder.hyp()
        texts.append(" ".join(normalize(found.hypstr).split()) if found else "")
    return texts


def _lm_settings(config) -> dict:
    """`LexiconSearch`'s settings from the config (an export's metadata records them)."""
    d = config.decode
    return {"beam_width": d.lm_beam_width, "lm_weight": d.lm_weight, "word_score": d.word_score}


def _endpoint(model, config, vocab, search=None):
    """The export's function: waveforms -> transcripts (`text`: `search`'s when the LM
    decodes, else the CTC decoding of `decode.method`) and the CTC log-probabilities
    (`log_probs`, `frames` of them) for clients with decoders of their own."""
    method, beam_width = config.decode.method, config.decode.beam_width
    if method == "lm" and search is None:
        raise ValueError(
            "decode.method=lm decodes with the LM's search: pass "
            "search=task.language_model_search(config, lm_path)"
        )

    def transcribe(waveform, length):
        # A length past the samples would read padding as speech: a row holds no more.
        length = tf.clip_by_value(tf.cast(length, tf.int32), 0, tf.shape(waveform)[1])
        outputs = model({"waveform": waveform, "length": length}, training=False)
        log_probs = tf.nn.log_softmax(outputs["logits"])
        if search is not None:
            text = search(log_probs, outputs["length"])
        else:
            ids, _ = ctc_decode(outputs["logits"], outputs["length"], method, beam_width)
            text = vocab.decode(ids)
        return {"text": text, "log_probs": log_probs, "frames": outputs["length"]}

    return transcribe


def pad(waveforms):
    """Right-pads float32 waveforms into `[batch, samples]` plus their lengths."""
    lengths = np.array([len(w) for w in waveforms], np.int32)
    batch = np.zeros([len(waveforms), max(lengths.max(initial=0), 1)], np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, lengths


# Where each known TFDS speech set keeps its audio and its splits (ours: train, valid,
# test); others are read with the default layout.
_TFDS_LAYOUTS = {
    "librispeech": {
        "audio": "speech",
        "splits": {"train": "train_clean100", "valid": "dev_clean", "test": "test_clean"},
    },
}
_TFDS_DEFAULT_LAYOUT = {
    "audio": "audio",
    "splits": {"train": "train", "valid": "validation", "test": "test"},
}


def load_tfds_split(name, split, max_seconds):
    """A TFDS speech set as a `Split`: `librispeech` (needs the internet the first time),
    `speech_commands` (its `_silence_` and `_unknown_` clips are left out: they have no
    words), `rnnsuite_speech/CONFIG` (the embedded corpus), or any set with `audio` and
    `text` features and train/validation/test splits."""
    import tensorflow_datasets as tfds

    family = name.partition("/")[0].partition(":")[0]  # "librispeech:2.1.1" -> librispeech
    if family == "rnnsuite_speech":
        corpus.RnnsuiteSpeech  # noqa: B018 (defining the builder registers it with TFDS)
    layout = _TFDS_LAYOUTS.get(family, _TFDS_DEFAULT_LAYOUT)
    theirs = layout["splits"][split]
    try:
        builder = tfds.builder(name, data_dir=str(data_dir() / "tfds"))
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=theirs)
    except Exception as error:  # TFDS raises many kinds; the user needs the gist and name.
        raise DataError(f"tfds:{name}: could not load ({type(error).__name__}: {error})") from None
    features = builder.info.features
    label_names = features["label"].names if "label" in features else None
    audio_key = layout["audio"]
    rate = getattr(features[audio_key], "sample_rate", SAMPLE_RATE) or SAMPLE_RATE
    out, too_long, wordless = Split([], [], [], []), 0, 0
    for index, example in enumerate(tfds.as_numpy(dataset)):
        text = example["text"].decode() if "text" in example else label_names[example["label"]]
        if text.startswith("_"):  # speech_commands' _silence_ and _unknown_
            wordless += 1
            continue
        audio = example[audio_key].astype(np.float32)
        audio = audio / 32768.0 if np.abs(audio).max() > 1.0 else audio
        if rate != SAMPLE_RATE:
            import soxr

            audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
        if len(audio) > max_seconds * SAMPLE_RATE:
            too_long += 1
            continue
        where = f"tfds:{name}:{theirs}:{index}"
        voice = example.get("voice", example.get("speaker_id", "unknown"))
        out.waveforms.append(audio)
        out.transcripts.append(check_transcript(text, where))
        out.voices.append(voice.decode() if isinstance(voice, bytes) else str(voice))
        out.origins.append(where)
    if too_long or wordless:
        print(
            f"tfds:{name}:{theirs}: left out {too_long} clips over data.max_seconds "
            f"({max_seconds:g} s) and {wordless} without words",
            flush=True,
        )
    if not out.waveforms:
        raise DataError(f"tfds:{name}:{theirs}: no usable utterances")
    return out
