"""Repeat-and-median timing, interleaved so that load from other jobs hits every contender.

A `Timer` wraps one step (a training step, a batch of features, a pass over sentences).
`warm_up` runs it untimed (tracing, compilation, caches) and picks how many steps make one
repeat last at least `min_time`. `interleave` then runs one untimed round of every timer
(a TensorFlow graph runs slower once after other graphs were built or traced since its
last run) and times the repeats of all timers in turn, rotating who goes first.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timer:
    name: str
    step: Callable[[], object]
    steps: int = 1
    warmup_s: float = 0.0
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def warm_up(self, warmup: int, min_time: float) -> None:
        """Runs `warmup` untimed steps (at least one) and sizes a repeat from one more."""
        start = time.perf_counter()
        for _ in range(max(1, warmup)):
            self.step()
        first = time.perf_counter()
        self.step()
        one = time.perf_counter() - first
        self.steps = max(1, math.ceil(min_time / max(one, 1e-9)))
        self.warmup_s = time.perf_counter() - start

    def run_untimed(self) -> None:
        for _ in range(self.steps):
            self.step()

    def repeat(self) -> None:
        """One timed repeat: `steps` steps; stores seconds per step (wall and CPU)."""
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(self.steps):
            self.step()
        self.wall.append((time.perf_counter() - wall) / self.steps)
        self.cpu.append((time.process_time() - cpu) / self.steps)

    def summary(self) -> dict:
        """Medians and quartiles of seconds per step, by the wall clock and in CPU time.

        CPU time counts every thread of the process and nothing else, so for a one-thread
        contender it is the time the step takes on a core of its own, whatever else the
        machine is running; `cpu_util` (CPU seconds per wall second) shows how much of the
        machine the process actually got.
        """
        wall, cpu = _quartiles(self.wall), _quartiles(self.cpu)
        return {
            "median_s": wall[1],
            "p25_s": wall[0],
            "p75_s": wall[2],
            "cpu_median_s": cpu[1],
            "cpu_p25_s": cpu[0],
            "cpu_p75_s": cpu[2],
            "repeats": len(self.wall),
            "steps_per_repeat": self.steps,
            "warmup_s": round(self.warmup_s, 3),
            "cpu_util": round(cpu[1] / wall[1], 2) if wall[1] else None,
            "wall_s": self.wall,
            "cpu_s": self.cpu,
        }


def _quartiles(values: list[float]) -> list[float]:
    median = statistics.median(values)
    if len(values) < 2:
        return [median] * 3
    low, _, high = statistics.quantiles(values, n=4)
    return [low, median, high]


def interleave(timers: list[Timer], repeats: int) -> None:
    """Times `repeats` repeats of every timer, taking turns; the first to go rotates.

    One untimed round of every timer comes first. The garbage collector is emptied before
    and paused while timing (as `timeit` does): tracing leaves many Python objects behind,
    and a collection inside a repeat is noise.
    """
    gc.collect()
    gc.disable()
    try:
        for timer in timers:
            timer.run_untimed()
        for index in range(repeats):
            shift = index % len(timers)
            for timer in timers[shift:] + timers[:shift]:
                timer.repeat()
    finally:
        gc.enable()
