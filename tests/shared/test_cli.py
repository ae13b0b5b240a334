"""The `rnnsuite` command line: the contract's actions, resume, clear one-line errors."""

import json
import subprocess
import sys

import pytest
from toy import ToyTask

from shared import cli, task


@pytest.fixture
def toy_cli(monkeypatch):
    """Registers the toy task as if it were installed, and runs the CLI in-process."""
    monkeypatch.setattr(cli, "available_tasks", lambda: {"toy": "toy:ToyTask"})
    real_get_task = task.get_task
    monkeypatch.setattr(
        task, "get_task", lambda name: ToyTask() if name == "toy" else real_get_task(name)
    )
    return cli.main


def test_help_lists_the_tasks():
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name in ["speech", "action", "caption", "translation"]:
        assert name in result.stdout


def test_an_error_is_the_only_line_on_stderr(tmp_path):
    """TensorFlow's start-up notices, which ignore TF_CPP_MIN_LOG_LEVEL, are not shown."""
    argv = ["translation", "predict", "--model", str(tmp_path), "Jesus wept."]
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"rnnsuite: error: {tmp_path}: no SavedModel here (made by `export`?)"
    ]


def test_a_fatal_error_in_tensorflows_import_still_shows(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1.5  7 port.cc:153] oneDNN custom operations are on\\n')\n"
        "os.write(2, b'F0000 00:00:1.5  7 cpu_feature_guard.cc:1] this CPU lacks AVX\\n')\n"
        "os.abort()\n"
    )
    script = "import sys; sys.path.insert(0, sys.argv.pop(1)); from shared import cli; cli.main()"
    argv = [sys.executable, "-c", script, str(tmp_path), "translation", "predict", "--model", "m"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "this CPU lacks AVX" in result.stderr and "oneDNN" not in result.stderr


@pytest.mark.slow
def test_train_evaluate_export_predict(toy_cli, tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "export"
    assert (
        toy_cli(
            [
                "toy",
                "train",
                "--run-dir",
                str(run_dir),
                "--preset",
                "small",
                "--epochs",
                "2",
                "--set",
                "train.learning_rate=0.02",
            ]
        )
        == 0
    )
    assert "trained 2 epochs" in capsys.readouterr().out
    assert json.loads((run_dir / "run.json").read_text())["preset"] == "small"

    # Running again resumes, and --epochs extends the run.
    assert toy_cli(["toy", "train", "--run-dir", str(run_dir), "--epochs", "5"]) == 0
    output = capsys.readouterr().out
    assert "resuming after epoch 2" in output and "trained 5 epochs" in output

    assert toy_cli(["toy", "evaluate", "--run-dir", str(run_dir)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] > 0.9

    assert toy_cli(["toy", "export", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    assert (out / "saved_model.pb").is_file()
    capsys.readouterr()
    assert toy_cli(["toy", "predict", "--model", str(out), "1234", "4321"]) == 0
    assert capsys.readouterr().out.split() == ["one", "four"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["toy", "train", "--run-dir", "{tmp}", "--set", "train.epoch=3"],
            "unknown config key 'train.epoch'",
        ),
        (
            ["toy", "train", "--run-dir", "{tmp}", "--set", "model.units=lots"],
            "bad value for 'model.units'",
        ),
        (
            ["toy", "train", "--run-dir", "{tmp}", "--set", "train.batch_size=0"],
            "train.batch_size=0: must be at least 1",
        ),
        (["toy", "evaluate", "--run-dir", "{tmp}"], "no config.yaml"),
        (["toy", "predict", "--model", "{tmp}", "12"], "no SavedModel"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(toy_cli, tmp_path, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert toy_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnsuite: error: ") and message in err and "\n" not in err


def test_a_contract_task_that_is_not_installed_says_so(toy_cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(task, "entry_points", lambda group: [])
    assert toy_cli(["caption", "train", "--run-dir", str(tmp_path)]) == 2
    assert "not available in this version" in capsys.readouterr().err


def _made_run(toy_cli, run_dir, preset="small"):
    """A run dir trained for one epoch; returns its config.yaml."""
    assert (
        toy_cli(["toy", "train", "--run-dir", str(run_dir), "--preset", preset, "--epochs", "1"])
        == 0
    )
    return (run_dir / "config.yaml").read_text()


def test_a_run_dir_of_another_preset_is_refused(toy_cli, tmp_path, capsys):
    _made_run(toy_cli, tmp_path, "tiny")
    assert toy_cli(["toy", "train", "--run-dir", str(tmp_path), "--preset", "base"]) == 2
    assert "trained with preset 'tiny'" in capsys.readouterr().err


def test_a_run_dir_that_is_a_file_is_refused(toy_cli, tmp_path, capsys):
    (tmp_path / "run").write_text("")
    assert toy_cli(["toy", "train", "--run-dir", str(tmp_path / "run")]) == 2
    assert "a file, not a folder" in capsys.readouterr().err


def test_a_resumed_run_may_not_change_its_model(toy_cli, tmp_path, capsys):
    saved = _made_run(toy_cli, tmp_path)
    argv = ["toy", "train", "--run-dir", str(tmp_path), "--set", "model.units=8"]
    assert toy_cli(argv) == 2
    err = capsys.readouterr().err
    assert "model.units: 24 -> 8" in err and "use a new --run-dir" in err
    assert (tmp_path / "config.yaml").read_text() == saved  # the run dir still works


def test_a_resumed_run_may_not_change_its_data(toy_cli, tmp_path, capsys):
    _made_run(toy_cli, tmp_path)
    other = tmp_path / "other.tsv"
    assert toy_cli(["toy", "train", "--run-dir", str(tmp_path), "--data", str(other)]) == 2
    assert f"trained on the embedded corpus, not {other}" in capsys.readouterr().err


def test_a_local_data_path_is_kept_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli._absolute("pairs.tsv") == str(tmp_path / "pairs.tsv")
    assert cli._absolute("tfds:speech_commands") == "tfds:speech_commands"
    assert cli._absolute(None) is None


def test_predict_refuses_an_export_of_another_task(toy_cli, tmp_path, capsys):
    from shared.export import METADATA

    (tmp_path / "saved_model.pb").write_bytes(b"")
    (tmp_path / METADATA).parent.mkdir()
    (tmp_path / METADATA).write_text(json.dumps({"task": "action"}))
    assert toy_cli(["toy", "predict", "--model", str(tmp_path), "12"]) == 2
    assert "exported by the 'action' task, not 'toy'" in capsys.readouterr().err


def test_export_refuses_a_run_of_another_task(toy_cli, tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"task": "speech", "preset": "tiny"}))
    argv = ["toy", "export", "--run-dir", str(tmp_path), "--out", str(tmp_path / "x")]
    assert toy_cli(argv) == 2
    assert "is a 'speech' run, not 'toy'" in capsys.readouterr().err


def test_a_first_train_that_fails_leaves_the_run_dir_free(toy_cli, tmp_path, capsys):
    argv = ["toy", "train", "--run-dir", str(tmp_path), "--preset", "tiny"]
    assert toy_cli([*argv, "--set", "train.lr_schedule=wobbly"]) == 2
    assert not (tmp_path / "run.json").exists()
    capsys.readouterr()
