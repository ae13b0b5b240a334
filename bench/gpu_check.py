"""The shared recurrent backbones on an accelerator: they learn, they respect masks and
step-wise use, and what is trained there reloads on a CPU-only machine and agrees.

Only `shared.backbones` (pure Keras 3) is exercised, so any Keras backend runs it:
`KERAS_BACKEND=tensorflow` on a CUDA build checks TensorFlow's cuDNN kernels,
`KERAS_BACKEND=torch` checks Keras' cuDNN path for PyTorch (unmasked LSTM/GRU; masked
input runs Keras' generic loop), `jax` the generic loop under XLA.

Task: each sequence holds 6–24 random tokens out of 4 (one-hot); the label is the token
seen most often (chance ≈ 0.35). Every case trains on the accelerator, then:
- `accuracy` on 1024 held-out sequences (must beat chance by far);
- `padding_diff`: masked cases, the same sequences padded to 24 and to 40 steps;
- `step_diff`: unidirectional cases, `RecurrentBackbone.step` run token by token
  against the whole-sequence call (what the decoders rely on);
- `cpu_reload_diff`: the saved `.keras` model loaded in a fresh process that sees no
  accelerator, its predictions against the accelerator's, relative to the largest logit
  (cuDNN computes in TF32 on Ampere and later GPUs: expect ~1e-3, not float32's 1e-6).

A case the backend cannot run (e.g. a dtype its cuDNN binding lacks) is reported with
its error and counts as a failure.

    python -m bench.gpu_check --out DIR [--steps 300]

Prints one line per case and writes DIR/gpu_check.json; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TOKENS, MAX_TIME, BATCH = 4, 24, 128
CASES = {
    # name: (backbone kwargs, masked, dtype policy)
    "lstm_bi2_full": (dict(cell="lstm", units=64, num_layers=2, bidirectional=True), False, None),
    "gru_bi2_full": (dict(cell="gru", units=64, num_layers=2, bidirectional=True), False, None),
    "lstm_bi2_masked": (dict(cell="lstm", units=64, num_layers=2, bidirectional=True), True, None),
    "gru_res3_masked": (dict(cell="gru", units=64, num_layers=3, residual=True), True, None),
    "rnn_1_masked": (dict(cell="rnn", units=64), True, None),
    "lstm_2_full_bf16": (dict(cell="lstm", units=64, num_layers=2), False, "mixed_bfloat16"),
}
LIMITS = {"accuracy": 0.6, "padding_diff": 1e-3, "step_diff": 1e-3, "cpu_reload_diff": 5e-3}


def majority_task(count, seed, full):
    """One-hot token sequences right-padded with zeros, and each one's majority token."""
    rng = np.random.default_rng(seed)
    lengths = np.full(count, MAX_TIME) if full else rng.integers(6, MAX_TIME + 1, count)
    tokens = rng.integers(0, TOKENS, (count, MAX_TIME))
    x = np.zeros((count, MAX_TIME, TOKENS), "float32")
    labels = np.zeros(count, "int32")
    for row, length in enumerate(lengths):
        x[row, np.arange(length), tokens[row, :length]] = 1.0
        labels[row] = np.bincount(tokens[row, :length], minlength=TOKENS).argmax()
    return x, labels


def build(backbone_kwargs, masked):
    import keras

    from shared.backbones import RecurrentBackbone

    inputs = keras.Input((None, TOKENS))
    x = keras.layers.Masking(0.0)(inputs) if masked else inputs
    x = RecurrentBackbone(**backbone_kwargs, return_sequences=False, name="backbone")(x)
    outputs = keras.layers.Dense(TOKENS, dtype="float32")(x)
    return keras.Model(inputs, outputs)


def step_diff(model, x):
    """Largest gap between the backbone's step-wise and whole-sequence final outputs."""
    import keras

    backbone = model.get_layer("backbone")
    if backbone.bidirectional:
        return None
    whole = keras.ops.convert_to_numpy(backbone(x, training=False))
    states = backbone.initial_states(x.shape[0])
    for t in range(x.shape[1]):
        out, states = backbone.step(keras.ops.convert_to_tensor(x[:, t]), states)
    return float(np.abs(keras.ops.convert_to_numpy(out) - whole).max())


def run_case(name, steps, out_dir):
    import keras

    backbone_kwargs, masked, policy = CASES[name]
    keras.mixed_precision.set_global_policy(policy or "float32")
    keras.utils.set_random_seed(0)
    model = build(backbone_kwargs, masked)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = majority_task(steps * BATCH, seed=1, full=not masked)
    test_x, test_y = majority_task(1024, seed=2, full=not masked)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)  # build + compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    step_ms = 1000 * (time.perf_counter() - start) / steps
    result = {"case": name, "masked": masked, "policy": policy or "float32"}
    result["step_ms"] = round(step_ms, 2)
    logits = model.predict(test_x, batch_size=256, verbose=0)
    result["accuracy"] = float((logits.argmax(-1) == test_y).mean())
    if masked:
        longer = np.concatenate([test_x, np.zeros((1024, 16, TOKENS), "float32")], axis=1)
        padded = model.predict(longer, batch_size=256, verbose=0)
        result["padding_diff"] = float(np.abs(padded - logits).max())
    if policy is None:  # reduced precision cannot meet a float32 tolerance step by step
        result["step_diff"] = step_diff(model, test_x[:64])
    model.save(out_dir / f"{name}.keras")
    np.savez(out_dir / f"{name}.npz", x=test_x, logits=logits)
    keras.mixed_precision.set_global_policy("float32")
    return result


def reload_on_cpu(names, out_dir):
    """Runs in a process that sees no accelerator: largest gap per saved model."""
    import keras

    import shared.backbones  # noqa: F401  (registers RecurrentBackbone)

    gaps = {}
    for name in names:
        model = keras.saving.load_model(out_dir / f"{name}.keras")
        saved = np.load(out_dir / f"{name}.npz")
        logits = model.predict(saved["x"], batch_size=256, verbose=0)
        scale = np.abs(saved["logits"]).max()
        gaps[name] = float(np.abs(logits - saved["logits"]).max() / scale)
    return gaps


def failed_checks(result) -> list[str]:
    """The limits a case misses; reduced-precision cases answer to the accuracy limit only."""
    keys = LIMITS if result["policy"] == "float32" else ("accuracy",)
    failures = []
    for key in keys:
        value, limit = result.get(key), LIMITS[key]
        if value is not None and (value < limit if key == "accuracy" else value > limit):
            failures.append(f"{result['case']}: {key} {value:.4g} (limit {limit})")
    return failures


def device_description():
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}"
        return f"torch {torch.__version__}, CPU"
    if backend == "jax":
        import jax

        return f"jax {jax.__version__}, {jax.devices()[0].device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"tensorflow {tf.__version__}, {'GPU ' + gpus[0].name if gpus else 'CPU'}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300, help="training steps per case")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--reload-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reload_only:
        print(json.dumps(reload_on_cpu(args.cases, args.out)))
        return 0

    import keras

    print(f"keras {keras.__version__} on {device_description()}", flush=True)
    results, errors = [], []
    for name in args.cases:
        try:
            results.append(run_case(name, args.steps, args.out))
            print(json.dumps(results[-1]), flush=True)
        except Exception as error:  # noqa: BLE001  (a backend's gap is a finding, not a crash)
            keras.mixed_precision.set_global_policy("float32")
            errors.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0]}")
            print(errors[-1], flush=True)
    cpu_only = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    reload = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--out", str(args.out), "--reload-only"]
        + ["--cases", *[r["case"] for r in results]],
        env=cpu_only,
        capture_output=True,
        text=True,
    )
    if reload.returncode:
        print(reload.stderr[-3000:])
        return 1
    gaps = json.loads(reload.stdout.strip().splitlines()[-1])
    failures = list(errors)
    for result in results:
        result["cpu_reload_diff"] = gaps[result["case"]]
        failures += failed_checks(result)
    report = {
        "device": device_description(),
        "keras": keras.__version__,
        "results": results,
        "failures": failures,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"{'case':<18}{'acc':>6}{'ms/step':>9}{'pad':>10}{'step':>10}{'cpu':>10}")
    for r in results:
        cells = [r.get(k) for k in ("padding_diff", "step_diff", "cpu_reload_diff")]
        shown = "".join(f"{v:>10.1e}" if v is not None else f"{'-':>10}" for v in cells)
        print(f"{r['case']:<18}{r['accuracy']:>6.3f}{r['step_ms']:>9.1f}{shown}")
    print("\n".join(failures) or "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
