"""The shared training loop: learning, run dir, resume after a kill, NaN guard, strategies."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import TESTS_DIR
from toy import ToyConfig, ToyTask

from shared import config as config_lib
from shared import training
from shared.config import ConfigError, TrainConfig
from shared.errors import TrainingError
from shared.training import make_optimizer, restore_model, train

STEPS = 32  # 1024 samples / batch 32


def toy_config(**train):
    return config_lib.resolve(ToyConfig, overrides=[f"train.{k}={v}" for k, v in train.items()])


def history_epochs(run_dir):
    with open(run_dir / "history.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_training_learns_and_fills_the_run_dir(tmp_path):
    summary = train(ToyTask(), toy_config(epochs=4), tmp_path)
    assert summary["logs"]["val_accuracy"] > 0.9  # chance is 0.25
    assert summary["logs"]["loss"] < 0.5
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "logs").is_dir()
    assert history_epochs(tmp_path) == [0, 1, 2, 3]
    assert json.loads((tmp_path / "train_summary.json").read_text())["epochs"] == 4
    config, model = restore_model(ToyTask(), tmp_path)
    assert ToyTask().evaluate(model, config, None, tmp_path)["accuracy"] > 0.9


def test_time_budget_stops_before_an_epoch_that_would_not_fit(monkeypatch):
    clock = iter([0.0, 20.0, 40.0, 61.0])
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))
    budget = training.TimeBudget(minutes=1.5)

    class Model:
        stop_training = False

    budget.set_model(Model())
    budget.on_train_begin()
    for epoch in range(3):
        budget.on_epoch_end(epoch)
        if budget.model.stop_training:
            break
    # 20 s epochs in a 90 s budget: after the third (61 s) a fourth would end at ~81 s...
    assert budget.stopped_after is None
    clock = iter([0.0, 50.0])
    budget.on_train_begin()
    budget.on_epoch_end(0)  # ...but after one 50 s epoch a second would end at 100 s.
    assert budget.stopped_after == 1 and budget.model.stop_training


def test_time_budget_fits_the_learning_rate_decay_into_the_time(monkeypatch):
    clock = iter([0.0, 20.0])
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))
    horizon = tf.Variable(1000.0)
    budget = training.TimeBudget(minutes=1.5, horizon=horizon, epochs=10, steps_per_epoch=100)
    budget.set_model(type("Model", (), {"stop_training": False})())
    budget.on_train_begin()
    budget.on_epoch_end(0)
    # 20 s epochs in 90 s: 4 of the 10 planned epochs fit, so the decay ends after 400 steps.
    assert float(horizon.numpy()) == 400.0
    config = TrainConfig(learning_rate=0.1, lr_schedule="cosine")
    schedule = make_optimizer(config, 1000, horizon)._learning_rate
    assert float(schedule(200)) == pytest.approx(0.0505, rel=1e-3)  # half way
    assert float(schedule(400)) == pytest.approx(0.001, rel=1e-3)  # decayed (alpha 0.01)
    horizon.assign(5000.0)  # a fast machine never stretches the plan
    assert float(schedule(500)) == pytest.approx(0.0505, rel=1e-3)


def test_a_run_resumes_with_or_without_a_time_limit(tmp_path):
    train(ToyTask(), toy_config(epochs=1, lr_schedule="cosine"), tmp_path)
    limited = toy_config(epochs=2, lr_schedule="cosine", time_limit_minutes=5)
    assert train(ToyTask(), limited, tmp_path)["epochs"] == 2
    assert train(ToyTask(), toy_config(epochs=3, lr_schedule="cosine"), tmp_path)["epochs"] == 3


def test_a_time_limited_run_trains_whole_epochs_and_records_its_time(tmp_path):
    summary = train(ToyTask(), toy_config(epochs=50, time_limit_minutes=0.001), tmp_path)
    assert summary["epochs"] == 1 and history_epochs(tmp_path) == [0]
    assert 0 < summary["fit_seconds"] < 60


def test_running_again_continues_where_it_stopped(tmp_path):
    train(ToyTask(), toy_config(epochs=2), tmp_path)
    summary = train(ToyTask(), toy_config(epochs=3), tmp_path)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs"] == 3
    assert history_epochs(tmp_path) == [0, 1, 2]
    again = train(ToyTask(), toy_config(epochs=3), tmp_path)
    assert again["resumed_from_epoch"] == 3 and again["logs"] == {}


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from toy import ToyTask, ToyConfig; from shared import config; from shared.training import train;"
        "train(ToyTask(), config.resolve(ToyConfig, overrides=['train.epochs=4']), sys.argv[2])"
    )
    env = dict(os.environ, TOY_KILL_AT="2,5")  # dies in the middle of the third epoch
    killed = subprocess.run(
        [sys.executable, "-c", script, str(TESTS_DIR), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert history_epochs(tmp_path) == [0, 1]

    summary = train(ToyTask(), toy_config(epochs=4), tmp_path)
    assert summary["resumed_from_epoch"] == 2
    assert history_epochs(tmp_path) == [0, 1, 2, 3]
    assert summary["logs"]["val_accuracy"] > 0.9
    # The optimizer's step counter carried on: no finished step was lost or repeated.
    assert summary["steps"] == 4 * STEPS


def test_history_keeps_one_row_per_saved_epoch(tmp_path):
    train(ToyTask(), toy_config(epochs=2), tmp_path)
    # A kill after an epoch's row was written but before its checkpoint was saved:
    with open(tmp_path / "history.csv", "a") as handle:
        handle.write("2,0.5,0.5,0.5,0.5\n")
    train(ToyTask(), toy_config(epochs=3), tmp_path)
    assert history_epochs(tmp_path) == [0, 1, 2]


def test_steps_per_epoch_is_honoured_past_the_end_of_the_data(tmp_path):
    summary = train(ToyTask(), toy_config(epochs=3, steps_per_epoch=STEPS - 2), tmp_path)
    assert summary["steps"] == 3 * (STEPS - 2)


def test_the_time_limit_counts_the_time_of_earlier_runs(tmp_path):
    first = train(ToyTask(), toy_config(epochs=2), tmp_path)
    assert first["trained_seconds"] > 0
    # The budget was spent by the first run (two epochs of ~1 s against 60 ms): no more.
    summary = train(ToyTask(), toy_config(epochs=4, time_limit_minutes=0.001), tmp_path)
    assert summary["epochs"] == 2 and history_epochs(tmp_path) == [0, 1]


def test_an_extended_time_limited_run_plans_its_decay_anew(monkeypatch):
    clock = iter([100.0])
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))
    horizon = tf.Variable(200.0)  # the first run's plan: 2 epochs of 100 steps
    budget = training.TimeBudget(
        60, horizon, 4, 100, spent_seconds=20.0, timed_epochs=2, initial_epoch=2
    )
    budget.on_train_begin()
    assert float(horizon.numpy()) == 400.0  # 10 s epochs, an hour left: all 4 fit


def test_early_stopping_is_remembered_by_the_checkpoint(tmp_path):
    def checkpoint():
        return training.RunCheckpoint(tmp_path, tf.keras.Sequential(), tf.keras.optimizers.Adam())

    first = checkpoint()
    stopping = training.EarlyStopping(2, first)
    stopping.set_model(type("Model", (), {"stop_training": False})())
    first.on_train_begin()
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7]):
        stopping.on_epoch_end(epoch, {"val_loss": loss})
        first.on_epoch_end(epoch, {"loss": loss})
    assert stopping.model.stop_training
    # A resumed run restores the count: its new callback is stopped already.
    resumed = checkpoint()
    assert resumed.restore() == 4
    assert training.EarlyStopping(2, resumed).stopped
    assert not training.EarlyStopping(3, resumed).stopped  # a larger patience trains on


def test_a_checkpoint_that_does_not_fit_the_optimizer_is_refused_clearly(tmp_path):
    import keras

    def checkpoint(optimizer):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer.build(model.trainable_variables)
        return training.RunCheckpoint(tmp_path, model, optimizer)

    saved = checkpoint(keras.optimizers.SGD())
    saved.on_train_begin()
    saved.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(TrainingError, match="ckpt-1: the model and optimizer of these settings"):
        checkpoint(keras.optimizers.Adam()).restore()  # as a GPU's loss-scaled one would


def test_a_resumed_run_may_change_its_learning_rate_schedule(tmp_path):
    train(ToyTask(), toy_config(epochs=1), tmp_path)
    summary = train(ToyTask(), toy_config(epochs=2, lr_schedule="cosine", warmup_steps=5), tmp_path)
    assert summary["epochs"] == 2


def test_a_resumed_run_with_a_bad_setting_keeps_its_config(tmp_path):
    train(ToyTask(), toy_config(epochs=1), tmp_path)
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="unknown lr_schedule 'Cosine'"):
        train(ToyTask(), toy_config(epochs=2, lr_schedule="Cosine"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == saved


def test_evaluate_may_change_only_the_resumable_settings(tmp_path):
    train(ToyTask(), toy_config(epochs=1), tmp_path)
    with pytest.raises(ConfigError, match="model.units: 24 -> 8.*evaluate or export may"):
        restore_model(ToyTask(), tmp_path, ["model.units=8"])
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        restore_model(ToyTask(), tmp_path, ["train.mixed_precision=true"])
    restore_model(ToyTask(), tmp_path, ["train.batch_size=7"])


class NaNTask(ToyTask):
    def compile_args(self, config):
        return {"loss": lambda y, p: tf.reduce_mean(p) * float("nan")}


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    train(ToyTask(), toy_config(epochs=1), tmp_path)
    with pytest.raises(TrainingError, match="NaN.*epoch 2, batch 1.*epoch 1"):
        train(NaNTask(), toy_config(epochs=2), tmp_path)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("-1")
    train(ToyTask(), toy_config(epochs=2), tmp_path)  # the NaN epoch's row is not kept
    assert history_epochs(tmp_path) == [0, 1]


def test_mixed_precision_trains(tmp_path):
    import keras

    summary = train(ToyTask(), toy_config(epochs=1, mixed_precision=True), tmp_path)
    assert np.isfinite(summary["logs"]["loss"])
    # float16 on a GPU; on a CPU bfloat16, which it need not emulate.
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    assert summary["dtype_policy"] == expected
    # What the process builds next (a restored model, an export) is float32 again.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_schedules_warm_up_and_decay():
    optimizer = make_optimizer(
        TrainConfig(learning_rate=0.1, lr_schedule="cosine", warmup_steps=10), 110
    )
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else None
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(110)) == pytest.approx(0.001, rel=1e-3)
    constant = make_optimizer(TrainConfig(learning_rate=0.1, warmup_steps=4), 100)._learning_rate
    assert float(constant(2)) == pytest.approx(0.05) and float(constant(50)) == pytest.approx(0.1)
    exponential = make_optimizer(
        TrainConfig(learning_rate=0.1, lr_schedule="exponential", warmup_steps=10), 110
    )._learning_rate
    assert float(exponential(5)) == pytest.approx(0.05)
    assert float(exponential(10)) == pytest.approx(0.1)
    assert float(exponential(20)) == pytest.approx(0.08)  # one tenth of the decay: x 0.8
    assert make_optimizer(TrainConfig(clipnorm=0.5), 10).clipnorm == 0.5


def test_bad_strategy_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown strategy 'gpus'"):
        train(ToyTask(), toy_config(strategy="gpus"), tmp_path)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# Worker 1's clock may run a million times fast (`fast_clock`); each prints its summary.
WORKER_SCRIPT = (
    "import sys, time, types; sys.path.insert(0, sys.argv[1]);"
    "from toy import ToyTask, ToyConfig; from shared import config, training;"
    "fast = types.SimpleNamespace(monotonic=lambda: 1e6 * time.monotonic());"
    "training.time = fast if sys.argv[3] == '1' else time;"
    "cfg = config.resolve(ToyConfig, overrides=['train.steps_per_epoch=4',"
    " 'train.strategy=multi_worker', *sys.argv[4:]]);"
    "summary = training.train(ToyTask(), cfg, sys.argv[2]);"
    "summary.pop('fit_seconds'); summary.pop('trained_seconds');"
    "print('SUMMARY', summary)"
)


def _train_two_workers(run_dirs, overrides, fast_clock=False, fails=False) -> list[str]:
    """Trains the toy task on two local workers; returns their printed summaries (or, when
    they `fails`, their stderr)."""
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    workers = []
    for index, run_dir in enumerate(run_dirs):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        fast = "1" if fast_clock and index == 1 else "0"
        argv = [sys.executable, "-c", WORKER_SCRIPT, str(TESTS_DIR), str(run_dir), fast]
        workers.append(
            subprocess.Popen(
                [*argv, *overrides],
                env=dict(os.environ, TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert (worker.returncode != 0) == fails, err[-3000:]
    if fails:
        return [err for _, err in outputs]
    return [out.split("SUMMARY", 1)[1].strip() for out, _ in outputs]


@pytest.mark.slow
@pytest.mark.multiworker
def test_two_local_cpu_workers_train_together(tmp_path):
    # Worker 1's clock runs a million times fast: alone it would stop after the first epoch
    # while worker 0, far from the 5-minute limit, went on (and failed in its next all-reduce).
    run_dirs = [tmp_path / "run0", tmp_path / "run1"]
    summaries = _train_two_workers(
        run_dirs, ["train.epochs=3", "train.time_limit_minutes=5"], fast_clock=True
    )
    for summary in summaries:
        # Both stopped on their mean time (half a million times real time): after epoch 1.
        assert "'epochs': 1" in summary and "'steps': 4" in summary
    # Gradients were all-reduced: both workers end with the same weights, hence the same logs.
    assert summaries[0] == summaries[1]
    # Only the chief (worker 0) writes the run dir's shared files.
    assert history_epochs(tmp_path / "run0") == [0]
    assert tf.train.latest_checkpoint(str(tmp_path / "run0" / "checkpoints")).endswith("-1")
    assert not (tmp_path / "run1" / "history.csv").exists()
    # Run dirs that are not shared: worker 0 would resume after epoch 1, worker 1 start.
    for err in _train_two_workers(run_dirs, ["train.epochs=3"], fails=True):
        assert "the workers resume from different epochs" in err


@pytest.mark.slow
@pytest.mark.multiworker
def test_two_workers_resume_from_the_chiefs_checkpoint(tmp_path):
    run_dirs = [tmp_path / "run"] * 2  # a shared run dir
    _train_two_workers(run_dirs, ["train.epochs=1"])
    summaries = _train_two_workers(run_dirs, ["train.epochs=2"])
    for summary in summaries:
        assert "'resumed_from_epoch': 1" in summary and "'steps': 8" in summary
    assert summaries[0] == summaries[1]
    assert history_epochs(tmp_path / "run") == [0, 1]
