"""The benchmark suite's own arithmetic and reporting (fast; no timing is run).

.venv/bin/python -m pytest bench/tests -q
"""

import json

import numpy as np
import pytest

from bench import machine, report
from bench.backbone import forward_flops, train_step_flops
from bench.profiles import PROFILES, BackboneCase
from bench.timing import Timer, interleave


def test_flops_count_every_gate_layer_and_direction():
    lstm = BackboneCase("lstm", units=128, time=50, batch=32)
    assert forward_flops(lstm) == 2 * 50 * 32 * (128 + 128) * 4 * 128
    assert train_step_flops(lstm) == 3 * forward_flops(lstm)
    gru = BackboneCase("gru", units=64, time=10, batch=8, features=40)
    assert forward_flops(gru) == 2 * 10 * 8 * (40 + 64) * 3 * 64
    stacked = BackboneCase("rnn", units=16, time=5, batch=2, layers=2, bidirectional=True)
    first = 2 * (2 * 5 * 2 * (16 + 16) * 1 * 16)
    second = 2 * (2 * 5 * 2 * (32 + 16) * 1 * 16)  # the second layer sees both directions
    assert forward_flops(stacked) == first + second


def test_peak_from_cpu_flags_and_clock(monkeypatch):
    monkeypatch.delenv("BENCH_FMA_UNITS", raising=False)
    avx2 = {"flags": "sse4_2 avx avx2 fma", "cpu MHz": "2445.404", "model name": "AMD EPYC"}
    peak = machine.cpu_peak(avx2, {}, cores=2)
    assert peak["gflops"] == pytest.approx(2 * 8 * 2 * 2 * 2.445404, abs=0.1)
    assert "assumed" in peak["assumption"]
    xeon = {"flags": "avx2 fma avx512f", "model name": "Intel Xeon Gold 6248 @ 2.50GHz"}
    peak = machine.cpu_peak(xeon, {"CPU max MHz": "3900.0"}, cores=4)
    assert (peak["lanes"], peak["ghz"]) == (16, 3.9)
    monkeypatch.setenv("BENCH_FMA_UNITS", "1")
    assert machine.cpu_peak(xeon, {}, cores=1)["gflops"] == pytest.approx(16 * 1 * 2 * 2.5)


def test_timer_discards_warm_up_and_times_every_repeat():
    calls = []
    timer = Timer("count", lambda: calls.append(1))
    timer.warm_up(warmup=2, min_time=0.0)
    assert len(calls) == 2 + 1
    other = Timer("other", lambda: None)
    other.warm_up(1, 0.0)
    interleave([timer, other], repeats=5)
    assert len(calls) == 3 + (1 + 5) * timer.steps  # one untimed round, then the repeats
    summary = timer.summary()
    assert summary["repeats"] == 5 and summary["p25_s"] <= summary["median_s"] <= summary["p75_s"]


def test_profiles_keep_at_least_five_repeats():
    assert all(profile.repeats >= 5 for profile in PROFILES.values())


def _timing(seconds, cpu=None):
    cpu = seconds if cpu is None else cpu
    return {
        "median_s": seconds,
        "p25_s": seconds,
        "p75_s": seconds,
        "cpu_median_s": cpu,
        "cpu_p25_s": cpu,
        "cpu_p75_s": cpu,
        "cpu_util": cpu / seconds,
    }


def _results():
    case = {"cell": "lstm", "units": 8, "time": 4, "batch": 2, "layers": 1, "bidirectional": False}
    rows = [
        {
            "case": case,
            "label": "8u T4 B2",
            "variant": variant,
            "threads": 1,
            "gflop_per_step": 0.5,
            "timing": _timing(2 * s, cpu=s),
        }
        for variant, s in (("rnnsuite", 0.02), ("keras", 0.01), ("torch", 0.04))
    ]
    info = machine.machine_info()
    return {
        "profile": "quick",
        "git": "abc1234",
        "started": "2026-01-01T00:00:00+00:00",
        "repeats": 5,
        "machine": info,
        "load_start": [1.0, 1.0, 1.0],
        "load_end": [2.0, 1.5, 1.0],
        "sections": {"backbone": {"rows": rows}},
    }


def test_report_uses_cpu_time_for_one_thread_and_says_what_is_not_measured():
    markdown = report.render(_results())
    # 2 samples per 0.02 CPU-seconds, not per 0.04 wall seconds.
    assert "| LSTM | 8u T4 B2 | 0.50 | 100 " in markdown
    assert "0.50×" in markdown and "2.00×" in markdown  # vs Keras, vs PyTorch
    assert "make bench-quick" in markdown
    assert "### Not measured in this run" in markdown and "make bench" in markdown


def test_quality_rows_render_their_metrics_and_times():
    results = _results()
    row = {
        "domain": "speech",
        "preset": "small",
        "budget_minutes": 30.0,
        "epochs": 12,
        "fit_seconds": 1500.0,
        "setup_seconds": 3.0,
        "train_seconds": 1560.0,
        "evaluate_seconds": 60.0,
        "metrics": {"wer": 0.5, "cer": 0.125},
        "frame_cnn": None,
        "git": "abc1234",
    }
    older = {key: value for key, value in row.items() if key != "git"} | {"domain": "x"}
    results["sections"] = {"quality": {"rows": [row, older]}}  # older files' rows lack `git`
    markdown = report.render(results)
    row_line = "| speech | small | 30 min | 12 | 25.0 min | 27.0 min | – | abc1234 | WER 50.0%; CER"
    assert row_line in markdown
    assert "| x | small | 30 min | 12 | 25.0 min | 27.0 min | – | – | WER 50.0%; CER" in markdown
    assert "Not measured in this run" not in markdown
    assert "another machine" not in markdown  # neither row says where it ran

    here = report.machine.describe(results["machine"])
    row["machine"], older["machine"] = "Other CPU (2 cores; avx512f)", here
    markdown = report.render(results)
    assert "- speech (abc1234): Other CPU (2 cores; avx512f)" in markdown
    assert "- x (" not in markdown  # measured on the header's machine


def test_quality_section_runs_a_process_per_domain_only_where_a_preset_is_set(tmp_path):
    from bench.profiles import PROFILES
    from bench.run import plan

    assert not [r for r in plan(PROFILES["quick"], ("quality",), tmp_path)]
    names = [name for _, name, _, _ in plan(PROFILES["full"], ("quality",), tmp_path)]
    assert names == [f"quality-{d}" for d in ("speech", "action", "caption", "translation")]


def test_readme_section_is_inserted_once_then_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Development\n\nlint\n")
    report.update_readme("first table\n", readme)
    text = readme.read_text()
    assert text.index("## Benchmarks") < text.index("## Development")
    report.update_readme("second table\n", readme)
    text = readme.read_text()
    assert "second table" in text and "first table" not in text
    assert text.count("## Benchmarks") == 1 and text.count(report.START) == 1


def test_only_quick_and_full_runs_reach_readme():
    assert report.readme_worthy({"profile": "full"}) and report.readme_worthy({"profile": "quick"})
    assert not report.readme_worthy({"profile": "smoke"})


def test_report_command_renders_a_results_file(tmp_path, capsys):
    path = tmp_path / "20260101-000000.json"
    path.write_text(json.dumps(_results()))
    assert report.main([str(path), "--no-readme"]) == 0
    assert path.with_suffix(".md").read_text() == capsys.readouterr().out.rstrip("\n") + "\n"


def test_gpu_check_task_labels_the_majority_of_the_valid_steps_only():
    from bench.gpu_check import MAX_TIME, majority_task

    x, labels = majority_task(200, seed=0, full=False)
    lengths = x.sum(axis=(1, 2)).astype(int)
    assert x.shape[1] == MAX_TIME and lengths.min() >= 6 and len(set(lengths)) > 5
    for row, length in zip(x, lengths, strict=True):
        assert not row[length:].any()  # right padding only, as cuDNN masks require
    counts = x.sum(axis=1)
    np.testing.assert_array_equal(labels, counts.argmax(axis=1))


def test_reference_video_model_is_the_keras_io_example_and_its_table_renders():
    from bench.reference import MAX_SEQ_LENGTH, NUM_FEATURES, get_sequence_model, load_frames

    model = get_sequence_model(classes=5)
    assert [type(layer).__name__ for layer in model.layers[2:]] == [
        "GRU",
        "GRU",
        "Dropout",
        "Dense",
        "Dense",
    ]
    assert model.input_shape == [(None, MAX_SEQ_LENGTH, NUM_FEATURES), (None, MAX_SEQ_LENGTH)]
    frames = np.zeros((3, 90, 120, 3), np.uint8)
    frames[..., 0] = 7  # BGR in, RGB out
    loaded = load_frames(frames)
    assert loaded.shape == (3, 224, 224, 3) and (loaded[..., 2] == 7).all()

    timing = {"median_s": 2.0, "cpu_median_s": 2.0, "p25_s": 1.9, "p75_s": 2.1}
    timing.update(cpu_p25_s=1.9, cpu_p75_s=2.1)
    rows = [
        {
            "domain": "video",
            "stage": "features",
            "implementation": name,
            "setup": "s",
            "threads": 1,
            "items": clips,
            "unit": "clips",
            "timing": timing,
        }
        for name, clips in (("keras.io CNN-RNN", 2), ("rnnsuite", 20))
    ]
    table = "\n".join(report.reference_table({"rows": rows}))
    assert "| video | features | keras.io CNN-RNN | s | 1 thread | 1.00 clips/s | 10.0× |" in table


def _run(name, status="ok"):
    return {"name": name, "seconds": 1.0, "status": status}


def test_resume_keeps_what_succeeded_and_reruns_a_shared_build_whole():
    from bench.run import forget_runs, resumable

    planned = [
        ("backbone", "keras-t1"),
        ("backbone", "keras-t0"),
        ("inference", "build"),
        ("inference", "serve-t1"),
        ("inference", "serve-t0"),
        ("quality", "quality-speech"),
        ("quality", "quality-action"),
    ]
    results = {
        "sections": {
            "backbone": {"rows": [{"r": 1}], "runs": [_run("keras-t1")]},  # stopped here
            "inference": {
                "build": {"speech": {}},
                "rows": [{"r": 2}],
                "runs": [_run("build"), _run("serve-t1"), _run("serve-t0", "failed")],
            },
            "quality": {
                "rows": [{"r": 3}],
                "runs": [_run("quality-speech"), _run("quality-action", "failed")],
            },
        }
    }
    keep = resumable(results, planned)
    # The serve runs need the exports `build` made in a scratch folder: all three again.
    assert keep == {("backbone", "keras-t1"), ("quality", "quality-speech")}
    forget_runs(results, keep, {"backbone", "inference", "quality"})
    sections = results["sections"]
    assert [r["name"] for r in sections["backbone"]["runs"]] == ["keras-t1"]
    assert sections["backbone"]["rows"] == [{"r": 1}]
    assert sections["inference"] == {}
    assert [r["name"] for r in sections["quality"]["runs"]] == ["quality-speech"]
    assert sections["quality"]["rows"] == [{"r": 3}]


def test_resume_with_only_leaves_the_other_sections_alone():
    from bench.run import forget_runs, resumable

    results = {
        "sections": {
            "backbone": {"rows": [{"r": 1}], "runs": [_run("keras-t1")]},
            "quality": {"rows": [{"r": 3}], "runs": [_run("quality-speech")]},
        }
    }
    planned = [("quality", "quality-speech"), ("quality", "quality-caption")]
    keep = resumable(results, planned)
    forget_runs(results, keep, {"quality"})  # `--only quality`
    assert results["sections"]["backbone"] == {"rows": [{"r": 1}], "runs": [_run("keras-t1")]}
    assert [r["name"] for r in results["sections"]["quality"]["runs"]] == ["quality-speech"]


@pytest.mark.slow
def test_a_run_resumed_from_its_file_runs_only_what_it_lacks(tmp_path, capsys):
    from bench.run import main

    args = ["--profile", "smoke", "--only", "features", "--no-readme", "--results-dir"]
    assert main([*args, str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    first = json.loads(path.read_text())
    assert [r["name"] for r in first["sections"]["features"]["runs"]] == [
        "features-t1",
        "features-t0",
    ]
    # As if the run had stopped after its first child process.
    first["sections"]["features"]["runs"].pop()
    first["sections"]["features"]["rows"] = [
        row for row in first["sections"]["features"]["rows"] if row.get("threads") == 1
    ]
    path.write_text(json.dumps(first))
    capsys.readouterr()
    assert main([*args, str(tmp_path), "--resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert "features-t1: kept from" in out and "[features] features-t0\n" in out
    resumed = json.loads(path.read_text())
    assert [r["name"] for r in resumed["sections"]["features"]["runs"]] == [
        "features-t1",
        "features-t0",
    ]
    assert len(resumed["resumed"]) == 1 and resumed["started"] == first["started"]
    assert "; resumed " in report.render(resumed)
    with pytest.raises(SystemExit):
        main(["--profile", "quick", "--only", "features", "--resume", str(path)])
