"""Captioned clips: where they come from, and caption ids as tf.data for the captioner.

Sources (`load_captioned_source`):

- the embedded corpus (no `--data`): the action clips, each described by
  `captions.captions_for` from its manifest row (several references per clip);
- a rendered corpus folder (`{train,valid,test}/manifest.csv`), described the same way;
- a CSV or TSV of captioned videos (MSVD style, `read_caption_table`): one row per
  caption, several rows per video allowed.

A source is a `pipeline.FileSource` (so the frame CNN and feature cache of the action task
serve it unchanged) plus the reference captions of every clip, keyed by clip key.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.errors import DataError
from suite.video import corpus
from suite.video.captions import captions_for
from suite.video.pipeline import (
    SPLITS,
    Clip,
    FileSource,
    embedded_source,
    file_key,
    manifest_source,
    split_videos,
)

# Column names accepted for the video and the caption, first match wins.
VIDEO_COLUMNS = ("video", "path", "video_path", "file", "filename")
CAPTION_COLUMNS = ("caption", "description", "sentence", "text")
# The MSR Video Description corpus (MSVD) CSV: clips are files `{VideoID}_{Start}_{End}.avi`.
MSVD_COLUMNS = ("VideoID", "Start", "End", "Language", "Description")
# Videos without a `label` column share this one class.
NO_LABEL = "video"


@dataclass
class CaptionedSource:
    """Clips in three splits (`source`) and their reference captions (`captions[clip.key]`)."""

    source: FileSource
    captions: dict[str, list[str]]

    def references(self, split: str) -> list[list[str]]:
        return [self.captions[clip.key] for clip in self.source.clips(split)]

    def summary(self) -> str:
        count = sum(len(self.captions[c.key]) for s in SPLITS for c in self.source.clips(s))
        return f"{self.source.summary()}; {count} captions"


def load_captioned_source(data: str | None, data_config, progress: bool = True):
    """The captioned clips `--data` names (see the module docstring)."""
    if not data:
        source = embedded_source(data_config, progress)
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder (--data takes a captions CSV/TSV)")
        if path.is_file():
            return read_caption_table(path, data_config.valid_fraction, data_config.test_fraction)
        if not (path / "train" / "manifest.csv").is_file():
            raise DataError(
                f"{path}: expected a CSV/TSV of (video, caption) rows or a rendered corpus "
                "folder with {train,valid,test}/manifest.csv"
            )
        source = manifest_source(path)
    count, seed = data_config.captions_per_clip, data_config.seed
    captions = {
        row["clip_id"]: captions_for(row, count=count, seed=seed)
        for split in SPLITS
        for row in corpus.read_manifest(source.manifests[split])
    }
    return CaptionedSource(source, captions)


def _column(fields: list[str], names, path: Path, what: str) -> str:
    lowered = {name.strip().lower(): name for name in fields}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    raise DataError(
        f"{path}: no {what} column; the header needs one of {', '.join(names)} (found {fields})"
    )


def _msvd_video(folder: Path, row: dict) -> Path:
    name = f"{row['VideoID']}_{row['Start']}_{row['End']}"
    for where in (folder, folder / "videos", folder / "YouTubeClips"):
        for suffix in (".avi", ".mp4", ".webm", ".mkv"):
            if (where / f"{name}{suffix}").is_file():
                return where / f"{name}{suffix}"
    return folder / "YouTubeClips" / f"{name}.avi"


def read_caption_table(
    path: str | Path, valid_fraction: float = 0.1, test_fraction: float = 0.2
) -> CaptionedSource:
    """A CSV/TSV of captioned videos as a `CaptionedSource`.

    The header names a video column (`video`, `path`, ...) and a caption column (`caption`,
    `description`, ...); optional `label` (a class per video, to train the frame CNN on) and
    `split` (train/valid/test) columns. Relative paths are read from the table's folder.
    The MSVD corpus CSV (`VideoID, Start, End, ..., Language, Description`) is read as is:
    English rows only, videos `{VideoID}_{Start}_{End}.avi` beside it or in `YouTubeClips/`.
    Without a `split` column, whole videos are split by a hash of their path.

    Raises:
        DataError: naming the table (and row) for a missing column, an empty caption, a
            missing video, an unknown split or a table without captions.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            fields = list(reader.fieldnames or [])
            # A row's last physical line: a quoted caption may span lines.
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text table") from None
    msvd = all(name in fields for name in MSVD_COLUMNS)
    if msvd:
        video_column, caption_column = None, "Description"
    else:
        video_column = _column(fields, VIDEO_COLUMNS, path, "video")
        caption_column = _column(fields, CAPTION_COLUMNS, path, "caption")
    label_column = "label" if "label" in fields else None
    split_column = "split" if "split" in fields else None

    videos: dict[Path, dict] = {}
    for line, row in rows:
        if msvd and row.get("Language", "").strip().lower() != "english":
            continue
        where = f"{path}:{line}"
        text = " ".join((row.get(caption_column) or "").split())
        if not text:
            raise DataError(f"{where}: empty caption")
        if msvd:
            video = _msvd_video(path.parent, row)
        else:
            name = (row.get(video_column) or "").strip()
            if not name:
                raise DataError(f"{where}: no video path")
            video = Path(name).expanduser()
            video = video if video.is_absolute() else path.parent / video
        if not video.is_file():
            raise DataError(f"{where}: video {video} not found")
        entry = videos.setdefault(video, {"captions": [], "label": None, "split": None})
        entry["captions"].append(text)
        label = (row.get(label_column) or "").strip() if label_column else NO_LABEL
        if not label:
            raise DataError(f"{where}: empty label")
        split = (row.get(split_column) or "").strip().lower() if split_column else None
        if split is not None and split not in SPLITS:
            raise DataError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        for key, value in (("label", label), ("split", split)):
            if entry[key] is not None and entry[key] != value:
                raise DataError(f"{where}: {video.name} has {key} {entry[key]!r} on another row")
            entry[key] = value
    if not videos:
        raise DataError(f"{path}: no captioned videos")

    if split_column:
        by_split = {split: [] for split in SPLITS}
        for video, entry in videos.items():
            by_split[entry["split"]].append((video, entry["label"]))
    else:
        pairs = [(video, entry["label"]) for video, entry in videos.items()]
        by_split = split_videos(pairs, path.parent, valid_fraction, test_fraction)
    splits, captions = {}, {}
    for split, pairs in by_split.items():
        splits[split] = []
        for video, label in pairs:
            clip = Clip(file_key(video), label, video)
            splits[split].append(clip)
            captions[clip.key] = videos[video]["captions"]
    labels = sorted({entry["label"] for entry in videos.values()})
    return CaptionedSource(FileSource(f"captioned videos {path}", labels, splits), captions)


# -- tf.data ----------------------------------------------------------------------------
def encode_captions(vocab, captions: list[list[str]], max_length: int | None = None):
    """Token ids (BOS ... EOS) of every caption, with the index of its clip.

    Captions of more than `max_length` words are skipped (training only).
    Returns `(clip_indices int32 [M], ids: list of int32 arrays)`.
    """
    flat = [(number, text) for number, texts in enumerate(captions) for text in texts]
    if not flat:
        return np.zeros([0], np.int32), []
    ids = vocab.encode(tf.constant([text for _, text in flat]), add_bos=True, add_eos=True)
    indices, rows = [], []
    for (number, _), row in zip(flat, ids.numpy(), strict=True):
        if max_length and len(row) > max_length + 2:
            continue
        indices.append(number)
        rows.append(np.asarray(row, np.int32))
    return np.asarray(indices, np.int32), rows


def caption_dataset(
    features, valid, clip_indices, ids, batch_size, shuffle=False, seed=0, labels=None
):
    """Batches of `((features, length, caption_in), caption_out)`, one per caption, 0-padded;
    with the clips' `labels`, the targets are `{"caption": caption_out, "action": label}`."""
    if not len(ids):
        raise DataError("no captions to train on (all longer than data.max_length?)")
    features = tf.constant(features)
    valid = tf.constant(valid)
    lengths = [len(row) for row in ids]
    tokens = tf.RaggedTensor.from_row_lengths(np.concatenate(ids), lengths)
    dataset = tf.data.Dataset.from_tensor_slices((clip_indices, tokens))
    if shuffle:
        dataset = dataset.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)

    labels = tf.constant(labels, tf.int32) if labels is not None else None

    def example(index, caption):
        inputs = (tf.gather(features, index), tf.gather(valid, index), caption[:-1])
        if labels is None:
            return inputs, caption[1:]
        return inputs, {"caption": caption[1:], "action": tf.gather(labels, index)}

    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
