"""Video captioning end to end on toy videos described in a captions CSV, and its parts.

The toy clips (`toy_video`) are captioned by class: a caption can only be right if the
model reads the order of the frames (grow vs shrink). Chance of the right caption is 25 %.
"""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_video import CLASSES, TOY_CLIP_SETTINGS, toy_clip, toy_folder, write_video

from shared import config as config_lib
from shared.errors import DataError
from shared.export import serve_in_fresh_process
from shared.losses import SequenceCrossentropy
from shared.seq2seq import beam_search, decoder_step_fn, greedy_decode
from shared.training import restore_model, train
from shared.vocab import BOS_ID, EOS_ID, Vocabulary
from suite.video import CaptionConfig, CaptionTask, VideoCaptioner, caption_task
from suite.video import task as video_task
from suite.video.caption_data import (
    caption_dataset,
    encode_captions,
    load_captioned_source,
    read_caption_table,
)
from suite.video.caption_task import load_caption_vocab, load_streams
from suite.video.captions import names_action
from suite.video.pipeline import prepare_clip

CAPTIONS = {
    "blink": ["a circle blinks", "the dot flashes on and off", "a shape flickers"],
    "grow": ["a circle grows", "the dot gets bigger", "a shape expands"],
    "shrink": ["a circle shrinks", "the dot gets smaller", "a shape contracts"],
    "still": ["a circle stays still", "the dot does not change", "a shape stays the same"],
}

TOY_SETTINGS = [
    *TOY_CLIP_SETTINGS,
    "model.units=48",
    "model.embedding_dim=32",
    "model.dropout=0.0",
    "model.input_dropout=0.0",
    "model.label_smoothing=0.0",
    "decode.beam_width=2",
    "train.epochs=40",
    "train.batch_size=16",
    "train.learning_rate=0.01",
    "train.verbose=0",
]


def captions_csv(folder, path, with_labels=True):
    """A captions table over a toy folder: one row per (video, caption), relative paths."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption"] + (["label"] if with_labels else []))
        for kind in CLASSES:
            for video in sorted((folder / kind).glob("*.avi")):
                for text in CAPTIONS[kind]:
                    row = [video.relative_to(path.parent), text]
                    writer.writerow(row + ([kind] if with_labels else []))
    return path


def class_as_colour(source, split, names):
    """Stands in for render parameters, which a captions table lacks: each clip's class."""
    return {name: [clip.label for clip in source.clips(split)] for name in names}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A captioner over two streams: the frame CNN and an appearance CNN (one epoch)."""
    root = tmp_path_factory.mktemp("caption")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNSUITE_DATA_DIR", str(root / "data"))
        patch.setattr(caption_task, "clip_attributes", class_as_colour)
        patch.setattr(video_task, "clip_attributes", class_as_colour)
        toy_folder(root / "videos")
        data = str(captions_csv(root / "videos", root / "captions.csv"))
        config = config_lib.resolve(
            CaptionConfig, CaptionTask.presets, "tiny", overrides=TOY_SETTINGS
        )
        summary = train(CaptionTask(), config, root / "run", data)
        yield root, data, summary


@pytest.mark.slow
def test_captions_unseen_clips_far_above_chance(trained):
    root, data, summary = trained
    task = CaptionTask()
    config, model = restore_model(task, root / "run")
    scores = task.evaluate(model, config, data, root / "run")
    assert scores["clips"] == 16  # a quarter of each class's 16 clips
    # A right caption is one of its class's three; chance is 0.25.
    assert scores["exact_match"] >= 0.75, scores
    assert scores["bleu4"] >= 60 and scores["cider"] >= 2.0, scores
    assert "right_action" not in scores  # the toy labels are not mocap actions
    rows = list(csv.DictReader(open(root / "run" / "predictions.tsv"), delimiter="\t"))
    assert len(rows) == 16 and all(row["references"].count(" | ") == 2 for row in rows)
    assert load_caption_vocab(root / "run").size < 40


@pytest.mark.slow
def test_export_in_a_fresh_process_captions_as_keras_does(trained, tmp_path):
    root, _, _ = trained
    task = CaptionTask()
    config, model = restore_model(task, root / "run")
    path = task.export(model, config, root / "run", tmp_path / "export")

    rng = np.random.default_rng(5)
    clips = [
        toy_clip(kind, rng, frames=n) for kind, n in zip(CLASSES, (10, 13, 9, 11), strict=True)
    ]
    frames = rng.integers(0, 256, (len(clips), 16, 48, 48, 3), dtype=np.uint8)
    for row, clip in enumerate(clips):
        frames[row, : len(clip)] = clip  # junk after each clip's end
    length = np.array([len(c) for c in clips], np.int32)
    served = serve_in_fresh_process(path, {"frames": frames, "length": length})

    streams = load_streams(config, root / "run")
    assert [stream.spec.modality for stream in streams] == ["diff", "rgb_diff"]
    # The appearance stream reads its CNN's heads: both stand-in colours' 4 probabilities.
    assert [stream.width for stream in streams] == [streams[0].encoder.feature_dim, 8]
    parts = []
    for stream in streams:
        prepared = [prepare_clip(clip, stream.spec) for clip in clips]
        valid = np.array([count for _, count in prepared], np.int32)
        features = stream.encoder(np.stack([picked for picked, _ in prepared]), training=False)
        parts.append(stream.read(features, valid))
    features = np.concatenate(parts, axis=-1)
    vocab = load_caption_vocab(root / "run")
    expected = task.describe(model, config, vocab, features, valid)
    assert [text.decode() for text in served["caption"]] == expected
    assert sum(text in CAPTIONS[kind] for text, kind in zip(expected, CLASSES, strict=True)) >= 3


@pytest.mark.slow
def test_predict_prints_a_caption_per_video_and_refuses_a_corrupt_one(trained, tmp_path):
    root, _, _ = trained
    task = CaptionTask()
    config, model = restore_model(task, root / "run")
    path = task.export(model, config, root / "run", tmp_path / "export")
    rng = np.random.default_rng(3)
    videos = [write_video(tmp_path / f"{kind}.avi", toy_clip(kind, rng)) for kind in CLASSES]
    lines = task.predict(path, [str(v) for v in videos])
    fields = [line.split("\t") for line in lines]
    assert [f[0] for f in fields] == [str(v) for v in videos]
    known = {text for texts in CAPTIONS.values() for text in texts}
    assert sum(f[1] in known for f in fields) >= 3

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(5000))
    with pytest.raises(DataError, match=r"broken\.mp4: (not a video|no frames)"):
        task.predict(path, [str(videos[0]), str(broken)])
    with pytest.raises(DataError, match="exported by the 'caption' task, not 'action'"):
        from suite.video.task import serve_videos

        serve_videos("action", path, [str(videos[0])])


# -- the model ----------------------------------------------------------------------------
def overfit_captioner(epochs=4, steps=50):
    """A captioner trained on four random 'clips', one caption each."""
    captions = ["a red figure walks left", "a blue figure runs right", "someone jumps", "a b c d"]
    vocab = Vocabulary.from_texts(captions, level="word")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 6, 16)).astype("float32")
    valid = np.array([6, 4, 5, 3], np.int32)
    indices, ids = encode_captions(vocab, [[text] for text in captions])
    dataset = caption_dataset(features, valid, indices, ids, batch_size=4).repeat()
    model = VideoCaptioner(vocab.size, embedding_dim=16, units=32, dropout=0.0, input_dropout=0.0)
    model.build_for(16)
    model.compile(keras.optimizers.Adam(0.01), loss=SequenceCrossentropy())
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return model, vocab, features, valid, captions, history


@pytest.fixture(scope="module")
def overfit():
    return overfit_captioner()


def test_captioner_overfits_a_few_clips_to_their_captions(overfit):
    model, vocab, features, valid, captions, history = overfit
    losses = history.history["loss"]
    assert losses[-1] < losses[0] / 5, losses
    tokens = model.generate(features, valid, beam_width=1, max_length=10)
    assert [t.decode() for t in vocab.decode(tokens).numpy()] == captions
    tokens = model.generate(features, valid, beam_width=3, max_length=10)
    assert [t.decode() for t in vocab.decode(tokens).numpy()] == captions


def test_the_encoder_also_learns_the_action_beside_the_captions():
    captions = ["a figure walks left", "a figure runs right", "someone jumps", "a figure walks"]
    labels = np.array([0, 1, 2, 0], np.int32)
    vocab = Vocabulary.from_texts(captions, level="word")
    features = np.random.default_rng(0).normal(size=(4, 6, 16)).astype("float32")
    valid = np.array([6, 4, 5, 3], np.int32)
    indices, ids = encode_captions(vocab, [[text] for text in captions])
    dataset = caption_dataset(features, valid, indices, ids, 4, labels=labels).repeat()
    _, targets = next(iter(dataset))
    assert targets["action"].numpy().tolist() == [0, 1, 2, 0]
    model = VideoCaptioner(vocab.size, embedding_dim=16, units=32, num_classes=3, dropout=0.0)
    model.build_for(16)
    model.compile(
        keras.optimizers.Adam(0.01),
        loss={
            "caption": SequenceCrossentropy(),
            "action": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
    )
    model.fit(dataset, epochs=2, steps_per_epoch=40, verbose=0)
    outputs = model((features, valid, ids_in(ids)), training=False)
    assert outputs["action"].numpy().argmax(-1).tolist() == [0, 1, 2, 0]
    # Frames after a clip's end (junk) leave its class logits alone.
    junk = features.copy()
    junk[3, 3:] = 9.0
    changed = model((junk, valid, ids_in(ids)), training=False)["action"]
    np.testing.assert_allclose(changed, outputs["action"], atol=1e-5)
    tokens = model.generate(features, valid, beam_width=1, max_length=10)
    assert [t.decode() for t in vocab.decode(tokens).numpy()] == captions


def ids_in(ids):
    """Teacher-forcing inputs (BOS ... without EOS) of caption ids, 0-padded."""
    width = max(len(row) for row in ids) - 1
    return np.stack([np.pad(row[:-1], (0, width - len(row) + 1)) for row in ids])


def test_beam_width_one_equals_greedy(overfit):
    model, _, features, valid, _, _ = overfit
    # Random features: not the training clips, so the search has choices to make.
    features = np.random.default_rng(1).normal(size=(5, 6, 16)).astype("float32")
    valid = np.array([6, 2, 5, 1, 3], np.int32)
    memory, mask = model.encode(features, valid, training=False)
    decoder = model.decoder
    args = (
        decoder_step_fn(decoder),
        decoder.initial_states(memory, mask),
        decoder.decoding_context(memory, mask),
        5,
        BOS_ID,
        EOS_ID,
        12,
    )
    greedy = greedy_decode(*args)
    beam = beam_search(*args, beam_width=1)
    np.testing.assert_array_equal(beam[0], greedy[0])
    np.testing.assert_array_equal(beam[1], greedy[1])
    assert len({tuple(row) for row in greedy[0].numpy()}) > 1  # the inputs were told apart


def test_frames_past_length_never_change_the_caption(overfit):
    model, _, features, valid, _, _ = overfit
    junk = features.copy()
    for row, count in enumerate(valid):
        junk[row, count:] = 100.0
    np.testing.assert_array_equal(
        model.generate(features, valid, max_length=10), model.generate(junk, valid, max_length=10)
    )


def test_captioner_saves_and_loads(overfit, tmp_path):
    model, _, features, valid, _, _ = overfit
    path = tmp_path / "captioner.keras"
    model.save(path)
    loaded = keras.saving.load_model(
        path, custom_objects={"SequenceCrossentropy": SequenceCrossentropy}
    )
    caption_in = tf.constant([[BOS_ID, 5, 6]] * 4)
    np.testing.assert_allclose(
        loaded((features, valid, caption_in)), model((features, valid, caption_in)), atol=1e-5
    )


# -- data ---------------------------------------------------------------------------------
def test_caption_table_groups_captions_per_video_and_splits_whole_videos(tmp_path):
    toy_folder(tmp_path / "videos", per_class=5)
    table = captions_csv(tmp_path / "videos", tmp_path / "captions.csv", with_labels=False)
    captioned = read_caption_table(table, valid_fraction=0.2, test_fraction=0.2)
    counts = {split: len(captioned.source.clips(split)) for split in ("train", "valid", "test")}
    assert counts == {"train": 12, "valid": 4, "test": 4}
    assert captioned.source.labels == ["video"]
    for split in counts:
        for clip, refs in zip(
            captioned.source.clips(split), captioned.references(split), strict=True
        ):
            assert refs == CAPTIONS[clip.path.parent.name]
    assert "60 captions" in captioned.summary()
    again = read_caption_table(table, valid_fraction=0.2, test_fraction=0.2)
    assert again.source.clips("test") == captioned.source.clips("test")


def test_msvd_table_is_read_as_published(tmp_path):
    videos = tmp_path / "YouTubeClips"
    videos.mkdir()
    rng = np.random.default_rng(0)
    write_video(videos / "mv89psg6zh4_33_46.avi", toy_clip("grow", rng))
    write_video(videos / "ZbzDGXEwtGc_6_15.avi", toy_clip("shrink", rng))
    table = tmp_path / "MSR Video Description Corpus.csv"
    table.write_text(
        "VideoID,Start,End,WorkerID,Source,AnnotationTime,Language,Description\n"
        "mv89psg6zh4,33,46,1,clean,17,English,A bird is bathing in a sink.\n"
        "mv89psg6zh4,33,46,2,clean,20,German,Ein Vogel badet.\n"
        "mv89psg6zh4,33,46,3,clean,18,English,A bird splashes around.\n"
        "ZbzDGXEwtGc,6,15,4,clean,30,English,A man is riding a bike.\n"
    )
    captioned = read_caption_table(table, valid_fraction=0.0, test_fraction=0.0)
    clips = captioned.source.clips("train")
    assert sorted(clip.path.name for clip in clips) == [
        "ZbzDGXEwtGc_6_15.avi",
        "mv89psg6zh4_33_46.avi",
    ]
    bird = next(c for c in clips if c.path.name.startswith("mv89"))
    assert captioned.captions[bird.key] == [
        "A bird is bathing in a sink.",
        "A bird splashes around.",
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "video,caption\nmissing.avi,a man walks\n",
            r"captions\.csv:2: video .*missing\.avi not found",
        ),
        ("video,caption\nclip.avi,a man walks\nclip.avi,   \n", r"captions\.csv:3: empty caption"),
        # Rows are named by their lines, past blank lines and captions spanning lines.
        ("video,caption\n\nclip.avi,a man walks\nclip.avi,\n", r"captions\.csv:4: empty caption"),
        ('video,caption\nclip.avi,"a man\nwalks"\ngone.avi,hi\n', r"captions\.csv:4: video"),
        ("video,words\nclip.avi,a man walks\n", r"captions\.csv: no caption column"),
        ("clip,caption\nclip.avi,a man walks\n", r"captions\.csv: no video column"),
        ("video,caption,split\nclip.avi,a man walks,dev\n", r"captions\.csv:2: split 'dev'"),
        ("video,caption\n", r"captions\.csv: no captioned videos"),
    ],
)
def test_bad_caption_tables_are_refused_naming_file_and_row(tmp_path, body, message):
    write_video(tmp_path / "clip.avi", toy_clip("grow", np.random.default_rng(0)))
    table = tmp_path / "captions.csv"
    table.write_text(body)
    with pytest.raises(DataError, match=message):
        read_caption_table(table)


def test_embedded_clips_are_captioned_from_their_render_parameters(data_dir):
    config = config_lib.resolve(
        CaptionConfig, CaptionTask.presets, "tiny", overrides=["data.actions=[walk,punch]"]
    )
    captioned = load_captioned_source(None, config.data, progress=False)
    for split in ("train", "valid", "test"):
        for clip, refs in zip(
            captioned.source.clips(split), captioned.references(split), strict=True
        ):
            assert len(refs) == 3 and len(set(refs)) == 3
            assert all(names_action(text, clip.label) for text in refs), refs
