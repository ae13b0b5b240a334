"""Source and target tokenizers for translation, built on the training data only.

Three levels, one interface (`encode`, `encode_padded`, `decode`, `size`, `save`, `load`):
- `subword` (default): a SentencePiece unigram model trained on the training side, run in
  the graph by tensorflow-text, so the exported SavedModel takes raw text;
- `word` and `char`: `shared.vocab.Vocabulary`, for small or symbolic corpora.

All use the project's id convention (0 pad, 1 unknown, 2 BOS, 3 EOS). The vocabularies
are saved in the run dir and read back on resume, so ids never change under a model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import keras
import tensorflow as tf

from shared.errors import DataError
from shared.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Vocabulary,
    add_markers,
    content_ids,
)

LEVELS = ("subword", "word", "char")
FILES = ("source_vocab.json", "target_vocab.json")
SUBWORD_FORMAT = "rnnsuite.sentencepiece"


@keras.saving.register_keras_serializable(package="rnnsuite")
class SubwordVocabulary(keras.layers.Layer):
    """A SentencePiece model as an in-graph tokenizer with the project's id convention.

    Args:
        model: the serialized SentencePiece model (bytes, or base64 text in configs).
        lowercase: lowercase text before tokenizing.
    """

    level = "subword"

    def __init__(self, model, lowercase=False, **kwargs):
        super().__init__(**kwargs)
        import tensorflow_text as tf_text

        self.model = base64.b64decode(model) if isinstance(model, str) else bytes(model)
        self.lowercase = lowercase
        # The op's resource is shared by node name inside a process: a SavedModel holding
        # two tokenizers under the default name serves both with whichever loads first.
        # Naming it after the model's content keeps different models apart.
        digest = hashlib.sha1(self.model).hexdigest()[:16]
        self._tokenizer = tf_text.SentencepieceTokenizer(
            model=self.model, out_type=tf.int32, name=f"sentencepiece_{digest}"
        )
        # The tokenizer creates its resource on first use; create it now, outside any
        # tf.function, or a function that uses it first would own (and free) it.
        with tf.init_scope():
            self._size = int(self._tokenizer.vocab_size())
        self.built = True

    @classmethod
    def train(cls, texts, vocab_size=8000, lowercase=False):
        """Trains a unigram SentencePiece model on `texts` (a list of strings)."""
        import sentencepiece as spm

        if lowercase:
            texts = [text.lower() for text in texts]
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type="unigram",
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            character_coverage=1.0,
            # Small corpora cannot fill a large vocabulary; take what there is.
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buffer.getvalue(), lowercase=lowercase)

    @property
    def size(self):
        return self._size

    def _normalised(self, texts):
        texts = tf.convert_to_tensor(texts, tf.string)
        return tf.strings.lower(texts, encoding="utf-8") if self.lowercase else texts

    def encode(self, texts, add_bos=False, add_eos=False):
        return add_markers(self._tokenizer.tokenize(self._normalised(texts)), add_bos, add_eos)

    def encode_padded(self, texts, add_bos=False, add_eos=False, length=None):
        ids = self.encode(texts, add_bos=add_bos, add_eos=add_eos)
        return ids.to_tensor(default_value=PAD_ID, shape=[None, length])

    def decode(self, ids):
        """`[batch, length]` ids to strings; each row stops at its first EOS."""
        return self._tokenizer.detokenize(content_ids(ids))

    def call(self, inputs):
        return self.encode_padded(inputs)

    def unknown_tokens(self, text: str) -> list[str]:
        """Characters of `text` the model cannot represent (they become the unknown id)."""
        unknown = []
        for char in dict.fromkeys(text):
            if char.strip() and UNK_ID in self.encode(tf.constant([char])).flat_values.numpy():
                unknown.append(char)
        return unknown

    def save(self, path):
        data = {
            "format": SUBWORD_FORMAT,
            "version": 1,
            "level": self.level,
            "lowercase": self.lowercase,
            "model": base64.b64encode(self.model).decode("ascii"),
        }
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path, **kwargs):
        data = json.loads(Path(path).read_text())
        return cls(data["model"], lowercase=data["lowercase"], **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "model": base64.b64encode(self.model).decode("ascii"),
            "lowercase": self.lowercase,
        }


def load_vocabulary(path):
    """Reads a vocabulary file of any level."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") == SUBWORD_FORMAT:
        return SubwordVocabulary.load(path)
    return Vocabulary.load(path)


def build_tokenizers(pairs, level="subword", max_tokens=8000, lowercase=False):
    """(source, target) vocabularies from the training pairs."""
    if level not in LEVELS:
        raise DataError(f"unknown tokenizer {level!r}; choose one of {LEVELS}")
    sides = ([p.source for p in pairs], [p.target for p in pairs])
    if level == "subword":
        return tuple(SubwordVocabulary.train(texts, max_tokens, lowercase) for texts in sides)
    return tuple(
        Vocabulary.from_texts(texts, level, lowercase=lowercase, max_tokens=max_tokens)
        for texts in sides
    )


def load_or_build_tokenizers(run_dir: Path, pairs, level, max_tokens, lowercase):
    """The run dir's vocabularies, built from `pairs` the first time."""
    paths = [Path(run_dir) / name for name in FILES]
    if all(path.is_file() for path in paths):
        return tuple(load_vocabulary(path) for path in paths)
    vocabularies = build_tokenizers(pairs, level, max_tokens, lowercase)
    for vocabulary, path in zip(vocabularies, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        vocabulary.save(path)
    return vocabularies


def load_tokenizers(run_dir: Path):
    paths = [Path(run_dir) / name for name in FILES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"missing vocabulary files: {', '.join(missing)}")
    return tuple(load_vocabulary(path) for path in paths)
