"""`rnnsuite`: one command line for every task.

    rnnsuite TASK prepare  [--data SRC]
    rnnsuite TASK train    --run-dir DIR [--preset P] [--config FILE] [--data SRC] [--epochs N] [--set k=v ...]
    rnnsuite TASK evaluate --run-dir DIR [--data SRC]
    rnnsuite TASK export   --run-dir DIR --out DIR [--version N]
    rnnsuite TASK predict  --model DIR INPUT...   (or lines on stdin)

Errors a user can fix are printed as one line, with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from shared.config import PRESETS
from shared.errors import RnnsuiteError
from shared.task import CONTRACT_TASKS, RUN_FILE, available_tasks, run_info


def build_parser() -> argparse.ArgumentParser:
    installed = available_tasks()
    names = list(dict.fromkeys([*CONTRACT_TASKS, *installed]))
    parser = argparse.ArgumentParser(
        prog="rnnsuite",
        description="Recurrent-network applications: speech, video and translation.",
        epilog="Run `rnnsuite TASK ACTION --help` for the options of one action.",
    )
    parser.add_argument(
        "--data-dir",
        help="where corpora and caches live (default $RNNSUITE_DATA_DIR or ~/.cache/rnnsuite)",
    )
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in names:
        note = "" if name in installed else " (not available in this version yet)"
        task_parser = tasks.add_parser(name, help=f"{name}{note}", description=f"{name}{note}")
        actions = task_parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        _add_actions(actions)
    return parser


def _add_actions(actions) -> None:
    def config_options(p):
        p.add_argument("--preset", choices=PRESETS, help="named preset (default: small)")
        p.add_argument("--config", help="YAML file with config values")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one config value, e.g. --set train.batch_size=16 (repeatable)",
        )

    def data_option(p):
        p.add_argument("--data", help="embedded corpus when omitted, a local path, or tfds:NAME")

    p = actions.add_parser("prepare", help="build/cache the embedded corpus or validate data")
    data_option(p)
    config_options(p)

    p = actions.add_parser("train", help="train (resumes from the run dir's last checkpoint)")
    p.add_argument("--run-dir", required=True, type=Path)
    data_option(p)
    config_options(p)
    p.add_argument("--epochs", type=int, help="total epochs (same as --set train.epochs=N)")
    p.add_argument(
        "--strategy",
        choices=["default", "mirrored", "multi_worker", "tpu"],
        help="tf.distribute strategy (same as --set train.strategy=NAME)",
    )

    p = actions.add_parser("evaluate", help="score on the test split; writes metrics.json")
    p.add_argument("--run-dir", required=True, type=Path)
    data_option(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    p = actions.add_parser("export", help="write a SavedModel that takes raw input")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--version", type=int, help="write OUT/VERSION/ (TF Serving layout)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    p = actions.add_parser("predict", help="run an export on files or text lines")
    p.add_argument("--model", required=True, type=Path, help="an export folder")
    p.add_argument("inputs", nargs="*", help="input files or text; stdin lines when omitted")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        os.environ["RNNSUITE_DATA_DIR"] = str(args.data_dir)
    # TensorFlow's C++ log, errors included, is not for the user of a command line: its
    # errors that matter come back as Python exceptions ("failed call to cuInit" on a
    # machine without a GPU does not). TF_CPP_MIN_LOG_LEVEL=0 or 2 shows it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        _import_tensorflow_quietly()
        return _run(args)
    except RnnsuiteError as error:
        print(f"rnnsuite: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nrnnsuite: interrupted; finished epochs are checkpointed, run again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        warnings.showwarning = shown


# TensorFlow's info and warning lines from before absl's logging is set up.
_STARTUP_NOTICE = (
    r"WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} [\d:.]+ +\d+ \S+\] "
)
# Passes on the lines it reads that are not start-up notices.
_SIEVE = f"""
import re, sys
notice = re.compile({_STARTUP_NOTICE!r})
sys.stdin.reconfigure(errors="replace")
for line in sys.stdin:
    if not notice.match(line):
        sys.stderr.write(line)
        sys.stderr.flush()
"""


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow without its start-up notices, unless TF_CPP_MIN_LOG_LEVEL=0.

    TensorFlow 2.21 logs oneDNN and CUDA notices (six lines) before absl's logging is set
    up, where TF_CPP_MIN_LOG_LEVEL does not reach them. During the import, stderr goes
    through a small process that drops those lines and passes on everything else as it
    comes: that process outlives this one, so a fatal error's message still shows.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        stderr = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no stderr, or not a file descriptor
        import tensorflow  # noqa: F401

        return
    sieve = subprocess.Popen([sys.executable, "-c", _SIEVE], stdin=subprocess.PIPE)
    os.dup2(sieve.stdin.fileno(), 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        sieve.stdin.close()
        sieve.wait()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """One line per warning: a user reads its message, not the source line that raised it."""
    print(f"rnnsuite: {category.__name__}: {message}", file=sys.stderr)


def _run(args) -> int:
    from shared.task import get_task

    task = get_task(args.task)
    if args.action == "export":
        # Before TensorFlow touches a device, so the export carries no cuDNN kernels.
        from shared.export import hide_gpus

        hide_gpus()
    handler = {
        "prepare": _prepare,
        "train": _train,
        "evaluate": _evaluate,
        "export": _export,
        "predict": _predict,
    }[args.action]
    return handler(task, args)


def _resolve(task, args, overrides):
    from shared import config as config_lib

    return config_lib.resolve(
        task.config_class, task.presets, args.preset or "small", args.config, overrides
    )


def _prepare(task, args) -> int:
    print(task.prepare(_resolve(task, args, args.set), args.data))
    return 0


def _train(task, args) -> int:
    from shared import config as config_lib
    from shared.training import check_unchanged, latest_checkpoint, train

    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.strategy is not None:
        overrides.append(f"train.strategy={args.strategy}")
    data = _absolute(args.data)
    if args.run_dir.exists() and not args.run_dir.is_dir():
        raise RnnsuiteError(f"--run-dir {args.run_dir}: a file, not a folder")
    run = _run_of(task, args.run_dir)
    if run:
        if args.preset and args.preset != run["preset"]:
            raise RnnsuiteError(
                f"{args.run_dir} was trained with preset {run['preset']!r}, not {args.preset!r};"
                " use a new --run-dir"
            )
        if args.data and data != run.get("data"):
            trained_on = run.get("data") or "the embedded corpus"
            raise RnnsuiteError(
                f"{args.run_dir} was trained on {trained_on}, not {data}; use a new --run-dir"
            )
        saved = config_lib.load(task.config_class, args.run_dir)
        config = config_lib.override(saved, args.config, overrides)
        check_unchanged(task, args.run_dir, saved, config, "a resumed run")
    else:
        config = _resolve(task, args, overrides)
        task.check_config(config)
        args.run_dir.mkdir(parents=True, exist_ok=True)
        run = {"task": task.name, "preset": args.preset or "small", "data": data}
        (args.run_dir / RUN_FILE).write_text(json.dumps(run, indent=2))
    fresh = latest_checkpoint(args.run_dir) is None
    try:
        summary = train(task, config, args.run_dir, run.get("data"))
    except BaseException:
        if fresh and latest_checkpoint(args.run_dir) is None:
            # Nothing was trained: a retry may choose another preset or data.
            (args.run_dir / RUN_FILE).unlink(missing_ok=True)
        raise
    logs = ", ".join(f"{k}={v:.4g}" for k, v in summary["logs"].items())
    print(f"trained {summary['epochs']} epochs into {args.run_dir}" + (f": {logs}" if logs else ""))
    return 0


def _absolute(data: str | None) -> str | None:
    """A local data path made absolute, so the run dir works from any directory."""
    if not data or data.startswith("tfds:"):
        return data
    return str(Path(data).resolve())


def _run_of(task, run_dir) -> dict:
    """The run dir's `RUN_FILE` ({} if none), refused if another task made the run."""
    run = run_info(run_dir)
    if run and run.get("task") != task.name:
        raise RnnsuiteError(f"{run_dir} is a {run.get('task')!r} run, not {task.name!r}")
    return run


def _evaluate(task, args) -> int:
    from shared.training import restore_model

    run_dir = args.run_dir
    run = _run_of(task, run_dir)
    config, model = restore_model(task, run_dir, args.set)
    metrics = task.evaluate(model, config, args.data or run.get("data"), run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    width = max(len(name) for name in metrics) if metrics else 0
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown}")
    print(f"wrote {run_dir / 'metrics.json'}")
    return 0


def _export(task, args) -> int:
    from shared.training import restore_model

    _run_of(task, args.run_dir)
    config, model = restore_model(task, args.run_dir, args.set)
    out_dir = args.out if args.version is None else args.out / str(args.version)
    path = task.export(model, config, args.run_dir, out_dir)
    print(f"exported {task.name} model to {path}")
    return 0


def _predict(task, args) -> int:
    from shared.export import check_exported_by

    check_exported_by(args.model, task.name)
    inputs = list(args.inputs)
    if not inputs or inputs == ["-"]:
        inputs = [line.rstrip("\n") for line in sys.stdin]
        if task.predict_inputs.endswith("files"):  # a blank line names no file
            inputs = [line for line in inputs if line.strip()]
    for line in task.predict(args.model, inputs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
