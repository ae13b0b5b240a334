import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from shared.metrics import accuracy, bleu, cer, chrf, cider, exact_match, wer


def test_wer_known_values():
    assert wer(["a b c"], ["a x c"]) == pytest.approx(1 / 3)
    # corpus level: (1 substitution + 1 deletion) / 5 reference words
    assert wer(["a b c", "d e"], ["a x c", "d"]) == pytest.approx(2 / 5)
    assert wer("a b", "a b c") == pytest.approx(1 / 2)  # one insertion
    assert wer(["  a   b "], ["a b"]) == 0.0  # whitespace is not a word


def test_cer_known_values():
    assert cer(["abcd"], ["abxd"]) == pytest.approx(1 / 4)
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space counts
    assert cer(["¿qué?"], ["¿que?"]) == pytest.approx(1 / 5)


def test_empty_references_count_hypothesis_words_as_insertions():
    assert wer(["", "a b"], ["x", "a b"]) == pytest.approx(1 / 2)
    assert wer([""], [""]) == 0.0
    assert wer(["", " "], ["x y", ""]) == 2.0  # no reference words: denominator is 1
    assert cer(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 3)


def test_mismatched_or_empty_inputs_raise():
    with pytest.raises(ValueError, match="pair up"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="No references"):
        cer([], [])
    with pytest.raises(ValueError, match="pair up"):
        bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_bleu_and_chrf_identical_is_100_and_disjoint_is_0():
    refs = ["the cat sat on the mat", "a dog barked at the moon"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert chrf(refs, refs) == pytest.approx(100.0)
    assert bleu(refs, ["xyz uvw rst opq", "lmn ijk fgh cde"]) == pytest.approx(0.0)
    partial = bleu(refs, ["the cat sat on a mat", "a dog barked at the moon"])
    assert 0.0 < partial < 100.0
    assert 0.0 < chrf(refs, ["the cat sat on a mat", "a dog barked"]) < 100.0


def test_bleu_with_several_references_per_hypothesis():
    hyps = ["the cat sat on the mat today", "a dog barked at the moon"]
    single = bleu(["a cat sat on a mat today", "a dog barked at the moon"], hyps)
    multi = bleu(
        [
            ["a cat sat on a mat today", "the cat sat on the mat today"],
            ["a dog barked at the moon"],
        ],
        hyps,
    )
    assert multi == pytest.approx(100.0)
    assert single < multi


def test_cider_rewards_consensus_with_the_references():
    references = [
        ["a man walks to the left", "someone walks leftwards", "a person walks left"],
        ["a dog runs in the park", "a dog is running", "the dog runs on grass"],
        ["a woman cuts an onion", "someone slices an onion", "a woman is chopping onions"],
    ]
    good = ["a man walks left", "a dog runs in the park", "a woman cuts an onion"]
    bad = ["a dog runs in the park", "a woman cuts an onion", "a man walks left"]
    assert cider(references, good) > 1.0
    assert cider(references, bad) < 0.2 * cider(references, good)
    # Case and punctuation are normalised like COCO's tokenizer would.
    shouted = ["A man walks left.", "A dog runs in the park!", "A woman cuts an onion."]
    assert cider(references, shouted) == pytest.approx(cider(references, good))
    with pytest.raises(ValueError):
        cider(references, good[:2])


def test_accuracy_and_exact_match():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)
    assert accuracy(["walk", "run"], ["walk", "jump"]) == pytest.approx(0.5)
    assert exact_match(["hello world", "b"], [" hello  world ", "B"]) == pytest.approx(0.5)
    assert exact_match([["a", "b"], ["c"]], ["b", "d"]) == pytest.approx(0.5)
