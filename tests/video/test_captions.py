"""The caption grammar: varied references that name the right action and direction."""

import itertools
import re

from suite.video import captions
from suite.video.corpus import ACTIONS, DIRECTIONS, PALETTE


def _row(**changes):
    row = {
        "clip_id": "walk_0000_abc",
        "label": "walk",
        "direction": "left",
        "speed": 1.0,
        "pitch": -15.0,
        "upper_color": "red",
        "lower_color": "blue",
        "greyscale": False,
    }
    row.update(changes)
    return row


def test_every_action_has_its_own_words():
    assert set(captions.ACTION_WORDS) == set(ACTIONS) == set(captions.ACTION_PHRASES)
    phrases = [p for words in captions.ACTION_WORDS.values() for p in words]
    assert len(phrases) == len(set(phrases))
    assert set(captions.DIRECTION_WORDS) == set(DIRECTIONS)


def test_references_are_varied_and_name_the_action_and_direction():
    for label, direction, greyscale in itertools.product(ACTIONS, DIRECTIONS, (False, True)):
        row = _row(label=label, direction=direction, greyscale=greyscale, clip_id=f"{label}_1")
        references = captions.captions_for(row, count=5)
        assert len(references) == 5 == len(set(references)), references
        for text in references:
            assert text == text.lower() and re.fullmatch(r"[a-z ,\-]+", text), text
            assert captions.actions_named(text) == [label], text
            assert captions.names_action(text, label)
            assert captions.directions_named(text) == [direction], text
            if greyscale:
                assert not {"red", "blue"} & set(text.replace(",", "").split()), text


def test_colours_speed_and_viewpoint_come_from_the_row():
    many = captions.captions_for(_row(speed=1.4, pitch=-45.0), count=20)
    words = " ".join(many)
    assert "red" in words and "blue" in words
    assert any(w in words for w in captions.SPEED_WORDS["fast"])
    assert any(w in words for w in captions.VIEWPOINT_WORDS["above"])
    assert not any(w in words for w in captions.SPEED_WORDS["slow"])
    assert not any(w in words for w in captions.VIEWPOINT_WORDS["low"])
    normal = " ".join(captions.captions_for(_row(speed=1.0, pitch=5.0), count=20))
    assert not any(w in normal for group in captions.SPEED_WORDS.values() for w in group)
    assert any(w in normal for w in captions.VIEWPOINT_WORDS["low"])
    same = " ".join(captions.captions_for(_row(upper_color="green", lower_color="green"), count=20))
    assert "green" in same and "top" not in same


def test_reads_manifest_strings():
    raw = _row(speed="0.7", pitch="-10.0", greyscale="false", label="spinkick", direction="away")
    for text in captions.captions_for(raw):
        assert captions.names_action(text, "spinkick") and not captions.names_action(text, "kick")


def test_captions_are_seeded():
    row = _row()
    assert captions.captions_for(row, seed=1) == captions.captions_for(row, seed=1)
    assert captions.captions_for(row, seed=1) != captions.captions_for(row, seed=2)


def test_action_check_catches_wrong_captions():
    assert captions.actions_named("a person does a spinning kick") == ["spinkick"]
    assert captions.actions_named("a person kicks and then runs") == ["kick", "run"]
    assert not captions.names_action("a person kicks and then runs", "kick")
    assert captions.actions_named("a figure stands still") == []
    assert captions.speed_category(0.7) == "slow" and captions.viewpoint_of(-40) == "above"
    assert set(PALETTE) >= {"red", "blue", "green"}
