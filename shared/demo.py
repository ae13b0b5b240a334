"""`make demo`: every installed task end to end on its embedded data, through the CLI.

For each task: train the `tiny` preset, evaluate, export, then predict on sample inputs.
Tasks of the CLI contract that are not installed yet are listed as such.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from shared import config as config_lib
from shared.task import CONTRACT_TASKS, available_tasks, get_task


def run(*args: str) -> None:
    command = ["rnnsuite", *args]
    print(f"\n$ {shlex.join(command)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "shared.cli", *args])
    if result.returncode != 0:
        sys.exit(result.returncode)


def main(runs: str = "runs", exports: str = "exports") -> int:
    installed = available_tasks()
    for name in CONTRACT_TASKS:
        if name not in installed:
            print(f"\n== {name}: not available in this version yet")
            continue
        task = get_task(name)
        run_dir, export_dir = Path(runs) / f"demo-{name}", Path(exports) / f"demo-{name}"
        print(f"\n== {name}: {task.summary}")
        run(name, "train", "--run-dir", str(run_dir), "--preset", "tiny")
        run(name, "evaluate", "--run-dir", str(run_dir))
        run(name, "export", "--run-dir", str(run_dir), "--out", str(export_dir))
        config = config_lib.resolve(task.config_class, task.presets, "tiny")
        run(name, "predict", "--model", str(export_dir), *task.demo_inputs(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
