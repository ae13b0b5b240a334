"""Inference of the exports: translation and caption sentences/s, action clips/s and the
speech real-time factor.

`build` trains small models quickly on toy data through the project's own Python entry
points (`shared.config.resolve`, `shared.training.train`, `shared.training.restore_model`,
`Task.export`: what `rnnsuite TASK train` and `rnnsuite TASK export --set ...` call) and
writes one SavedModel per decoder:

    translation  the `tiny` (quick) or `small` (full) preset, word tokens, trained to reverse
                 sentences of 8 animal words (as tests/nlp/test_translation.py does) until it
                 stops at EOS; exported with `decode.beam_width` 1 (greedy) and 4
    speech       the speech preset's architecture (`small`: conv front end subsampling time by
                 3 + 2-layer BiGRU of 160 units) trained for a few steps on synthetic tone "words": speed does not
                 need a good model, and CTC greedy decoding costs the same for any weights;
                 exported greedy, beam 8 and (full) with the word LM the embedded corpus's
                 model gets (its text sources and generated transcripts), whose beam search
                 runs in the export's graph
    action,      the `small` presets' frame CNN (untrained: its cost does not depend on its
    caption      weights) and recurrent models, trained one epoch on toy videos of a square
                 moving left or right; clips of 32 frames at 112 px are timed, the embedded
                 corpus's render size. The caption export decodes greedily and with beam 3

`serve` then loads each export with `tf.saved_model.load` in a fresh process whose
TensorFlow runs with the given intra- and inter-op threads, and times the
`serving_default` signature on raw input, batch 1 (a loop of single requests) and batched.

    python -m bench.inference build --profile quick --work DIR --out build.json
    python -m bench.inference serve --build build.json --threads 1 --out serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench import machine
from bench.features import RATE, synthetic_utterances
from bench.profiles import PROFILES
from bench.timing import Timer, interleave

WORDS = "ant bee cat dog eel fox gnu hen".split()
TONES = {"a": 400.0, "b": 900.0, "c": 1600.0, "d": 2600.0}
SPEECH_BEAM = 8  # the speech config's default beam width


# -- toy data ---------------------------------------------------------------------------
def toy_sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(count)]


def reversal_tsv(path: Path, count: int, seed: int) -> Path:
    """Source sentences and their word-reversed targets, one pair a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for sentence in toy_sentences(count, seed):
            handle.write(f"{sentence}\t{' '.join(reversed(sentence.split()))}\n")
    return path


def tone_corpus(folder: Path, sizes: dict[str, int], seed: int) -> Path:
    """A folder of wav files and `train/valid/test.csv` manifests: each letter a tone."""
    from suite.speech.audio import write_audio

    rng = np.random.default_rng(seed)
    for split, count in sizes.items():
        rows = ["path,transcript"]
        for index in range(count):
            text = "".join(rng.choice(list(TONES), rng.integers(2, 6)))
            pieces = []
            for letter in text:
                t = np.arange(int(rng.uniform(0.08, 0.14) * RATE)) / RATE
                pieces += [0.5 * np.sin(2 * np.pi * TONES[letter] * t), np.zeros(800)]
            signal = np.concatenate(pieces)
            signal = signal + rng.normal(0, 0.01, signal.shape)
            name = f"{split}/{index:03d}.wav"
            write_audio(folder / name, signal)
            rows.append(f"{name},{text}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


# -- build ------------------------------------------------------------------------------
def build(profile, work: Path, log=print) -> dict:
    """Trains and exports; returns where every export is and what it took."""
    os.environ["RNNSUITE_DATA_DIR"] = str(work / "data")
    from shared.export import hide_gpus

    hide_gpus()
    from shared import config as config_lib
    from shared.task import get_task
    from shared.training import restore_model, train

    result = {}
    setups = (
        ("translation", _translation_setup),
        ("speech", _speech_setup),
        ("action", _action_setup),
        ("caption", _caption_setup),
    )
    for name, run in setups:
        try:
            task = get_task(name)
            data, preset, overrides, exports = run(profile, work)
            config = config_lib.resolve(
                task.config_class, task.presets, preset, overrides=overrides
            )
            run_dir = work / "runs" / name
            start = time.perf_counter()
            summary = train(task, config, run_dir, data)
            entry = {
                "preset": preset,
                "overrides": overrides,
                "train_s": round(time.perf_counter() - start, 1),
                "train_logs": summary.get("logs", {}),
                "exports": [],
            }
            log(f"  {name}: trained ({preset} preset) in {entry['train_s']} s: {summary['logs']}")
            for decoder, decode_overrides in exports:
                start = time.perf_counter()
                export_config, model = restore_model(task, run_dir, decode_overrides)
                path = task.export(model, export_config, run_dir, work / "exports" / decoder)
                seconds = round(time.perf_counter() - start, 1)
                entry["exports"].append(
                    {
                        "decoder": decoder,
                        "path": str(path),
                        "overrides": decode_overrides,
                        "export_s": seconds,
                    }
                )
                log(f"  {name}: exported {decoder} in {seconds} s")
            result[name] = entry
        except Exception as error:  # one task failing must not hide the other's numbers
            import traceback

            result[name] = {
                "error": f"{type(error).__name__}: {error}"[:500],
                "traceback": traceback.format_exc()[-3000:],
            }
            log(f"  {name}: FAILED: {result[name]['error']}")
    return result


def _translation_setup(profile, work):
    data = reversal_tsv(work / "translation" / "reverse.tsv", 2000, profile.seed)
    overrides = [
        "tokenizer=word",
        f"train.epochs={profile.translation_epochs}",
        f"train.seed={profile.seed}",
        "train.verbose=0",
    ]
    exports = [
        (f"translation-{'greedy' if beam == 1 else f'beam{beam}'}", [f"decode.beam_width={beam}"])
        for beam in profile.translation_beams
    ]
    return str(data), profile.translation_preset, overrides, exports


def _speech_setup(profile, work):
    sizes = {"train": 24, "valid": 8, "test": 8}
    data = tone_corpus(work / "speech", sizes, profile.seed)
    overrides = [
        "train.epochs=1",
        f"train.steps_per_epoch={profile.speech_train_steps}",
        "train.batch_size=8",
        "data.stats_utterances=24",
        f"train.seed={profile.seed}",
        "train.verbose=0",
    ]
    exports = []
    for method in profile.speech_decoders:
        settings = [f"decode.method={method}"]
        if method == "beam":
            method, settings = f"beam{SPEECH_BEAM}", [*settings, f"decode.beam_width={SPEECH_BEAM}"]
        if method == "lm":  # the LM the embedded corpus's model gets, not the tone words'
            settings.append(f"decode.lm_path={_embedded_corpus_lm(work / 'speech' / 'lm.arpa')}")
        exports.append((f"speech-{method}", settings))
    return str(data), profile.speech_preset, overrides, exports


def _embedded_corpus_lm(path: Path) -> Path:
    """The n-gram model of the embedded corpus's language-model text (some 13k words): the
    search's lookups cost more in its larger tables than in the toy transcripts' few words."""
    from suite.speech.lm import build_language_model
    from suite.speech.task import SpeechDecodeConfig
    from suite.speech.text import language_model_text

    decode = SpeechDecodeConfig()
    text = language_model_text(decode.lm_generated)
    return build_language_model(text, path, decode.lm_order)


def toy_videos(folder: Path, per_class: int, seed: int) -> list[tuple[Path, str]]:
    """Short videos of a bright square moving `left` or `right`, one folder per class."""
    import cv2

    rng = np.random.default_rng(seed)
    videos = []
    for label, step in (("left", -3), ("right", 3)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            path = folder / label / f"{label}_{number:02d}.avi"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8, (64, 64))
            x, y = int(rng.integers(20, 44)), int(rng.integers(10, 50))
            for frame_number in range(12):
                frame = np.zeros((64, 64, 3), np.uint8)
                left = x + step * frame_number
                frame[y : y + 8, max(0, left) : max(0, left + 8)] = 255
                writer.write(frame)
            writer.release()
            videos.append((path, label))
    return videos


VIDEO_OVERRIDES = ["cnn.epochs=0", "train.epochs=1", "train.batch_size=8", "train.verbose=0"]
VIDEO_SHAPE = (32, 112, 112, 3)  # frames per clip, the embedded corpus's render size


def _action_setup(profile, work):
    toy_videos(work / "video" / "clips", 8, profile.seed)
    overrides = [*VIDEO_OVERRIDES, f"train.seed={profile.seed}"]
    return str(work / "video" / "clips"), "small", overrides, [("action-softmax", [])]


def _caption_setup(profile, work):
    videos = toy_videos(work / "video" / "clips", 8, profile.seed)
    table = work / "video" / "captions.csv"
    lines = ["video,caption"] + [
        f"{path},a white square moves to the {label}" for path, label in videos
    ]
    table.write_text("\n".join(lines) + "\n")
    overrides = [*VIDEO_OVERRIDES, f"train.seed={profile.seed}"]
    exports = [
        ("caption-greedy", ["decode.beam_width=1"]),
        ("caption-beam3", ["decode.beam_width=3"]),
    ]
    return str(table), "small", overrides, exports


# -- serve ------------------------------------------------------------------------------
def _chunks(items, size):
    return [items[start : start + size] for start in range(0, len(items), size)]


def _whole_rows(endpoint, input_name: str, output: str):
    """Calls an export on a batch of equally long rows (`length` = the row width)."""
    import tensorflow as tf

    def run(rows):
        length = tf.constant(np.full([len(rows)], rows.shape[1], np.int32))
        return endpoint(**{input_name: tf.constant(rows)}, length=length)[output].numpy()

    return run


def serve(profile, built: dict, threads: int, log) -> list[dict]:
    import tensorflow as tf

    from shared.export import load_endpoint

    timers, meta = [], {}

    def time_export(task, export, run, items, batch, **info):
        """Times `run` over `items` one at a time and in batches of `batch`."""
        decoder = export["decoder"].split("-", 1)[1]
        for size in (1, batch):
            name = f"{export['decoder']}|{size}"
            timers.append(Timer(name, lambda s=size: [run(c) for c in _chunks(items, s)]))
            meta[name] = {"task": task, "decoder": decoder, "items": len(items), **info}
            meta[name]["batch"] = size

    if "exports" in built.get("translation", {}):
        sentences = toy_sentences(profile.translation_sentences, profile.seed + 1)
        batch = profile.batch_sizes["translation"]
        for export in built["translation"]["exports"]:
            endpoint = load_endpoint(export["path"])

            def translate(texts, endpoint=endpoint):
                return endpoint(text=tf.constant(texts))["translation"].numpy()

            outputs = [t.decode() for c in _chunks(sentences, batch) for t in translate(c)]
            expected = [" ".join(reversed(s.split())) for s in sentences]
            hits = [o == e for o, e in zip(outputs, expected, strict=True)]
            time_export(
                "translation",
                export,
                translate,
                sentences,
                batch,
                exact_match=float(np.mean(hits)),
                mean_output_words=float(np.mean([len(o.split()) for o in outputs])),
            )
    if "exports" in built.get("speech", {}):
        seconds = profile.utterance_seconds
        waves = synthetic_utterances(profile.speech_utterances, seconds, profile.seed + 2)
        for export in built["speech"]["exports"]:
            transcribe = _whole_rows(load_endpoint(export["path"]), "waveform", "text")
            batch = profile.batch_sizes["speech"]
            time_export(
                "speech", export, transcribe, waves, batch, audio_seconds=len(waves) * seconds
            )
    clips = np.random.default_rng(profile.seed + 3).integers(
        0, 256, (profile.video_clips, *VIDEO_SHAPE), dtype=np.uint8
    )
    for task, output in (("action", "label"), ("caption", "caption")):
        for export in built.get(task, {}).get("exports", []):
            run = _whole_rows(load_endpoint(export["path"]), "frames", output)
            info = {}
            if task == "caption":
                info["mean_output_words"] = float(np.mean([len(t.split()) for t in run(clips[:4])]))
            time_export(task, export, run, clips, profile.batch_sizes["video"], **info)
    for timer in timers:
        timer.warm_up(profile.warmup, profile.min_time)
    interleave(timers, profile.repeats)
    rows = []
    for timer in timers:
        summary = timer.summary()
        row = {**meta[timer.name], "threads": threads, "timing": summary}
        row["items_per_s"] = row["items"] / summary["median_s"]
        if row["task"] == "speech":
            row["rtf"] = summary["median_s"] / row["audio_seconds"]
        rows.append(row)
        log(row)
    return rows


def _print_row(row):
    timing = row["timing"]
    unit = {"speech": "utterances", "action": "clips", "caption": "clips"}.get(
        row["task"], "sentences"
    )
    print(
        f"  {row['task']:11} {row['decoder']:7} batch {row['batch']:3} "
        f"t{row['threads'] or 'all'}  {timing['cpu_median_s'] * 1e3:8.1f} ms CPU  "
        f"{timing['median_s'] * 1e3:8.1f} ms wall per {row['items']} {unit}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="train tiny models and export them")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--out", required=True)
    p = commands.add_parser("serve", help="time the exports in this (fresh) process")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--build", required=True, help="the JSON that `build` wrote")
    p.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads; 0: default")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    before = machine.load_average()
    if args.command == "build":
        result = build(profile, args.work)
    else:
        import tensorflow as tf

        # Before TensorFlow creates its thread pools, i.e. before anything runs.
        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        with open(args.build) as handle:
            built = json.load(handle)
        result = {"rows": serve(profile, built, args.threads, _print_row)}
    result.update(load_start=before, load_end=machine.load_average())
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    sys.exit(main())
