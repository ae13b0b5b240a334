"""The spoken corpus: transcripts, TTS engines, the voice split, generation, manifests, TFDS."""

import csv
import random
import re

import numpy as np
import pytest
import soundfile

from shared.errors import DataError
from suite.speech import corpus
from suite.speech.audio import load_audio, write_audio
from suite.speech.corpus import (
    ENGINES,
    FEMALE_LIKE,
    HELD_OUT,
    SPLITS,
    EngineMissingWarning,
    available_voices,
    corpus_name,
    engine_for,
    female_like,
    prepare_corpus,
    read_manifest,
    speaker_of,
    split_voices,
    voice_split,
    with_female_like,
)
from suite.speech.text import (
    ALPHABET,
    KINDS,
    TranscriptGenerator,
    check_transcript,
    language_model_text,
    normalize,
    number_words,
    sentence_pool,
    sentence_split,
)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the conftest's per-test Keras reset: these tests never touch Keras, and
    importing and clearing it costs seconds here."""
    yield


# ---------------------------------------------------------------------------------------
# Transcripts


@pytest.fixture(scope="module")
def fortunes():
    # The Bible source imports TensorFlow (through suite.nlp); these tests do without it.
    pool = sentence_pool(("fortunes",))
    if not pool:
        pytest.skip("Debian package fortunes is not installed")
    return pool


def test_normalize_spells_numbers_and_symbols():
    assert number_words(312) == "three hundred and twelve"
    assert normalize("It’s the 3rd of May, 1999!") == "it's the third of may nineteen ninety nine"
    assert normalize("In the 1990s, 1,500 men paid $1,000.25 for 3.05 kg") == (
        "in the nineteen nineties one thousand five hundred men paid one thousand dollars "
        "twenty five cents for three point zero five kg"
    )
    assert normalize("Café & co: $5, 50% 'quoted' rock-n-roll") == (
        "cafe and co five dollars fifty percent quoted rock n roll"
    )


def test_check_transcript_names_place_and_characters():
    assert check_transcript("Track 7", "x.csv:2") == "track seven"
    with pytest.raises(
        DataError, match=r"x\.csv:3: transcript .* alphabet .*: 'ж', 'у', 'к', '😀'$"
    ):
        check_transcript("hello жук 😀", "x.csv:3")
    with pytest.raises(DataError, match=r"x\.csv:5: .*: '#'$"):
        check_transcript("the #1 fan", "x.csv:5")
    with pytest.raises(DataError, match=r"x\.csv:4: empty transcript"):
        check_transcript(" ?! ", "x.csv:4")


def test_transcripts_are_seeded(fortunes):
    first = TranscriptGenerator(7, "train", sentences=fortunes).take(50)
    again = TranscriptGenerator(7, "train", sentences=fortunes).take(50)
    other = TranscriptGenerator(8, "train", sentences=fortunes).take(50)
    assert first == again
    assert [t.text for t in first] != [t.text for t in other]


def test_transcripts_are_varied_and_within_the_alphabet(fortunes):
    transcripts = TranscriptGenerator(0, "train", sentences=fortunes).take(400)
    texts = [t.text for t in transcripts]
    assert {t.kind for t in transcripts} == set(KINDS)
    assert len(set(texts)) > 350
    assert len({word for text in texts for word in text.split()}) > 600
    for text in texts:
        assert text and set(text) <= set(ALPHABET), text
        assert text == " ".join(text.split()) and normalize(text) == text
    letters = [t for t in transcripts if t.kind == "letters"]
    assert all(re.fullmatch(r"[a-z]( [a-z])+", t.text) for t in letters)
    assert all(t.prompt == ", ".join(t.text.upper().split()) for t in letters)
    assert any(" p m" in t.text or " a m" in t.text for t in transcripts if t.kind == "time")


def test_test_sentences_never_occur_in_training(fortunes):
    train = {t.text for t in TranscriptGenerator(0, "train", sentences=fortunes).take(500)}
    test = TranscriptGenerator(0, "test", sentences=fortunes)
    assert test.sentences and all(sentence_split(s) == "test" for s in test.sentences)
    assert not set(test.sentences) & train


def test_language_model_text_has_every_training_sentence_and_no_test_one(fortunes):
    text = language_model_text(300, sentences=fortunes)
    training = [s for s in fortunes if sentence_split(s) == "train"]
    assert len(text) == len(training) + 300
    assert set(training) <= set(text)
    held_out = {s for s in fortunes if sentence_split(s) != "train"}
    assert held_out and not held_out & set(text)
    assert any(line not in fortunes for line in text)  # numbers, dates, commands too
    assert text == language_model_text(300, sentences=fortunes)  # seeded


# ---------------------------------------------------------------------------------------
# Engines

ONE_VOICE_EACH = [
    "espeak:en-us+m1",
    "flite:kal",  # 8 kHz output
    "flite:slt",
    "festival:kal_diphone",
    "festival:cmu_us_slt_arctic_hts",
    "piper:joe",
    "pico:en-US",
]


@pytest.mark.parametrize("voice", ONE_VOICE_EACH)
def test_engine_speaks_16k_audio_that_grows_with_text(voice, tmp_path):
    engine = engine_for(voice)
    if not engine.available():
        pytest.skip(f"{voice} not installed (install {engine.install})")
    short = engine.synthesize("hello", tmp_path / "short.wav", random.Random(0))
    long = engine.synthesize(
        "three hundred and twelve people walked to the market on tuesday morning",
        tmp_path / "long.wav",
        random.Random(0),
    )
    info = soundfile.info(tmp_path / "long.wav")
    assert (info.samplerate, info.channels) == (16000, 1)
    samples = load_audio(tmp_path / "long.wav")
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not near-silence
    assert info.duration == pytest.approx(long, abs=1e-3)
    assert 0.2 < short < 2.0 and long > 2.5 * short


def test_espeak_speed_comes_from_the_rng(tmp_path):
    engine = engine_for("espeak:en-gb-x-rp+f2")
    if not engine.available():
        pytest.skip("espeak-ng not installed")
    text = "the quick brown fox jumps over the lazy dog"
    durations = {engine.synthesize(text, tmp_path / f"{s}.wav", random.Random(s)) for s in range(4)}
    assert len(durations) > 1


def test_missing_engine_is_skipped_with_its_package(monkeypatch):
    monkeypatch.setattr(corpus.Flite, "installed", classmethod(lambda cls: False))
    with pytest.warns(EngineMissingWarning, match=r"flite not installed.*Debian package flite"):
        voices = available_voices()
    assert not any(voice.startswith("flite:") for voice in voices)
    assert not engine_for("flite:slt").available()


# ---------------------------------------------------------------------------------------
# Voice split


def _all_voices():
    return [f"{engine.name}:{voice}" for engine in ENGINES.values() for voice in engine.VOICES]


def test_voice_split_has_no_overlap_and_holds_out_whole_speakers():
    voices = _all_voices()
    splits = split_voices(voices)
    assert sorted(sum(splits.values(), [])) == sorted(voices)
    assert all(splits[split] for split in SPLITS)
    # A held-out speaker is held out in every engine that has it.
    assert {"flite:slt", "festival:cmu_us_slt_arctic_hts"} <= set(splits["test"])
    assert "flite:rms" in splits["valid"]
    # Pico's parametric women train: the nearest kind of voice to slt.
    assert {"pico:en-US", "pico:en-GB"} <= set(splits["train"])
    train_speakers = {speaker_of(voice) for voice in splits["train"]}
    for split in ("valid", "test"):
        assert not train_speakers & HELD_OUT[split]["speakers"]
        held_out = [v for v in splits[split] if v.startswith("espeak:")]
        assert held_out
        for voice in held_out:
            accent, variant = voice.partition(":")[2].split("+")
            assert accent in HELD_OUT[split]["accents"] or variant in HELD_OUT[split]["variants"]
    # Espeak training voices never use a held-out accent or variant.
    for voice in splits["train"]:
        if voice.startswith("espeak:"):
            accent, variant = voice.partition(":")[2].split("+")
            for rules in HELD_OUT.values():
                assert accent not in rules["accents"] and variant not in rules["variants"]


def test_natural_training_voices_get_female_like_twins_in_training_only():
    splits = split_voices(_all_voices())
    twinned = with_female_like(splits)
    assert twinned["valid"] == splits["valid"] and twinned["test"] == splits["test"]
    twins = [v for v in twinned["train"] if v.endswith(FEMALE_LIKE)]
    assert "flite:awb~f" in twins and "piper:joe~f" in twins
    assert not any(v.startswith("espeak:") for v in twins)  # espeak has female variants
    assert {v.removesuffix(FEMALE_LIKE) for v in twins} <= set(splits["train"])
    assert speaker_of("flite:kal16~f") == speaker_of("flite:kal16") == "kal"
    assert engine_for("festival:ked_diphone~f").id == "festival:ked_diphone"


def test_female_like_raises_a_mans_pitch_and_keeps_the_length(tmp_path):
    parselmouth = pytest.importorskip("parselmouth")
    engine = engine_for("flite:kal16")
    if not engine.available():
        pytest.skip("flite's kal16 voice is not installed")
    text = "please turn the kitchen lights off now"
    plain, changed = tmp_path / "plain.wav", tmp_path / "changed.wav"
    engine.synthesize(text, plain, random.Random(0))
    engine.synthesize(text, changed, random.Random(0), transform=female_like)

    def median_pitch(path):
        pitch = parselmouth.Sound(str(path)).to_pitch()
        f0 = pitch.selected_array["frequency"]
        return float(np.median(f0[f0 > 0]))

    assert abs(len(load_audio(changed)) - len(load_audio(plain))) <= 1
    assert median_pitch(plain) < 130.0  # kal is a man
    assert 170.0 < median_pitch(changed) < 250.0


def test_installed_voices_cover_every_split():
    voices = available_voices(warn=False)
    if not voices:
        pytest.skip("no TTS engine installed")
    splits = split_voices(voices)
    assert all(splits[split] for split in SPLITS), {s: len(v) for s, v in splits.items()}
    assert voice_split("flite:slt") == "test"


def test_corpus_name_changes_with_what_shapes_the_audio(monkeypatch):
    sizes, voices = {"train": 8, "valid": 2, "test": 2}, {"train": ["espeak:en-us+m1"]}
    name = corpus_name(sizes, 0, voices)
    assert name.startswith("tts-8-2-2-seed0-")
    assert corpus_name(sizes, 1, voices) != name
    assert corpus_name(sizes, 0, {"train": ["espeak:en-us+m2"]}) != name
    monkeypatch.setitem(corpus.ENGINE_WEIGHTS, "espeak", 0.9)
    assert corpus_name(sizes, 0, voices) != name


# ---------------------------------------------------------------------------------------
# Corpus generation


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A 6-utterance-per-split corpus in a private data dir, shared by the slow tests."""
    if not available_voices(warn=False):
        pytest.skip("no TTS engine installed")
    root = tmp_path_factory.mktemp("speech-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNSUITE_DATA_DIR", str(root))
        manifests = prepare_corpus(size=6, seed=0, workers=2, progress=False)
    return root, manifests


@pytest.mark.slow
def test_tiny_corpus_generates_and_reads_back(tiny_corpus):
    root, manifests = tiny_corpus
    assert set(manifests) == set(SPLITS)
    for split, manifest in manifests.items():
        assert manifest.is_relative_to(root / "speech")
        with open(manifest, newline="") as handle:
            assert next(csv.reader(handle)) == ["path", "transcript", "voice", "engine", "duration"]
        utterances = read_manifest(manifest)
        assert len(utterances) == 6
        for utterance in utterances:
            assert voice_split(utterance.voice) == split
            assert utterance.engine == utterance.voice.partition(":")[0]
            info = soundfile.info(utterance.path)
            assert (info.samplerate, info.channels) == (16000, 1)
            assert info.duration == pytest.approx(utterance.duration, abs=1e-3)
            assert set(utterance.transcript) <= set(ALPHABET)


@pytest.mark.slow
def test_tiny_corpus_is_cached_and_resumes(tiny_corpus, monkeypatch):
    root, manifests = tiny_corpus
    monkeypatch.setenv("RNNSUITE_DATA_DIR", str(root))
    wavs = sorted(manifests["train"].parent.glob("*.wav"))
    stamps = [path.stat().st_mtime_ns for path in wavs]

    def no_work(*args, **kwargs):
        raise AssertionError("a finished corpus was generated again")

    with monkeypatch.context() as patch:
        patch.setattr(corpus, "_synthesize_all", no_work)
        patch.setattr(corpus, "_plan", no_work)
        assert prepare_corpus(size=6, seed=0, workers=2, progress=False) == manifests
    assert [path.stat().st_mtime_ns for path in wavs] == stamps

    # An interrupted run: one utterance and the manifests are missing.
    before = read_manifest(manifests["test"])
    before[2].path.unlink()
    for manifest in manifests.values():
        manifest.unlink()
    redone = []
    real = corpus._synthesize_all
    monkeypatch.setattr(
        corpus, "_synthesize_all", lambda jobs, *a: redone.extend(jobs) or real(jobs, *a)
    )
    assert prepare_corpus(size=6, seed=0, workers=2, progress=False) == manifests
    assert [job.path for job in redone] == [before[2].path]
    assert read_manifest(manifests["test"]) == before
    assert [path.stat().st_mtime_ns for path in wavs] == stamps


@pytest.mark.slow
def test_tfds_builder_loads_the_tiny_corpus(tiny_corpus, monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    root, manifests = tiny_corpus
    monkeypatch.setenv("RNNSUITE_DATA_DIR", str(root))
    assert corpus.RnnsuiteSpeech.name == "rnnsuite_speech"

    dataset = tfds.load("rnnsuite_speech/tiny", split="test", data_dir=str(tmp_path / "tfds"))

    examples = list(tfds.as_numpy(dataset))
    expected = {u.transcript: u for u in read_manifest(manifests["test"])}
    assert len(examples) == 6
    for example in examples:
        utterance = expected[example["text"].decode()]
        assert example["voice"].decode() == utterance.voice
        assert example["audio"].dtype == np.int16
        assert len(example["audio"]) == soundfile.info(utterance.path).frames


@pytest.mark.slow
def test_tfds_data_option_reads_the_tiny_corpus(tiny_corpus, monkeypatch):
    from suite.speech.task import load_tfds_split

    root, manifests = tiny_corpus
    monkeypatch.setenv("RNNSUITE_DATA_DIR", str(root))

    split = load_tfds_split("rnnsuite_speech/tiny", "valid", max_seconds=30.0)  # --data tfds:…

    expected = read_manifest(manifests["valid"])
    assert sorted(split.transcripts) == sorted(u.transcript for u in expected)
    assert sorted(split.voices) == sorted(u.voice for u in expected)  # per-voice scores
    assert split.origins[0].startswith("tfds:rnnsuite_speech/tiny:validation:")
    with pytest.raises(DataError, match=r"tfds:rnnsuite_speech/tiny:validation: no usable"):
        load_tfds_split("rnnsuite_speech/tiny", "valid", max_seconds=0.01)


# ---------------------------------------------------------------------------------------
# User manifests


@pytest.fixture
def recordings(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a.wav", "b.flac"):
        write_audio(audio / name, 0.3 * np.sin(np.arange(8000) / 5), 8000)
    return tmp_path


def test_reads_csv_with_header_and_relative_paths(recordings):
    manifest = recordings / "manifest.csv"
    manifest.write_text(
        'path,transcript,speaker\naudio/a.wav,"Hello, World!",x\n\n'
        f"{recordings / 'audio' / 'b.flac'},Track 7,y\n"
    )
    first, second = read_manifest(manifest)
    assert first.path == recordings / "audio" / "a.wav" and first.transcript == "hello world"
    assert second.transcript == "track seven" and second.origin.endswith("manifest.csv:4")


def test_reads_tsv_without_header(recordings):
    manifest = recordings / "data.tsv"
    manifest.write_text("audio/a.wav\tit's fine\naudio/b.flac\tb c x\n")
    assert [u.transcript for u in read_manifest(manifest)] == ["it's fine", "b c x"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("audio/a.wav,ok\naudio/gone.wav,hi\n", r"m\.csv:2: audio file .*gone\.wav not found"),
        ("path,transcript\naudio/a.wav,ok\naudio/b.flac,  \n", r"m\.csv:3: empty transcript"),
        (
            "path,transcript\naudio/a.wav,naïve #1 ✓ ok\n",
            r"m\.csv:2: transcript .* outside the alphabet .*'✓'",
        ),
        ("audio/a.wav,ok\naudio/b.flac\n", r"m\.csv:2: expected 2 fields \(path, transcript\)"),
        ("audio/a.wav,ok,extra\n", r"m\.csv:1: expected 2 fields"),
        # An unquoted comma must not cut the transcript short.
        (
            "path,transcript\naudio/a.wav,hello, world\n",
            r"m\.csv:2: expected 2 fields \(path, transcript\), got 3; .* must be quoted",
        ),
        ("path,,transcript\naudio/a.wav,ok\n", r"m\.csv:2: expected 3 fields \(path, unnamed"),
        ("path,text\na.wav,x\n", r"m\.csv:1: header has no 'transcript' column"),
        ("file,text\naudio/a.wav,ok\n", r"m\.csv:1: file, text looks like a header, but"),
        ("path,transcript\n,hello\n", r"m\.csv:2: empty audio path"),
        ("path,transcript,duration\naudio/a.wav,ok,long\n", r"m\.csv:2: duration 'long'"),
        ("path,transcript\n", r"m\.csv: no utterances"),
    ],
)
def test_manifest_errors_name_the_row(recordings, rows, message):
    manifest = recordings / "m.csv"
    manifest.write_text(rows)
    with pytest.raises(DataError, match=message):
        read_manifest(manifest)


def test_every_bad_row_is_named_at_once(recordings):
    manifest = recordings / "m.csv"
    manifest.write_text("audio/a.wav,ok\naudio/gone.wav,hi\naudio/b.flac,\naudio/lost.wav,x\n")
    with pytest.raises(DataError, match=r"m\.csv: 3 bad rows") as caught:
        read_manifest(manifest)
    for row in (r"m\.csv:2: .*gone\.wav not found", r"m\.csv:3: empty", r"m\.csv:4: .*lost"):
        assert re.search(row, str(caught.value)), row


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such manifest"):
        read_manifest(tmp_path / "nope.csv")
