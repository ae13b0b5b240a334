"""The word language model: built from transcripts with IRSTLM, searched with Flashlight."""

import numpy as np
import pytest

from shared.errors import DataError
from suite.speech import lm
from suite.speech.lm import LexiconDecoder, arpa_words, build_language_model
from suite.speech.task import speech_vocabulary

SENTENCES = [
    "the cat sat on the mat",
    "the cat ate the fish",
    "a dog sat on the log",
    "the dog ate the bone",
    "put the cot in the hall",
    "the cat and the dog",
]
TOKENS = speech_vocabulary().get_vocabulary()  # specials, then " 'a…z"; blank is last


def emissions(text, confusions=None):
    """CTC log-probabilities spelling `text` (two frames a character, a blank between);
    `confusions` maps a character position to a rival that gets the larger share."""
    rows = []
    blank = len(TOKENS)
    for position, char in enumerate(text):
        probs = np.full(len(TOKENS) + 1, 0.01 / len(TOKENS))
        rival = (confusions or {}).get(position)
        if rival is None:
            probs[TOKENS.index(char)] = 0.99
        else:  # the wrong character wins the frame, narrowly
            probs[TOKENS.index(rival)], probs[TOKENS.index(char)] = 0.52, 0.47
        rows += [probs, probs]
        spacer = np.full(len(TOKENS) + 1, 0.01 / len(TOKENS))
        spacer[blank] = 0.99
        rows.append(spacer)
    return np.log(np.array(rows, np.float32))[None]


def greedy(log_probs):
    best = log_probs[0].argmax(-1)
    chars = [
        TOKENS[i] for j, i in enumerate(best) if i < len(TOKENS) and (j == 0 or best[j - 1] != i)
    ]
    return "".join(chars)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_language_model(SENTENCES, tmp_path_factory.mktemp("lm") / "lm.arpa", order=3)


def test_model_is_an_arpa_file_of_the_transcripts_words(model_path):
    text = model_path.read_text()
    assert "\\data\\" in text and "\\3-grams:" in text
    assert sorted(arpa_words(model_path)) == sorted({w for s in SENTENCES for w in s.split()})


def test_a_handful_of_one_word_transcripts_still_makes_a_model(tmp_path):
    # Too few counts for modified shift-beta: built with Witten-Bell instead.
    path = build_language_model(["abca", "bd", "abc", "dd"], tmp_path / "lm.arpa")
    assert sorted(arpa_words(path)) == ["abc", "abca", "bd", "dd"]


def test_the_language_model_mends_what_the_acoustics_got_wrong(model_path):
    log_probs = emissions("the cat sat on the mat", confusions={5: "o"})  # cat -> cot
    assert greedy(log_probs) == "the cot sat on the mat"
    decoder = LexiconDecoder(model_path, TOKENS)
    assert decoder(log_probs, [log_probs.shape[1]]) == ["the cat sat on the mat"]


def test_the_last_word_ends_without_a_space_after_it(model_path):
    # A trained model writes no space after the last word (transcripts have none), while
    # every spelling in the lexicon ends with one: the search must still end that word.
    log_probs = emissions("the dog ate the bone")
    space = TOKENS.index(" ")
    log_probs[0, log_probs[0].argmax(-1) != space, space] = np.log(1e-30)
    assert LexiconDecoder(model_path, TOKENS)(log_probs, [log_probs.shape[1]]) == [
        "the dog ate the bone"
    ]


def test_only_the_models_words_are_written(model_path):
    log_probs = emissions("the cat zat on the mat")
    words = LexiconDecoder(model_path, TOKENS)(log_probs, [log_probs.shape[1]])[0].split()
    assert set(words) <= {w for s in SENTENCES for w in s.split()}
    assert "zat" not in words


def test_a_batch_decodes_each_row_to_its_length(model_path):
    short, long = emissions("the dog"), emissions("the dog ate the bone")
    batch = np.full((2, long.shape[1], long.shape[2]), np.log(1e-6), np.float32)
    batch[0, : short.shape[1]], batch[1] = short[0], long[0]
    decoder = LexiconDecoder(model_path, TOKENS)
    assert decoder(batch, [short.shape[1], long.shape[1]]) == ["the dog", "the dog ate the bone"]
    with pytest.raises(ValueError, match="log-probabilities"):
        decoder(batch[..., :5], [1, 1])


def test_bad_models_and_missing_tools_are_named(tmp_path, monkeypatch):
    not_arpa = tmp_path / "notes.arpa"
    not_arpa.write_text("hello\n")
    with pytest.raises(DataError, match="notes.arpa.*no 1-grams"):
        LexiconDecoder(not_arpa, TOKENS)
    with pytest.raises(DataError, match="no transcripts"):
        build_language_model(["", "  "], tmp_path / "lm.arpa")
    monkeypatch.setattr(lm.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(DataError, match="irstlm"):
        build_language_model(SENTENCES, tmp_path / "lm.arpa")
