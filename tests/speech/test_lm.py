"""The word language model: built from transcripts with IRSTLM, searched in the graph."""

import numpy as np
import pytest
import tensorflow as tf

from shared.errors import DataError
from shared.export import export_endpoint, serve_in_fresh_process
from suite.speech import lm
from suite.speech.lm import LexiconSearch, build_language_model, read_arpa
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


def unigrams(path):
    return [g[0] for g in read_arpa(path) if len(g) == 1 and g[0] not in ("<s>", "</s>", "<unk>")]


def decode(search, log_probs, lengths=None):
    lengths = [log_probs.shape[1]] if lengths is None else lengths
    return [t.decode() for t in search(log_probs, tf.constant(lengths)).numpy()]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_language_model(SENTENCES, tmp_path_factory.mktemp("lm") / "lm.arpa", order=3)


@pytest.fixture(scope="module")
def search(model_path):
    return LexiconSearch(model_path, TOKENS)


def reference_logprob(grams, history, word):
    """log10 P(word | history) by the ARPA backoff rule, written plainly."""
    if (*history, word) in grams:
        return grams[(*history, word)][0]
    backoff = grams.get(tuple(history), (0.0, 0.0))[1]
    return backoff + reference_logprob(grams, history[1:], word)


def test_model_is_an_arpa_file_of_the_transcripts_words(model_path):
    text = model_path.read_text()
    assert "\\data\\" in text and "\\3-grams:" in text
    assert sorted(unigrams(model_path)) == sorted({w for s in SENTENCES for w in s.split()})


def test_a_handful_of_one_word_transcripts_still_makes_a_model(tmp_path):
    # Too few counts for modified shift-beta: built with Witten-Bell instead.
    path = build_language_model(["abca", "bd", "abc", "dd"], tmp_path / "lm.arpa")
    assert sorted(unigrams(path)) == ["abc", "abca", "bd", "dd"]


def test_the_language_model_mends_what_the_acoustics_got_wrong(search):
    log_probs = emissions("the cat sat on the mat", confusions={5: "o"})  # cat -> cot
    assert greedy(log_probs) == "the cot sat on the mat"
    assert decode(search, log_probs) == ["the cat sat on the mat"]


def test_the_last_word_ends_without_a_space_after_it(search):
    # A trained model writes no space after the last word (transcripts have none), while
    # every spelling in the lexicon ends with one: the search must still end that word.
    log_probs = emissions("the dog ate the bone")
    space = TOKENS.index(" ")
    log_probs[0, log_probs[0].argmax(-1) != space, space] = np.log(1e-30)
    assert decode(search, log_probs) == ["the dog ate the bone"]


def test_only_the_models_words_are_written(search):
    log_probs = emissions("the cat zat on the mat")
    words = decode(search, log_probs)[0].split()
    assert set(words) <= {w for s in SENTENCES for w in s.split()}
    assert "zat" not in words


def test_a_batch_decodes_each_row_to_its_length(search):
    short, long = emissions("the dog"), emissions("the dog ate the bone")
    batch = np.full((3, long.shape[1], long.shape[2]), np.log(1e-6), np.float32)
    batch[0, : short.shape[1]], batch[1] = short[0], long[0]
    lengths = [short.shape[1], long.shape[1], 0]
    assert decode(search, batch, lengths) == ["the dog", "the dog ate the bone", ""]
    # Traced for batches of one but lengths of any size, as a model's tf.function may be.
    spec = [tf.TensorSpec([1, None, long.shape[2]]), tf.TensorSpec([None], tf.int32)]
    traced = tf.function(search, input_signature=spec)
    assert decode(traced, long, [long.shape[1]]) == ["the dog ate the bone"]
    with pytest.raises(ValueError, match="log-probabilities"):
        search(batch[..., :5], tf.constant([1, 1, 1]))


def test_a_length_beyond_the_frames_reads_to_the_last(model_path):
    # With 3 tokens a frame the separator (class 4) never makes the padding's shortlist:
    # the closing frame must still come right after the last real frame.
    log_probs = emissions("the dog ate the bone")
    search = LexiconSearch(model_path, TOKENS, token_beam=3)
    assert decode(search, log_probs, [log_probs.shape[1] + 5]) == ["the dog ate the bone"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_the_graphs_lm_scores_follow_the_arpa_backoff_rule(order, tmp_path):
    model_path = build_language_model(SENTENCES, tmp_path / "lm.arpa", order=order)
    search = LexiconSearch(model_path, TOKENS)
    grams = read_arpa(model_path)
    words = sorted({w for s in SENTENCES for w in s.split()})
    # Seen trigrams, seen bigrams in unseen contexts, unseen pairs, and the sentence end.
    cases = [(["<s>", "the"], "cat"), (["cat", "sat"], "on"), (["mat", "dog"], "ate")]
    cases += [(["hall", "bone"], "put"), (["<s>", "a"], "hall"), (["the", "dog"], "</s>")]
    cases += [(["<s>"], "the"), (["<s>"], "fish")]  # the first word of a sentence
    cases += [(["a", "dog", "sat", "on"], "the")]  # only the last order - 1 words count
    cases += [(["the", w], "the") for w in words]
    ids = {w: i for i, w in enumerate(search._words.numpy().astype(str))}
    states = tf.constant([search.state_of(h) for h, _ in cases])
    got, _ = search.lm_logprob(states, tf.constant([ids[w] for _, w in cases]))
    expected = [
        reference_logprob(grams, h[max(0, len(h) - order + 1) :], word) for h, word in cases
    ]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The search runs with a model of any order.
    assert decode(search, emissions("the cat sat on the mat")) == ["the cat sat on the mat"]


def test_the_search_serves_from_a_savedmodel_in_a_fresh_process(search, tmp_path):
    spec = [
        tf.TensorSpec([None, None, len(TOKENS) + 1], tf.float32, name="log_probs"),
        tf.TensorSpec([None], tf.int32, name="frames"),
    ]
    path = export_endpoint(
        tmp_path / "search", lambda lp, n: {"text": search(lp, n)}, spec, track=[search]
    )
    log_probs = emissions("the cat sat on the mat", confusions={5: "o"})
    served = serve_in_fresh_process(
        path, {"log_probs": log_probs, "frames": np.int32([log_probs.shape[1]])}
    )
    assert [t.decode() for t in served["text"]] == ["the cat sat on the mat"]


def test_an_upper_case_model_reads_as_the_recognizer_writes(model_path, tmp_path):
    # LibriSpeech's published models are upper case; the recognizer writes lower case.
    upper = tmp_path / "upper.arpa"
    lines = model_path.read_text().splitlines()  # headers stay as they are
    upper.write_text("\n".join(x if x.startswith(("\\", "ngram")) else x.upper() for x in lines))
    assert read_arpa(upper) == read_arpa(model_path)
    log_probs = emissions("the cat sat on the mat", confusions={5: "o"})
    assert decode(LexiconSearch(upper, TOKENS), log_probs) == ["the cat sat on the mat"]


def test_bad_models_and_missing_tools_are_named(tmp_path, monkeypatch):
    not_arpa = tmp_path / "notes.arpa"
    not_arpa.write_text("hello\n")
    with pytest.raises(DataError, match="notes.arpa.*no 1-grams"):
        LexiconSearch(not_arpa, TOKENS)
    endless = tmp_path / "endless.arpa"
    endless.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n-1.0\tcat\n\n\\end\\\n")
    with pytest.raises(DataError, match="endless.arpa.*</s>"):
        LexiconSearch(endless, TOKENS)
    with pytest.raises(ValueError, match="beam_width"):
        LexiconSearch(endless, TOKENS, beam_width=0)
    orphan = tmp_path / "orphan.arpa"
    grams = "\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\tdog\n\n\\2-grams:\n-1\tcat dog\n\n\\end\\\n"
    orphan.write_text("\\data\\\nngram 1=3\nngram 2=1\n\n" + grams)
    with pytest.raises(DataError, match="orphan.arpa.*'cat dog' has no entry for its context"):
        LexiconSearch(orphan, TOKENS)
    with pytest.raises(DataError, match="no transcripts"):
        build_language_model(["", "  "], tmp_path / "lm.arpa")
    monkeypatch.setattr(lm.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(DataError, match="irstlm"):
        build_language_model(SENTENCES, tmp_path / "lm.arpa")
