"""Translation corpora: OSIS cleaning, Bible alignment, TSV validation, splits."""

import random

import pytest

from shared.errors import DataError
from suite.nlp import corpus

BIBLES_INSTALLED = all(
    (corpus.SWORD_DIR / "mods.d" / f"{module}.conf").is_file()
    for module, _ in corpus.BIBLES.values()
)
needs_bibles = pytest.mark.skipif(
    not BIBLES_INSTALLED, reason="Debian sword-text-web and sword-text-sparv not installed"
)


def test_osis_markup_notes_and_strongs_numbers_are_removed():
    raw = (
        '<w lemma="strong:H0430">In</w> <w lemma="strong:H7225">beginning</w>, '
        '<w lemma="strong:H0430">God</w><note placement="foot">The Hebrew word is “Elohim”.</note>'
        '<w lemma="strong:H1254">created</w> <title>Psalm 1</title>the earth &amp; sky . ¶'
    )
    assert corpus.clean_osis(raw) == "In beginning, God created the earth & sky."


@needs_bibles
def test_bible_verses_align_by_reference_and_chapters_split_whole():
    splits = corpus.bible_pairs(books={"Ruth", "Jonah", "Phlm"})
    pairs = [pair for split in splits.values() for pair in split]
    by_origin = {pair.origin: pair for pair in pairs}
    first = by_origin["Ruth 1:1"]
    assert first.source.startswith("In the days when the judges judged")
    assert "jueces" in first.target
    assert all("<" not in p.source + p.target and "strong" not in p.source for p in pairs)
    # A chapter never straddles two splits.
    chapter_of = {}
    for name, split in splits.items():
        for pair in split:
            chapter = pair.origin.rsplit(":", 1)[0]
            assert chapter_of.setdefault(chapter, name) == name


@needs_bibles
def test_a_chapter_numbered_one_verse_apart_is_dropped():
    # Spanish Numbers 13:2 is English 13:1 (the chapters have 33 verses each).
    splits = corpus.bible_pairs(books={"Num"})
    origins = {pair.origin for split in splits.values() for pair in split}
    assert "Num 14:1" in origins and not any(o.startswith("Num 13:") for o in origins)


def test_shift_detection_on_verse_lengths():
    rng = random.Random(0)
    english = [rng.randint(5, 60) for _ in range(30)]
    spanish = [round(n * rng.uniform(0.9, 1.3)) for n in english]
    assert not corpus.is_shifted(english, spanish)
    assert corpus.is_shifted(english, [12] + spanish[:-1])  # one verse later
    assert corpus.is_shifted(english, spanish[1:] + [12])  # one verse earlier
    assert not corpus.is_shifted(english[:4], [12] + spanish[:3])  # too short to tell


def test_chapter_split_is_deterministic_and_roughly_proportional():
    names = [corpus.chapter_split("Gen", chapter) for chapter in range(1, 2001)]
    assert names == [corpus.chapter_split("Gen", chapter) for chapter in range(1, 2001)]
    assert 0.9 < names.count("train") / len(names) < 0.99
    assert names.count("test") > 0 and names.count("valid") > 0


def test_tsv_rows_are_read_and_bad_rows_named(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("hello world\thola mundo\n\n  spaced   out \t espaciado \n")
    pairs = corpus.read_tsv(good)
    assert [(p.source, p.target) for p in pairs] == [
        ("hello world", "hola mundo"),
        ("spaced out", "espaciado"),
    ]
    assert pairs[1].origin == "good.tsv:3"

    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nonly one field\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 2 tab-separated fields"):
        corpus.read_tsv(bad)
    bad.write_text("a\tb\nc\t \n")
    with pytest.raises(DataError, match=r"bad.tsv:2: empty target text"):
        corpus.read_tsv(bad)
    bad.write_text("a\tb\nc\0\td\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: a NUL byte"):
        corpus.read_tsv(bad)
    headed = tmp_path / "headed.tsv"
    headed.write_text("\ufeffsource\ttarget\nsmall\tpequeño\n", encoding="utf-8")
    assert [(p.source, p.target) for p in corpus.read_tsv(headed)] == [("small", "pequeño")]
    bad.write_bytes(b"caf\xe9\tcafe\n")
    with pytest.raises(DataError, match="not UTF-8"):
        corpus.read_tsv(bad)
    with pytest.raises(DataError, match="no such file"):
        corpus.read_tsv(tmp_path / "missing.tsv")


def test_one_tsv_is_split_three_ways_without_overlap(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"s{i}\tt{i}\n" for i in range(100)))
    splits = corpus.load_pairs(str(path))
    sizes = {name: len(pairs) for name, pairs in splits.items()}
    assert sizes == {"test": 5, "valid": 5, "train": 90}
    sources = [p.source for pairs in splits.values() for p in pairs]
    assert len(set(sources)) == 100


def test_tfds_errors_name_the_dataset(tmp_path):
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz"):
        corpus.load_pairs("tfds:no_such_dataset_xyz", data_dir=tmp_path)
