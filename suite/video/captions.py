"""A caption grammar for rendered clips: varied English from a manifest row's render parameters.

Every caption names the action (`ACTION_WORDS`) and the direction of motion relative to the
camera (`DIRECTION_WORDS`); most also say the figure's colours (never for greyscale clips),
the speed when it is clearly slow or fast, and the viewpoint from the camera pitch.
Captions are lower case with commas as the only punctuation.

    >>> row = {"label": "run", "direction": "left", "speed": 1.4, "pitch": -40,
    ...        "upper_color": "red", "lower_color": "blue", "greyscale": False,
    ...        "clip_id": "run_0001_x"}
    >>> captions_for(row, count=3)  # doctest: +NORMALIZE_WHITESPACE
    ['a video of someone wearing red on top and blue below running quickly to the left',
     'an animated figure runs along to the left',
     'a person runs at high speed from right to left, seen from above']
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

# Phrases that name each action, and no other: `actions_named` matches them longest first,
# so "spinning kick" names spinkick although it contains "kick".
ACTION_WORDS: dict[str, list[str]] = {
    "walk": ["walk", "walks", "walking", "strolls", "strolling"],
    "run": ["run", "runs", "running", "jogs", "jogging"],
    "jump": ["jump", "jumps", "jumping", "leaps", "leaping"],
    "backflip": ["backflip", "flips over backwards", "flipping over backwards"],
    "cartwheel": ["cartwheel", "cartwheels", "cartwheeling"],
    "crawl": ["crawl", "crawls", "crawling", "creeps", "creeping"],
    "dance_a": ["arms in the air", "arms overhead", "arm-waving dance"],
    "dance_b": ["bouncy dance", "grooves", "grooving", "with a bounce"],
    "getup_facedown": ["face down", "on the stomach"],
    "getup_faceup": ["face up", "on the back"],
    "kick": ["kick", "kicks", "kicking"],
    "punch": ["punch", "punches", "punching"],
    "roll": ["forward roll", "rolls over", "rolling over", "into a roll"],
    "spin": ["spins around", "spinning around", "twirls", "twirling", "pirouette"],
    "spinkick": ["spinning kick", "spin kick", "roundhouse kick"],
}

# (third person, gerund) phrasings of each action; each contains one of its ACTION_WORDS.
ACTION_PHRASES: dict[str, list[tuple[str, str]]] = {
    "walk": [("walks", "walking"), ("strolls", "strolling"), ("walks along", "walking along")],
    "run": [("runs", "running"), ("jogs", "jogging"), ("runs along", "running along")],
    "jump": [("jumps", "jumping"), ("leaps", "leaping"), ("does a long jump", "doing a long jump")],
    "backflip": [
        ("does a backflip", "doing a backflip"),
        ("performs a backflip", "performing a backflip"),
        ("flips over backwards", "flipping over backwards"),
    ],
    "cartwheel": [
        ("does a cartwheel", "doing a cartwheel"),
        ("turns a cartwheel", "turning a cartwheel"),
        ("cartwheels", "cartwheeling"),
    ],
    "crawl": [
        ("crawls", "crawling"),
        ("crawls on all fours", "crawling on all fours"),
        ("creeps along on hands and knees", "creeping along on hands and knees"),
    ],
    "dance_a": [
        ("dances with arms in the air", "dancing with arms in the air"),
        ("waves arms overhead while dancing", "waving arms overhead while dancing"),
        ("does an arm-waving dance", "doing an arm-waving dance"),
    ],
    "dance_b": [
        ("does a bouncy dance", "doing a bouncy dance"),
        ("grooves to the music", "grooving to the music"),
        ("dances with a bounce", "dancing with a bounce"),
    ],
    "getup_facedown": [
        ("gets up from lying face down", "getting up from lying face down"),
        ("pushes up from lying on the stomach", "pushing up from lying on the stomach"),
        ("rises from lying face down", "rising from lying face down"),
    ],
    "getup_faceup": [
        ("gets up from lying face up", "getting up from lying face up"),
        ("gets up from lying on the back", "getting up from lying on the back"),
        ("rises from lying face up", "rising from lying face up"),
    ],
    "kick": [
        ("kicks", "kicking"),
        ("throws a kick", "throwing a kick"),
        ("kicks out with one leg", "kicking out with one leg"),
    ],
    "punch": [
        ("punches", "punching"),
        ("throws a punch", "throwing a punch"),
        ("throws punches", "throwing punches"),
    ],
    "roll": [
        ("does a forward roll", "doing a forward roll"),
        ("rolls over on the ground", "rolling over on the ground"),
        ("tumbles into a roll", "tumbling into a roll"),
    ],
    "spin": [
        ("spins around", "spinning around"),
        ("twirls", "twirling"),
        ("turns a pirouette", "turning a pirouette"),
    ],
    "spinkick": [
        ("does a spinning kick", "doing a spinning kick"),
        ("does a spin kick", "doing a spin kick"),
        ("throws a roundhouse kick", "throwing a roundhouse kick"),
    ],
}

# Phrases that name each direction of motion (the manifest's `direction` column).
DIRECTION_WORDS: dict[str, list[str]] = {
    "towards": [
        "towards the camera",
        "toward the camera",
        "towards the viewer",
        "closer to the camera",
    ],
    "away": ["away from the camera", "away from the viewer", "into the distance"],
    "left": ["to the left", "from right to left", "leftwards"],
    "right": ["to the right", "from left to right", "rightwards"],
    "in_place": ["in place", "on the spot", "in one spot"],
}
_DIRECTION_PHRASES = {
    "towards": [
        "towards the camera",
        "toward the camera",
        "towards the viewer",
        "coming towards the camera",
        "moving closer to the camera",
    ],
    "away": [
        "away from the camera",
        "away from the viewer",
        "moving away from the camera",
        "into the distance",
    ],
    "left": ["to the left", "from right to left", "leftwards", "moving to the left"],
    "right": ["to the right", "from left to right", "rightwards", "moving to the right"],
    "in_place": ["in place", "on the spot", "staying in one spot", "staying on the spot"],
}
SPEED_WORDS = {
    "slow": ["slowly", "at a slow pace", "in slow motion"],
    "fast": ["quickly", "fast", "at high speed", "rapidly"],
}
VIEWPOINT_WORDS = {
    "above": ["seen from above", "viewed from high above", "filmed from overhead"],
    "side": ["seen from the side", "at eye level", "filmed at eye level"],
    "low": ["seen from a low angle", "filmed from below", "from a low camera angle"],
}
_SUBJECTS = ["a person", "a figure", "someone", "a humanoid figure", "an animated figure"]


def speed_category(speed: float) -> str:
    """`slow`, `normal` or `fast` from the playback speed factor."""
    if speed < 0.85:
        return "slow"
    if speed > 1.2:
        return "fast"
    return "normal"


def viewpoint_of(pitch: float) -> str:
    """`above`, `side` or `low` from the camera pitch in degrees (negative looks down)."""
    if pitch <= -30.0:
        return "above"
    if pitch >= 0.0:
        return "low"
    return "side"


def _subject(rng: random.Random, upper: str, lower: str) -> str:
    if upper == lower:
        forms = [
            f"a person in {upper}",
            f"a figure dressed in {upper}",
            f"a {upper} figure",
            f"someone dressed all in {upper}",
        ]
    else:
        forms = [
            f"a person in a {upper} top and {lower} trousers",
            f"a figure with a {upper} top and {lower} legs",
            f"a {upper} and {lower} figure",
            f"someone wearing {upper} on top and {lower} below",
        ]
    return rng.choice(forms)


def caption(row: Mapping, rng: random.Random) -> str:
    """One caption of a manifest row, choices drawn from `rng`."""
    label = str(row["label"])
    if label not in ACTION_PHRASES:
        raise ValueError(f"no caption grammar for action {label!r}")
    direction = str(row["direction"])
    if direction not in _DIRECTION_PHRASES:
        raise ValueError(f"unknown direction {direction!r}; have {sorted(_DIRECTION_PHRASES)}")
    greyscale = _bool(row.get("greyscale", False))
    verb, gerund = rng.choice(ACTION_PHRASES[label])
    if not greyscale and rng.random() < 0.75:
        subject = _subject(rng, str(row["upper_color"]), str(row["lower_color"]))
    else:
        subject = rng.choice(_SUBJECTS)
    where = rng.choice(_DIRECTION_PHRASES[direction])
    speed = speed_category(float(row.get("speed", 1.0)))
    pace = (
        f" {rng.choice(SPEED_WORDS[speed])}" if speed in SPEED_WORDS and rng.random() < 0.6 else ""
    )
    if pace:
        # "runs quickly moving to the left" says moving twice.
        where = where.removeprefix("moving ").removeprefix("coming ")
    view = rng.choice(VIEWPOINT_WORDS[viewpoint_of(float(row.get("pitch", -15.0)))])
    show_view = rng.random() < 0.5
    tail = f", {view}" if show_view else ""
    form = rng.randrange(5)
    if form == 0:
        text = f"{subject} {verb}{pace} {where}{tail}"
    elif form == 1:
        text = f"{subject} is {gerund}{pace} {where}{tail}"
    elif form == 2:
        lead = f"{view}, " if show_view else ""
        text = f"{lead}{subject} {verb}{pace} {where}"
    elif form == 3:
        text = f"a video of {subject} {gerund}{pace} {where}{tail}"
    else:
        text = f"{subject} {verb} {where}{pace}{tail}"
    if greyscale and rng.random() < 0.5:
        text += rng.choice([" in black and white", ", in black and white"])
    return " ".join(text.split())


def captions_for(row: Mapping, count: int = 5, seed: int = 0) -> list[str]:
    """`count` distinct reference captions of one clip (fewer only if the grammar runs out).

    The same row and seed always give the same captions.
    """
    rng = random.Random(f"{seed}:{row.get('clip_id', '')}:{row['label']}:{row['direction']}")
    found: list[str] = []
    for _ in range(50 * count):
        text = caption(row, rng)
        if text not in found:
            found.append(text)
            if len(found) == count:
                break
    return found


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _phrase_pattern(words: dict[str, list[str]]):
    pairs = sorted(
        ((phrase, key) for key, phrases in words.items() for phrase in phrases),
        key=lambda pair: -len(pair[0]),
    )
    return [(re.compile(rf"(?<![\w-]){re.escape(p)}(?![\w-])"), key) for p, key in pairs]


_ACTION_PATTERNS = _phrase_pattern(ACTION_WORDS)
_DIRECTION_PATTERNS = _phrase_pattern(DIRECTION_WORDS)


def _named(text: str, patterns) -> list[str]:
    taken = [False] * len(text)
    found = []
    for pattern, key in patterns:
        for match in pattern.finditer(text):
            if not any(taken[match.start() : match.end()]):
                taken[match.start() : match.end()] = [True] * (match.end() - match.start())
                if key not in found:
                    found.append(key)
    return found


def actions_named(text: str) -> list[str]:
    """The actions a caption names (longest phrases first, so none counts twice)."""
    return _named(text.lower(), _ACTION_PATTERNS)


def names_action(text: str, label: str) -> bool:
    """Whether a caption names action `label` and no other: the captioning metric."""
    return actions_named(text) == [label]


def directions_named(text: str) -> list[str]:
    """The directions of motion a caption names."""
    return _named(text.lower(), _DIRECTION_PATTERNS)
