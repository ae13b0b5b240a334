"""Model quality of each domain's preset under its time budget, as a user gets it.

    python -m bench.quality --profile full --out FILE [--domains speech,action]

Each domain runs the two commands a user runs, `rnnsuite TASK train --preset P` (its
`train.time_limit_minutes` is the budget) and `rnnsuite TASK evaluate`, in a scratch run
dir on the embedded corpus, on every core. A row holds the test metrics (`metrics.json`),
the fit time and epochs (`train_summary.json`) and the wall time of train + evaluate,
corpus generation and feature caching included when the cache is cold (`setup` seconds
are the `prepare` step, timed apart so that the training time means the same on every
machine). The `full` profile runs the `small` presets: about two hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import machine

# The metrics each domain reports, in table order (metrics.json keys).
METRICS = {
    "speech": (
        "wer",
        "cer",
        "wer_greedy",
        "cer_greedy",
        "wer_telephone",
        "cer_telephone",
        "pocketsphinx_wer",
        "pocketsphinx_cer",
    ),
    "action": ("top1", "top5", "mean_class_accuracy"),
    "caption": ("bleu4", "cider", "right_action"),
    "translation": ("bleu", "chrf", "apertium_bleu", "apertium_chrf"),
}


def measure(domain: str, preset: str, work: Path, log) -> dict:
    """Prepares, trains and evaluates one domain; its row.

    The action run trains its frame CNN even when one is cached (`cnn.reuse=false`), so
    its time is a first run's; the caption run reuses the CNN as a user's would (the one
    the action run just trained, when both run).
    """
    from shared import cli
    from shared.config import resolve
    from shared.task import get_task

    task = get_task(domain)
    budget = resolve(task.config_class, task.presets, preset).train.time_limit_minutes
    run_dir = work / domain
    in_run = ["--run-dir", str(run_dir)]
    retrain_cnn = ["--set", "cnn.reuse=false"] if domain == "action" else []
    commands = {
        "prepare": ["--preset", preset],
        "train": ["--preset", preset, *in_run, "--set", "train.verbose=2", *retrain_cnn],
        "evaluate": in_run,
    }
    timings = {}
    for action, arguments in commands.items():
        print(f"  {domain} {action} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        code = cli.main([domain, action, *arguments])
        timings[action] = round(time.perf_counter() - started, 1)
        if code != 0:
            raise RuntimeError(f"rnnsuite {domain} {action} exited with {code}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    row = {
        "domain": domain,
        "preset": preset,
        # A resumed results file holds rows of several commits.
        "git": machine.git_commit(),
        # Rows are pasted into reports of other runs, maybe made on another machine.
        "machine": machine.describe(machine.machine_info()),
        "budget_minutes": budget,
        "epochs": summary.get("epochs"),
        "fit_seconds": summary.get("fit_seconds"),
        "setup_seconds": timings["prepare"],
        "train_seconds": timings["train"],
        "evaluate_seconds": timings["evaluate"],
        "metrics": {key: metrics[key] for key in METRICS[domain] if key in metrics},
        "frame_cnn": _frame_cnn(run_dir),
    }
    log(row)
    return row


def _frame_cnn(run_dir: Path) -> str | None:
    """How a video run got its frame CNNs: trained in the run, or reused from the cache
    (the caption run's appearance CNN, where it has one, after a `+`)."""
    from suite.video.caption_task import APPEARANCE
    from suite.video.task import FRAME_CNN, cnn_files

    how = []
    for name in (FRAME_CNN, APPEARANCE):
        path = cnn_files(run_dir, name)[1]
        if path.is_file():
            info = json.loads(path.read_text())
            trained = "trained" if info.get("training") else "not trained"
            how.append("reused" if "reused_from" in info else trained)
    return " + ".join(how) or None


def run(profile, threads, log, domains=None) -> list[dict]:
    """Rows of `domains` (default: the profile's), on `threads` (0: every core)."""
    if not profile.quality_preset:
        return []
    chosen = domains or profile.quality_domains
    with tempfile.TemporaryDirectory(prefix="rnnsuite-quality-") as scratch:
        return [measure(domain, profile.quality_preset, Path(scratch), log) for domain in chosen]


def _print_row(row) -> None:
    scores = ", ".join(f"{k} {v:.3g}" for k, v in row["metrics"].items())
    print(
        f"  {row['domain']}: {scores}; trained {row['fit_seconds']} s "
        f"(budget {row['budget_minutes']} min)",
        flush=True,
    )


def _domains(text: str) -> list[str]:
    domains = text.split(",")
    unknown = set(domains) - set(METRICS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown domains {sorted(unknown)}; choose from {list(METRICS)}"
        )
    return domains


def main(argv=None) -> int:
    return machine.section_main(
        __doc__.splitlines()[0],
        run,
        argv,
        threads_help="0: every core, as a user trains (the default)",
        log=_print_row,
        options=[("--domains", {"type": _domains, "help": f"subset of {','.join(METRICS)}"})],
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
