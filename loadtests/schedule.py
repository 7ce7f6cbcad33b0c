"""Arrival schedules: what rate to offer when, and the send times that follow from it.

A :class:`Schedule` is a list of :class:`Step` (a rate held for a duration). Three shapes build one:
:func:`steps` (fixed rates, with a discarded warm-up first), :func:`ramp` (rising rates, for finding the knee; the
run stops early when a bound is passed) and :func:`replay` (a daily QPS curve from a CSV, compressed in time).

:func:`arrivals` turns a schedule into send times, Poisson or evenly spaced, for one of ``shares`` generators that
together offer the full rate. The times depend only on the schedule and the seed, so a test can recompute them.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
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
    kind: Literal["steps", "ramp", "replay"] = "steps"

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

    def to_text(self) -> str:
        """A compact form for passing the schedule on a command line (to Locust workers): ``rate@seconds[w],...``."""
        return ",".join(f"{s.rate:g}@{s.duration_s:g}{'w' if s.warmup else ''}" for s in self.steps) + f";{self.kind}"

    @classmethod
    def from_text(cls, text: str) -> "Schedule":
        try:
            body, _, kind = text.partition(";")
            steps = []
            for i, item in enumerate(body.split(",")):
                rate, _, dur = item.partition("@")
                warm = dur.endswith("w")
                steps.append(Step(float(rate), float(dur.rstrip("w")), "warmup" if warm else f"step{i}", warm))
        except ValueError:
            raise LoadTestInputError(f"schedule {text!r}: expected rate@seconds[w],...") from None
        return cls(tuple(_renumber(steps)), kind or "steps")


def _renumber(steps: list[Step]) -> list[Step]:
    out, n = [], 0
    for s in steps:
        if s.warmup:
            out.append(Step(s.rate, s.duration_s, "warmup", True))
        else:
            out.append(Step(s.rate, s.duration_s, f"step{n:02d}@{s.rate:g}rps", False))
            n += 1
    return out


def steps(rates: list[float], duration_s: float, warmup_s: float = 0.0) -> Schedule:
    """Each rate held for ``duration_s``; a warm-up at the first rate comes first and is discarded."""
    if not rates:
        raise LoadTestInputError("give at least one rate")
    items = ([Step(rates[0], warmup_s, "warmup", True)] if warmup_s > 0 else []) + \
        [Step(float(r), duration_s, "", False) for r in rates]
    return Schedule(tuple(_renumber(items)), "steps")


def ramp(start: float, stop: float, factor: float, duration_s: float, warmup_s: float = 0.0) -> Schedule:
    """Rates ``start, start*factor, ...`` up to ``stop``, each for ``duration_s``: the knee search."""
    if not (all(math.isfinite(v) for v in (start, stop, factor)) and start > 0 and stop >= start and factor > 1):
        raise LoadTestInputError(f"ramp {start}..{stop} x{factor}: need 0 < start <= stop and factor > 1")
    rates, r = [], float(start)
    while r <= stop * (1 + 1e-9):
        rates.append(r)
        r *= factor
    if len(rates) > 200:
        raise LoadTestInputError(f"ramp {start}..{stop} x{factor} has {len(rates)} steps; use a larger factor")
    sched = steps(rates, duration_s, warmup_s)
    return Schedule(sched.steps, "ramp")


def replay(path: Path | str, seconds_per_row: float, rate_scale: float = 1.0, max_rows: int = 10_000) -> Schedule:
    """A QPS curve from a CSV with a ``qps`` column (one row per interval, e.g. per minute of a day), each row
    replayed for ``seconds_per_row`` at ``qps * rate_scale``. Rows at zero QPS are held at 0.1 req/s so the curve's
    shape survives without an idle generator."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except OSError as exc:
        raise LoadTestInputError(f"{path}: cannot read: {exc.strerror}") from None
    if not rows or "qps" not in rows[0]:
        raise LoadTestInputError(f"{path}: expected a CSV with a 'qps' column")
    if len(rows) > max_rows:
        raise LoadTestInputError(f"{path}: {len(rows)} rows, more than {max_rows}")
    rates = []
    for i, row in enumerate(rows, start=2):
        try:
            q = float(row["qps"])
        except (TypeError, ValueError):
            raise LoadTestInputError(f"{path}: line {i}: qps {row['qps']!r} is not a number") from None
        if not math.isfinite(q) or q < 0:
            raise LoadTestInputError(f"{path}: line {i}: qps {q} must be >= 0")
        rates.append(max(q * rate_scale, 0.1))
    sched = steps(rates, seconds_per_row)
    return Schedule(sched.steps, "replay")


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
