"""The speech task through the CLI: embedded corpus, train, evaluate, export, predict."""

import json

import numpy as np
import pytest

from shared import cli
from shared.errors import DataError
from shared.export import read_metadata, serve_in_fresh_process
from shared.task import get_task
from shared.training import restore_model
from suite.speech.audio import load_audio, write_audio
from suite.speech.task import pad


@pytest.mark.slow
def test_speech_end_to_end_on_the_embedded_corpus(data_dir, tmp_path, capsys):
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    assert (
        cli.main(
            [
                "speech",
                "train",
                "--run-dir",
                str(run_dir),
                "--preset",
                "tiny",
                "--set",
                "train.verbose=0",
            ]
        )
        == 0
    )
    assert (run_dir / "feature_stats.json").is_file() and (run_dir / "vocab.json").is_file()
    assert (run_dir / "lm.arpa").is_file()  # the word LM of the training transcripts

    assert cli.main(["speech", "evaluate", "--run-dir", str(run_dir)]) == 0
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert scores["utterances"] == 6
    assert {"wer", "cer", "wer_greedy", "wer_telephone", "cer_telephone"} <= scores.keys()
    assert any(key.startswith("wer[flite:slt") or key.startswith("wer[festival") for key in scores)
    assert (run_dir / "predictions.tsv").read_text().count("\n") == 7
    # PocketSphinx, the peer, heard the same test audio.
    assert 0 <= scores["pocketsphinx_wer"] <= 2 and 0 <= scores["pocketsphinx_cer"] <= 2
    assert (run_dir / "predictions.tsv").read_text().partition("\n")[0].endswith("\tpocketsphinx")

    assert cli.main(["speech", "export", "--run-dir", str(run_dir), "--out", str(export_dir)]) == 0
    wav = tmp_path / "hello.wav"
    rng = np.random.default_rng(0)
    write_audio(wav, (0.3 * np.sin(np.arange(24000) / 7.0) + rng.normal(0, 0.01, 24000)), 24000)
    capsys.readouterr()
    assert cli.main(["speech", "predict", "--model", str(export_dir), str(wav)]) == 0
    out = capsys.readouterr().out
    assert read_metadata(export_dir)["lm"]["lexicon_words"] > 0  # the LM search is in the graph
    # The export's transcript matches the Keras model's with the run's LM.
    task = get_task("speech")
    config, model = restore_model(task, run_dir)
    search = task.language_model_search(config, run_dir / "lm.arpa")
    expected = task.transcribe(model, config, [load_audio(wav)], search)[0]
    assert out == f"{wav}\t{expected}\n"
    # The SavedModel alone, in a fresh CPU-only process, gives the same transcript, also
    # for a length past the row's samples (read as the whole row).
    batch, lengths = pad([load_audio(wav)] * 2)
    lengths[1] += 5000
    served = serve_in_fresh_process(export_dir, {"waveform": batch, "length": lengths})
    assert [text.decode() for text in served["text"]] == [expected, expected]

    # Every bad file is named at once, before any transcription.
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(rng.integers(0, 255, 100, dtype=np.uint8)))
    silent = write_audio(tmp_path / "silent.wav", np.zeros(16000), 16000)
    inputs = [str(wav), str(corrupt), str(silent)]
    assert cli.main(["speech", "predict", "--model", str(export_dir), *inputs]) == 2
    captured = capsys.readouterr()
    assert not captured.out
    assert "2 of 3 files unusable" in captured.err
    assert f"{corrupt}: " in captured.err and f"{silent}: silent audio" in captured.err
    # A warning is one line naming the file, not Python's source line.
    clipped = write_audio(
        tmp_path / "clipped.wav", np.clip(3 * np.sin(np.arange(16000) / 7.0), -1, 1)
    )
    assert cli.main(["speech", "predict", "--model", str(export_dir), str(clipped)]) == 0
    err = capsys.readouterr().err
    assert f"rnnsuite: ClippingWarning: {clipped}: clipped audio" in err
    assert "load_audio(" not in err


@pytest.mark.parametrize(
    "setting, message",
    [
        ("features.kind=foo", "features.kind='foo': choose mfcc or logmel"),
        ("features.num_mfcc=100", "features.num_mfcc=100: choose 1 to features.num_mel_bins"),
        ("model.cell=foo", "model.cell='foo': choose one of"),
        ("model.time_stride=0", "model.time_stride=0: must be at least 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path, capsys, setting, message):
    argv = ["speech", "train", "--run-dir", str(tmp_path), "--preset", "tiny", "--set", setting]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run.json").exists()  # nothing trained: the run dir stays free


def test_a_language_model_that_is_not_arpa_is_refused(tmp_path):
    from shared.config import resolve
    from suite.speech.task import SpeechConfig

    table = tmp_path / "table.csv"
    table.write_text("path,transcript\na.wav,hello\n")
    config = resolve(SpeechConfig, overrides=[f"decode.lm_path={table}"])
    with pytest.raises(DataError, match=r"table\.csv: not an ARPA language model"):
        get_task("speech")._language_model(config, None, tmp_path)
