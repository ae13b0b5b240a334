"""The translation task: glue between the corpus, the `Translator` and the shared machinery."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import metrics
from shared.config import DecodeConfig, TrainConfig
from shared.errors import DataError
from shared.export import (
    export_endpoint,
    read_metadata,
    resolve_export_dir,
    serve,
    write_metadata,
)
from shared.losses import SequenceCrossentropy, token_accuracy
from shared.plots import draw_heatmap
from shared.task import Task
from shared.vocab import EOS_ID
from suite.nlp import corpus
from suite.nlp.pipeline import encode_pairs, make_dataset
from suite.nlp.tokenizer import load_or_build_tokenizers, load_tokenizers, load_vocabulary
from suite.nlp.translation import Translator


@dataclass
class TranslationDataConfig:
    source_language: str = "en"
    target_language: str = "es"
    # Training pairs with more tokens than this on either side are skipped.
    max_length: int = 50
    # Vocabulary size per side, specials included.
    max_vocab: int = 8000
    lowercase: bool = False
    # Use only the first N training pairs (0 = all): quick runs and tests.
    limit: int = 0
    # `predict` refuses inputs longer than this many tokens.
    max_input_tokens: int = 400


@dataclass
class TranslationModelConfig:
    embedding_dim: int = 256
    cell: str = "lstm"
    units: int = 256
    encoder_layers: int = 1
    decoder_layers: int = 1
    attention: str = "bahdanau"  # bahdanau | luong
    dropout: float = 0.2
    residual: bool = False
    layer_norm: bool = False
    label_smoothing: float = 0.1


@dataclass
class TranslationConfig:
    tokenizer: str = "subword"  # subword (SentencePiece) | word | char
    data: TranslationDataConfig = field(default_factory=TranslationDataConfig)
    model: TranslationModelConfig = field(default_factory=TranslationModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, batch_size=64, learning_rate=2e-3)
    )


PRESETS = {
    "tiny": {
        "data": {"limit": 2000, "max_length": 30, "max_vocab": 1000},
        "model": {"embedding_dim": 64, "units": 64, "dropout": 0.0},
        "decode": {"beam_width": 2},
        "train": {"epochs": 2, "batch_size": 32},
    },
    # Sized for 2 CPU cores (measured: BLEU 26.6 / chrF 47.4 against apertium's 12.6 / 39.1
    # on the test verses, 7 epochs in 32 min on 2 AVX2 cores; 26.5 / 47.5 in 12 min on 2
    # AVX-512 cores; the time limit ends a slower run early).
    "small": {
        "data": {"max_length": 40, "max_vocab": 4000},
        "model": {"cell": "gru", "embedding_dim": 128, "units": 192},
        "train": {
            "epochs": 7,
            "learning_rate": 3e-3,
            "lr_schedule": "cosine",
            "warmup_steps": 200,
            # No XLA: it makes this model's training step 2.4x slower on a CPU
            # (bench/README.md, "End to end against the published Keras examples").
            "time_limit_minutes": 38,
        },
    },
    "base": {
        "model": {
            "embedding_dim": 512,
            "units": 512,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "residual": True,
        },
        "train": {"epochs": 20, "batch_size": 128, "lr_schedule": "cosine", "warmup_steps": 500},
    },
}


class TranslationTask(Task):
    name = "translation"
    summary = "attentive recurrent encoder–decoder over text (default: English→Spanish Bible)"
    config_class = TranslationConfig
    presets = PRESETS
    predict_inputs = "text lines"

    def demo_inputs(self, config):
        return ["In the beginning, God created the heavens and the earth.", "Jesus wept."]

    # -- data ----------------------------------------------------------------------------
    def _pairs(self, config, data):
        d = config.data
        splits = corpus.load_pairs(data, d.source_language, d.target_language)
        if d.limit:
            splits = {**splits, "train": splits["train"][: d.limit]}
        return splits

    def prepare(self, config, data):
        splits = self._pairs(config, data)
        counts = ", ".join(f"{name} {len(pairs)}" for name, pairs in splits.items())
        return f"translation data ready: {counts} sentence pairs"

    def datasets(self, config, data, run_dir):
        splits = self._pairs(config, data)
        source_vocab, target_vocab = load_or_build_tokenizers(
            run_dir, splits["train"], config.tokenizer, config.data.max_vocab, config.data.lowercase
        )
        train_src, train_tgt, kept = encode_pairs(
            splits["train"], source_vocab, target_vocab, config.data.max_length
        )
        if not kept:
            raise DataError(
                f"no training pair has at most {config.data.max_length} tokens per side; "
                "raise data.max_length"
            )
        valid_src, valid_tgt, _ = encode_pairs(splits["valid"], source_vocab, target_vocab)
        batch = config.train.batch_size
        train = make_dataset(train_src, train_tgt, batch, shuffle=True, seed=config.train.seed)
        return train, make_dataset(valid_src, valid_tgt, batch)

    # -- model ---------------------------------------------------------------------------
    def build_model(self, config, run_dir):
        source_vocab, target_vocab = load_tokenizers(run_dir)
        m = config.model
        model = Translator(
            source_vocab.size,
            target_vocab.size,
            embedding_dim=m.embedding_dim,
            cell=m.cell,
            units=m.units,
            encoder_layers=m.encoder_layers,
            decoder_layers=m.decoder_layers,
            attention=m.attention,
            dropout=m.dropout,
            residual=m.residual,
            layer_norm=m.layer_norm,
        )
        return model.build_for()

    def compile_args(self, config):
        return {
            "loss": SequenceCrossentropy(config.model.label_smoothing),
            "metrics": [token_accuracy],
        }

    # -- evaluation ----------------------------------------------------------------------
    def translate(self, model, config, source_vocab, target_vocab, texts, batch_size=64):
        """Translates Python strings with the Keras model (the export does the same in-graph)."""
        generate = tf.function(
            lambda ids: model.generate(ids, config.decode.beam_width, config.decode.length_penalty),
            reduce_retracing=True,  # one trace for every batch shape, not one per shape
        )
        outputs = []
        for start in range(0, len(texts), batch_size):
            ids = source_vocab.encode_padded(tf.constant(texts[start : start + batch_size]))
            outputs += [t.decode("utf-8") for t in target_vocab.decode(generate(ids)).numpy()]
        return outputs

    def evaluate(self, model, config, data, run_dir):
        run_dir = Path(run_dir)
        source_vocab, target_vocab = load_tokenizers(run_dir)
        test = self._pairs(config, data)["test"]
        sources = [p.source for p in test]
        references = [p.target for p in test]
        hypotheses = self.translate(model, config, source_vocab, target_vocab, sources)
        with open(run_dir / "predictions.tsv", "w", encoding="utf-8") as handle:
            handle.write("origin\tsource\treference\ttranslation\n")
            for pair, hypothesis in zip(test, hypotheses, strict=True):
                handle.write(f"{pair.origin}\t{pair.source}\t{pair.target}\t{hypothesis}\n")
        scores = {
            "sentences": len(test),
            "bleu": metrics.bleu(references, hypotheses),
            "chrf": metrics.chrf(references, hypotheses),
            "exact_match": metrics.exact_match(references, hypotheses),
        }
        # The rule-based peer only makes sense on natural language: the embedded corpus.
        peer = None
        if data is None:
            peer = apertium_translate(
                sources, config.data.source_language, config.data.target_language
            )
        if peer is not None:
            scores["apertium_bleu"] = metrics.bleu(references, peer)
            scores["apertium_chrf"] = metrics.chrf(references, peer)
        draw_attention(model, source_vocab, target_vocab, sources[0], run_dir / "attention.png")
        return scores

    # -- export and serving --------------------------------------------------------------
    def export(self, model, config, run_dir, out_dir):
        source_vocab, target_vocab = load_tokenizers(run_dir)
        beam_width, length_penalty = config.decode.beam_width, config.decode.length_penalty

        def translate(text):
            ids = source_vocab.encode_padded(text)
            # An all-empty batch still needs one (padded) source step.
            ids = tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]])
            tokens = model.generate(ids, beam_width, length_penalty)
            return {"translation": target_vocab.decode(tokens)}

        spec = [tf.TensorSpec([None], tf.string, name="text")]
        path = export_endpoint(out_dir, translate, spec, track=[model, source_vocab, target_vocab])
        write_metadata(
            path,
            {
                "task": self.name,
                "source_language": config.data.source_language,
                "target_language": config.data.target_language,
                "tokenizer": config.tokenizer,
                "max_input_tokens": config.data.max_input_tokens,
                "beam_width": beam_width,
            },
        )
        shutil.copy(Path(run_dir) / "source_vocab.json", path / "assets.extra")
        return path

    def predict(self, export_dir, inputs):
        metadata = read_metadata(export_dir)
        limit = metadata.get("max_input_tokens", 400)
        vocab_path = resolve_export_dir(export_dir) / "assets.extra" / "source_vocab.json"
        source_vocab = load_vocabulary(vocab_path) if vocab_path.is_file() else None
        for line, text in enumerate(inputs, start=1):
            if not text.strip():
                raise DataError(f"input line {line}: empty line (nothing to translate)")
            if len(text.split()) > limit:
                raise DataError(
                    f"input line {line}: {len(text.split())} words, more than the limit of "
                    f"{limit}; split it into sentences"
                )
            if source_vocab is not None and source_vocab.level != "word":
                unknown = source_vocab.unknown_tokens(text)
                if unknown:
                    print(
                        f"warning: input line {line}: unknown characters "
                        f"{' '.join(map(repr, unknown))} are read as [UNK]",
                        file=sys.stderr,
                    )
        outputs = serve(export_dir, {"text": np.asarray([t.encode() for t in inputs])})
        return [t.decode("utf-8") for t in outputs["translation"]]


def draw_attention(model, source_vocab, target_vocab, text, path, longest=60) -> Path:
    """An attention heatmap PNG of one greedy translation: a row per target token, a
    column per source token (at most `longest` of each)."""
    source_ids = source_vocab.encode_padded(tf.constant([text]))[:, :longest]
    target_ids, weights = model.attention_map(source_ids, max_length=longest)

    def pieces(vocab, ids):
        return [
            t.decode("utf-8") or "·" for t in vocab.decode(tf.constant([[i] for i in ids])).numpy()
        ]

    columns = pieces(source_vocab, source_ids.numpy()[0].tolist())
    rows = pieces(target_vocab, [i for i in target_ids if i != EOS_ID]) + ["</s>"] * (
        target_ids[-1] == EOS_ID
    )
    return draw_heatmap(weights, rows, columns, path, row_title="output", column_title="source")


def apertium_translate(texts, source, target):
    """Translations by apertium (rule-based peer), or None when it is not installed."""
    codes = {"en": "eng", "es": "spa"}
    if shutil.which("apertium") is None or source not in codes or target not in codes:
        return None
    pair = f"{codes[source]}-{codes[target]}"
    joined = "\n".join(" ".join(text.split()) for text in texts) + "\n"
    result = subprocess.run(
        ["apertium", "-u", pair], input=joined, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        return None
    lines = result.stdout.rstrip("\n").split("\n")
    return lines if len(lines) == len(texts) else None
