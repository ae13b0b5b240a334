import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
import textwrap
import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary

SPANISH = ["¿Qué tal?", "Muy bien, gracias.", "¡Qué día!"]


def strings(tensor):
    return [value.decode("utf-8") for value in tensor.numpy()]


def test_from_texts_orders_by_count_then_token_after_the_specials():
    vocab = Vocabulary.from_texts(["abba", "cab", "d"], level="char")
    # a: 3, b: 3, c: 1, d: 1
    assert vocab.tokens == ["a", "b", "c", "d"]
    assert vocab.get_vocabulary() == ["", "[UNK]", "[BOS]", "[EOS]", "a", "b", "c", "d"]
    assert vocab.size == 8
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert strings(vocab.decode(tf.constant([[4, 5, 6, 7]]))) == ["abcd"]


def test_from_texts_max_tokens_and_min_count():
    texts = ["the cat", "the dog", "the cat", "a bird"]
    vocab = Vocabulary.from_texts(texts, level="word", max_tokens=2)
    assert vocab.tokens == ["the", "cat"]
    vocab = Vocabulary.from_texts(texts, level="word", min_count=2)
    assert vocab.tokens == ["the", "cat"]


def test_word_level_splits_punctuation_and_lowercases():
    vocab = Vocabulary.from_texts(["Hello, world.", "Don't stop well-known"], "word", True)
    tokens = vocab.tokenize(tf.constant(["Hello, world.", "Don't stop well-known"]))
    assert [strings(row) for row in tokens] == [
        ["hello", ",", "world", "."],
        ["don't", "stop", "well-known"],
    ]


@pytest.mark.parametrize(
    "level, lowercase, expected",
    [
        ("char", False, SPANISH),
        ("word", False, SPANISH),
        ("word", True, ["¿qué tal?", "muy bien, gracias.", "¡qué día!"]),
    ],
)
def test_round_trip_inside_tf_function(level, lowercase, expected):
    vocab = Vocabulary.from_texts(SPANISH, level=level, lowercase=lowercase)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = vocab.encode_padded(texts, add_bos=True, add_eos=True)
        return ids, vocab.decode(ids)

    ids, decoded = round_trip(tf.constant(SPANISH))
    assert ids.dtype == tf.int32
    assert np.all(ids.numpy()[:, 0] == BOS_ID)
    assert not np.any(ids.numpy() == UNK_ID)
    assert strings(decoded) == expected


def test_encode_is_ragged_and_padded_version_matches():
    vocab = Vocabulary.from_texts(["ab", "abc"], level="char")
    ragged = vocab.encode(tf.constant(["ab", "abc", ""]), add_eos=True)
    assert isinstance(ragged, tf.RaggedTensor)
    assert ragged.row_lengths().numpy().tolist() == [3, 4, 1]
    dense = vocab.encode_padded(tf.constant(["ab", "abc", ""]), add_eos=True)
    np.testing.assert_array_equal(dense.numpy(), ragged.to_tensor().numpy())
    assert dense.numpy()[2].tolist() == [EOS_ID, 0, 0, 0]
    fixed = vocab.encode_padded(tf.constant(["abc"]), length=2)
    assert fixed.shape == (1, 2)


def test_an_empty_text_has_no_tokens_at_the_word_level():
    vocab = Vocabulary(["a", "b"], level="word")
    ids = vocab.encode(tf.constant(["", "  ", "a b"]), add_bos=True, add_eos=True)
    assert ids.to_list() == [[BOS_ID, EOS_ID], [BOS_ID, EOS_ID], [BOS_ID, 4, 5, EOS_ID]]


def test_decomposed_unicode_input_is_normalised_to_nfc():
    vocab = Vocabulary.from_texts(["¿Qué tal?", "ệ"], level="char")
    nfd = [unicodedata.normalize("NFD", text) for text in ["¿Qué tal?", "ệ"]]
    assert nfd[0] != "¿Qué tal?"
    ids = vocab.encode_padded(tf.constant(nfd))
    assert not np.any(ids.numpy() == UNK_ID)
    assert strings(vocab.decode(ids)) == ["¿Qué tal?", "ệ"]
    # tokens given decomposed are stored composed
    assert Vocabulary(["e\u0301"]).tokens == ["é"]


def test_unknown_characters_map_to_unk_and_are_named():
    vocab = Vocabulary.from_texts(["hello world"], level="char")
    ids = vocab.encode(tf.constant(["hжllo ж!"])).numpy()[0]
    assert ids[1] == UNK_ID and ids[6] == UNK_ID and ids[7] == UNK_ID
    assert vocab.unknown_tokens("hжllo ж!") == ["ж", "!"]
    assert vocab.unknown_tokens("hello") == []
    words = Vocabulary.from_texts(["hello world"], level="word")
    assert words.unknown_tokens("hello, brave world") == [",", "brave"]


def test_decode_stops_at_eos_and_drops_padding_and_bos():
    vocab = Vocabulary(["a", "b", "c"], level="char")  # a=4, b=5, c=6
    ids = tf.constant(
        [[BOS_ID, 4, 0, 5, EOS_ID, 6, 6], [4, 4, 6, 0, 0, 0, 0], [EOS_ID, 4, 0, 0, 0, 0, 0]]
    )
    assert strings(vocab.decode(ids)) == ["ab", "aac", ""]
    ragged = tf.ragged.constant([[4, 5, EOS_ID, 5], [6]])
    assert strings(vocab.decode(ragged)) == ["ab", "c"]
    assert strings(vocab.decode(tf.constant([[4, UNK_ID, 99]]))) == ["a[UNK][UNK]"]


def test_word_level_decode_reattaches_punctuation():
    vocab = Vocabulary.from_texts(["¿Qué tal?", "Hello, world (again)."], level="word")
    ids = vocab.encode_padded(tf.constant(["¿Qué tal?", "Hello , world ( again ) ."]))
    assert strings(vocab.decode(ids)) == ["¿Qué tal?", "Hello, world (again)."]


def test_save_and_load_give_identical_ids(tmp_path):
    vocab = Vocabulary.from_texts(SPANISH, level="word", lowercase=True)
    path = tmp_path / "run" / "vocab.json"
    vocab.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert "¿" in data["tokens"] and data["level"] == "word"
    loaded = Vocabulary.load(path)
    texts = tf.constant(SPANISH + ["qué desconocido"])
    np.testing.assert_array_equal(vocab.encode_padded(texts), loaded.encode_padded(texts))
    assert loaded.lowercase and loaded.tokens == vocab.tokens


def test_config_round_trip():
    vocab = Vocabulary(["x", "y"], level="word", lowercase=True, name="vocab")
    config = vocab.get_config()
    assert config["tokens"] == ["x", "y"] and config["level"] == "word"
    clone = Vocabulary.from_config(config)
    assert (clone.tokens, clone.level, clone.lowercase, clone.name) == (
        ["x", "y"],
        "word",
        True,
        "vocab",
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vocab))
    assert isinstance(restored, Vocabulary) and restored.tokens == ["x", "y"]


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="level"):
        Vocabulary(["a"], level="byte")
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary(["[UNK]"])
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(["é", "e\u0301"])
    with pytest.raises(ValueError, match="single code points"):
        Vocabulary(["ab"], level="char")


def test_keras_model_with_vocabulary_saves_and_loads(tmp_path):
    vocab = Vocabulary.from_texts(SPANISH, level="char", lowercase=True)
    inputs = keras.Input(shape=(), dtype="string")
    ids = vocab(inputs)
    outputs = keras.layers.Embedding(vocab.size, 3, mask_zero=True)(ids)
    model = keras.Model(inputs, outputs)
    texts = tf.constant(["¿qué tal?", "Muy bien"])
    expected = model(texts)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored(texts), expected)
    assert restored.layers[1].tokens == vocab.tokens


@pytest.mark.slow
def test_export_serves_strings_in_a_fresh_process(tmp_path):
    vocab = Vocabulary.from_texts(SPANISH, level="word", lowercase=True)
    archive = keras.export.ExportArchive()
    archive.track(vocab)
    archive.add_endpoint(
        "serving_default",
        lambda text: {"text": vocab.decode(vocab.encode_padded(text, add_eos=True))},
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.write_out(str(tmp_path / "export"), verbose=False)
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        serve = tf.saved_model.load({str(tmp_path / "export")!r}).signatures["serving_default"]
        out = serve(text=tf.constant(["¿QUÉ tal?", "Muy bien, amigo."]))["text"]
        print("|".join(value.decode("utf-8") for value in out.numpy()))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "¿qué tal?|muy bien, [UNK]."
