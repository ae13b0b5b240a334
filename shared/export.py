"""The one export path: SavedModels whose `serving_default` takes raw input.

Tasks write a `tf.function`-compatible endpoint (feature extraction, tokenization and
decoding inside) and call `export_endpoint`; everything goes through
`keras.export.ExportArchive`. `serve_in_fresh_process` reloads an export in a new,
CPU-only Python process, which is how the tests check every export.

Exports must serve on CPU-only machines even when trained on a GPU: Keras bakes the cuDNN
kernels into an export made where a GPU is visible, so `hide_gpus()` runs before any
model is built for export (the CLI's `export` does this).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"


def hide_gpus() -> None:
    """Makes TensorFlow ignore GPUs in this process so exports use portable kernels."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # Devices were initialised already; the caller builds with use_cudnn=False instead.
        pass


def export_endpoint(out_dir, endpoint, input_signature, track=(), version: int | None = None):
    """Writes a SavedModel with `endpoint` as its `serving_default` signature.

    Args:
        out_dir: destination folder.
        endpoint: a function of the signature's tensors returning a dict of named outputs.
        input_signature: list of `tf.TensorSpec` (with names) the endpoint takes.
        track: every Keras layer or model the endpoint uses (lookup layers included).
        version: write to `out_dir/<version>/`, the TF Serving layout.
    Returns:
        The folder the SavedModel was written to.
    """
    import keras

    path = Path(out_dir) if version is None else Path(out_dir) / str(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    archive = keras.export.ExportArchive()
    for item in track:
        archive.track(item)
    archive.add_endpoint(SIGNATURE, endpoint, input_signature=input_signature)
    archive.write_out(str(path), verbose=False)
    return path


METADATA = Path("assets.extra") / "rnnsuite.json"


def write_metadata(export_dir, metadata: dict) -> None:
    """Stores what `predict` needs beside the graph (task, input limits, known tokens)."""
    path = Path(export_dir) / METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, ensure_ascii=False, indent=1))


def read_metadata(export_dir) -> dict:
    """The export's metadata, or {} for a SavedModel made elsewhere."""
    export_dir = resolve_export_dir(export_dir)
    path = export_dir / METADATA
    return json.loads(path.read_text()) if path.is_file() else {}


def check_exported_by(export_dir, task_name: str) -> None:
    """Refuses an export that another task made (an export made elsewhere passes)."""
    exported_by = read_metadata(export_dir).get("task", task_name)
    if exported_by != task_name:
        from shared.errors import DataError

        raise DataError(f"{export_dir}: exported by the {exported_by!r} task, not {task_name!r}")


def resolve_export_dir(export_dir) -> Path:
    """`export_dir` itself, or its newest numbered version (TF Serving layout)."""
    export_dir = Path(export_dir)
    if (export_dir / "saved_model.pb").is_file():
        return export_dir
    versions = [p for p in export_dir.glob("*") if (p / "saved_model.pb").is_file()]
    versions = sorted(versions, key=lambda p: int(p.name) if p.name.isdigit() else -1)
    if not versions:
        from shared.errors import RnnsuiteError

        raise RnnsuiteError(f"{export_dir}: no SavedModel here (made by `export`?)")
    return versions[-1]


def load_endpoint(export_dir):
    """Loads an export's `serving_default` as a callable taking keyword tensors."""
    import tensorflow as tf

    try:  # registers the tensorflow-text ops (SentencePiece) that text exports use
        import tensorflow_text  # noqa: F401
    except ImportError:
        pass
    loaded = tf.saved_model.load(str(resolve_export_dir(export_dir)))
    return loaded.signatures[SIGNATURE]


def _to_numpy(outputs: dict) -> dict:
    arrays = {}
    for name, value in outputs.items():
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if array.dtype == object:
            array = array.astype(bytes)
        arrays[name] = array
    return arrays


def serve(export_dir, inputs: dict) -> dict:
    """Runs an export in this process on numpy inputs; returns numpy outputs."""
    endpoint = load_endpoint(export_dir)
    return _to_numpy(endpoint(**{k: _tensor(v) for k, v in inputs.items()}))


def _tensor(value):
    import tensorflow as tf

    array = np.asarray(value)
    if array.dtype.kind in "US":
        return tf.constant(array.astype(bytes))
    return tf.constant(array)


def serve_in_fresh_process(export_dir, inputs: dict, timeout: float = 300) -> dict:
    """Reloads an export in a new CPU-only Python process and runs it on `inputs`.

    Proves that the SavedModel stands on its own: no Python objects, custom classes or
    GPU kernels of the exporting process are needed to serve it.
    """
    with tempfile.TemporaryDirectory() as scratch:
        in_path, out_path = Path(scratch) / "in.npz", Path(scratch) / "out.npz"
        np.savez(in_path, **{k: np.asarray(v) for k, v in inputs.items()})
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
        command = [
            sys.executable,
            "-m",
            "shared.export",
            str(export_dir),
            str(in_path),
            str(out_path),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"serving {export_dir} failed:\n{result.stderr[-4000:]}")
        with np.load(out_path) as outputs:
            return {name: outputs[name] for name in outputs.files}


def _main(argv) -> int:
    export_dir, in_path, out_path = argv
    with np.load(in_path) as inputs:
        arrays = {name: inputs[name] for name in inputs.files}
    np.savez(out_path, **serve(export_dir, arrays))
    print(json.dumps({"served": export_dir}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
