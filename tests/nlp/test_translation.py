"""The translator end to end on a toy language: learning, decoding, export, bad input."""

import random

import cv2
import numpy as np
import pytest

from shared import config as config_lib
from shared.errors import DataError
from shared.export import serve_in_fresh_process
from shared.training import restore_model, train
from suite.nlp import TranslationConfig, TranslationTask
from suite.nlp.tokenizer import load_tokenizers

WORDS = "ant bee cat dog eel fox gnu hen".split()


def reversal_tsv(path, count=2000, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for _ in range(count):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
            handle.write(f"{' '.join(words)}\t{' '.join(reversed(words))}\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny translator trained to reverse word sequences."""
    root = tmp_path_factory.mktemp("translation")
    data = str(reversal_tsv(root / "reverse.tsv"))
    config = config_lib.resolve(
        TranslationConfig,
        TranslationTask.presets,
        "tiny",
        overrides=["tokenizer=word", "train.epochs=4", "train.verbose=0"],
    )
    summary = train(TranslationTask(), config, root / "run", data)
    return root, data, summary


@pytest.mark.slow
def test_translator_learns_to_reverse(trained):
    root, data, summary = trained
    assert summary["logs"]["val_token_accuracy"] > 0.95
    config, model = restore_model(TranslationTask(), root / "run")
    scores = TranslationTask().evaluate(model, config, data, root / "run")
    assert scores["exact_match"] > 0.95 and scores["bleu"] > 90
    assert "apertium_bleu" not in scores  # the peer is only scored on natural language
    assert (root / "run" / "predictions.tsv").read_text().count("\n") == scores["sentences"] + 1
    assert cv2.imread(str(root / "run" / "attention.png")) is not None


@pytest.mark.slow
def test_attention_of_a_reverser_looks_at_the_mirrored_word(trained):
    root, _, _ = trained
    config, model = restore_model(TranslationTask(), root / "run")
    source_vocab, target_vocab = load_tokenizers(root / "run")
    import tensorflow as tf

    source = source_vocab.encode_padded(tf.constant(["ant bee cat dog eel"]))
    ids, weights = model.attention_map(source)
    np.testing.assert_array_equal(ids, model.generate(source).numpy()[0][: len(ids)])
    assert target_vocab.decode(tf.constant([ids])).numpy()[0].decode() == "eel dog cat bee ant"
    assert weights.shape == (6, 5)  # five words and EOS over five source words
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    # Reversing, the model attends to the mirrored source word more than to any other.
    assert (weights[:5].argmax(axis=1) == [4, 3, 2, 1, 0]).mean() >= 0.8, weights.round(2)


@pytest.mark.slow
def test_beam_width_one_equals_greedy_and_beam_search_works(trained):
    root, _, _ = trained
    config, model = restore_model(TranslationTask(), root / "run")
    source_vocab, target_vocab = load_tokenizers(root / "run")
    import tensorflow as tf

    ids = source_vocab.encode_padded(tf.constant(["ant bee cat", "hen gnu fox eel dog"]))
    greedy = model.generate(ids, beam_width=1).numpy()
    beam = model.generate(ids, beam_width=4).numpy()
    assert target_vocab.decode(greedy).numpy().tolist() == [b"cat bee ant", b"dog eel fox gnu hen"]
    assert target_vocab.decode(beam).numpy().tolist() == [b"cat bee ant", b"dog eel fox gnu hen"]


@pytest.mark.slow
def test_export_in_a_fresh_process_translates_as_keras_does(trained, tmp_path):
    root, _, _ = trained
    task = TranslationTask()
    config, model = restore_model(task, root / "run")
    path = task.export(model, config, root / "run", tmp_path / "export")
    texts = ["ant bee cat", "hen gnu fox eel dog", "dog", "zebra ant"]
    served = serve_in_fresh_process(path, {"text": np.array([t.encode() for t in texts])})
    source_vocab, target_vocab = load_tokenizers(root / "run")
    expected = task.translate(model, config, source_vocab, target_vocab, texts)
    assert [t.decode() for t in served["translation"]] == expected
    assert expected[:2] == ["cat bee ant", "dog eel fox gnu hen"]

    assert task.predict(path, ["ant bee"]) == ["bee ant"]
    with pytest.raises(DataError, match="input line 2: empty line"):
        task.predict(path, ["ant", "   "])
    with pytest.raises(DataError, match="input line 1: 401 words, more than the limit of 400"):
        task.predict(path, [" ".join(["ant"] * 401)])


def test_bad_tokenizer_and_malformed_rows_are_refused(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\tb a\nno tab here\n")
    config = config_lib.resolve(TranslationConfig, TranslationTask.presets, "tiny")
    with pytest.raises(DataError, match="bad.tsv:2"):
        TranslationTask().datasets(config, str(bad), tmp_path / "run")
    good = reversal_tsv(tmp_path / "good.tsv", count=20)
    config = config_lib.resolve(
        TranslationConfig, TranslationTask.presets, "tiny", overrides=["tokenizer=bpe"]
    )
    with pytest.raises(DataError, match="unknown tokenizer 'bpe'"):
        TranslationTask().datasets(config, str(good), tmp_path / "run2")
