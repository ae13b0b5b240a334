"""Token vocabularies: strings to ids and back, in graph ops.

Every model in the project speaks one id convention:

| id | token | meaning |
|---|---|---|
| 0 | `""` | padding (never a real token) |
| 1 | `[UNK]` | anything not in the vocabulary |
| 2 | `[BOS]` | begin of sequence |
| 3 | `[EOS]` | end of sequence |
| 4… | tokens | in the order given |

`Vocabulary` tokenizes, looks up and decodes with TensorFlow ops only, so it runs inside
`tf.data`, `tf.function` and an exported SavedModel (string in, string out).
"""

from __future__ import annotations

import collections
import json
import os
import unicodedata
from collections.abc import Iterable

import keras
import tensorflow as tf

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
LEVELS = ("char", "word")
FILE_FORMAT = "rnnsuite.vocabulary"

# Word level: every punctuation or symbol character is a token of its own, except
# apostrophes and hyphens inside a word ("don't", "well-known"), which stay in it.
_INNER = r"'’\-"
_SPLIT_PUNCT = (r"([^\pL\pN\pM\s" + _INNER + r"])", r" \1 ")
_SPLIT_LEADING_INNER = (r"(^|[\pZ\s])([" + _INNER + r"]+)", r"\1\2 ")
_SPLIT_TRAILING_INNER = (r"([" + _INNER + r"]+)([\pZ\s]|$)", r" \1\2")
_WHITESPACE = r"[\pZ\s]+"
# Word-level decoding: no space before closing punctuation, none after opening punctuation.
_ATTACH_CLOSING = (r"\s+([.,;:!?%)\]}»”…])", r"\1")
_ATTACH_OPENING = (r"([(\[{¿¡«“])\s+", r"\1")


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _compositions(tokens: Iterable[str]) -> list[tuple[str, str]]:
    """(decomposed, composed) pairs for every character of `tokens` that NFD changes.

    Core TensorFlow has no Unicode normalization op. Composing the decomposed form of every
    character the vocabulary knows is all NFC has to do for lookups: any other character maps
    to `[UNK]` either way. Longest first, so "e + dot below + circumflex" becomes "ệ", not
    "ẹ" + a stray circumflex.
    """
    chars = {char for token in tokens for char in token}
    pairs = {(unicodedata.normalize("NFD", c), c) for c in chars}
    return sorted(((d, c) for d, c in pairs if d != c), key=lambda pair: (-len(pair[0]), pair[0]))


def _tokenize(texts, level, lowercase, compositions=()):
    """Split a `[batch]` string tensor into a `[batch, None]` ragged tensor of tokens."""
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    for decomposed, composed in compositions:
        # \Q…\E: the sequence is matched literally, whatever characters it holds.
        texts = tf.strings.regex_replace(texts, r"\Q" + decomposed + r"\E", composed)
    if level == "char":
        return tf.strings.unicode_split(texts, "UTF-8")
    for pattern, rewrite in (_SPLIT_PUNCT, _SPLIT_LEADING_INNER, _SPLIT_TRAILING_INNER):
        texts = tf.strings.regex_replace(texts, pattern, rewrite)
    texts = tf.strings.strip(tf.strings.regex_replace(texts, _WHITESPACE, " "))
    words = tf.strings.split(texts, sep=" ")
    # An empty text splits into one empty word, which is the padding token: drop it.
    return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)


@keras.saving.register_keras_serializable(package="rnnsuite")
class Vocabulary(keras.layers.Layer):
    """Maps text to ids and ids back to text with `StringLookup`, inside the graph.

    Ids follow the project convention: 0 padding, 1 `[UNK]`, 2 `[BOS]`, 3 `[EOS]`, then
    `tokens` in order, so `size == len(tokens) + 4`.

    Text is normalised the same way in both directions: Unicode NFC (tokens are stored in
    NFC; in the graph, decomposed forms of the vocabulary's characters are composed) and,
    with `lowercase`, lower-cased with Unicode rules.

    Levels:
        `"char"`: one token per Unicode code point, whitespace included.
        `"word"`: whitespace-separated words; every punctuation mark or symbol is a token
            of its own, apostrophes and hyphens inside a word stay in it. `decode` joins
            words with spaces and re-attaches closing (`.,;:!?%)]}»”…`) and opening
            (`([{¿¡«“`) punctuation; straight quotes stay spaced.

    Args:
        tokens: the tokens, without the special ones, each unique after NFC.
        level: `"char"` or `"word"`.
        lowercase: lower-case text before looking it up.

    Call arguments:
        inputs: string tensor `[batch]`. Returns `encode_padded(inputs)`: int32
            `[batch, length]`, padded with 0 (use 0 as the mask value downstream).

    Example:
        >>> vocab = Vocabulary.from_texts(["hello", "help"], level="char")
        >>> ids = vocab.encode_padded(tf.constant(["hell", "he"]), add_eos=True)
        >>> vocab.decode(ids).numpy()
        array([b'hell', b'he'], dtype=object)
    """

    def __init__(self, tokens=(), level="char", lowercase=False, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if level not in LEVELS:
            raise ValueError(f"Unknown level {level!r}; choose one of {LEVELS}.")
        tokens = [_nfc(str(token)) for token in tokens]
        _check_tokens(tokens, level)
        self.tokens = tokens
        self.level = level
        self.lowercase = bool(lowercase)
        self._compositions = _compositions(tokens)
        vocabulary = [BOS_TOKEN, EOS_TOKEN, *tokens]
        lookup_args = dict(mask_token=PAD_TOKEN, oov_token=UNK_TOKEN, num_oov_indices=1)
        self.token_to_id_lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, name="token_to_id", **lookup_args
        )
        self.id_to_token_lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, invert=True, name="id_to_token", **lookup_args
        )
        # String inputs must reach `call` untouched (no float conversion).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts, level="char", lowercase=False, max_tokens=None, min_count=1):
        """Builds a vocabulary from the tokens of `texts`.

        Tokens are ordered by count (most frequent first), ties by the token itself, so the
        same texts always give the same ids.

        Args:
            texts: iterable of Python strings.
            level: `"char"` or `"word"`.
            lowercase: lower-case before counting (and in every later lookup).
            max_tokens: keep at most this many tokens (specials not counted).
            min_count: drop tokens seen fewer times.
        """
        if level not in LEVELS:
            raise ValueError(f"Unknown level {level!r}; choose one of {LEVELS}.")
        counts = collections.Counter()
        batch = []
        for text in texts:
            batch.append(_nfc(text))
            if len(batch) == 1024:
                counts.update(_python_tokens(batch, level, lowercase))
                batch = []
        if batch:
            counts.update(_python_tokens(batch, level, lowercase))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ranked = sorted(
            (item for item in counts.items() if item[1] >= min_count),
            key=lambda item: (-item[1], item[0]),
        )
        if max_tokens is not None:
            ranked = ranked[:max_tokens]
        return cls([token for token, _ in ranked], level=level, lowercase=lowercase)

    # -- properties ---------------------------------------------------------------------
    @property
    def size(self):
        """Number of ids, specials included (`len(tokens) + 4`)."""
        return len(self.tokens) + len(SPECIAL_TOKENS)

    @property
    def pad_id(self):
        return PAD_ID

    @property
    def unk_id(self):
        return UNK_ID

    @property
    def bos_id(self):
        return BOS_ID

    @property
    def eos_id(self):
        return EOS_ID

    def get_vocabulary(self):
        """Every token in id order, specials included."""
        return [*SPECIAL_TOKENS, *self.tokens]

    # -- graph ops ----------------------------------------------------------------------
    def tokenize(self, texts):
        """Splits `[batch]` strings into normalised tokens, a `[batch, None]` ragged tensor."""
        return _tokenize(texts, self.level, self.lowercase, self._compositions)

    def encode(self, texts, add_bos=False, add_eos=False):
        """Encodes `[batch]` strings to a `[batch, None]` int32 ragged tensor of ids."""
        tokens = self.tokenize(texts)
        ids = tokens.with_flat_values(
            tf.cast(self.token_to_id_lookup(tokens.flat_values), tf.int32)
        )
        return add_markers(ids, add_bos, add_eos)

    def encode_padded(self, texts, add_bos=False, add_eos=False, length=None):
        """Encodes `[batch]` strings to dense int32 `[batch, length]`, padded with 0.

        Args:
            length: pad (or truncate) to this many ids; default, the longest row.
        """
        ids = self.encode(texts, add_bos=add_bos, add_eos=add_eos)
        return ids.to_tensor(default_value=PAD_ID, shape=[None, length])

    def decode(self, ids):
        """Decodes int `[batch, length]` ids (dense or ragged) to `[batch]` strings.

        Each row stops at its first `[EOS]`; padding and `[BOS]` are dropped; `[UNK]` and
        ids outside the vocabulary come out as `"[UNK]"`.
        """
        kept = content_ids(ids, tf.int64)
        tokens = kept.with_flat_values(self.id_to_token_lookup(kept.flat_values))
        separator = "" if self.level == "char" else " "
        texts = tf.strings.reduce_join(tokens, axis=1, separator=separator)
        if self.level == "word":
            for pattern, rewrite in (_ATTACH_CLOSING, _ATTACH_OPENING):
                texts = tf.strings.regex_replace(texts, pattern, rewrite)
        return texts

    def call(self, inputs):
        return self.encode_padded(inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], None), dtype="int32")

    # -- plain Python -------------------------------------------------------------------
    def unknown_tokens(self, text: str) -> list[str]:
        """Tokens of `text` that map to `[UNK]`, unique, in order of first appearance.

        Runs the same (graph) tokenizer as `encode`, so what it names is exactly what
        `encode` would map to id 1. For messages such as "unknown character 'ж' in line 3".
        """
        tokens = self.tokenize(tf.constant([text]))
        ids = self.token_to_id_lookup(tokens.flat_values).numpy()
        words = [token.decode("utf-8") for token in tokens.flat_values.numpy()]
        unknown = [word for word, index in zip(words, ids, strict=True) if index == UNK_ID]
        return list(dict.fromkeys(unknown))

    def save(self, path):
        """Writes the vocabulary to a UTF-8 JSON file (one token per line)."""
        data = {
            "format": FILE_FORMAT,
            "version": 1,
            "level": self.level,
            "lowercase": self.lowercase,
            "tokens": list(self.tokens),
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            json.dump(data, file, ensure_ascii=False, indent=0)
            file.write("\n")

    @classmethod
    def load(cls, path, **kwargs):
        """Reads a vocabulary written by `save`; `kwargs` go to the constructor."""
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        if data.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not an rnnsuite vocabulary file.")
        return cls(data["tokens"], level=data["level"], lowercase=data["lowercase"], **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(tokens=list(self.tokens), level=self.level, lowercase=self.lowercase)
        return config


def add_markers(ids, add_bos=False, add_eos=False):
    """Puts `[BOS]` before and/or `[EOS]` after every row of ragged int32 `ids`."""
    batch = ids.nrows()
    if add_bos:
        bos = tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.constant(BOS_ID, tf.int32)))
        ids = tf.concat([bos, ids], axis=1)
    if add_eos:
        eos = tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.constant(EOS_ID, tf.int32)))
        ids = tf.concat([ids, eos], axis=1)
    return ids


def content_ids(ids, dtype=tf.int32):
    """The ids a text is made of: each row up to its first `[EOS]`, without padding and
    `[BOS]`, as a ragged tensor of `dtype`; `ids` is dense or ragged `[batch, length]`."""
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(default_value=PAD_ID)
    ids = tf.cast(ids, dtype)
    before_eos = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1), 0)
    keep = before_eos & tf.not_equal(ids, PAD_ID) & tf.not_equal(ids, BOS_ID)
    return tf.ragged.boolean_mask(ids, keep)


def _python_tokens(texts, level, lowercase):
    tokens = _tokenize(tf.constant(texts), level, lowercase).flat_values.numpy()
    return [token.decode("utf-8") for token in tokens]


def _check_tokens(tokens, level):
    seen = set()
    for token in tokens:
        if token in SPECIAL_TOKENS:
            raise ValueError(f"Token {token!r} is reserved (specials: {SPECIAL_TOKENS}).")
        if token in seen:
            raise ValueError(f"Token {token!r} appears twice (after NFC normalization).")
        seen.add(token)
        if level == "char" and len(token) != 1:
            raise ValueError(f"Character-level tokens are single code points, got {token!r}.")
        if level == "word" and any(char.isspace() for char in token):
            raise ValueError(f"Word-level tokens hold no whitespace, got {token!r}.")
