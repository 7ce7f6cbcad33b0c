"""Arrival schedules: what rate to offer when, and the send times that follow from it.

A :class:`Schedule` is a list of :class:`Step` (a rate held for a duration); the load shapes
(:mod:`loadtests.shapes`) build one.

:func:`arrivals` turns a schedule into send times, Poisson or evenly spaced, for one of ``shares`` generators that
together offer the full rate. The times depend only on the schedule and the seed, so a test can recompute them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from loadtests.errors import LoadTestInputError

# Send times are computed up front (every generator's whole schedule in memory): this bounds a run's size.
MAX_SCHEDULED_REQUESTS = 20_000_000

Process = Literal["poisson", "constant"]


@dataclass(frozen=True)
class Step:
    """``rate`` requests per second offered for ``duration_s``; a warm-up step is run but not reported."""

    rate: float
    duration_s: float
    name: str
    warmup: bool = False


@dataclass(frozen=True)
class Schedule:
    steps: tuple[Step, ...]
    kind: str = "steps"  # the shape that built it, for the record

    def __post_init__(self):
        if not self.steps:
            raise LoadTestInputError("a schedule needs at least one step")
        for s in self.steps:
            if not (math.isfinite(s.rate) and s.rate > 0):
                raise LoadTestInputError(f"step {s.name}: rate {s.rate} must be a positive number of requests/s")
            if not (math.isfinite(s.duration_s) and s.duration_s > 0):
                raise LoadTestInputError(f"step {s.name}: duration {s.duration_s} must be > 0 s")
        total = sum(s.rate * s.duration_s for s in self.steps)
        if total > MAX_SCHEDULED_REQUESTS:
            raise LoadTestInputError(f"the schedule sends {total:,.0f} requests; one run sends at most "
                                     f"{MAX_SCHEDULED_REQUESTS:,} (shorten the steps or lower the rates)")

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.steps)

    def starts(self) -> list[float]:
        """Start time of each step, seconds from the schedule's start."""
        return list(np.cumsum([0.0] + [s.duration_s for s in self.steps[:-1]]))


def arrivals(schedule: Schedule, process: Process = "poisson", seed: int = 0, share: int = 1,
             index: int = 0) -> Iterator[tuple[float, int]]:
    """Send times (seconds from the start) and their step index, for generator ``index`` of ``share``.

    Each generator offers ``rate / share``. Poisson gaps are exponential at the step's rate; when the rate changes,
    the next gap is drawn at the new rate from the step boundary (memorylessness makes this exact). Constant arrivals
    are evenly spaced, generators offset by ``(index mod share) / share`` of a gap. ``index`` also keys the random
    stream, so distinct generators (say, worker * 1000 + user) draw distinct times.
    """
    if share < 1 or index < 0:
        raise LoadTestInputError(f"generator {index} of {share}: need share >= 1 and index >= 0")
    rng = np.random.default_rng([seed, index])
    t0 = 0.0
    for i, step in enumerate(schedule.steps):
        rate = step.rate / share
        end = t0 + step.duration_s
        if process == "poisson":
            t = t0 + rng.exponential(1.0 / rate)
            while t < end:
                yield t, i
                t += rng.exponential(1.0 / rate)
        else:
            gap = 1.0 / rate
            t = t0 + gap * ((index % share) / share)
            while t < end:
                yield t, i
                t += gap
        t0 = end
