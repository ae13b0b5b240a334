"""The rendered motion-capture corpus: poses, views, splits, caching, manifests."""

from dataclasses import replace

import numpy as np
import pytest

from shared.errors import DataError
from suite.video import corpus
from suite.video.frames import read_video

pytest.importorskip("pybullet")


def _plain(params, **changes):
    """A clip with nothing random between the figure and the test: red figure, white world."""
    settings = dict(
        width=48,
        height=48,
        num_frames=4,
        fps=8,
        speed=1.5,
        upper_color="red",
        lower_color="red",
        floor="plain",
        floor_detail="white",
        background="plain",
        background_detail="white",
        clutter_objects=0,
        brightness=0.0,
        contrast=1.0,
        saturation=1.0,
        hue_shift=0.0,
        greyscale=False,
        mirrored=False,
    )
    return replace(params, **{**settings, **changes})


def test_the_fifteen_motions_ship_with_pybullet():
    for label in corpus.ACTIONS:
        motion = corpus.load_motion(label)
        assert motion.frames.shape[1] == 44 and motion.cycle_time > 0.5
    assert corpus.load_motion("walk").loop and not corpus.load_motion("getup_faceup").loop
    with pytest.raises(DataError, match="unknown action 'swim'"):
        corpus.motion_path("swim")


def test_poses_follow_deepmimic_playback():
    motion = corpus.load_motion("walk")
    first = motion.frames[0]
    position, orientation, joints = motion.pose(0.0)
    np.testing.assert_allclose(position, first[1:4])
    np.testing.assert_allclose(orientation, [first[5], first[6], first[7], first[4]], atol=1e-6)
    assert [len(joint) for joint in joints] == [4, 4, 4, 1, 4, 4, 1, 4, 1, 4, 4, 1]
    assert joints[3] == [first[20]]  # the right knee is one angle
    # A looping clip carries on from where the last cycle ended.
    later = motion.pose(motion.cycle_time + 1e-9)[0]
    np.testing.assert_allclose(later, first[1:4] + motion.cycle_offset, atol=1e-6)
    # A one-shot clip holds its last frame.
    getup = corpus.load_motion("getup_faceup")
    np.testing.assert_allclose(getup.pose(100.0)[0], getup.frames[-1, 1:4])


def test_each_action_renders_a_visible_moving_figure():
    # One loop rather than 15 parametrized tests: each test pays the Keras-reset teardown.
    for label in corpus.ACTIONS:
        params = _plain(corpus.sample_params(label, "train", 0, seed=3))
        clip = corpus.render_clip(params)
        assert clip.frames.shape == (4, 48, 48, 3) and clip.frames.dtype == np.uint8
        assert clip.figure_mask.shape == (4, 48, 48)
        # The figure is in every frame, and it is the red thing in a white world.
        pixels = clip.figure_mask.sum(axis=(1, 2))
        assert (pixels >= 10).all(), (label, pixels)
        figure = clip.frames[clip.figure_mask].astype(int)
        world = clip.frames[~clip.figure_mask].astype(int)
        assert figure[:, 0].mean() - figure[:, 1].mean() > 40, label
        assert abs(world[:, 0].mean() - world[:, 1].mean()) < 10, label
        # It moves: the silhouette changes between the first and the last frame.
        changed = (clip.figure_mask[0] != clip.figure_mask[-1]).sum()
        assert changed > 0.2 * pixels.min(), (label, changed, pixels)
        assert clip.row["direction"] in corpus.DIRECTIONS
        assert 0 < clip.row["figure_fraction"] < 0.5, label


def test_mirroring_flips_frames_and_direction():
    params = _plain(corpus.sample_params("run", "train", 0), yaw=0.0)
    straight = corpus.render_clip(params)
    mirrored = corpus.render_clip(replace(params, mirrored=True))
    np.testing.assert_array_equal(mirrored.frames, straight.frames[:, :, ::-1])
    np.testing.assert_array_equal(mirrored.figure_mask, straight.figure_mask[:, :, ::-1])
    assert {straight.row["direction"], mirrored.row["direction"]} == {"left", "right"}


def test_the_camera_backs_off_to_keep_the_figure_in_view():
    # A close, fixed camera cannot keep a run in view: it moves back, under the same clip id.
    params = _plain(corpus.sample_params("run", "train", 0), distance=1.5, follow=0.0, pitch=0.0)
    clip = corpus.render_clip(params)
    assert clip.row["distance"] > params.distance
    assert clip.row["clip_id"] == params.clip_id
    assert clip.figure_mask.sum(axis=(1, 2)).min() >= 10


def test_direction_of_motion_relative_to_the_camera():
    # The run heads along +x: seen from yaw 0 it crosses the picture, from yaw 90 it leaves.
    run = corpus.sample_params("run", "train", 0)
    expected = {0.0: "left", 90.0: "away", 180.0: "right", 270.0: "towards"}
    for yaw, direction in expected.items():
        assert corpus.direction_of_motion(replace(run, yaw=yaw, mirrored=False))[0] == direction
    assert corpus.direction_of_motion(replace(run, yaw=0.0, mirrored=True))[0] == "right"
    still = corpus.sample_params("getup_facedown", "train", 0)
    direction, metres = corpus.direction_of_motion(replace(still, speed=0.6, phase=0.0))
    assert direction == "in_place" and metres < corpus.IN_PLACE_METRES


def test_test_views_never_occur_in_training():
    yaws = {split: [] for split in corpus.SPLITS}
    for split in corpus.SPLITS:
        for label in corpus.ACTIONS:
            for index in range(12):
                params = corpus.sample_params(label, split, index, seed=5)
                assert corpus.yaw_split(params.yaw) == split
                yaws[split].append(params.yaw)
    offsets = {s: (np.array(v) + 45.0) % 90.0 - 45.0 for s, v in yaws.items()}
    for held_out in ("valid", "test"):
        gaps = np.abs(offsets["train"][:, None] - offsets[held_out][None, :])
        assert gaps.min() >= 1.0, held_out
    assert np.abs(offsets["valid"][:, None] - offsets["test"][None, :]).min() >= 1.0
    # Every action is seen from all four quadrants of the held-out views.
    for label in corpus.ACTIONS:
        quadrants = {int(corpus.sample_params(label, "test", i).yaw // 90) for i in range(4)}
        assert quadrants == {0, 1, 2, 3}


def test_sampling_is_seeded():
    a = corpus.sample_params("kick", "valid", 2, seed=1)
    assert a == corpus.sample_params("kick", "valid", 2, seed=1)
    assert a != corpus.sample_params("kick", "valid", 2, seed=2)
    assert a.clip_id != corpus.sample_params("kick", "valid", 2, seed=2).clip_id


def test_written_video_reads_back(tmp_path):
    clip = corpus.render_clip(_plain(corpus.sample_params("walk", "train", 1), num_frames=6))
    path = tmp_path / "walk.mp4"
    corpus.write_video(path, clip.frames, fps=10)
    frames = read_video(path)
    assert frames.shape == (6, 48, 48, 3)
    assert np.abs(frames.astype(int) - clip.frames).mean() < 12  # lossy, but the same picture


@pytest.mark.slow
def test_tiny_corpus_generates_is_cached_and_reads_back(data_dir, monkeypatch):
    settings = dict(
        clips_per_action={"train": 2, "valid": 1, "test": 1},
        seed=4,
        num_frames=5,
        size=48,
        actions=("walk", "spin"),
        progress=False,
    )
    manifests = corpus.prepare_corpus(workers=2, **settings)
    assert set(manifests) == set(corpus.SPLITS)
    assert manifests["train"] == data_dir / "video" / "mocap" / "train" / "manifest.csv"
    rows = {split: corpus.read_manifest(path) for split, path in manifests.items()}
    assert [len(rows[s]) for s in corpus.SPLITS] == [4, 2, 2]
    for split, split_rows in rows.items():
        for row in split_rows:
            assert set(corpus.MANIFEST_FIELDS) <= set(row)
            assert row["split"] == split and row["label"] in ("walk", "spin")
            assert corpus.yaw_split(row["yaw"]) == split
            assert isinstance(row["mirrored"], bool) and isinstance(row["fps"], int)
            assert row["upper_color"] in corpus.PALETTE
            assert row["direction"] in corpus.DIRECTIONS
            assert read_video(row["path"]).shape == (5, 48, 48, 3)
    before = {p: p.stat().st_mtime_ns for p in (data_dir / "video").rglob("*.mp4")}
    assert len(before) == 8

    # Same parameters: nothing is rendered again.
    def refuse(params):
        raise AssertionError(f"re-rendered {params.clip_id}")

    real = corpus.render_clip
    monkeypatch.setattr(corpus, "render_clip", refuse)
    again = corpus.prepare_corpus(workers=1, **settings)
    assert {s: corpus.read_manifest(p) for s, p in again.items()} == rows
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # An interrupted run resumes: only the clip without a sidecar is rendered.
    rendered = []
    monkeypatch.setattr(corpus, "render_clip", lambda p: rendered.append(p) or real(p))
    victim = rows["test"][0]["path"]
    victim.with_suffix(".json").unlink()
    corpus.prepare_corpus(workers=1, **settings)
    assert [p.clip_id for p in rendered] == [rows["test"][0]["clip_id"]]


def test_manifest_reader_names_the_file(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,label\nx.mp4,walk\n")
    with pytest.raises(DataError, match=r"manifest\.csv: missing columns"):
        corpus.read_manifest(path)
    with pytest.raises(DataError, match="nothing.csv"):
        corpus.read_manifest(tmp_path / "nothing.csv")
