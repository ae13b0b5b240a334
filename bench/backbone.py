"""Training-step throughput of recurrent backbones: rnnsuite vs plain Keras vs PyTorch.

Every contender trains the same shape (`BackboneCase`) with Adam on a mean-squared error
against a zero target of the output's shape, so the step is forward + backward + update
of the recurrent layers and nothing else. Keras variants (one process, interleaved):

    rnnsuite          keras.Sequential([Input, shared.backbones.RecurrentBackbone(...)])
    rnnsuite_masked   the same behind a `Masking` layer (all steps valid), as the domains
                      call it: a mask sends Keras down its masked loop
    keras             keras.Sequential([Input, LSTM(return_sequences=True), ...]), the
                      usual way (Bidirectional(...) wrappers for bidirectional cases)
    *_xla             the same compiled with `jit_compile=True` (XLA)

Keras variants use `model.compile(...)` defaults otherwise; on a CPU-only machine
`jit_compile="auto"` resolves to False, which is what `shared.training` gets. PyTorch
runs `nn.RNN/LSTM/GRU(batch_first=True)` in its own process (two runtimes' thread pools
in one process disturb each other). `--threads 1` pins both to one thread (TF intra- and
inter-op pools, `torch.set_num_threads`); 0 leaves every usable core to them.

FLOPs per step count the matrix products only: forward = Σ over layers and directions of
2·T·B·(in + units)·gates·units (gates: rnn 1, gru 3, lstm 4), backward ≈ 2× forward.

    python -m bench.backbone --framework tf|torch --profile quick --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import asdict

import numpy as np

from bench import machine
from bench.profiles import PROFILES, BackboneCase
from bench.timing import Timer, interleave

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def forward_flops(case: BackboneCase) -> float:
    """Multiply-adds ×2 of the recurrent layers' matrix products in one forward pass."""
    directions = 2 if case.bidirectional else 1
    total, width = 0.0, case.input_width
    for _ in range(case.layers):
        per_direction = 2 * case.time * case.batch * (width + case.units) * GATES[case.cell]
        total += directions * per_direction * case.units
        width = case.units * directions
    return total


def train_step_flops(case: BackboneCase) -> float:
    """Forward + backward (≈ 2× forward: gradients for inputs and for weights)."""
    return 3 * forward_flops(case)


def _data(case: BackboneCase, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.time, case.input_width)).astype(np.float32)
    width = case.units * (2 if case.bidirectional else 1)
    y = np.zeros((case.batch, case.time, width), np.float32)
    return x, y


# -- Keras ------------------------------------------------------------------------------
def keras_model(case: BackboneCase, variant: str, seed: int):
    import keras

    from shared.backbones import RecurrentBackbone

    plain = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}

    keras.utils.set_random_seed(seed)
    stack = [keras.Input((case.time, case.input_width), batch_size=case.batch)]
    if variant.startswith("rnnsuite"):
        if variant == "rnnsuite_masked":
            stack.append(keras.layers.Masking(0.0))
        stack.append(
            RecurrentBackbone(case.cell, case.units, case.layers, bidirectional=case.bidirectional)
        )
    else:
        for _ in range(case.layers):
            layer = plain[case.cell](case.units, return_sequences=True)  # Keras' own
            stack.append(keras.layers.Bidirectional(layer) if case.bidirectional else layer)
    model = keras.Sequential(stack)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="mse",
        jit_compile=variant.endswith("_xla"),
    )
    return model


def run_keras(profile, threads, log) -> list[dict]:
    import keras

    rows = []
    for case in profile.backbone:
        x, y = _data(case, profile.seed)
        timers, failed = [], []
        for variant in profile.keras_variants:
            try:
                model = keras_model(case, variant, profile.seed)
                timer = Timer(variant, lambda m=model, x=x, y=y: m.train_on_batch(x, y))
                timer.warm_up(profile.warmup, profile.min_time)
                timers.append(timer)
            except Exception as error:  # a variant that cannot run is reported, not fatal
                failed.append(_failure(case, variant, "tensorflow", error, threads))
        interleave(timers, profile.repeats)
        rows += [_row(case, t.name, "tensorflow", t, threads) for t in timers] + failed
        log(case, rows[-len(timers) - len(failed) :])
        del timers
        keras.backend.clear_session(free_memory=True)
    return rows


# -- PyTorch ----------------------------------------------------------------------------
def torch_model(case: BackboneCase, seed: int):
    import torch

    torch.manual_seed(seed)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[case.cell]
    return module(
        case.input_width,
        case.units,
        num_layers=case.layers,
        bidirectional=case.bidirectional,
        batch_first=True,
    )


def run_torch(profile, threads, log) -> list[dict]:
    import torch

    torch.set_num_threads(threads or machine.usable_cores())
    rows = []
    for case in profile.backbone:
        x, y = (torch.from_numpy(a) for a in _data(case, profile.seed))
        try:
            model = torch_model(case, profile.seed)
            optimizer = torch.optim.Adam(model.parameters(), 1e-3)

            def step(model=model, optimizer=optimizer, x=x, y=y):
                optimizer.zero_grad(set_to_none=True)
                output, _ = model(x)
                torch.nn.functional.mse_loss(output, y).backward()
                optimizer.step()

            timer = Timer("torch", step)
            timer.warm_up(profile.warmup, profile.min_time)
            interleave([timer], profile.repeats)
            rows.append(_row(case, "torch", "torch", timer, threads))
        except Exception as error:
            rows.append(_failure(case, "torch", "torch", error, threads))
        log(case, rows[-1:])
    return rows


# -- the practical ceiling ----------------------------------------------------------------
GEMM = (2048, 512, 2048)  # [m, k] · [k, n]: large enough to run near the hardware's peak


def gemm_ceiling(framework: str, profile, threads: int) -> dict:
    """GFLOP/s of one large FP32 matrix product: what this CPU gives a framework at best."""
    m, k, n = GEMM
    rng = np.random.default_rng(profile.seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    if framework == "tensorflow":
        import tensorflow as tf

        a, b = tf.constant(a), tf.constant(b)
        product = tf.function(tf.matmul)
        step = lambda: product(a, b).numpy()  # noqa: E731
    else:
        import torch

        a, b = torch.from_numpy(a), torch.from_numpy(b)
        step = lambda: torch.mm(a, b)  # noqa: E731
    timer = Timer("gemm", step)
    timer.warm_up(profile.warmup, profile.min_time)
    interleave([timer], profile.repeats)
    summary = timer.summary()
    flops = 2 * m * k * n
    return {
        "framework": framework,
        "threads": threads,
        "shape": list(GEMM),
        "gflops_wall": flops / summary["median_s"] / 1e9,
        "gflops_cpu": flops / summary["cpu_median_s"] / 1e9,
        "timing": summary,
    }


# -- rows -------------------------------------------------------------------------------
def _row(case, variant, framework, timer, threads) -> dict:
    summary = timer.summary()
    flops = train_step_flops(case)
    gflops = flops / summary["median_s"] / 1e9
    peak = machine.cpu_peak()
    cores = machine.usable_cores()
    # The peak of the cores this contender was allowed to use.
    peak = peak["gflops"] * min(threads or cores, cores) / cores if peak["gflops"] else None
    return {
        "case": asdict(case),
        "label": case.label,
        "variant": variant,
        "framework": framework,
        "threads": threads,
        "gflop_per_step": round(flops / 1e9, 4),
        "samples_per_s": case.batch / summary["median_s"],
        "gflops": gflops,
        "peak_share": gflops / peak if peak else None,
        "timing": summary,
    }


def _failure(case, variant, framework, error, threads=None) -> dict:
    return {
        "case": asdict(case),
        "label": case.label,
        "variant": variant,
        "framework": framework,
        "threads": threads,
        "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
        "traceback": traceback.format_exc()[-2000:],
    }


def _print_rows(case, rows):
    for row in rows:
        if "error" in row:
            print(f"  {case.cell:4} {case.label:20} {row['variant']:16} failed: {row['error']}")
            continue
        timing = row["timing"]
        print(
            f"  {case.cell:4} {case.label:20} {row['variant']:16} t{row['threads'] or 'all'}  "
            f"{timing['cpu_median_s'] * 1e3:8.1f} ms CPU  {timing['median_s'] * 1e3:8.1f} ms wall"
            f"  ({case.batch / timing['median_s']:7.0f} samples/s by the wall clock)",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["tf", "torch"], required=True)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--threads", type=int, default=0, help="0: every usable core")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    before = machine.load_average()
    if args.framework == "tf":
        import tensorflow as tf

        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        from tensorflow.python.util import _pywrap_util_port

        rows = run_keras(profile, args.threads, _print_rows)
        ceiling = gemm_ceiling("tensorflow", profile, args.threads)
        threads = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default",
            # oneDNN kernels: on by default only on some Intel CPUs (TF_ENABLE_ONEDNN_OPTS).
            "onednn": bool(_pywrap_util_port.IsMklEnabled()),
        }
    else:
        import torch

        rows = run_torch(profile, args.threads, _print_rows)
        ceiling = gemm_ceiling("torch", profile, args.threads)
        threads = {
            "torch": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": torch.backends.mkldnn.is_available(),
        }
    print(
        f"  one {'×'.join(map(str, GEMM))} matmul: {ceiling['gflops_cpu']:.1f} GFLOP/s per "
        f"CPU-second, {ceiling['gflops_wall']:.1f} per wall-clock second",
        flush=True,
    )
    result = {
        "rows": rows,
        "gemm": ceiling,
        "threads": threads,
        "load_start": before,
        "load_end": machine.load_average(),
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
