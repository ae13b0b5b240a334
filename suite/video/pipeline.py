"""Where action clips come from, how they become prepared frames, features and tf.data.

Sources (`load_source`):

- the embedded corpus (no `--data`): `corpus.prepare_corpus` renders the clips once into a
  folder named after its settings (`corpus_root`), so presets never share a manifest.
- a folder holding `{train,valid,test}/manifest.csv` (a rendered corpus elsewhere).
- a UCF101-style folder, one subfolder of videos per class, split deterministically: by
  UCF101 group (`v_Class_g08_c01.avi`: every clip of a group lands in one split, as the
  official splits keep a group's actors and scenes together) when every name carries one,
  otherwise per class by a hash of the file's path.
- `tfds:NAME` (e.g. `tfds:ucf101`): a TensorFlow Datasets video set; its `train` split
  gives train and valid (every k-th example), `test` is test. TFDS downloads it on the
  first use, which needs the internet; the error says how to prepare it elsewhere.

Every clip goes through the same graph code as the export (`features.prepare_frames`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.config import data_dir
from shared.errors import DataError, problems_error
from suite.video import corpus
from suite.video.features import (
    FeatureCache,
    FrameEncoder,
    encode_clips,
    modality_channels,
    prepare_frames,
)
from suite.video.frames import frame_shapes, read_class_folders, read_video

SPLITS = ("train", "valid", "test")
# Clips whose prepared frames would take more memory than this are kept in a file instead.
IN_MEMORY_BYTES = 1 << 30
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Clip:
    """One labelled clip: a video file, or the `index`-th example of a TFDS split."""

    key: str
    label: str
    path: Path | None = None
    index: int | None = None
    # The TFDS split the example is read from.
    origin: str = ""


@dataclass(frozen=True)
class FramesSpec:
    """How a clip becomes model input: `num_frames` sampled frames of `size` x `size`."""

    num_frames: int
    size: int
    sampling: str = "uniform"
    stride: int = 2
    modality: str = "rgb"  # rgb | diff | rgb_diff (features.MODALITIES)


class ClipSource:
    """A labelled set of clips in three splits."""

    description: str
    labels: list[str]

    def clips(self, split: str) -> list[Clip]:
        raise NotImplementedError

    def raw_frames(self, clips: Sequence[Clip], workers: int = 2) -> Iterator:
        """`(clip, uint8 frames [time, height, width, 3])` for `clips`, in their order."""
        raise NotImplementedError

    def check(self, workers: int = 2) -> None:
        """Raises `DataError` naming every clip that cannot be read (a no-op where the
        source decodes its own clips)."""

    def summary(self) -> str:
        counts = ", ".join(f"{split} {len(self.clips(split))}" for split in SPLITS)
        classes = f"{len(self.labels)} class" + ("" if len(self.labels) == 1 else "es")
        return f"{self.description}: {classes}; {counts} clips"


class FileSource(ClipSource):
    """Clips in video files that OpenCV reads (`manifests`: a rendered corpus's, per split)."""

    def __init__(
        self,
        description: str,
        labels: list[str],
        splits: dict[str, list[Clip]],
        manifests: dict[str, Path] | None = None,
    ):
        self.description, self.labels, self._splits = description, labels, splits
        self.manifests = manifests or {}

    def clips(self, split):
        return list(self._splits[split])

    def check(self, workers=2):
        paths = [clip.path for split in SPLITS for clip in self._splits[split]]
        _, errors = frame_shapes(paths, workers)
        if errors:
            raise problems_error(f"{len(errors)} unreadable video file(s)", errors)

    def raw_frames(self, clips, workers=2):
        # OpenCV decodes without the GIL: threads overlap the decoding of several files.
        chunk = max(1, 4 * workers)
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(clips), chunk):
                block = clips[start : start + chunk]
                yield from zip(block, pool.map(lambda c: read_video(c.path), block), strict=True)


class TfdsSource(ClipSource):
    """A TensorFlow Datasets video set with `video` and `label` features."""

    def __init__(self, name: str, valid_every: int = 10):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise DataError("tfds: sources need `pip install tensorflow-datasets`") from None
        self._tfds = tfds
        try:
            self.builder = tfds.builder(name)
        except Exception as error:  # noqa: BLE001 (DatasetNotFoundError and friends)
            raise DataError(f"tfds:{name}: {str(error).splitlines()[0]}") from None
        features = self.builder.info.features
        if "video" not in features or "label" not in features:
            raise DataError(f"tfds:{name}: expected `video` and `label` features, got {features}")
        self.name = name
        self.description = f"TFDS {self.builder.info.full_name}"
        self.labels = list(features["label"].names)
        self.valid_every = valid_every
        self._prepared = False
        self._sizes: dict[str, int] | None = None

    def _prepare(self):
        if self._prepared:
            return
        if not self.builder.is_prepared():
            try:
                self.builder.download_and_prepare()
            except Exception as error:  # noqa: BLE001 (network, ffmpeg, checksum errors)
                reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                raise DataError(
                    f"tfds:{self.name} is not prepared in {self.builder.data_dir_root} and "
                    f"preparing it failed ({reason}). It downloads the videos from the "
                    "internet, which this machine cannot reach: run `tfds build "
                    f"{self.name}` (needs ffmpeg) where it can, copy the data folder here and "
                    "point TFDS_DATA_DIR at it, or pass a UCF101 folder with --data DIR"
                ) from None
        self._sizes = {split: info.num_examples for split, info in self.builder.info.splits.items()}
        self._prepared = True

    def _where(self, split):
        return "test" if split == "test" else "train"

    def clips(self, split):
        self._prepare()
        where = self._where(split)
        count = self._sizes.get(where, 0)
        tag = self.builder.info.full_name.replace("/", "-")
        rows = []
        for index in range(count):
            in_valid = where == "train" and index % self.valid_every == 0
            if where == "train" and in_valid != (split == "valid"):
                continue
            rows.append(Clip(f"tfds-{tag}-{where}-{index:06d}", "", index=index, origin=where))
        return rows

    def raw_frames(self, clips, workers=2):
        self._prepare()
        if not clips:
            return
        origins = {clip.origin for clip in clips}
        if len(origins) != 1:
            raise ValueError(f"clips of one TFDS split at a time, got {sorted(origins)}")
        wanted = {clip.index: clip for clip in clips}
        dataset = self.builder.as_dataset(split=origins.pop(), shuffle_files=False)
        last = max(wanted)
        for index, example in enumerate(self._tfds.as_numpy(dataset)):
            clip = wanted.get(index)
            if clip is not None:
                label = self.labels[int(example["label"])]
                yield Clip(clip.key, label, index=index, origin=clip.origin), example["video"]
            if index >= last:
                break


# -- sources ----------------------------------------------------------------------------
def corpus_root(num_frames: int, size: int, counts: dict[str, int], seed: int, actions) -> Path:
    """The folder of one embedded-corpus setting (its manifests list exactly its clips)."""
    name = f"{size}px-{num_frames}f-{counts['train']}.{counts['valid']}.{counts['test']}-seed{seed}"
    if tuple(actions) != corpus.ACTIONS:
        name += "-" + hashlib.sha1(",".join(actions).encode()).hexdigest()[:8]
    return corpus.default_root() / name


def embedded_source(data_config, progress: bool = True) -> FileSource:
    """Renders (or finds) the embedded clips the data config asks for."""
    actions = tuple(data_config.actions) or corpus.ACTIONS
    unknown = [a for a in actions if a not in corpus.ACTIONS]
    if unknown:
        raise DataError(
            f"data.actions: unknown actions {unknown}; have {', '.join(corpus.ACTIONS)}"
        )
    counts = {
        "train": data_config.train_clips,
        "valid": data_config.valid_clips,
        "test": data_config.test_clips,
    }
    root = corpus_root(
        data_config.render_frames, data_config.render_size, counts, data_config.seed, actions
    )
    manifests = corpus.prepare_corpus(
        counts,
        seed=data_config.seed,
        workers=data_config.workers,
        root=root,
        num_frames=data_config.render_frames,
        size=data_config.render_size,
        progress=progress,
        actions=actions,
    )
    splits = {split: _manifest_clips(manifests[split]) for split in SPLITS}
    return FileSource(f"embedded mocap corpus ({root})", list(actions), splits, manifests)


def _manifest_clips(path: Path) -> list[Clip]:
    return [
        Clip(row["clip_id"], row["label"], Path(row["path"])) for row in corpus.read_manifest(path)
    ]


def manifest_source(root: Path) -> FileSource:
    """A folder with `{train,valid,test}/manifest.csv` (as `prepare_corpus` writes)."""
    manifests = {split: root / split / "manifest.csv" for split in SPLITS}
    splits = {split: _manifest_clips(manifests[split]) for split in SPLITS}
    seen = {clip.label for clips in splits.values() for clip in clips}
    labels = [a for a in corpus.ACTIONS if a in seen] + sorted(seen - set(corpus.ACTIONS))
    return FileSource(f"rendered corpus {root}", labels, splits, manifests)


def clip_attributes(source: ClipSource, split: str, names: Sequence[str]) -> dict[str, list]:
    """Each clip's value of the manifest columns `names` (render parameters), in clip order.

    A value the frames cannot show is None: the figure's colours in a greyscale clip.
    Returns {} where the source has no manifests (videos of a folder, a table, TFDS).

    Raises:
        DataError: naming the manifest that lacks one of the columns.
    """
    manifests = getattr(source, "manifests", {})
    if not names or split not in manifests:
        return {}
    rows = {row["clip_id"]: row for row in corpus.read_manifest(manifests[split])}
    columns = next(iter(rows.values())).keys() if rows else names
    missing = [name for name in names if name not in columns]
    if missing:
        raise DataError(f"{manifests[split]}: no column {', '.join(missing)} (cnn.attributes)")

    def visible(row, name):
        hidden = name.endswith("_color") and bool(row.get("greyscale"))
        return None if hidden else str(row[name])

    clips = source.clips(split)
    return {name: [visible(rows[clip.key], name) for clip in clips] for name in names}


def file_key(path: Path) -> str:
    """A cache key for a user's video: its name and a hash of its path, size and mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60]
    return f"{stem}-{digest[:12]}"


def _rank(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def split_videos(
    videos: Sequence[tuple[Path, str]], root: Path, valid_fraction: float, test_fraction: float
) -> dict[str, list[tuple[Path, str]]]:
    """Deterministic train/valid/test split of (path, label) pairs of a class-folder tree.

    By UCF101 group when every file name carries one (whole groups go to one split),
    otherwise per class by a hash of the relative path. Each class keeps at least one
    training video.
    """
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1:
        raise DataError("data.valid_fraction and data.test_fraction must be in [0, 1)")
    splits: dict[str, list] = {split: [] for split in SPLITS}
    groups = [_UCF_GROUP.search(Path(path).name) for path, _ in videos]
    if videos and all(groups):
        ids = sorted({int(match.group(1)) for match in groups}, key=lambda g: _rank(str(g)))
        n_test = round(len(ids) * test_fraction)
        n_valid = round(len(ids) * valid_fraction)
        if n_test + n_valid >= len(ids):
            n_test, n_valid = max(0, len(ids) - 1 - n_valid), min(n_valid, len(ids) - 1)
        where = {g: "test" for g in ids[:n_test]}
        where.update({g: "valid" for g in ids[n_test : n_test + n_valid]})
        for (path, label), match in zip(videos, groups, strict=True):
            splits[where.get(int(match.group(1)), "train")].append((path, label))
        return splits
    by_label: dict[str, list] = {}
    for path, label in videos:
        by_label.setdefault(label, []).append(path)
    for label, paths in by_label.items():
        paths = sorted(paths, key=lambda p: _rank(str(Path(p).relative_to(root))))
        n_test = min(round(len(paths) * test_fraction), max(0, len(paths) - 1))
        n_valid = min(round(len(paths) * valid_fraction), max(0, len(paths) - 1 - n_test))
        for number, path in enumerate(paths):
            split = "test" if number < n_test else "valid" if number < n_test + n_valid else "train"
            splits[split].append((path, label))
    return splits


def folder_source(root: Path, valid_fraction: float, test_fraction: float) -> FileSource:
    videos = read_class_folders(root)
    labels = sorted({label for _, label in videos})
    splits = split_videos(videos, root, valid_fraction, test_fraction)
    clips = {
        split: [Clip(file_key(path), label, Path(path)) for path, label in rows]
        for split, rows in splits.items()
    }
    return FileSource(f"video folder {root}", labels, clips)


def load_source(data: str | None, data_config, progress: bool = True) -> ClipSource:
    """The clip source `--data` names (see the module docstring)."""
    if not data:
        return embedded_source(data_config, progress)
    if data.startswith("tfds:"):
        name = data[len("tfds:") :]
        if not name:
            raise DataError("--data tfds:NAME needs a dataset name, e.g. tfds:ucf101")
        return TfdsSource(
            name, valid_every=max(2, round(1 / max(data_config.valid_fraction, 0.01)))
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such folder (--data takes a video folder or tfds:NAME)")
    if not path.is_dir():
        raise DataError(
            f"{path}: expected a folder with one subfolder of videos per class, "
            "or a rendered corpus with {train,valid,test}/manifest.csv"
        )
    if (path / "train" / "manifest.csv").is_file():
        return manifest_source(path)
    return folder_source(path, data_config.valid_fraction, data_config.test_fraction)


def save_labels(run_dir: Path, labels: list[str]) -> list[str]:
    """Writes `labels.json` the first time; afterwards checks the data still has those labels."""
    path = Path(run_dir) / "labels.json"
    if path.is_file():
        saved = load_labels(run_dir)
        if saved != list(labels):
            raise DataError(
                f"{path}: this run was trained on classes {saved}, the data has {list(labels)};"
                " use a new --run-dir"
            )
        return saved
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(labels), indent=1))
    return list(labels)


def load_labels(run_dir: Path) -> list[str]:
    path = Path(run_dir) / "labels.json"
    if not path.is_file():
        raise DataError(f"{run_dir}: no labels.json; is this a run dir made by `train`?")
    return json.loads(path.read_text())


# -- prepared frames --------------------------------------------------------------------
def prepare_batch(frames, length, spec: FramesSpec):
    """`features.prepare_frames` with `spec`'s settings: graph code for pipeline and export."""
    return prepare_frames(
        frames, length, spec.num_frames, spec.size, spec.sampling, spec.stride, spec.modality
    )


@functools.lru_cache(maxsize=8)
def _clip_preparer(spec: FramesSpec):
    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True
    )
    def prepare(frames):
        picked, valid = prepare_batch(frames[None], tf.shape(frames)[:1], spec)
        return picked[0], valid[0]

    return prepare


def prepare_clip(frames: np.ndarray, spec: FramesSpec) -> tuple[np.ndarray, int]:
    """One decoded clip [time, h, w, 3] -> (uint8 [T, S, S, C], valid frames)."""
    picked, valid = _clip_preparer(spec)(tf.constant(frames))
    return picked.numpy(), int(valid)


def prepared_clips(source: ClipSource, clips: Sequence[Clip], spec: FramesSpec, workers=2):
    """`(clip, frames uint8 [T, S, S, C], valid)` for every clip, in order."""
    for clip, frames in source.raw_frames(clips, workers):
        picked, valid = prepare_clip(frames, spec)
        yield clip, picked, valid


@dataclass
class ClipArrays:
    """A split as arrays: `inputs` (features [N, T, D] or frames [N, T, S, S, C]), `valid`
    [N], `labels` [N] (indices into the label list) and the clips."""

    inputs: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    clips: list[Clip]
    computed: int = 0


def _label_ids(clips, labels) -> np.ndarray:
    index = {label: number for number, label in enumerate(labels)}
    unknown = sorted({clip.label for clip in clips if clip.label not in index})
    if unknown:
        raise DataError(f"clips with classes {unknown} that the model does not know ({labels})")
    return np.array([index[clip.label] for clip in clips], np.int32)


def _require(clips, split, source):
    if not clips:
        raise DataError(f"{source.description}: the {split} split has no clips")


def clip_frames(
    source: ClipSource, split: str, labels, spec: FramesSpec, workers=2, progress=True
) -> ClipArrays:
    """Prepared frames of a split: uint8 [N, T, S, S, C], in memory or (when large) a file."""
    from tqdm.auto import tqdm

    clips = source.clips(split)
    _require(clips, split, source)
    channels = modality_channels(spec.modality)
    shape = (len(clips), spec.num_frames, spec.size, spec.size, channels)
    if int(np.prod(shape)) <= IN_MEMORY_BYTES:
        frames = np.empty(shape, np.uint8)
    else:
        folder = data_dir() / "video" / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy") as handle:
            # Unlinked when closed; the mapping keeps the pages alive until it is dropped.
            frames = np.lib.format.open_memmap(handle.name, "w+", np.uint8, shape)
    valid = np.empty(len(clips), np.int32)
    seen = []
    bar = tqdm(total=len(clips), desc=f"{split} frames", unit="clip", disable=not progress or None)
    for number, (clip, picked, count) in enumerate(prepared_clips(source, clips, spec, workers)):
        frames[number], valid[number] = picked, count
        seen.append(clip)
        bar.update()
    bar.close()
    return ClipArrays(frames, valid, _label_ids(seen, labels), seen)


def clip_features(
    source: ClipSource,
    split: str,
    labels,
    spec: FramesSpec,
    encoder: FrameEncoder,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
) -> ClipArrays:
    """CNN features of a split, computed in batches for the clips not cached yet."""
    cache = FeatureCache(encoder, spec.num_frames, spec.sampling, spec.stride, spec.modality)
    clips = source.clips(split)
    _require(clips, split, source)
    missing = [clip for clip in clips if not cache.has(clip.key)]

    def stream():
        for clip, picked, valid in prepared_clips(source, missing, spec, workers):
            yield clip.key, picked, valid, clip.label

    computed = encode_clips(encoder, cache, stream(), len(missing), batch_size, progress)
    loaded = [cache.load(clip.key) for clip in clips]
    # TFDS clips learn their label when read; the cache keeps it with the features.
    clips = [
        clip if clip.label else Clip(clip.key, label, clip.path, clip.index, clip.origin)
        for clip, (_, _, label) in zip(clips, loaded, strict=True)
    ]
    features = np.stack([features for features, _, _ in loaded])
    valid = np.array([count for _, count, _ in loaded], np.int32)
    return ClipArrays(features, valid, _label_ids(clips, labels), clips, computed)


# -- tf.data ----------------------------------------------------------------------------
def make_dataset(arrays: ClipArrays, batch_size: int, shuffle=False, seed=0) -> tf.data.Dataset:
    """Batches of `((inputs, valid), label)`; frames are fetched lazily from (mapped) arrays."""
    count = len(arrays.labels)
    inputs, valid, labels = arrays.inputs, arrays.valid, arrays.labels
    if inputs.dtype != np.uint8:  # features: small, straight into the graph
        dataset = tf.data.Dataset.from_tensor_slices(((inputs, valid), labels))
        if shuffle:
            dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    shape = inputs.shape[1:]

    def load(index):
        clip = tf.numpy_function(lambda i: np.asarray(inputs[int(i)]), [index], tf.uint8)
        return (tf.ensure_shape(clip, shape), tf.gather(valid, index)), tf.gather(labels, index)

    dataset = tf.data.Dataset.range(count)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
