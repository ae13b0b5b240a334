"""Parallel corpora: the embedded English–Spanish Bible pairs, user TSV files, TFDS sets.

The embedded corpus pairs the World English Bible (Debian `sword-text-web`) with the
Reina-Valera 1909 (Debian `sword-text-sparv`), read with pysword. The two modules use
different versifications, so verses are aligned by reference (book, chapter, verse) and
only references present in both are kept. Validation and test sets are whole chapters
that never occur in training.
"""

from __future__ import annotations

import csv
import functools
import html
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from shared.errors import DataError

SWORD_DIR = Path("/usr/share/sword")
BIBLES = {"en": ("engWEB2015eb", "sword-text-web"), "es": ("spaRV1909eb", "sword-text-sparv")}
SPLITS = ("train", "valid", "test")

_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TITLE = re.compile(r"<title\b.*?</title>", re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?»”’)])")
_SPACE_AFTER_OPEN = re.compile(r"([¿¡«“(])\s+")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    # Where the pair comes from: "Gen 1:1" for the Bible, "file.tsv:12" for user data.
    origin: str = ""


def clean_osis(raw: str) -> str:
    """Verse text without markup: Strong's-number tags, notes and titles removed."""
    text = _TITLE.sub(" ", _NOTE.sub(" ", raw))
    text = html.unescape(_TAG.sub("", text)).replace("¶", " ")
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _SPACE_AFTER_OPEN.sub(r"\1", text).strip()


def read_bible(language: str, sword_dir: Path = SWORD_DIR, books=None) -> dict:
    """(book, chapter, verse) -> clean verse text for one language's module."""
    from pysword.modules import SwordModules

    if language not in BIBLES:
        raise DataError(f"no embedded Bible for language {language!r}; have {sorted(BIBLES)}")
    module, package = BIBLES[language]
    modules = SwordModules(str(sword_dir))
    try:
        found = modules.parse_modules()
    except (FileNotFoundError, OSError):
        found = {}
    if module not in found:
        raise DataError(
            f"the {language} Bible ({module}) is not installed in {sword_dir}; "
            f"install the Debian package {package} (`make setup` does)"
        )
    bible = modules.get_bible_from_module(module)
    # pysword decompresses a whole book block for every verse it returns; cache the blocks.
    bible._decompressed_text = functools.lru_cache(maxsize=8)(bible._decompressed_text)
    verses = {}
    for testament in bible.get_structure().get_books().values():
        for book in testament:
            if books is not None and book.osis_name not in books:
                continue
            for chapter in range(1, book.num_chapters + 1):
                texts = bible.get_iter(books=[book.osis_name], chapters=[chapter], clean=False)
                for number, raw in enumerate(texts, start=1):
                    text = clean_osis(raw)
                    if text:
                        verses[(book.osis_name, chapter, number)] = text
    return verses


def chapter_split(book: str, chapter: int, valid_per_mille: int = 25, test_per_mille: int = 25):
    """Deterministic split of a whole chapter, stable across machines and versions."""
    bucket = zlib.crc32(f"{book} {chapter}".encode()) % 1000
    if bucket < test_per_mille:
        return "test"
    if bucket < test_per_mille + valid_per_mille:
        return "valid"
    return "train"


def bible_pairs(
    source="en", target="es", sword_dir: Path = SWORD_DIR, books=None, max_words=80
) -> dict:
    """Split name -> list of `Pair`s aligned by verse reference.

    Chapters whose verse counts differ between the two versifications are dropped whole
    (their verse numbers do not line up), and so are chapters of equal counts whose verses
    are numbered one apart (`is_shifted`, e.g. Numbers 13), pairs longer than `max_words`
    and pairs whose word counts differ by more than 2.5x (merged or split verses).
    """
    source_verses = read_bible(source, sword_dir, books)
    target_verses = read_bible(target, sword_dir, books)
    source_counts, target_counts = _verse_counts(source_verses), _verse_counts(target_verses)
    shifted = {
        key
        for key, count in source_counts.items()
        if count == target_counts.get(key)
        and is_shifted(_chapter_lengths(source_verses, key), _chapter_lengths(target_verses, key))
    }
    splits = {name: [] for name in SPLITS}
    for ref in sorted(source_verses.keys() & target_verses.keys(), key=_ref_order(source_verses)):
        book, chapter, verse = ref
        if source_counts[book, chapter] != target_counts[book, chapter]:
            continue
        if (book, chapter) in shifted:
            continue
        pair = Pair(source_verses[ref], target_verses[ref], f"{book} {chapter}:{verse}")
        n_source, n_target = len(pair.source.split()), len(pair.target.split())
        if max(n_source, n_target) > max_words or not 0.4 <= n_target / n_source <= 2.5:
            continue
        splits[chapter_split(book, chapter)].append(pair)
    return splits


def is_shifted(source_lengths, target_lengths, margin=0.2) -> bool:
    """Whether a chapter's verses line up better one verse apart than by number.

    Verse lengths (in words) of a translation follow the original's closely: the
    correlation of their logarithms is ~0.9 when verses align, ~0 one verse off. A
    chapter whose correlation at a shift of one beats the unshifted one by `margin` is
    numbered differently in the two Bibles. Chapters under 5 verses are never flagged.
    """
    import numpy as np

    source, target = np.log(source_lengths), np.log(target_lengths)
    if len(source) < 5 or len(source) != len(target):
        return False

    def correlation(a, b):
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])

    aligned = correlation(source, target)
    shifted = max(correlation(source[1:], target[:-1]), correlation(source[:-1], target[1:]))
    return shifted > aligned + margin


def _chapter_lengths(verses: dict, key) -> list[int]:
    refs = sorted((ref for ref in verses if ref[:2] == key), key=lambda ref: ref[2])
    return [max(1, len(verses[ref].split())) for ref in refs]


def _verse_counts(verses: dict) -> dict:
    counts = {}
    for book, chapter, _ in verses:
        counts[book, chapter] = counts.get((book, chapter), 0) + 1
    return counts


def _ref_order(verses):
    order = {ref: index for index, ref in enumerate(verses)}
    return lambda ref: order[ref]


def read_tsv(path: Path) -> list[Pair]:
    """Reads `source<TAB>target` rows (a `source<TAB>target` header may come first);
    refuses malformed rows by file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    pairs = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason})") from None
    for line, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines separate nothing; skip them
        if line == 1 and [cell.strip().lower() for cell in row] == ["source", "target"]:
            continue  # a header
        if any("\x00" in cell for cell in row):
            raise DataError(f"{path}:{line}: a NUL byte; is this a text file?")
        if len(row) != 2:
            raise DataError(
                f"{path}:{line}: expected 2 tab-separated fields (source, target), got {len(row)}"
            )
        source, target = (" ".join(cell.split()) for cell in row)
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{path}:{line}: empty {side} text")
        pairs.append(Pair(source, target, f"{path.name}:{line}"))
    if not pairs:
        raise DataError(f"{path}: no sentence pairs")
    return pairs


def split_pairs(pairs: list[Pair], valid_fraction=0.05, test_fraction=0.05, seed=0) -> dict:
    """Shuffles one list of pairs into train/valid/test (at least one pair each)."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_test = max(1, round(len(shuffled) * test_fraction))
    n_valid = max(1, round(len(shuffled) * valid_fraction))
    if len(shuffled) < n_test + n_valid + 1:
        raise DataError(f"need at least 3 sentence pairs to split, got {len(shuffled)}")
    return {
        "test": shuffled[:n_test],
        "valid": shuffled[n_test : n_test + n_valid],
        "train": shuffled[n_test + n_valid :],
    }


def load_tfds(name: str, data_dir: Path) -> dict:
    """A TFDS translation set as split -> pairs (needs the internet the first time)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
        builder.download_and_prepare()
    except Exception as error:  # TFDS raises many kinds; the user needs the gist and name.
        raise DataError(f"tfds:{name}: could not load ({type(error).__name__}: {error})") from None
    keys = builder.info.supervised_keys
    if not keys:
        raise DataError(f"tfds:{name}: has no (source, target) supervised keys")
    available = set(builder.info.splits)
    names = {"train": "train", "valid": "validation", "test": "test"}
    splits = {}
    for ours, theirs in names.items():
        if theirs not in available:
            raise DataError(f"tfds:{name}: has no {theirs!r} split (has {sorted(available)})")
        dataset = builder.as_dataset(split=theirs, as_supervised=True)
        splits[ours] = [
            Pair(source.decode("utf-8"), target.decode("utf-8"), f"tfds:{name}:{theirs}:{index}")
            for index, (source, target) in enumerate(tfds.as_numpy(dataset))
        ]
    return splits


def load_pairs(data: str | None, source="en", target="es", data_dir: Path | None = None) -> dict:
    """Split -> pairs from the embedded Bible (None), a TSV file, a folder or `tfds:NAME`.

    A folder holds `train.tsv`, `valid.tsv` and `test.tsv`; a single TSV file is split
    95/5/5 with a fixed seed.
    """
    from shared.config import data_dir as default_data_dir

    data_dir = Path(data_dir or default_data_dir())
    if data is None or data == "bible":
        return cached_bible_pairs(source, target, data_dir)
    if data.startswith("tfds:"):
        return load_tfds(data[len("tfds:") :], data_dir / "tfds")
    path = Path(data)
    if path.is_dir():
        return {name: read_tsv(path / f"{name}.tsv") for name in SPLITS}
    return split_pairs(read_tsv(path))


def cached_bible_pairs(source: str, target: str, data_dir: Path) -> dict:
    """The Bible pairs, read once and cached as TSV files under the data dir."""
    # v2: chapters numbered one verse apart are dropped (is_shifted).
    folder = Path(data_dir) / "translation" / f"bible-{source}-{target}-v2"
    if not all((folder / f"{name}.tsv").is_file() for name in SPLITS):
        print(f"preparing the {source}-{target} Bible corpus in {folder} ...", flush=True)
        splits = bible_pairs(source, target)
        folder.mkdir(parents=True, exist_ok=True)
        for name, pairs in splits.items():
            scratch = folder / f".{name}.tsv"
            with open(scratch, "w", encoding="utf-8") as handle:
                for pair in pairs:
                    handle.write(f"{pair.source}\t{pair.target}\t{pair.origin}\n")
            scratch.rename(folder / f"{name}.tsv")
    splits = {}
    for name in SPLITS:
        with open(folder / f"{name}.tsv", encoding="utf-8") as handle:
            rows = (line.rstrip("\n").split("\t") for line in handle)
            splits[name] = [Pair(*row) for row in rows]
    return splits
