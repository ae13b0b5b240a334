"""The contract between a domain and the shared machinery (training loop, exporter, CLI).

A domain subclasses `Task` and registers it as an entry point in the `rnnsuite.tasks`
group of `pyproject.toml`; the CLI discovers it from there without importing TensorFlow.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from shared.errors import RnnsuiteError

ENTRY_POINT_GROUP = "rnnsuite.tasks"
# The tasks of the CLI contract (DESIGN.md); the ones not installed yet are listed as such.
CONTRACT_TASKS = ("speech", "action", "caption", "translation")
# A run dir's record of its task, preset and data (written by `rnnsuite TASK train`).
RUN_FILE = "run.json"


def run_info(run_dir) -> dict:
    """A run dir's `RUN_FILE` (`task`, `preset`, `data`), or {} for a run made otherwise."""
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


class Task:
    """A domain pipeline: its data, its model, its evaluation, its export.

    Subclasses set the class attributes and implement the methods; the shared training
    loop compiles and fits the model, checkpoints it, and hands it back for evaluation
    and export.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, dict]] = {}
    # What `predict` takes, for the CLI help ("wav files", "video files", "text lines").
    predict_inputs: ClassVar[str] = "inputs"
    # Config sections a resumed run may change; the others shape its data or weights.
    resumable_sections: ClassVar[tuple[str, ...]] = ("train", "decode")

    def check_config(self, config) -> None:
        """Raises `ConfigError` for settings the task cannot use (before a run dir is made).

        This checks the shared sections' ranges; a task that checks more calls it first.
        """
        from shared.config import check_ranges

        check_ranges(config)

    def prepare(self, config, data: str | None) -> str:
        """Builds or validates the data; returns a one-line summary."""
        raise NotImplementedError

    def datasets(self, config, data: str | None, run_dir: Path):
        """Returns `(train, validation)` `tf.data.Dataset`s of `(inputs, targets)` batches.

        Assets the model depends on (vocabularies, normalisation statistics) are written to
        `run_dir` the first time and read back afterwards, so a resumed run sees the same ids.
        """
        raise NotImplementedError

    def build_model(self, config, run_dir: Path):
        """Returns a built (variables created), uncompiled `keras.Model`."""
        raise NotImplementedError

    def compile_args(self, config) -> dict:
        """Keyword arguments for `model.compile` besides the optimizer (loss, metrics)."""
        return {}

    def demo_inputs(self, config) -> list[str]:
        """A few sample inputs for `predict` in `make demo` (file paths or text)."""
        return []

    def callbacks(self, config, run_dir: Path) -> list:
        """Extra Keras callbacks for training (sample decodes, custom logs)."""
        return []

    def evaluate(self, model, config, data: str | None, run_dir: Path) -> dict[str, float]:
        """Scores the model on the test split; may write extra reports into `run_dir`."""
        raise NotImplementedError

    def export(self, model, config, run_dir: Path, out_dir: Path) -> Path:
        """Writes a SavedModel by the export contract; returns its path."""
        raise NotImplementedError

    def predict(self, export_dir: Path, inputs: list[str]) -> list[str]:
        """Runs an export on raw inputs; returns one printable line per input."""
        raise NotImplementedError


def available_tasks() -> dict[str, str]:
    """Task name -> "module:Class" for every installed task, without importing them."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_task(name: str) -> Task:
    """Instantiates the installed task called `name`."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            return entry_point.load()()
    if name in CONTRACT_TASKS:
        raise RnnsuiteError(f"task {name!r} is not available in this version of rnnsuite yet")
    raise RnnsuiteError(f"unknown task {name!r}; installed: {sorted(available_tasks())}")
