"""Runs the benchmark suite: every section in a fresh process, one results file.

    python -m bench.run --profile quick|full
                        [--only backbone,features,inference,reference,quality]
                        [--no-readme]

Writes `bench/results/<timestamp>.json` (machine, load, every repeat), `.md` (the tables)
and `.log` (the sections' stderr), and regenerates README's benchmark section. Exits 1 if
a section failed (the others still run and are reported).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import machine, report
from bench.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("backbone", "features", "inference", "reference", "quality")


def plan(profile, sections, work: Path) -> list[tuple[str, str, list[str], dict]]:
    """(section, run name, module arguments, extra environment) for every child process."""
    runs = []
    if "backbone" in sections:
        for threads in profile.backbone_threads:
            runs.append(
                (
                    "backbone",
                    f"keras-t{threads}",
                    ["bench.backbone", "--framework", "tf", "--threads", str(threads)],
                    {},
                )
            )
        if importlib.util.find_spec("torch") is not None:
            for threads in profile.backbone_threads:
                runs.append(
                    (
                        "backbone",
                        f"torch-t{threads}",
                        ["bench.backbone", "--framework", "torch", "--threads", str(threads)],
                        {},
                    )
                )
    if "features" in sections:
        for threads in profile.feature_threads:
            # numpy's BLAS (librosa's mel projection) reads these when it loads.
            env = (
                {
                    k: str(threads)
                    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                }
                if threads
                else {}
            )
            runs.append(
                (
                    "features",
                    f"features-t{threads}",
                    ["bench.features", "--threads", str(threads)],
                    env,
                )
            )
    if "inference" in sections:
        build = work / "build.json"
        runs.append(
            (
                "inference",
                "build",
                ["bench.inference", "build", "--work", str(work / "inference")],
                {},
            )
        )
        for threads in profile.serve_threads:
            runs.append(
                (
                    "inference",
                    f"serve-t{threads}",
                    ["bench.inference", "serve", "--build", str(build), "--threads", str(threads)],
                    {},
                )
            )
    if "reference" in sections:
        runs.append(("reference", "reference-t1", ["bench.reference", "--threads", "1"], {}))
    if "quality" in sections and profile.quality_preset:
        for domain in profile.quality_domains:  # a process each: one failing spares the rest
            runs.append(
                ("quality", f"quality-{domain}", ["bench.quality", "--domains", domain], {})
            )
    return runs


def _git() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "") if commit else "?"
    except OSError:
        return "?"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.results_dir / f"{stamp}.json"
    log_path = out_path.with_suffix(".log")
    results = {
        "schema": 1,
        "profile": profile.name,
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git": _git(),
        "started": started.isoformat(timespec="seconds"),
        "repeats": profile.repeats,
        "seed": profile.seed,
        "machine": machine.machine_info(),
        "load_start": machine.load_average(),
        "sections": {},
    }
    counters = machine.cpu_counters()
    print(f"rnnsuite bench ({profile.name}): {machine.describe(results['machine'])}")
    print(f"load average {results['load_start']}; results -> {out_path}", flush=True)
    if "backbone" in sections and importlib.util.find_spec("torch") is None:
        results.setdefault("sections", {}).setdefault("backbone", {}).setdefault(
            "notes", []
        ).append("PyTorch not installed, its column is skipped: `pip install -e '.[bench]'`")

    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PYTHONHASHSEED=str(profile.seed),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="-1",  # a CPU benchmark, also on machines with a GPU
    )
    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="rnnsuite-bench-") as scratch,
        open(log_path, "w") as log,
    ):
        work = Path(scratch)
        for section, name, module_args, extra_env in plan(profile, sections, work):
            out = work / f"{name}.json"
            if name == "build":
                out = work / "build.json"
            command = [
                sys.executable,
                "-m",
                *module_args,
                "--profile",
                profile.name,
                "--out",
                str(out),
            ]
            print(f"[{section}] {name}", flush=True)
            log.write(f"\n===== {section} {name}: {' '.join(command)}\n")
            log.flush()
            start = time.perf_counter()
            code = subprocess.run(
                command, cwd=ROOT, env={**env, **extra_env}, stdout=None, stderr=log
            ).returncode
            seconds = round(time.perf_counter() - start, 1)
            entry = results["sections"].setdefault(section, {})
            run = {"name": name, "seconds": seconds, "status": "ok" if code == 0 else "failed"}
            if code == 0 and out.is_file():
                child = json.loads(out.read_text())
                run.update(load_start=child.pop("load_start"), load_end=child.pop("load_end"))
                if name == "build":
                    entry["build"] = child
                    failed |= any("error" in task for task in child.values())
                else:
                    entry.setdefault("rows", []).extend(child.pop("rows"))
                    if "gemm" in child:
                        entry.setdefault("gemm", []).append(child.pop("gemm"))
                    run.update(child)
            else:
                failed = True
                run["error"] = f"exit status {code}; see {log_path.name}"
                log.flush()
                print(f"  {name} failed (exit {code}):\n{_tail(log_path)}", flush=True)
            entry.setdefault("runs", []).append(run)
            print(f"  ({seconds} s)", flush=True)

    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
    results["load_end"] = machine.load_average()
    results["cpu_share"] = machine.cpu_share(counters, machine.cpu_counters())
    out_path.write_text(json.dumps(results, indent=1))
    markdown = report.render(results, out_path)
    out_path.with_suffix(".md").write_text(markdown)
    if not args.no_readme:
        report.update_readme(markdown)
    print()
    print(markdown)
    print(f"wrote {out_path} and {out_path.with_suffix('.md').name} in {results['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
