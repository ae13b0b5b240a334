"""Translation tokenizers: subword round trips, in the graph and in an export."""

import random

import numpy as np
import pytest
import tensorflow as tf

from shared.errors import DataError
from shared.export import export_endpoint, serve_in_fresh_process
from suite.nlp.corpus import Pair
from suite.nlp.tokenizer import SubwordVocabulary, build_tokenizers, load_vocabulary

SYLLABLES = "la le lo ma me mo sa se so ta te to ña ño qué".split()


def sentences(count=400, seed=0, syllables=SYLLABLES):
    rng = random.Random(seed)
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "." for _ in range(count)
    ]


@pytest.fixture
def subword():
    # Function-scoped: resetting TensorFlow's seeds (as every test does first) clears the
    # kernel cache, which frees the SentencePiece resources made before it.
    return SubwordVocabulary.train(sentences(), vocab_size=120)


def test_subword_round_trip_inside_tf_function(subword):
    texts = sentences(5, seed=1)

    @tf.function
    def round_trip(batch):
        return subword.decode(subword.encode_padded(batch, add_bos=True, add_eos=True))

    assert [t.decode() for t in round_trip(tf.constant(texts)).numpy()] == texts
    ids = subword.encode_padded(tf.constant(texts), add_bos=True, add_eos=True).numpy()
    assert (ids[:, 0] == 2).all() and ids.max() < subword.size
    assert 4 <= subword.size <= 120


def test_unknown_characters_are_named_and_files_round_trip(subword, tmp_path):
    assert subword.unknown_tokens("la ж me ☃") == ["ж", "☃"]
    subword.save(tmp_path / "v.json")
    again = load_vocabulary(tmp_path / "v.json")
    text = tf.constant(sentences(3, seed=2))
    np.testing.assert_array_equal(again.encode_padded(text), subword.encode_padded(text))
    clone = SubwordVocabulary.from_config(subword.get_config())
    np.testing.assert_array_equal(clone.encode_padded(text), subword.encode_padded(text))


def test_every_level_builds_from_pairs():
    pairs = [Pair(s, s.upper()) for s in sentences(100)]
    for level in ("subword", "word", "char"):
        source, target = build_tokenizers(pairs, level, max_tokens=60)
        assert source.level == level and target.size > 4
    with pytest.raises(DataError, match="unknown tokenizer 'bpe'"):
        build_tokenizers(pairs, "bpe")


@pytest.mark.slow
def test_two_subword_models_serve_apart_in_a_fresh_process(subword, tmp_path):
    # A translator's export holds a source and a target model; each must keep its own.
    other_syllables = "ku ki ko pu pi po ru ri ro".split()
    other = SubwordVocabulary.train(sentences(syllables=other_syllables, seed=1), vocab_size=90)

    def endpoint(text):
        source_ids = subword.encode_padded(text, add_eos=True)
        return {
            "text": other.decode(other.encode_padded(text, add_eos=True)),
            "source_text": subword.decode(source_ids),
        }

    path = export_endpoint(
        tmp_path / "export",
        endpoint,
        [tf.TensorSpec([None], tf.string, name="text")],
        [subword, other],
    )
    texts = sentences(3, syllables=other_syllables, seed=3)
    served = serve_in_fresh_process(path, {"text": np.array([t.encode() for t in texts])})
    assert [t.decode() for t in served["text"]] == texts
    # The first model cannot spell the second's syllables: it must give unknowns, not them.
    assert [t.decode() for t in served["source_text"]] != texts
