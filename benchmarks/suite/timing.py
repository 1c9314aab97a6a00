"""Interleaved timing: every case once per round, warm-up rounds first, medians of the rest.

Running the cases round by round (rather than all repeats of one case, then the next) means a
change in the machine's load, frequent on a shared machine, hits every case of a table alike,
so ratios measured in the same call stay meaningful even when absolute times drift. On GPU each
call is timed with CUDA events between synchronisations (``measure.time_call``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from studybench.engine.measure import time_call


@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")


def time_interleaved(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    done: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Seconds per call of each step: ``warmup`` untimed rounds, then ``repeats`` timed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    timings = {name: Timing([]) for name in steps}
    for round_ in range(warmup + repeats):
        for name, step in steps.items():
            seconds = time_call(step, device)
            if round_ >= warmup:
                timings[name].samples.append(seconds)
            if done:
                done(name)
    return timings
