"""The two benchmark profiles: `quick` (≤ 5 minutes on 2 cores) and `full`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackboneCase:
    """One training-step shape: `[batch, time, features]` into `layers` recurrent layers."""

    cell: str
    units: int
    time: int
    batch: int = 32
    features: int | None = None  # input width; None: same as units
    layers: int = 1
    bidirectional: bool = False

    @property
    def input_width(self) -> int:
        return self.features or self.units

    @property
    def label(self) -> str:
        shape = f"{self.units}u T{self.time} B{self.batch}"
        if self.layers > 1 or self.bidirectional:
            shape = f"{self.layers}×{'bi' if self.bidirectional else ''}{shape}"
        return shape


# `rnnsuite_masked` (the backbone behind a Masking layer, as the domains call it) runs in
# `full` only, to keep `quick` within its five minutes.
ALL_KERAS_VARIANTS = ("rnnsuite", "rnnsuite_masked", "keras", "rnnsuite_xla", "keras_xla")


@dataclass(frozen=True)
class Profile:
    name: str
    seed: int = 1234
    repeats: int = 5
    warmup: int = 1
    # Each timed repeat runs enough steps to last at least this long.
    min_time: float = 0.25
    backbone: tuple[BackboneCase, ...] = ()
    # Thread settings the backbones are timed at (0: every usable core). One thread is
    # the steadier number on a shared machine; all cores is what a user gets by default.
    backbone_threads: tuple[int, ...] = (1,)
    # Keras variants timed on every case (torch runs in its own process).
    keras_variants: tuple[str, ...] = ("rnnsuite", "keras", "rnnsuite_xla", "keras_xla")
    # Speech features: utterances of this length, a batch of this many.
    utterance_seconds: float = 3.0
    feature_batch: int = 16
    feature_threads: tuple[int, ...] = (1,)  # 0: all cores (the libraries' default)
    # Inference of exports.
    translation_preset: str = "tiny"
    translation_epochs: int = 2
    translation_beams: tuple[int, ...] = (1, 4)
    translation_sentences: int = 32
    speech_preset: str = "small"
    speech_train_steps: int = 1
    speech_decoders: tuple[str, ...] = ("greedy",)
    speech_utterances: int = 8
    video_clips: int = 8
    # End to end against the published Keras examples (bench.reference): clips whose
    # features each side computes per timed repeat (the example's are one frame a call).
    reference_clips: int = 1
    # The speech training steps' batch (the example's is 32) and utterance length. The
    # example's step is slow on a CPU (~15 s per 3 s utterance on one thread): 0 skips it.
    reference_utterances: int = 0
    reference_seconds: float = 3.0
    serve_threads: tuple[int, ...] = (1,)
    # Quality (bench.quality): the preset every domain trains with under its own time
    # budget; "" skips the section (hours on 2 cores with `small`).
    quality_preset: str = ""
    quality_domains: tuple[str, ...] = ("speech", "action", "caption", "translation")
    batch_sizes: dict = field(default_factory=lambda: {"translation": 32, "speech": 8, "video": 8})


def _grid(cells, shapes, **extra):
    return tuple(
        BackboneCase(cell, units, time, **extra) for cell in cells for units, time in shapes
    )


PROFILES = {
    "quick": Profile(
        name="quick",
        backbone=_grid(("rnn", "lstm", "gru"), [(128, 50)]),
    ),
    "full": Profile(
        name="full",
        repeats=7,
        warmup=2,
        min_time=0.5,
        backbone_threads=(1, 0),
        keras_variants=ALL_KERAS_VARIANTS,
        backbone=(
            *_grid(("rnn", "lstm", "gru"), [(64, 50), (128, 50), (256, 50), (256, 200), (512, 50)]),
            # A large batch amortises the per-time-step overhead (see bench/README.md).
            *_grid(("lstm", "gru"), [(128, 50)], batch=256),
            *_grid(("lstm", "gru"), [(128, 100)], layers=2, bidirectional=True),
        ),
        feature_batch=32,
        feature_threads=(1, 0),
        translation_preset="small",
        translation_epochs=4,
        translation_sentences=64,
        speech_train_steps=3,
        speech_decoders=("greedy", "beam", "lm"),
        speech_utterances=16,
        serve_threads=(1, 0),
        video_clips=16,
        reference_clips=2,
        reference_utterances=2,
        quality_preset="small",
        batch_sizes={"translation": 64, "speech": 16, "video": 16},
    ),
    # Runs every code path of `full` on small shapes in a few minutes: its numbers mean
    # nothing; it exists to check the suite itself.
    "smoke": Profile(
        name="smoke",
        min_time=0.02,
        backbone=(
            BackboneCase("lstm", 16, 5, batch=4),
            BackboneCase("gru", 16, 5, batch=4, layers=2, bidirectional=True),
        ),
        backbone_threads=(1, 0),
        keras_variants=ALL_KERAS_VARIANTS,
        feature_batch=4,
        feature_threads=(1, 0),
        translation_epochs=1,
        translation_sentences=8,
        speech_preset="tiny",
        speech_decoders=("greedy", "beam", "lm"),
        speech_utterances=2,
        serve_threads=(1, 0),
        video_clips=2,
        reference_clips=1,
        reference_utterances=1,
        reference_seconds=0.5,
        quality_preset="tiny",
        batch_sizes={"translation": 4, "speech": 2, "video": 2},
    ),
}
