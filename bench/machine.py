"""What machine a benchmark ran on: CPU, SIMD, FP32 peak, library versions, load.

The FP32 peak is `cores × SIMD lanes × FMA units × 2 × clock`. Lanes come from the CPU
flags (AVX-512: 16, AVX/AVX2: 8, SSE: 4); the clock from lscpu's maximum, else the
model name's "@ x GHz", else /proc/cpuinfo's "cpu MHz"; FMA units cannot be read from
Linux, so two per core are assumed (Zen 2–4, most Xeon Scalable), overridable with
`BENCH_FMA_UNITS`. The assumption is recorded beside the number.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    fields = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def usable_cores() -> int:
    """CPUs this process may run on (affinity), which is what the thread pools use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_peak(cpuinfo=None, lscpu=None, cores=None) -> dict:
    """FP32 peak FLOP/s of this CPU and how it was worked out."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    lscpu = _lscpu() if lscpu is None else lscpu
    cores = usable_cores() if cores is None else cores
    flags = set(cpuinfo.get("flags", lscpu.get("Flags", "")).split())
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    else:
        lanes, isa = 4, "SSE"
    fma = "fma" in flags or "avx512f" in flags
    fma_units = int(os.environ.get("BENCH_FMA_UNITS", "2"))
    ghz, clock_source = None, None
    if lscpu.get("CPU max MHz"):
        ghz, clock_source = float(lscpu["CPU max MHz"]) / 1000, "lscpu CPU max MHz"
    else:
        match = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo.get("model name", ""))
        if match:
            ghz, clock_source = float(match.group(1)), "model name"
        elif cpuinfo.get("cpu MHz"):
            ghz, clock_source = float(cpuinfo["cpu MHz"]) / 1000, "/proc/cpuinfo cpu MHz"
    if ghz is None:
        return {"gflops": None, "assumption": "clock unknown: no peak computed"}
    # Without FMA a core still issues one multiply and one add per lane per unit per cycle.
    gflops = cores * lanes * fma_units * 2 * ghz
    assumption = (
        f"{cores} cores × {lanes} FP32 lanes ({isa}) × {fma_units} FMA units (assumed"
        f"{'' if fma else '; no FMA flag: mul+add pairs'}) × 2 FLOP × {ghz:.3f} GHz "
        f"({clock_source}; no turbo assumed)"
    )
    return {
        "gflops": round(gflops, 1),
        "cores": cores,
        "lanes": lanes,
        "isa": isa,
        "fma_units": fma_units,
        "ghz": ghz,
        "clock_source": clock_source,
        "assumption": assumption,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str:
    """The checkout's short commit, `+dirty` when tracked files changed; `?` without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "") if commit else "?"
    except OSError:
        return "?"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_counters() -> dict[str, int]:
    """System-wide jiffies from /proc/stat (for the steal and busy share over a span)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return {}
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return dict(zip(names, values, strict=False))


def cpu_share(before: dict, after: dict) -> dict:
    """Busy and steal shares of all CPUs between two `cpu_counters` snapshots."""
    if not before or not after:
        return {}
    delta = {k: after[k] - before[k] for k in before if k in after}
    total = sum(delta.values()) or 1
    idle = delta.get("idle", 0) + delta.get("iowait", 0)
    return {
        "busy": round(1 - idle / total, 3),
        "steal": round(delta.get("steal", 0) / total, 3),
    }


def machine_info() -> dict:
    cpuinfo, lscpu = _cpuinfo(), _lscpu()
    flags = set(cpuinfo.get("flags", lscpu.get("Flags", "")).split())
    return {
        "cpu_model": cpuinfo.get("model name") or lscpu.get("Model name") or platform.processor(),
        "cpu_family_model": f"{cpuinfo.get('cpu family', '?')}/{cpuinfo.get('model', '?')}",
        "cores_usable": usable_cores(),
        "cpus_online": os.cpu_count(),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
        "memory_gib": _memory_gib(),
        "peak": cpu_peak(cpuinfo, lscpu),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("tensorflow", "keras", "torch", "librosa", "numpy", "rnn-suite")
        },
        "env": {
            key: os.environ[key]
            for key in (
                "TF_ENABLE_ONEDNN_OPTS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "BENCH_FMA_UNITS",
            )
            if key in os.environ
        },
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def describe(info: dict) -> str:
    """One line: CPU, cores, SIMD, peak."""
    peak = info["peak"]
    shown = f"{peak['gflops']:.0f} GFLOP/s FP32 peak" if peak.get("gflops") else "peak unknown"
    return (
        f"{info['cpu_model']} ({info['cores_usable']} cores"
        f"{', ' + info['hypervisor'] + ' VM' if info.get('hypervisor') else ''}; "
        f"{' '.join(info['simd'])}), {shown}"
    )


def section_main(
    description: str, run, argv=None, threads_help="0: every usable core", log=None, options=()
) -> int:
    """`python -m bench.X --profile P --threads N --out FILE` for a section's `run`.

    Pins TensorFlow's thread pools to `--threads` (0 leaves them alone), calls
    `run(profile, threads, log, **extra)` and writes its rows with the load average around
    them. `options`: `(flag, argparse keywords)` pairs whose values `run` receives as
    keywords (`extra`); `log`: the progress line of a row (default: its timing).
    """
    import argparse
    import json

    from bench.profiles import PROFILES

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--threads", type=int, default=0, help=threads_help)
    parser.add_argument("--out", required=True)
    extra = [parser.add_argument(flag, **keywords).dest for flag, keywords in options]
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    before = load_average()
    rows = run(
        PROFILES[args.profile],
        args.threads,
        log or _print_row,
        **{name: getattr(args, name) for name in extra},
    )
    result = {"rows": rows, "load_start": before, "load_end": load_average()}
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    return 0


def _print_row(row) -> None:
    """One progress line per timed contender."""
    timing = row["timing"]
    label = " ".join(str(row[key]) for key in ("implementation", "mode", "stage") if key in row)
    print(
        f"  {label:30} t{row['threads'] or 'all'}  {timing['cpu_median_s'] * 1e3:9.1f} ms CPU"
        f"  {timing['median_s'] * 1e3:9.1f} ms wall per step",
        flush=True,
    )
