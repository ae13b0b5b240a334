"""Markdown tables from a results file, and README's benchmark section.

    python -m bench.report [RESULTS.json] [--no-readme]

Without a file it takes the newest `bench/results/*.json`. It prints the Markdown, writes
it beside the results file (`.md`) and replaces README's section between
`<!-- bench:start -->` and `<!-- bench:end -->` (inserting the section before
"## Development" when the markers are missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
COMMANDS = {"quick": "make bench-quick", "full": "make bench"}

VARIANTS = [
    ("rnnsuite", "rnnsuite"),
    ("rnnsuite_masked", "rnnsuite, masked"),
    ("keras", "Keras"),
    ("torch", "PyTorch"),
    ("rnnsuite_xla", "rnnsuite XLA"),
    ("keras_xla", "Keras XLA"),
]

NOT_MEASURED = [
    (
        "Quality of each `small` preset under its time budget: WER/CER, top-1, "
        "BLEU-4/CIDEr, BLEU/chrF with apertium and WER/CER with PocketSphinx beside them",
        "`make bench` (the `full` profile; about two hours on 2 cores)",
    ),
]


def _threads(value) -> str:
    return "all cores" if not value else f"{value} thread{'s' if value > 1 else ''}"


def on_cpu_clock(row) -> bool:
    """One-thread contenders are judged by their CPU time: on a shared machine the wall
    clock also counts the time other jobs held the core."""
    return row.get("threads") == 1


def seconds(row) -> float:
    timing = row["timing"]
    return timing["cpu_median_s"] if on_cpu_clock(row) else timing["median_s"]


def _spread(row) -> float:
    timing = row["timing"]
    prefix = "cpu_" if on_cpu_clock(row) else ""
    return (timing[f"{prefix}p75_s"] - timing[f"{prefix}p25_s"]) / timing[f"{prefix}median_s"]


def _clock(row) -> str:
    return "CPU" if on_cpu_clock(row) else "wall"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _samples_per_s(row) -> float:
    return row["case"]["batch"] / seconds(row)


def _ratio(a, b) -> str:
    if a is None or b is None or "error" in a or "error" in b:
        return "–"
    return f"{_samples_per_s(a) / _samples_per_s(b):.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _failed_runs(section: dict) -> list[str]:
    return [
        f"- **{run['name']} failed** ({run.get('error', 'see the log')})"
        for run in section.get("runs", [])
        if run.get("status") == "failed"
    ]


def _core_share(rows) -> str:
    shares = sorted(r["timing"]["cpu_util"] for r in rows if "timing" in r)
    if not shares:
        return ""
    return f"{shares[0]:.2f}–{shares[-1]:.2f}" if shares[0] != shares[-1] else f"{shares[0]:.2f}"


def backbone_tables(section: dict, info: dict) -> list[str]:
    rows = section.get("rows", [])
    peak, cores = info["peak"].get("gflops"), info["cores_usable"]
    lines = []
    present = [(key, name) for key, name in VARIANTS if any(r["variant"] == key for r in rows)]
    for threads in sorted({r["threads"] for r in rows}, key=lambda t: (t == 0, t)):
        chosen = [r for r in rows if r["threads"] == threads]
        thread_peak = peak * min(threads or cores, cores) / cores if peak else None
        cases = []
        for row in chosen:
            key = (row["case"]["cell"], row["label"])
            if key not in cases:
                cases.append(key)
        body = []
        for cell, label in cases:
            by_variant = {
                r["variant"]: r for r in chosen if (r["case"]["cell"], r["label"]) == (cell, label)
            }
            flop = next(iter(by_variant.values())).get("gflop_per_step")
            cells = []
            for key, _ in present:
                row = by_variant.get(key)
                if row is None:
                    cells.append("–")
                elif "error" in row:
                    cells.append("failed")
                else:
                    share = flop / seconds(row) / thread_peak if thread_peak and flop else None
                    cells.append(
                        _number(_samples_per_s(row)) + (f" ({share:.0%})" if share else "")
                    )
            ours = by_variant.get("rnnsuite")
            spreads = [_spread(r) for r in by_variant.values() if "error" not in r]
            body.append(
                [
                    cell.upper() if cell != "rnn" else "SimpleRNN",
                    label,
                    f"{flop:.2f}" if flop is not None else "–",
                    *cells,
                    _ratio(ours, by_variant.get("keras")),
                    _ratio(ours, by_variant.get("torch")),
                    _ratio(by_variant.get("rnnsuite_xla"), ours),
                    f"{max(spreads):.0%}" if spreads else "–",
                ]
            )
        clock = (
            "samples per CPU-second (the one thread's CPU time; wall-clock numbers are in the "
            f"JSON: these processes got {_core_share(chosen)} of a core)"
            if threads == 1
            else "samples per wall-clock second"
        )
        lines += [
            "",
            f"**{_threads(threads)}** — {clock}; in brackets the share of the FP32 peak of "
            f"{_threads(threads) if threads else 'all cores'}:",
            "",
            *_table(
                [
                    "cell",
                    "shape",
                    "GFLOP/step",
                    *[name for _, name in present],
                    "rnnsuite ÷ Keras",
                    "rnnsuite ÷ PyTorch",
                    "XLA ÷ rnnsuite",
                    "max spread",
                ],
                body,
            ),
        ]
    for gemm in section.get("gemm", []):
        threads = gemm["threads"]
        thread_peak = peak * min(threads or cores, cores) / cores if peak else None
        rate = gemm["gflops_cpu"] if threads == 1 else gemm["gflops_wall"]
        name = "TensorFlow" if gemm["framework"] == "tensorflow" else "PyTorch"
        lines.append(
            f"- ceiling, {_threads(threads)}: one {'×'.join(map(str, gemm['shape'][:2]))} · "
            f"{'×'.join(map(str, gemm['shape'][1:]))} matrix product in {name} runs at "
            f"{rate:.1f} GFLOP/s"
            + (f" ({rate / thread_peak:.0%} of the peak above)" if thread_peak else "")
        )
    lines += [f"- {note}" for note in section.get("notes", [])]
    lines += _failed_runs(section)
    return lines


def feature_table(section: dict) -> list[str]:
    rows = section.get("rows", [])
    body = [
        [
            row["implementation"],
            _threads(row["threads"]),
            row["mode"] + (f" (batch {row['batch']})" if row["mode"] == "batched" else ""),
            _number(row["utterances"] / seconds(row)),
            _number(row["utterances"] * row["utterance_seconds"] / seconds(row)) + "×",
            _clock(row),
            f"{_spread(row):.0%}",
        ]
        for row in rows
    ]
    lines = []
    if body:
        seconds_each = rows[0]["utterance_seconds"]
        lines += [
            "",
            f"MFCC (13 + Δ + ΔΔ, 40 mels, 25 ms / 10 ms) of {seconds_each:g} s utterances:",
            "",
            *_table(
                [
                    "implementation",
                    "threads",
                    "mode",
                    "utterances/s",
                    "× real time",
                    "clock",
                    "spread",
                ],
                body,
            ),
        ]
    return lines + _failed_runs(section)


def inference_table(section: dict) -> list[str]:
    rows = section.get("rows", [])
    body = []
    for row in rows:
        rate = row["items"] / seconds(row)
        if row["task"] == "speech":
            throughput = f"{_number(rate)} utterances/s"
            rtf = f"{seconds(row) / row['audio_seconds']:.4f}"
        elif row["task"] in ("action", "caption"):
            throughput = f"{_number(rate)} clips/s"
            rtf = "–"
        else:
            throughput = f"{_number(rate)} sentences/s"
            rtf = "–"
        body.append(
            [
                row["task"],
                row["decoder"],
                _threads(row["threads"]),
                row["batch"],
                throughput,
                rtf,
                _clock(row),
                f"{_spread(row):.0%}",
            ]
        )
    lines = []
    if body:
        lines += [
            "",
            *_table(
                ["export", "decoder", "threads", "batch", "throughput", "RTF", "clock", "spread"],
                body,
            ),
            "",
        ]
    build = section.get("build", {})
    translation, speech = build.get("translation", {}), build.get("speech", {})
    quality = next((r for r in rows if r["task"] == "translation"), None)
    if "exports" in translation:
        lines.append(
            f"- translation: the `{translation['preset']}` preset with word tokens, trained "
            f"{translation['train_s']:g} s on a toy language (reverse 2–6 of 8 words)"
            + (
                f"; the export reverses {quality['exact_match']:.0%} of the test sentences "
                f"(mean {quality['mean_output_words']:.1f} output words)"
                + (
                    ", so decoding stops at EOS as a trained model does"
                    if quality["exact_match"] >= 0.9
                    else ": undertrained, so decoding may run to its length limit"
                )
                if quality
                else ""
            )
            + "; the toy vocabulary is tiny, so the output softmax costs far less than with "
            "the real 8k-token vocabulary"
        )
    if "exports" in speech:
        lines.append(
            f"- speech: the `{speech['preset']}` preset's architecture trained "
            f"{speech['train_s']:g} s ({_override(speech, 'train.steps_per_epoch')} step(s)) on "
            "synthetic tones: a useless recogniser, but speed hardly depends on the weights "
            "(CTC greedy decoding does the same work for any output; beam search's work "
            "varies a little with how peaked the outputs are); `lm` adds the word language "
            "model's beam search, in the graph, with the LM the embedded corpus's model gets "
            "(its text sources and generated transcripts); RTF = processing seconds per second of "
            "audio"
        )
    videos = [build.get(task, {}) for task in ("action", "caption")]
    if any("exports" in entry for entry in videos):
        words = next((r["mean_output_words"] for r in rows if r["task"] == "caption"), None)
        lines.append(
            "- action, caption: the `small` presets (frame CNN at 96 px over 16 sampled frames, "
            "GRU classifier; BiLSTM encoder + attentive LSTM decoder) trained one epoch on toy "
            "videos with an untrained CNN: speed does not depend on the weights except the "
            "caption length"
            + (f" (mean {words:.1f} words here)" if words is not None else "")
            + "; each clip is 32 frames of 112×112 uint8 (frame sampling, resizing and the CNN "
            "included, video file decoding not)"
        )
    for name, entry in build.items():
        if "error" in entry:
            lines.append(f"- **{name}: build failed** ({entry['error']})")
    return lines + _failed_runs(section)


def _override(entry, key):
    for item in entry.get("overrides", []):
        if item.startswith(key + "="):
            return item.split("=", 1)[1]
    return "?"


def reference_table(section: dict) -> list[str]:
    """Clips/s per stage, each published example beside rnnsuite (`bench.reference`)."""
    rows = section.get("rows", [])
    by_stage = {}
    for row in rows:
        by_stage.setdefault((row["domain"], row["stage"]), {})[row["implementation"]] = row
    body = []
    for (domain, stage), contenders in by_stage.items():
        ours = contenders.get("rnnsuite")
        for name, row in contenders.items():
            rate = row["items"] / seconds(row)
            ratio = (
                "–"
                if name == "rnnsuite" or ours is None
                else f"{(ours['items'] / seconds(ours)) / rate:.1f}×"
            )
            body.append(
                [
                    domain,
                    stage,
                    name,
                    row["setup"],
                    _threads(row["threads"]),
                    f"{_number(rate)} {row['unit']}/s",
                    ratio,
                    _clock(row),
                    f"{_spread(row):.0%}",
                ]
            )
    lines = []
    if body:
        lines += [
            "",
            "Each side runs on the same inputs: decoded video clips (32 frames of 112×112) or "
            "16 kHz waveforms. Video `features` turns clips into per-frame CNN features and "
            "video `train step` is one optimizer step of the sequence model on cached "
            "features (batch 32); the speech `train step` starts from waveforms (the "
            "example's STFT input pipeline included). `rnnsuite ÷ it`: how many times "
            "faster rnnsuite is. The setups differ as the projects do (`setup` column): "
            "what each example publishes against the `small` preset.",
            "",
            *_table(
                [
                    "domain",
                    "stage",
                    "implementation",
                    "setup",
                    "threads",
                    "throughput",
                    "rnnsuite ÷ it",
                    "clock",
                    "spread",
                ],
                body,
            ),
        ]
    return lines + _failed_runs(section)


# How each quality metric reads in the table: label, scale, decimals.
QUALITY_FORMAT = {
    "wer": ("WER", 100, 1, "%"),
    "cer": ("CER", 100, 1, "%"),
    "wer_greedy": ("WER without the LM", 100, 1, "%"),
    "cer_greedy": ("CER without the LM", 100, 1, "%"),
    "wer_telephone": ("telephone WER", 100, 1, "%"),
    "cer_telephone": ("telephone CER", 100, 1, "%"),
    "pocketsphinx_wer": ("PocketSphinx WER", 100, 1, "%"),
    "pocketsphinx_cer": ("PocketSphinx CER", 100, 1, "%"),
    "top1": ("top-1", 100, 1, "%"),
    "top5": ("top-5", 100, 1, "%"),
    "mean_class_accuracy": ("mean class accuracy", 100, 1, "%"),
    "bleu4": ("BLEU-4", 1, 1, ""),
    "cider": ("CIDEr-D", 1, 2, ""),
    "right_action": ("right action", 100, 1, "%"),
    "bleu": ("BLEU", 1, 1, ""),
    "chrf": ("chrF", 1, 1, ""),
    "apertium_bleu": ("apertium BLEU", 1, 1, ""),
    "apertium_chrf": ("apertium chrF", 1, 1, ""),
}


def _minutes(value) -> str:
    return "?" if value is None else f"{value / 60:.1f} min"


def quality_table(section: dict, header_machine: str | None = None) -> list[str]:
    """Each domain's preset under its time budget: test metrics and times (`bench.quality`);
    rows measured on another machine than `header_machine` name theirs below the table."""
    body = []
    for row in section.get("rows", []):
        scores = []
        for key, value in row["metrics"].items():
            label, scale, decimals, unit = QUALITY_FORMAT.get(key, (key, 1, 3, ""))
            scores.append(f"{label} {value * scale:.{decimals}f}{unit}")
        budget = row.get("budget_minutes")
        body.append(
            [
                row["domain"],
                row["preset"],
                f"{budget:g} min" if budget else "none",
                str(row.get("epochs", "?")),
                _minutes(row.get("fit_seconds")),
                _minutes(row["train_seconds"] + row["evaluate_seconds"]),
                row.get("frame_cnn") or "–",
                row.get("git", "–"),
                "; ".join(scores),
            ]
        )
    lines = []
    if body:
        lines += [
            "",
            "`rnnsuite TASK train --preset P` then `evaluate`, on every core, on the embedded "
            "corpus's test split (unseen voices, camera views, verses). `fit`: the training "
            "epochs alone; `train + evaluate`: wall time of both commands, frame CNN "
            "training and feature caching included; the corpus was generated beforehand by "
            "`prepare`. `frame CNN`: trained in the run, or reused from an earlier run on "
            "the same clips (caption: the action CNN + the appearance CNN). `commit`: the "
            "code the row ran (a resumed file mixes commits; `–`: not recorded, see the "
            "header).",
            "",
            *_table(
                [
                    "domain",
                    "preset",
                    "budget",
                    "epochs",
                    "fit",
                    "train + evaluate",
                    "frame CNN",
                    "commit",
                    "test metrics",
                ],
                body,
            ),
        ]
    elsewhere = [
        f"- {row['domain']} ({row.get('git', '–')}): {row['machine']}"
        for row in section.get("rows", [])
        if row.get("machine") and row["machine"] != header_machine
    ]
    if elsewhere:
        lines += ["", "Rows measured on another machine than the header's:", "", *elsewhere]
    return lines + _failed_runs(section)


def render(results: dict, results_path: Path | None = None) -> str:
    info = results["machine"]
    sections = results.get("sections", {})
    source = f"`bench/results/{results_path.name}`" if results_path else "a results file"
    share = results.get("cpu_share", {})
    lines = [
        f"Generated by `python -m bench.report` from {source} "
        f"(`{COMMANDS.get(results['profile'], results.get('command', '?'))}`, "
        f"commit {results.get('git', '?')}), "
        f"{results['started'][:16].replace('T', ' ')} UTC"
        + "".join(
            f"; resumed {later['started'][:16].replace('T', ' ')} UTC at commit {later['git']}"
            for later in results.get("resumed", [])
        )
        + ".",
        "",
        f"- machine: {machine.describe(info)}; TensorFlow {info['versions'].get('tensorflow')}, "
        f"Keras {info['versions'].get('keras')}, PyTorch {info['versions'].get('torch') or 'absent'}, "
        f"librosa {info['versions'].get('librosa')}",
        f"- peak: {info['peak'].get('assumption')}",
        f"- load average (1/5/15 min) at start {'/'.join(map(str, results['load_start']))}, "
        f"at end {'/'.join(map(str, results['load_end']))}"
        + (
            f"; all CPUs {share['busy']:.0%} busy over the run (every process, this one "
            f"included), {share['steal']:.0%} stolen by the hypervisor"
            if share
            else ""
        ),
        f"- medians of {results['repeats']} timed repeats after warm-up; one-thread "
        "contenders by their CPU time (clock `CPU`), the others by the wall clock; spread = "
        "interquartile range ÷ median",
    ]
    if "backbone" in sections:
        lines += [
            "",
            "### Recurrent backbone: training step",
            "",
            "One step = forward, backward and Adam update of the recurrent layers on "
            "`[batch, time, units]` inputs (MSE to a zero target); GFLOP/step counts the "
            "matrix products (forward 2·T·B·(in+units)·gates·units, backward 2× forward).",
            *backbone_tables(sections["backbone"], info),
        ]
    if "features" in sections:
        lines += ["", "### Speech features", *feature_table(sections["features"])]
    if "inference" in sections:
        lines += [
            "",
            "### Inference of the exports (`serving_default`, raw input in, text out)",
            *inference_table(sections["inference"]),
        ]
    if "reference" in sections:
        lines += [
            "",
            "### End to end against the published Keras examples (`bench/reference.py`)",
            *reference_table(sections["reference"]),
        ]
    if "quality" in sections:
        lines += [
            "",
            "### Model quality under each preset's time budget (`bench/quality.py`)",
            *quality_table(sections["quality"], machine.describe(info)),
        ]
    else:
        lines += [
            "",
            "### Not measured in this run",
            "",
            *_table(["benchmark", "how"], NOT_MEASURED),
        ]
    return "\n".join(lines) + "\n"


def readme_worthy(results: dict) -> bool:
    """Whether a run's tables may replace README's: the quick and full profiles' only (the
    smoke profile's numbers mean nothing)."""
    return results.get("profile") in ("quick", "full")


def update_readme(markdown: str, readme: Path = README) -> None:
    text = readme.read_text()
    block = f"{START}\n{markdown}{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        section = (
            "## Benchmarks\n\n"
            "`make bench-quick` (a few minutes) and `make bench` (the fuller suite) time\n"
            "rnnsuite beside plain Keras, PyTorch and librosa in one run and regenerate the\n"
            "tables below from `bench/results/<timestamp>.json`; `bench/README.md` says what\n"
            "each number measures and how.\n\n" + block + "\n\n"
        )
        marker = "## Development"
        text = (
            text.replace(marker, section + marker, 1) if marker in text else text + "\n" + section
        )
    readme.write_text(text)


def latest_results(directory: Path = RESULTS_DIR) -> Path:
    candidates = sorted(directory.glob("*.json"))
    if not candidates:
        raise SystemExit(f"no results in {directory}: run `make bench-quick` first")
    return candidates[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="default: the newest results file")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = parser.parse_args(argv)
    path = args.results or latest_results()
    results = json.loads(path.read_text())
    markdown = render(results, path)
    path.with_suffix(".md").write_text(markdown)
    if not args.no_readme and readme_worthy(results):
        update_readme(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
