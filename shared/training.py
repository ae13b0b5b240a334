"""The one training loop every domain uses.

`train(task, config, run_dir)` resolves a `tf.distribute` strategy, builds the task's
data and model, and fits with checkpoints that make every run resumable: running it
again on the same run dir continues from the last finished epoch, also after Ctrl-C or
a kill. A run dir holds:

    config.yaml      the resolved config
    checkpoints/     tf.train checkpoints of model, optimizer and the loop's state
    history.csv      one row per saved epoch (appended across resumes)
    logs/            TensorBoard
    (task assets)    vocabularies, normalisation statistics
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from shared import config as config_lib
from shared.config import ConfigError
from shared.errors import TrainingError

CHECKPOINT_DIR = "checkpoints"


# -- strategy ---------------------------------------------------------------------------
def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local GPUs), `multi_worker` (from TF_CONFIG) or `tpu`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}; choose default, mirrored, multi_worker or tpu")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes shared files (always true outside multi_worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


# -- optimizer --------------------------------------------------------------------------
def make_optimizer(
    train: config_lib.TrainConfig, total_steps: int, horizon: tf.Variable | None = None
) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), learning-rate schedule with warmup, clipping.

    With a `horizon` variable (steps; `TimeBudget` sets it), a decaying schedule planned
    over `total_steps` runs over the horizon instead (`FittedSchedule`).
    """
    rate = train.learning_rate
    warmup = train.warmup_steps
    decay_steps = max(1, total_steps - warmup)
    if train.lr_schedule == "constant":
        schedule = rate
    elif train.lr_schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(rate, decay_steps, alpha=0.01)
    elif train.lr_schedule == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=max(1, decay_steps // 10), decay_rate=0.8
        )
    else:
        raise ConfigError(
            f"unknown lr_schedule {train.lr_schedule!r}; choose constant, cosine or exponential"
        )
    if warmup or not callable(schedule):
        # Always a schedule: a plain rate would be an optimizer variable, and a resumed run
        # that changed to a schedule could not restore the checkpoint's variables.
        schedule = LinearWarmup(schedule, warmup)
    if horizon is not None and isinstance(
        schedule, keras.optimizers.schedules.LearningRateSchedule
    ):
        schedule = FittedSchedule(schedule, total_steps, horizon)
    clip = {"clipnorm": train.clipnorm} if train.clipnorm else {}
    if train.weight_decay:
        return keras.optimizers.AdamW(schedule, weight_decay=train.weight_decay, **clip)
    return keras.optimizers.Adam(schedule, **clip)


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `schedule`'s first rate in `warmup_steps`, then follows
    `schedule` (a rate or a schedule), its steps counted from the end of the warm-up."""

    def __init__(self, schedule, warmup_steps: int):
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def _rate(self, step):
        if callable(self.schedule):
            return tf.cast(self.schedule(step), tf.float32)
        return tf.constant(self.schedule, tf.float32)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warming = self._rate(0.0) * step / max(self.warmup_steps, 1)
        after = self._rate(tf.maximum(step - self.warmup_steps, 0.0))
        return tf.where(step < self.warmup_steps, warming, after)


class FittedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule`, planned over `planned_steps`, run in `horizon` steps when that is fewer:
    a time-limited run on a slow machine still ends its decay (`TimeBudget`)."""

    def __init__(self, schedule, planned_steps: int, horizon: tf.Variable):
        self.schedule = schedule
        self.planned_steps = max(1, planned_steps)
        self.horizon = horizon

    def __call__(self, step):
        horizon = tf.clip_by_value(tf.cast(self.horizon, tf.float32), 1.0, self.planned_steps)
        return self.schedule(tf.cast(step, tf.float32) * (self.planned_steps / horizon))


# -- checkpoints ------------------------------------------------------------------------
class RunCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and the loop's state after every finished epoch.

    The loop's state is what a resumed run needs to go on as if never stopped: the epochs
    finished, the training time of the `timed_epochs` among them (checkpoints of older
    versions timed none; `train.time_limit_minutes` counts it), and the
    early-stopping count (`best_val_loss`, `stale_epochs`), plus a time-limited run's
    `lr_horizon`. `tf.train.CheckpointManager` writes the files before it moves its index,
    so a kill during a save leaves the previous checkpoint intact. An epoch whose loss is
    not finite is never saved. Under multi_worker every worker must take part in a save;
    the non-chief ones write to a scratch dir.
    """

    def __init__(
        self, run_dir: Path, model, optimizer, keep: int = 3, scratch_dir=None, horizon=None
    ):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.seconds = tf.Variable(0.0, trainable=False, name="seconds")
        self.timed_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_val_loss = tf.Variable(math.inf, trainable=False)
        self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._objects = {
            "model": model_variables(model),
            "optimizer": list(optimizer.variables),
            "epoch": self.epoch,
            "seconds": self.seconds,
            "timed_epochs": self.timed_epochs,
            "best_val_loss": self.best_val_loss,
            "stale_epochs": self.stale_epochs,
        }
        if horizon is not None:
            self._objects["lr_horizon"] = horizon
        self._checkpoint = tf.train.Checkpoint(**self._objects)
        self._run_dir = Path(run_dir)
        # A non-chief worker saves to its `scratch_dir`, and restores the chief's checkpoint.
        directory = scratch_dir or self._run_dir / CHECKPOINT_DIR
        self._manager = tf.train.CheckpointManager(self._checkpoint, str(directory), keep)
        self._started = self._seconds_before = 0.0
        self._timed_before = self._first_epoch = 0

    def saved_epochs(self) -> int:
        """The epochs finished by the latest checkpoint (its number), without restoring it."""
        latest = latest_checkpoint(self._run_dir)
        return int(latest.rpartition("-")[2]) if latest else 0

    def restore(self) -> int:
        """Restores the latest checkpoint if any; returns the number of finished epochs.

        Every worker restores the chief's checkpoint (the run dir is shared under
        multi_worker), so all of them resume from the same epoch with the same weights.
        """
        latest = latest_checkpoint(self._run_dir)
        if latest:
            # Checkpoints of older versions, or of a run that gains a time limit on resume,
            # lack some of the loop's state: it keeps its initial values.
            saved = {name.partition("/")[0] for name, _ in tf.train.list_variables(latest)}
            objects = {key: value for key, value in self._objects.items() if key in saved}
            try:
                tf.train.Checkpoint(**objects).restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                reason = str(error).strip().splitlines()[0][:200]
                raise TrainingError(
                    f"{latest}: the model and optimizer of these settings do not match this "
                    f"checkpoint's ({reason}); was it made on another kind of machine (mixed "
                    "precision is float16 with loss scaling on a GPU, bfloat16 on a CPU) or "
                    "with other settings?"
                ) from None
        return int(self.epoch.numpy())

    def on_train_begin(self, logs=None):
        self._started, self._seconds_before = time.monotonic(), float(self.seconds.numpy())
        self._timed_before = int(self.timed_epochs.numpy())
        self._first_epoch = int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            return
        self.epoch.assign(epoch + 1)
        self.seconds.assign(self._seconds_before + time.monotonic() - self._started)
        self.timed_epochs.assign(self._timed_before + epoch + 1 - self._first_epoch)
        self._manager.save(checkpoint_number=epoch + 1)


class EarlyStopping(keras.callbacks.Callback):
    """Stops after `patience` epochs without a lower validation loss.

    Keras' `EarlyStopping` forgets its count when a run is resumed; this one keeps it in
    the checkpoint's `best_val_loss` and `stale_epochs`, so a resumed run goes on counting
    and a stopped one stays stopped.
    """

    def __init__(self, patience: int, checkpoint: RunCheckpoint):
        super().__init__()
        self.patience = patience
        self.best, self.stale = checkpoint.best_val_loss, checkpoint.stale_epochs

    @property
    def stopped(self) -> bool:
        return int(self.stale.numpy()) >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is None or not math.isfinite(loss):
            return
        if loss < float(self.best.numpy()):
            self.best.assign(loss)
            self.stale.assign(0)
        else:
            self.stale.assign_add(1)
        if self.stopped:
            self.model.stop_training = True
            print(
                f"early stopping after epoch {epoch + 1}: no lower validation loss than "
                f"{float(self.best.numpy()):.4g} for {self.patience} epochs"
            )


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite batch loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.where = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training before an epoch that would end past `minutes` of training time.

    The time counts the earlier runs of a resumed run dir (`spent_seconds` for its
    `timed_epochs`, from the checkpoint; it resumes after `initial_epoch`). The next epoch
    is expected to take as long as the mean epoch so far (validation included). With a
    `horizon` variable (the steps a `FittedSchedule` decays over), it is set at the start
    and after each epoch to the steps of the epochs expected to fit, at most the planned
    `epochs`, so the learning rate has decayed when time runs out.

    Under multi_worker (pass its `strategy`), the workers decide on their mean time, so
    all of them stop after the same epoch: one that went on alone would fail in its next
    all-reduce, its peers gone.
    """

    def __init__(
        self,
        minutes: float,
        horizon=None,
        epochs=0,
        steps_per_epoch=0,
        strategy=None,
        spent_seconds=0.0,
        timed_epochs=0,
        initial_epoch=0,
    ):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.horizon = horizon
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.strategy = strategy
        self.stopped_after = None
        self.spent_seconds, self.timed_epochs = spent_seconds, timed_epochs
        self.initial_epoch = initial_epoch
        self._start = self._epochs = 0

    def epochs_that_fit(self, elapsed: float | None = None) -> int | None:
        """More epochs expected to fit in the time left (None before any timed epoch)."""
        timed = self.timed_epochs + self._epochs
        if not timed:
            return None
        elapsed = self._elapsed() if elapsed is None else elapsed
        return int((self.seconds - elapsed) // (elapsed / timed))

    def on_train_begin(self, logs=None):
        self._start, self._epochs = time.monotonic(), 0
        more = self.epochs_that_fit(self.spent_seconds)
        if more is not None and self.horizon is not None:
            self.horizon.assign(
                float(min(self.epochs, self.initial_epoch + max(more, 0)) * self.steps_per_epoch)
            )

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        elapsed = self._elapsed()
        more = self.epochs_that_fit(elapsed)
        if more < 1:
            self.stopped_after = epoch + 1
            self.model.stop_training = True
            print(
                f"time limit: stopping after epoch {epoch + 1} ({elapsed / 60:.1f} of "
                f"{self.seconds / 60:g} minutes; another epoch would not fit)"
            )
        elif self.horizon is not None:
            epochs = min(self.epochs, epoch + 1 + more)
            self.horizon.assign(float(epochs * self.steps_per_epoch))
            if self._epochs == 1 and epochs < self.epochs:
                print(
                    f"time limit: about {epochs} of {self.epochs} epochs fit in "
                    f"{self.seconds / 60:g} minutes; the learning rate decays over those"
                )

    def _elapsed(self) -> float:
        elapsed = self.spent_seconds + time.monotonic() - self._start
        if self.strategy is None:
            return elapsed
        # The all-reduce hands every worker the same bits, hence the same decision.
        local = self.strategy.run(lambda: tf.constant(elapsed, tf.float32))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))


def model_variables(model) -> list:
    """The model's variables in construction order.

    Keras 3 models are not tracked by `tf.train.Checkpoint` themselves, so checkpoints
    hold this list; the same config always builds the same list.
    """
    return list(model.weights)


def latest_checkpoint(run_dir: Path) -> str | None:
    return tf.train.latest_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR))


# Settings a resumed run keeps even in its task's `resumable_sections`: on a GPU, mixed
# precision wraps the optimizer in a LossScaleOptimizer, whose variables differ.
FIXED_SETTINGS = ("train.mixed_precision",)


def check_unchanged(task, run_dir, saved, config, who: str) -> None:
    """Refuses `config` if it changes `saved` beyond `task.resumable_sections`: the run's
    weights, vocabularies and statistics were made for the saved settings."""

    def flat(config):
        return {
            f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in config_lib.to_dict(config).items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])
        }

    def fixed(key):
        return key.partition(".")[0] not in task.resumable_sections or key in FIXED_SETTINGS

    before, after = flat(saved), flat(config)
    changed = [
        f"{key}: {before[key]!r} -> {after[key]!r}"
        for key in before
        if fixed(key) and before[key] != after[key]
    ]
    if changed:
        raise ConfigError(
            f"{run_dir} was trained with other settings ({'; '.join(changed)}); {who} may "
            f"change only {', '.join(task.resumable_sections)} (not {', '.join(FIXED_SETTINGS)}):"
            " use a new --run-dir"
        )


def restore_model(task, run_dir: Path, overrides=()):
    """Rebuilds a run's model from its config and restores its latest weights.

    `overrides` may change only the task's `resumable_sections` (`check_unchanged`).
    """
    run_dir = Path(run_dir)
    saved = config_lib.load(task.config_class, run_dir)
    config = config_lib.override(saved, overrides=overrides) if overrides else saved
    check_unchanged(task, run_dir, saved, config, "evaluate or export")
    task.check_config(config)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise TrainingError(f"{run_dir}: no checkpoint yet; run `rnnsuite {task.name} train` first")
    model = task.build_model(config, run_dir)
    tf.train.Checkpoint(model=model_variables(model)).restore(latest).expect_partial()
    return config, model


def mixed_policy() -> str:
    """The mixed-precision policy for this machine: float16 on a GPU; bfloat16 elsewhere,
    which TPUs and CPUs with AVX512_BF16 or AMX compute natively and which needs no loss
    scaling. A CPU emulates float16: the speech small preset's training step took 172 ms
    with it on a 2-core EPYC, 130 ms in float32 and 120-130 ms in bfloat16."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


# -- the loop ---------------------------------------------------------------------------
def train(task, config, run_dir, data: str | None = None) -> dict:
    """Trains `task` with `config` into `run_dir`, resuming from its last checkpoint.

    Returns a summary: epochs finished, the last epoch's logs and whether it resumed.
    Raises:
        TrainingError: if the loss became NaN/inf (the last good checkpoint is kept).
        ConfigError: for settings the task cannot use (`Task.check_config`).
    """
    task.check_config(config)
    with _dtype_policy(config.train.mixed_precision):
        return _train(task, config, Path(run_dir), data)


@contextlib.contextmanager
def _dtype_policy(mixed: bool):
    """Keras' global dtype policy for one run (`mixed_policy()` or float32), restored after
    it: what is built later in the process is built as before."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(mixed_policy() if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(task, config, run_dir: Path, data: str | None) -> dict:
    train_cfg = config.train
    keras.utils.set_random_seed(train_cfg.seed)
    strategy = make_strategy(train_cfg.strategy)
    chief = is_chief(strategy)
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief and latest_checkpoint(run_dir) is None:
        # A fresh run's settings are its run dir's from the start: one killed before its
        # first checkpoint resumes with them (and with the assets made for them).
        config_lib.save(config, run_dir)

    multi_worker = train_cfg.strategy == "multi_worker"
    train_ds, val_ds = task.datasets(config, data, run_dir)
    options = tf.data.Options()
    # Keras deletes each epoch's iterators, and deleting one waits for tf.data's autotuning
    # thread, which sometimes sleeps out its period first: the speech small preset sat idle
    # ~40 s at the start of validation in 11 of 34 epochs, 7 of its 29 minutes (gdb: the
    # main thread in ~RootDataset::Iterator, waiting on Model::OptimizeLoop). Without
    # autotuning, AUTOTUNE means one thread per core, ample for these pipelines.
    options.autotune.enabled = False
    if multi_worker:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
    train_ds = train_ds.with_options(options)
    if train_cfg.steps_per_epoch:
        # An epoch is the next steps_per_epoch batches of an endless stream.
        train_ds = train_ds.repeat()
    val_ds = val_ds.with_options(options) if val_ds is not None else None
    steps_per_epoch = train_cfg.steps_per_epoch or _cardinality(train_ds)
    if steps_per_epoch is None and train_cfg.lr_schedule != "constant":
        # Length-bucketed pipelines have no static size; the schedule needs one.
        steps_per_epoch = int(train_ds.reduce(0, lambda count, _: count + 1))

    planned_steps = train_cfg.epochs * (steps_per_epoch or 1)
    with strategy.scope():
        model = task.build_model(config, run_dir)
        # A time-limited run fits its learning-rate decay into the time (`TimeBudget`).
        horizon = None
        if train_cfg.time_limit_minutes:
            horizon = tf.Variable(float(planned_steps), trainable=False, name="lr_horizon")
        model.compile(
            optimizer=make_optimizer(train_cfg, planned_steps, horizon),
            jit_compile=train_cfg.jit_compile,
            **task.compile_args(config),
        )
        model.optimizer.build(model.trainable_variables)
        checkpoint = RunCheckpoint(
            run_dir,
            model,
            model.optimizer,
            keep=train_cfg.keep_checkpoints,
            scratch_dir=None if chief else worker_scratch_dir(run_dir, strategy),
            horizon=horizon,
        )
        if multi_worker:  # before the restore, whose variables are all-reduced
            _check_workers_agree(strategy, checkpoint.saved_epochs())
            _patch_keras_for_multi_worker(model)
        initial_epoch = checkpoint.restore()

    summary = {
        "resumed_from_epoch": initial_epoch,
        "epochs": initial_epoch,
        "dtype_policy": keras.mixed_precision.global_policy().name,
        "logs": {},
    }
    if initial_epoch >= train_cfg.epochs:
        print(f"{run_dir}: already trained {initial_epoch} epochs (asked for {train_cfg.epochs})")
        return summary

    nan_guard = NaNGuard()
    callbacks = [nan_guard, *task.callbacks(config, run_dir)]
    if train_cfg.early_stopping_patience and val_ds is not None:
        early_stopping = EarlyStopping(train_cfg.early_stopping_patience, checkpoint)
        if early_stopping.stopped:
            print(
                f"{run_dir}: stopped early after epoch {initial_epoch} (no lower validation "
                f"loss for {early_stopping.patience} epochs); raise "
                "train.early_stopping_patience to train on"
            )
            return summary
        callbacks.append(early_stopping)
    if train_cfg.time_limit_minutes:
        budget = TimeBudget(
            train_cfg.time_limit_minutes,
            horizon,
            train_cfg.epochs,
            steps_per_epoch or 1,
            strategy=strategy if multi_worker else None,
            spent_seconds=float(checkpoint.seconds.numpy()),
            timed_epochs=int(checkpoint.timed_epochs.numpy()),
            initial_epoch=initial_epoch,
        )
        more = budget.epochs_that_fit(budget.spent_seconds)
        if more is not None and more < 1:
            print(
                f"{run_dir}: time limit: {budget.spent_seconds / 60:.1f} of "
                f"{train_cfg.time_limit_minutes:g} minutes trained; another epoch would not fit"
            )
            return summary
        callbacks.append(budget)
    if chief:
        # Before the checkpoint, so every saved epoch has its row; rows of epochs that were
        # not saved (a NaN, a kill) are dropped when the run resumes.
        history = run_dir / "history.csv"
        _keep_history_rows(history, initial_epoch)
        callbacks.append(keras.callbacks.CSVLogger(str(history), append=True))
    callbacks.append(checkpoint)
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False))
        # A resumed run's changed settings are saved once used: a value that failed above
        # is not kept.
        config_lib.save(config, run_dir)
    if initial_epoch:
        print(f"{run_dir}: resuming after epoch {initial_epoch}")
    started = time.monotonic()
    with warnings.catch_warnings():
        # Keras warns at the end of every epoch of a dataset of unknown size; that is expected.
        warnings.filterwarnings("ignore", "Your input ran out of data")
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train_cfg.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=train_cfg.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the task's tf.data pipeline shuffles
            verbose=train_cfg.verbose,
        )
    if not chief:
        shutil.rmtree(worker_scratch_dir(run_dir, strategy), ignore_errors=True)
    if nan_guard.where is not None:
        epoch, batch = nan_guard.where
        raise TrainingError(
            f"loss became NaN/inf at epoch {epoch}, batch {batch}; the last good checkpoint "
            f"(epoch {int(checkpoint.epoch.numpy())}) is kept in {run_dir}; "
            "lower train.learning_rate or set train.clipnorm"
        )
    summary["epochs"] = int(checkpoint.epoch.numpy())
    summary["steps"] = int(model.optimizer.iterations.numpy())
    summary["fit_seconds"] = round(time.monotonic() - started, 1)
    summary["trained_seconds"] = round(float(checkpoint.seconds.numpy()), 1)  # all runs
    summary["logs"] = {key: float(values[-1]) for key, values in history.history.items()}
    if chief:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def worker_scratch_dir(run_dir, strategy=None) -> Path:
    """Where a non-chief worker writes its checkpoints (every worker must take part in a
    save), one folder per worker of the cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    name = f"{resolver.task_type}-{resolver.task_id}" if resolver else f"pid-{os.getpid()}"
    return Path(run_dir) / ".workers" / name


def _check_workers_agree(strategy, initial_epoch: int) -> None:
    """Refuses a multi_worker run whose workers restored different epochs (a run dir that
    is not shared): they would wait on each other's all-reduce for ever."""
    # All equal exactly when n * sum(e²) == sum(e)² (only SUM and MEAN reduce).
    local = strategy.run(lambda: tf.constant([initial_epoch, initial_epoch**2], tf.int64))
    total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None).numpy()
    if strategy.num_replicas_in_sync * squares != total**2:
        raise TrainingError(
            f"the workers resume from different epochs (this one from {initial_epoch}): a "
            "multi_worker run dir must be on a file system every worker shares"
        )


def _patch_keras_for_multi_worker(model) -> None:
    """Works around two Keras 3.15 defects under MultiWorkerMirroredStrategy (keras#20585).

    1. `fit` all-reduces a first data batch to build the model symbolically, and that
       collective fails on a worker's PerReplica batch. Our models are built already and
       Keras builds the metrics when the train function is traced, so the step is skipped.
    2. Per-step logs are scalars, but Keras mean-reduces them across workers along axis 0.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if getattr(tf_trainer.reduce_per_replica, "_rnnsuite_patched", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):

            def mean(value):
                rank = value.values[0].shape.rank if hasattr(value, "values") else value.shape.rank
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tf.nest.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica._rnnsuite_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _keep_history_rows(path: Path, epochs: int) -> None:
    """Keeps the header and the rows of the first `epochs` epochs of a history CSV."""
    if not path.is_file():
        return
    header, *rows = path.read_text().splitlines(keepends=True) or [""]
    saved = {str(epoch) for epoch in range(epochs)}
    kept = [row for row in rows if row.split(",", 1)[0].strip() in saved]
    if len(kept) < len(rows):
        path.write_text(header + "".join(kept))


def _cardinality(dataset) -> int | None:
    count = int(dataset.cardinality())
    return count if count > 0 else None
