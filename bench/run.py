"""Runs the benchmark suite: every section in a fresh process, one results file.

    python -m bench.run --profile quick|full
                        [--only backbone,features,inference,reference,quality]
                        [--no-readme] [--resume bench/results/<timestamp>.json]

Writes `bench/results/<timestamp>.json` (machine, load, every repeat), `.md` (the tables)
and `.log` (the sections' stderr), and regenerates README's benchmark section. Exits 1 if
a section failed (the others still run and are reported).

The JSON is rewritten after every child process, so a stopped run (`make bench` takes
about three hours on 2 cores) keeps what it measured; `--resume FILE` runs only what FILE
lacks or failed, on the same machine and profile, and completes FILE.
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
# Sections whose runs share a scratch build (inference serves the exports `build` made in
# a temporary folder): resuming runs them whole unless every run of theirs succeeded.
SHARED_BUILD = ("inference",)


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


def resumable(results: dict, planned: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (section, run) pairs of `planned` that a resumed run keeps from `results`: every
    successful run, except in a `SHARED_BUILD` section not all of whose runs succeeded."""
    ok = {
        (section, run["name"])
        for section, entry in results.get("sections", {}).items()
        for run in entry.get("runs", [])
        if run["status"] == "ok"
    }
    keep = set()
    for section, name in planned:
        whole = [pair for pair in planned if pair[0] == section]
        if (section, name) in ok and (section not in SHARED_BUILD or set(whole) <= ok):
            keep.add((section, name))
    return keep


def forget_runs(results: dict, keep: set[tuple[str, str]], planned: set[str]) -> None:
    """Drops from `results` what a resumed run measures again: a `planned` section that keeps
    none of its runs goes whole; otherwise only the records of the runs not kept (a failed
    run added no rows). Sections it does not run (`--only`) stay as they are."""
    for section in list(results.get("sections", {})):
        if section not in planned:
            continue
        entry = results["sections"][section]
        kept = [run for run in entry.get("runs", []) if (section, run["name"]) in keep]
        if kept:
            entry["runs"] = kept
        elif "runs" in entry:
            notes = entry.get("notes")
            results["sections"][section] = {"notes": notes} if notes else {}


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
    parser.add_argument("--resume", type=Path, help="a results file to complete")
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
    if args.resume:
        out_path = args.resume
    log_path = out_path.with_suffix(".log")
    fresh = {
        "schema": 1,
        "profile": profile.name,
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git": machine.git_commit(),
        "started": started.isoformat(timespec="seconds"),
        "repeats": profile.repeats,
        "seed": profile.seed,
        "machine": machine.machine_info(),
        "load_start": machine.load_average(),
        "sections": {},
    }
    results, keep = fresh, set()
    clock = time.perf_counter()
    if args.resume:
        try:
            results = json.loads(args.resume.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"{args.resume}: cannot read it ({error})")
        if results.get("profile") != profile.name:
            parser.error(f"{args.resume} is a {results.get('profile')!r} run, not {profile.name!r}")
        if machine.describe(results["machine"]) != machine.describe(fresh["machine"]):
            parser.error(f"{args.resume} was measured on another machine; numbers would mix")
        planned = [(section, name) for section, name, _, _ in plan(profile, sections, Path())]
        keep = resumable(results, planned)
        forget_runs(results, keep, {section for section, _ in planned})
        clock -= results.get("seconds", 0.0)  # the time the file's earlier runs took
        results.setdefault("resumed", []).append(
            {key: fresh[key] for key in ("command", "git", "started", "load_start")}
        )
    counters = machine.cpu_counters()
    print(f"rnnsuite bench ({profile.name}): {machine.describe(results['machine'])}")
    print(f"load average {fresh['load_start']}; results -> {out_path}", flush=True)
    if "backbone" in sections and importlib.util.find_spec("torch") is None:
        notes = results["sections"].setdefault("backbone", {}).setdefault("notes", [])
        note = "PyTorch not installed, its column is skipped: `pip install -e '.[bench]'`"
        if note not in notes:  # a resumed file may say it already
            notes.append(note)

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
        open(log_path, "a" if args.resume else "w") as log,
    ):
        work = Path(scratch)
        for section, name, module_args, extra_env in plan(profile, sections, work):
            if (section, name) in keep:
                print(f"[{section}] {name}: kept from {out_path.name}", flush=True)
                continue
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
            results["seconds"] = round(time.perf_counter() - clock, 1)
            out_path.write_text(json.dumps(results, indent=1))  # kept if the run stops here
            print(f"  ({seconds} s)", flush=True)

    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["seconds"] = round(time.perf_counter() - clock, 1)
    results["load_end"] = machine.load_average()
    results["cpu_share"] = machine.cpu_share(counters, machine.cpu_counters())
    out_path.write_text(json.dumps(results, indent=1))
    markdown = report.render(results, out_path)
    out_path.with_suffix(".md").write_text(markdown)
    if not args.no_readme and report.readme_worthy(results):
        report.update_readme(markdown)
    print()
    print(markdown)
    print(f"wrote {out_path} and {out_path.with_suffix('.md').name} in {results['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
