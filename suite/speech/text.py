"""Transcripts for the spoken corpus, and the recognizer's character set.

`TranscriptGenerator` draws seeded, open-vocabulary English transcripts of six kinds:
numbers spelled as words, spelled letters, dates, times, smart-home style commands, and
sentences of English shipped in Debian packages: the `fortunes` collection (short clean
sentences of /usr/share/games/fortunes) and the World English Bible (`sword-text-web`,
clauses of a few books). Every transcript is normalised to `ALPHABET`.

Each draw is a `Transcript` holding the label (`text`) and the `prompt` given to the TTS
engine; they differ only where engines need a hint to say the label as meant, e.g. the
letters "b c x" are prompted as "B, C, X".
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from num2words import num2words

from shared.errors import DataError

# The characters a transcript may hold: lowercase a-z, apostrophe and space.
ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
KINDS = ("number", "letters", "date", "time", "command", "sentence")
DEFAULT_WEIGHTS = {
    "number": 0.12,
    "letters": 0.08,
    "date": 0.07,
    "time": 0.07,
    "command": 0.16,
    "sentence": 0.5,
}
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Collections left out: pictures, code, IRC logs, and a few of doubtful taste.
_SKIPPED_FORTUNES = {"art", "ascii-art", "perl", "debian", "linux", "translate-me", "ethnic"}
_SKIPPED_FORTUNES |= {"men-women", "drugs", "off"}
BIBLE_BOOKS = ("Gen", "Ps", "Prov", "Eccl", "Matt", "Luke", "John", "Acts")

_ALLOWED = frozenset(ALPHABET)
_SYMBOL_WORDS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_GROUPED = r"\d{1,3}(?:,\d{3})+(?!\d)"  # 1,000,000
_MONEY = re.compile(rf"\$({_GROUPED}|\d+)(?:\.(\d\d))?(?!\d)")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_DECADE = re.compile(r"\b(1[1-9]\d0|20\d0)s\b")  # the 1990s
_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b")  # as people say 1990: nineteen ninety
_NUMBER = re.compile(rf"{_GROUPED}|\d+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})
_CONTROL = re.compile(r".\x08|[\x00-\x1f]")


@dataclass(frozen=True)
class Transcript:
    """One generated utterance: its label, what the engine is told to say, and its kind."""

    text: str
    prompt: str
    kind: str


def normalize(text: str) -> str:
    """Maps free text towards `ALPHABET`.

    Lowercases, strips accents, spells digits out ("3rd" -> "third", "$5" -> "five
    dollars", "1,000" -> "one thousand", "3.5" -> "three point five", "1990" and four-digit
    numbers from 1100 to 2099 as years, "nineteen ninety"; "1990s" -> "nineteen
    nineties"), reads `& % + @ =` as words, turns other punctuation and hyphens into spaces
    and keeps apostrophes only inside words. Characters it cannot map (other scripts,
    symbols such as `#` or emoji) are left in place for `check_transcript` to report.
    """
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = _MONEY.sub(_dollars, text)
    text = _ORDINAL.sub(lambda m: " " + num2words(int(m.group(1)), to="ordinal") + " ", text)
    text = _DECIMAL.sub(lambda m: f" {_cardinal(m.group(1))} point {_digits(m.group(2))} ", text)
    text = _DECADE.sub(lambda m: " " + _plural(num2words(int(m.group(1)), to="year")) + " ", text)
    text = _YEAR.sub(lambda m: " " + num2words(int(m.group(0)), to="year") + " ", text)
    text = _NUMBER.sub(lambda m: " " + _cardinal(m.group(0)) + " ", text)
    for symbol, word in _SYMBOL_WORDS.items():
        text = text.replace(symbol, word)
    chars = []
    for char in text.lower():
        if char == "'" or char in _ALLOWED:
            chars.append(char)
        elif char != "#" and (unicodedata.category(char)[0] in "PZ" or char.isspace()):
            chars.append(" ")  # punctuation, hyphens, exotic spaces: word breaks
        else:
            chars.append(char)
    words = (word.strip("'") for word in "".join(chars).split())
    return " ".join(word for word in words if word)


def _cardinal(digits: str) -> str:
    return num2words(int(digits.replace(",", "")))


def _digits(digits: str) -> str:
    """Digits after a decimal point, read one by one: "05" -> "zero five"."""
    return " ".join(num2words(int(digit)) for digit in digits)


def _dollars(match: re.Match) -> str:
    cents = f" {_cardinal(match.group(2))} cents" if match.group(2) else ""
    return f" {_cardinal(match.group(1))} dollars{cents} "


def _plural(words: str) -> str:
    """A year read as a decade: "nineteen ninety" -> "nineteen nineties"."""
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def invalid_characters(text: str) -> list[str]:
    """The distinct characters of `text` outside `ALPHABET`, in order of appearance."""
    return list(dict.fromkeys(char for char in text if char not in _ALLOWED))


def check_transcript(text: str, where: str) -> str:
    """Normalises `text`; raises `DataError` naming `where` if it is empty or unmappable."""
    normalized = normalize(text)
    if not normalized:
        raise DataError(f"{where}: empty transcript")
    bad = invalid_characters(normalized)
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        raise DataError(
            f"{where}: transcript {text!r} has characters outside the alphabet "
            f"(a-z, space, apostrophe) after normalisation: {shown}"
        )
    return normalized


def number_words(value: int) -> str:
    """`312` -> "three hundred and twelve" (British-style "and", no hyphens)."""
    return normalize(num2words(value))


# ---------------------------------------------------------------------------------------
# Sentence sources


def fortune_sentences(folder: Path = FORTUNES_DIR, min_words=3, max_words=12) -> list[str]:
    """Short clean sentences from the Debian `fortunes` collections, normalised."""
    if not folder.is_dir():
        return []
    sentences = []
    for path in sorted(folder.iterdir()):
        if path.suffix or path.name in _SKIPPED_FORTUNES or not path.is_file():
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        for fortune in raw.split("\n%\n"):
            lines = [line for line in fortune.splitlines() if not line.strip().startswith("--")]
            body = _CONTROL.sub("", " ".join(line.strip() for line in lines))
            sentences.extend(_clean_sentences(body, min_words, max_words))
    return sentences


def bible_sentences(books=BIBLE_BOOKS, min_words=3, max_words=12) -> list[str]:
    """Clauses of a few books of the World English Bible, normalised ([] if not installed)."""
    from suite.nlp.corpus import read_bible

    verses = read_bible("en", books=set(books))
    sentences = []
    for verse in verses.values():
        # Verses are long; their clauses make utterances of a few seconds.
        for clause in re.split(r"[;:]|, (?:and|but|for|so) ", verse):
            sentences.extend(_clean_sentences(clause, min_words, max_words))
    return sentences


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Sentences holding these are usually code, dialogue markup, lists or references.
_UNCLEAN = re.compile(r"[<>{}\[\]|/\\_#*~^=]|:\S|\.\w|\w\(|^[A-Z][\w.]*:|\(\d|\.\.\.$|--$")


def _clean_sentences(text: str, min_words: int, max_words: int):
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip().strip('"“”()')
        if not sentence[:1].isupper() or _UNCLEAN.search(sentence):
            continue
        normalized = normalize(sentence)
        if not min_words <= len(normalized.split()) <= max_words:
            continue
        if invalid_characters(normalized) or not re.search(r"[aeiouy]", normalized):
            continue
        yield normalized


def sentence_split(sentence: str, valid_per_mille=50, test_per_mille=50) -> str:
    """Which split a sentence belongs to, by hash: test sentences never occur in training."""
    bucket = zlib.crc32(sentence.encode()) % 1000
    if bucket < test_per_mille:
        return "test"
    if bucket < test_per_mille + valid_per_mille:
        return "valid"
    return "train"


@functools.lru_cache(maxsize=4)
def sentence_pool(sources=("fortunes", "bible")) -> tuple[str, ...]:
    """Distinct normalised sentences from the installed sources; warns about missing ones."""
    sentences: list[str] = []
    if "fortunes" in sources:
        found = fortune_sentences()
        if not found:
            warnings.warn(
                f"no fortunes in {FORTUNES_DIR}; install the Debian package `fortunes`",
                stacklevel=2,
            )
        sentences.extend(found)
    if "bible" in sources:
        try:
            sentences.extend(bible_sentences())
        except DataError as error:
            warnings.warn(f"Bible sentences skipped: {error}", stacklevel=2)
    return tuple(sorted(set(sentences)))


# ---------------------------------------------------------------------------------------
# Generators of the synthetic kinds

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MONTHS = (
    "january february march april may june july august september october november december"
).split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_ROOMS = (
    "kitchen",
    "living room",
    "bedroom",
    "bathroom",
    "garage",
    "hallway",
    "office",
    "basement",
    "dining room",
    "garden",
)
_DEVICES = ("lights", "lamp", "fan", "heater", "radio", "television", "oven", "dishwasher")
_MUSIC = ("jazz", "some music", "the news", "classical music", "the radio", "rock", "the blues")
_PEOPLE = ("mom", "dad", "grandma", "the office", "my sister", "the doctor", "john", "maria")
_ERRANDS = (
    "buy milk",
    "call the bank",
    "water the plants",
    "take out the trash",
    "feed the cat",
    "pick up the kids",
    "pay the rent",
    "check the mail",
)
_CITIES = ("paris", "london", "boston", "chicago", "tokyo", "madrid", "denver", "seattle")


def _pick(rng: random.Random, options):
    return options[rng.randrange(len(options))]


def _number(rng: random.Random) -> Transcript:
    magnitude = rng.choice((10, 100, 1000, 10_000, 1_000_000))
    value = rng.randrange(magnitude)
    text = number_words(value)
    style = rng.random()
    if style < 0.15:
        text = normalize(num2words(rng.randrange(1, 40), to="ordinal"))
    elif style < 0.3:
        text = " ".join(number_words(int(digit)) for digit in str(rng.randrange(10**6)))
    elif style < 0.4:
        text = f"{text} {_pick(rng, ('dollars', 'percent', 'degrees', 'miles', 'people'))}"
    return Transcript(text, text, "number")


def _letters(rng: random.Random) -> Transcript:
    letters = [_pick(rng, _LETTERS) for _ in range(rng.randint(2, 6))]
    # Capitals and commas make every engine say the letter's name, not a word.
    return Transcript(" ".join(letters), ", ".join(letter.upper() for letter in letters), "letters")


def _date(rng: random.Random) -> Transcript:
    month, day = _pick(rng, _MONTHS), normalize(num2words(rng.randint(1, 31), to="ordinal"))
    style = rng.random()
    if style < 0.4:
        text = f"{month} {day}"
    elif style < 0.6:
        text = f"the {day} of {month}"
    elif style < 0.8:
        text = f"{month} {day} {normalize(num2words(rng.randint(1900, 2040), to='year'))}"
    else:
        text = f"{_pick(rng, _DAYS)} {month} {day}"
    return Transcript(text, text, "date")


def _time(rng: random.Random) -> Transcript:
    hour = number_words(rng.randint(1, 12))
    minute = rng.choice((0, 5, 10, 15, 20, 30, 45, rng.randint(1, 59)))
    if minute == 0:
        clock = f"{hour} o'clock" if rng.random() < 0.5 else hour
    elif minute < 10:
        clock = f"{hour} oh {number_words(minute)}"
    else:
        clock = f"{hour} {number_words(minute)}"
    style = rng.random()
    if style < 0.5:
        suffix = _pick(rng, ("a m", "p m"))
        return Transcript(f"{clock} {suffix}", f"{clock} {suffix.upper()}", "time")
    if style < 0.7 and minute in (15, 30, 45):
        phrase = {15: "quarter past", 30: "half past", 45: "quarter to"}[minute]
        text = f"{phrase} {hour}"
    elif style < 0.8:
        text = _pick(rng, ("noon", "midnight", "half past noon", "a quarter to midnight"))
    else:
        text = clock
    return Transcript(text, text, "time")


def _command(rng: random.Random) -> Transcript:
    templates = (
        lambda: (
            f"turn the {_pick(rng, _DEVICES)} {_pick(rng, ('on', 'off'))} in the {_pick(rng, _ROOMS)}"
        ),
        lambda: f"turn {_pick(rng, ('on', 'off'))} the {_pick(rng, _DEVICES)}",
        lambda: f"set a timer for {number_words(rng.randint(1, 90))} minutes",
        lambda: f"set an alarm for {_time(rng).text}",
        lambda: f"play {_pick(rng, _MUSIC)} in the {_pick(rng, _ROOMS)}",
        lambda: f"call {_pick(rng, _PEOPLE)}",
        lambda: f"remind me to {_pick(rng, _ERRANDS)} at {_time(rng).text}",
        lambda: (
            f"what's the weather in {_pick(rng, _CITIES)} {_pick(rng, ('today', 'tomorrow', 'on ' + _pick(rng, _DAYS)))}"
        ),
        lambda: (
            f"{_pick(rng, ('open', 'close', 'lock'))} the {_pick(rng, ('garage door', 'front door', 'windows', 'blinds'))}"
        ),
        lambda: f"set the temperature to {number_words(rng.randint(15, 80))} degrees",
        lambda: f"{_pick(rng, ('dim', 'brighten'))} the lights in the {_pick(rng, _ROOMS)}",
        lambda: (
            f"add {_pick(rng, ('eggs', 'bread', 'apples', 'coffee', 'rice'))} to my shopping list"
        ),
        lambda: (
            f"{_pick(rng, ('stop', 'pause', 'resume', 'skip'))} the {_pick(rng, ('music', 'song', 'podcast', 'video'))}"
        ),
        lambda: f"don't forget to {_pick(rng, _ERRANDS)} on {_pick(rng, _DAYS)}",
    )
    text = normalize(_pick(rng, templates)())
    return Transcript(text, text, "command")


class TranscriptGenerator:
    """Seeded source of transcripts for one split.

    Args:
        seed: the same seed (and sentence pool) gives the same sequence.
        split: "train", "valid" or "test"; sentences are partitioned between splits by
            hash (`sentence_split`) so evaluation sentences are unseen in training.
            None uses every sentence.
        weights: kind -> relative weight (default `DEFAULT_WEIGHTS`).
        sentences: the sentence pool (default `sentence_pool()`); with no sentences the
            weight of the "sentence" kind goes to the others.

    Example:
        >>> generator = TranscriptGenerator(seed=4, split="train", sentences=[])
        >>> generator.sample().text  # the templates alone: the pool depends on the machine
        'remind me to check the mail at nine p m'
    """

    def __init__(self, seed=0, split=None, weights=None, sentences=None):
        self.seed = seed
        self.split = split
        pool = sentence_pool() if sentences is None else list(sentences)
        if split is not None:
            pool = [sentence for sentence in pool if sentence_split(sentence) == split]
        self.sentences = pool
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        if not self.sentences:
            self.weights.pop("sentence", None)
        unknown = set(self.weights) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown transcript kinds {sorted(unknown)}; have {KINDS}")
        self._rng = random.Random(f"{seed}/{split}")

    def sample(self) -> Transcript:
        kind = self._rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        if kind == "sentence":
            text = _pick(self._rng, self.sentences)
            return Transcript(text, text, "sentence")
        return {
            "number": _number,
            "letters": _letters,
            "date": _date,
            "time": _time,
            "command": _command,
        }[kind](self._rng)

    def take(self, count: int) -> list[Transcript]:
        return [self.sample() for _ in range(count)]


def language_model_text(count: int, seed=0, sentences=None) -> list[str]:
    """Text for the recognizer's language model beyond the transcripts of the audio: every
    training-split sentence of the pool (`sentences`, default `sentence_pool()`) and
    `count` more transcripts drawn from the training generator. Valid and test sentences
    stay out (`sentence_split`); the other kinds come from one small grammar, so their
    transcripts recur in every split."""
    generator = TranscriptGenerator(f"{seed}/language-model", "train", sentences=sentences)
    return list(generator.sentences) + [t.text for t in generator.take(count)]
