"""Load shapes: what a stress run offers, and when it may stop early. One class per shape.

Each shape holds its own parameters (validated where it is built, so a bad one is refused before any load), turns
them into the steps the run reports (:meth:`LoadShape.plan`), names the Locust user that runs it, and, for a ramp,
judges each finished step against its bounds. Adding a shape is a class here and its member in :data:`Shape`; the
settings, the locustfile and the result writer only call the methods below.

- :class:`Steps`: fixed rates, each held for ``step_duration`` s, after a discarded warm-up at the first rate.
- :class:`Ramp`: rates ``start, start*factor, ...`` up to ``stop``: the knee search, stopped after the first step
  whose P99 or error share passes its bound.
- :class:`Replay`: a QPS curve (a day from a CSV) compressed in time, a row per ``seconds_per_row``.
- :class:`ClosedLoop`: ``users`` back-to-back senders for ``duration`` s, for the maximum throughput.
- :class:`Stable`: one rate in measurement windows until the last three windows' P99 agree (perf_analyzer's
  stability rule), at most ``max_trials`` windows; ``loadtests calibrate`` runs one per step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, NamedTuple, Union

from pydantic import ConfigDict, Field, model_validator

from gpufleet.cli import plural
from gpufleet.contracts.demand import read_demand_curve
from gpufleet.contracts.model import Strict
from loadtests.errors import LoadTestInputError
from loadtests.schedule import Schedule, Step

if TYPE_CHECKING:  # the recorder needs HdrHistogram (the loadtests extra); `loadtests --help` must not
    from hdrh.histogram import HdrHistogram

    from loadtests.recorder import StepStats

OPEN_LOOP_USER = "OpenLoopUser"
CLOSED_LOOP_USER = "ClosedLoopUser"
MAX_RAMP_STEPS = 200
MAX_REPLAY_ROWS = 10_000
# A replayed row at zero QPS is held at this rate, so the curve's shape survives without an idle generator.
REPLAY_FLOOR_RATE = 0.1
WARMUP_STEP = "warmup"
# perf_analyzer's stability rule, read at triton-inference-server/perf_analyzer@263c5f6e: a measurement is stable when
# the max/min ratio of its last `stability_window` (3, src/inference_profiler.cc, InferenceProfiler's constructor)
# windows' latencies is within 1 + stability_threshold (IsLatencyWindowStable); defaults in src/command_line_parser.h:
# measurement_window_ms 5000, stability_threshold 0.1, max_trials 10. perf_analyzer also asks the windows'
# throughputs to agree; an open-loop window's throughput is the Poisson count of our own arrivals, whose noise (about
# 1/sqrt(requests)) says nothing about the server, so only the P99s are compared here.
STABILITY_WINDOWS = 3
DEFAULT_WINDOW_S = 5.0
DEFAULT_STABILITY_PCT = 10.0
DEFAULT_MAX_TRIALS = 10


class PlannedStep(NamedTuple):
    """One step as the result reports it; ``rate`` is None in closed loop (the offered rate is the users')."""

    name: str
    start_s: float
    duration_s: float
    rate: float | None
    warmup: bool


def _schedule(rates: list[float], duration_s: float, warmup_s: float, kind: str) -> Schedule:
    """Each rate for ``duration_s``, after a warm-up at the first rate when ``warmup_s`` > 0."""
    if not rates:
        raise ValueError("give at least one rate")
    items = [Step(rates[0], warmup_s, WARMUP_STEP, True)] if warmup_s > 0 else []
    items += [Step(float(r), duration_s, f"step{n:02d}@{r:g}rps", False) for n, r in enumerate(rates)]
    try:
        return Schedule(tuple(items), kind)
    except LoadTestInputError as exc:
        raise ValueError(str(exc)) from None


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def _after_warmup(warmup_s: float) -> str:
    return f" after a {warmup_s:g} s warm-up" if warmup_s > 0 else ""


class LoadShape(Strict):
    model_config = ConfigDict(frozen=True)

    user_class: ClassVar[str] = OPEN_LOOP_USER

    @property
    def open_loop(self) -> bool:
        return self.user_class == OPEN_LOOP_USER

    def schedule(self) -> Schedule | None:
        """The open-loop arrival schedule (None for a closed loop)."""
        raise NotImplementedError

    def plan(self) -> list[PlannedStep]:
        sched = self.schedule()
        return [PlannedStep(s.name, start, s.duration_s, s.rate, s.warmup)
                for s, start in zip(sched.steps, sched.starts())]

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.plan())

    def locust_users(self, generators: int, workers: int) -> int:
        """Locust's ``-u``: open loop, the generators sharing the rate, at least one per worker."""
        return max(generators, workers)

    @property
    def stops_early(self) -> bool:
        return False

    def verdict(self, stats: StepStats, pending: HdrHistogram | None = None,
                earlier: list[StepStats] | tuple = ()) -> str | None:
        """Why the run stops after a finished step with these figures (``"<reason>: <detail>"``), or None.

        ``pending``: how long the step's still unanswered requests have waited so far (lower bounds of their
        latencies); ``earlier``: the figures of the steps before it, in order."""
        return None

    @property
    def measured_windows(self) -> int:
        """How many of the last steps run make one measurement, reported as one step (0: each step is its own)."""
        return 0

    def measurement_windows(self, ran: int, reason: str) -> int:
        """How many of the last ``ran`` steps make the measurement, once the run ended for ``reason``."""
        return self.measured_windows

    def judge_after_s(self) -> float:
        """How long after a step ends its verdict can be final (0: a shape that is never judged)."""
        return 0.0

    def describe(self) -> str:
        """What the shape offers, in words, for the run's banner."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _schedule_is_valid(self):
        if self.open_loop:
            self.schedule()  # a bad rate or duration, or a run too large, is refused here, before any load
        return self


class Steps(LoadShape):
    kind: Literal["steps"] = "steps"
    rates: list[float] = Field(min_length=1, description="Requests/s, each held for step_duration.")
    step_duration: float = Field(30.0, description="Seconds per step.")
    warmup: float = Field(10.0, ge=0, description="Seconds of discarded warm-up at the first rate.")

    def describe(self) -> str:
        return f"steps at {_rates(self.rates)} req/s, {self.step_duration:g} s each{_after_warmup(self.warmup)}"

    def schedule(self) -> Schedule:
        return _schedule(self.rates, self.step_duration, self.warmup, self.kind)


class Ramp(LoadShape):
    kind: Literal["ramp"] = "ramp"
    start: float
    stop: float
    factor: float
    step_duration: float = Field(30.0, description="Seconds per step.")
    warmup: float = Field(10.0, ge=0, description="Seconds of discarded warm-up at the first rate.")
    p99_bound_ms: float = Field(0.0, ge=0, description="Stop after the first step whose P99 exceeds this (0: none).")
    max_error_share: float = Field(0.01, ge=0, le=1, description="Stop after a step with a larger error share.")

    def describe(self) -> str:
        bounds = [f"P99 over {self.p99_bound_ms:g} ms"] if self.p99_bound_ms > 0 else []
        bounds += [f"an error share over {self.max_error_share:g}"] if self.max_error_share < 1.0 else []
        stop = f", stopped after the first step with {' or '.join(bounds)}" if bounds else ""
        return (f"ramp from {self.start:g} to {self.stop:g} req/s (x{self.factor:g} a step), {self.step_duration:g} s "
                f"each{_after_warmup(self.warmup)}{stop}")

    def rates(self) -> list[float]:
        if not (self.start > 0 and self.stop >= self.start and self.factor > 1):
            raise ValueError(f"ramp {self.start:g}..{self.stop:g} x{self.factor:g}: need 0 < start <= stop and "
                             f"factor > 1")
        rates, r = [], float(self.start)
        while r <= self.stop * (1 + 1e-9):
            rates.append(r)
            r *= self.factor
            if len(rates) > MAX_RAMP_STEPS:
                raise ValueError(f"ramp {self.start:g}..{self.stop:g} x{self.factor:g} has more than "
                                 f"{MAX_RAMP_STEPS} steps; use a larger factor")
        return rates

    def schedule(self) -> Schedule:
        return _schedule(self.rates(), self.step_duration, self.warmup, self.kind)

    @property
    def stops_early(self) -> bool:
        return self.p99_bound_ms > 0 or self.max_error_share < 1.0

    def judge_after_s(self) -> float:
        # Every request of the step was sent by its end: one bound later, each one over the bound has either
        # answered (and is recorded over it) or is still unanswered past it (and counted so), and each one under
        # it has answered. Judged then, the count over the bound is the step's own, whatever the server's speed.
        return self.p99_bound_ms / 1000.0

    def verdict(self, stats: StepStats, pending: HdrHistogram | None = None,
                earlier: list[StepStats] | tuple = ()) -> str | None:
        # A request still unanswered counts with its wait so far, a lower bound of its latency: the P99 so
        # computed is at most the step's own, so when it passes the bound the step's did.
        return _past_bounds(stats, pending, self.p99_bound_ms, self.max_error_share)


def _p99_with_pending(stats: StepStats, pending: HdrHistogram | None) -> tuple[float | None, int]:
    """The step's P99 (ms) counting each unanswered request at its wait so far (a lower bound of its latency, so the
    P99 so computed is at most the step's own), and how many were unanswered."""
    from loadtests.recorder import new_histogram  # the loadtests extra, needed only once a run judges a step

    latencies = new_histogram()
    latencies.add(stats.latency)
    unanswered = pending.get_total_count() if pending is not None else 0
    if unanswered:
        latencies.add(pending)
    p99 = latencies.get_value_at_percentile(99) / 1000.0 if latencies.get_total_count() else None
    return p99, unanswered


def _past_bounds(stats: StepStats, pending: HdrHistogram | None, p99_bound_ms: float,
                 max_error_share: float) -> str | None:
    """``p99-bound: ...`` or ``error-share: ...`` when the step passed a bound (``p99_bound_ms`` 0: none), else None."""
    p99, unanswered = _p99_with_pending(stats, pending)
    # A request turned away at the server's queue bound was not served either: past the knee a bounded queue
    # sheds load instead of letting P99 grow, so the ramp stops on the shed share.
    done = stats.ok + stats.errors + stats.dropped + stats.rejected
    share = (stats.errors + stats.dropped + stats.rejected) / done if done else 0.0
    if p99_bound_ms > 0 and p99 is not None and p99 > p99_bound_ms:
        late = (f" ({unanswered} of {stats.sent} requests unanswered, counted at their wait so far)"
                if unanswered else "")
        return f"p99-bound: {'at least ' if unanswered else ''}{p99:.1f} ms > {p99_bound_ms:g} ms{late}"
    if share > max_error_share:
        return f"error-share: {share:.3f} > {max_error_share:g}"
    return None


class Replay(LoadShape):
    kind: Literal["replay"] = "replay"
    rates: list[float] = Field(min_length=1, max_length=MAX_REPLAY_ROWS, description="Requests/s per row, scaled.")
    seconds_per_row: float = 2.0
    source: str = Field("", description="The CSV the curve came from, for the record.")

    def describe(self) -> str:
        return (f"replay of {self.source or 'a curve'}: {plural(len(self.rates), 'row')}, {self.seconds_per_row:g} s "
                f"each")

    def schedule(self) -> Schedule:
        return _schedule(self.rates, self.seconds_per_row, 0.0, self.kind)

    @classmethod
    def from_csv(cls, path: Path | str, seconds_per_row: float = 2.0, rate_scale: float = 1.0) -> "Replay":
        """A CSV with a ``qps`` column, a row per interval (say, per minute of a day), each replayed for
        ``seconds_per_row`` at ``qps * rate_scale``; :class:`LoadTestInputError` naming the line that is wrong."""
        if not (math.isfinite(rate_scale) and rate_scale > 0):
            raise LoadTestInputError(f"--rate-scale {rate_scale}: must be > 0")
        # The planner's reader: a curve replayed here is the curve a fleet is planned for, row for row. The rows are
        # paced by seconds_per_row, so a file without times is read without a step.
        curve = read_demand_curve(path, error=LoadTestInputError, need_step=False)
        if len(curve.qps) > MAX_REPLAY_ROWS:
            raise LoadTestInputError(f"{path}: {len(curve.qps)} rows, more than {MAX_REPLAY_ROWS}")
        rates = [max(float(q) * rate_scale, REPLAY_FLOOR_RATE) for q in curve.qps]
        return cls(rates=rates, seconds_per_row=seconds_per_row, source=str(path))


class ClosedLoop(LoadShape):
    kind: Literal["closed-loop"] = "closed-loop"
    user_class: ClassVar[str] = CLOSED_LOOP_USER
    users: int = Field(ge=1, description="Back-to-back senders.")
    duration: float = Field(30.0, gt=0, description="Seconds to run.")

    def describe(self) -> str:
        return f"closed loop, {plural(self.users, 'user')} back to back, {self.duration:g} s"

    def schedule(self) -> None:
        return None

    def plan(self) -> list[PlannedStep]:
        return [PlannedStep(self.kind, 0.0, self.duration, None, False)]

    def locust_users(self, generators: int, workers: int) -> int:
        return self.users


class Stable(LoadShape):
    """One rate, measured in windows until the last :data:`STABILITY_WINDOWS` windows' P99s lie within
    ``stability_pct`` of each other (max/min), at most ``max_trials`` windows; a window past ``p99_bound_ms`` or
    ``max_error_share`` ends it early (the rate is past the knee, however long it runs). The run reports each window
    (marked discarded) and, as its one measured step, the last three windows together; a run that used every trial
    without three agreeing, every window but the first (:meth:`measurement_windows`)."""

    kind: Literal["stable"] = "stable"
    rate: float = Field(gt=0, description="Requests/s.")
    window_s: float = Field(DEFAULT_WINDOW_S, gt=0, description="Seconds per measurement window.")
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=STABILITY_WINDOWS, le=MAX_RAMP_STEPS,
                            description="Most windows before the rate is reported unstable.")
    stability_pct: float = Field(DEFAULT_STABILITY_PCT, gt=0, description="Largest max/min spread of the last "
                                 "three windows' P99, percent.")
    p99_bound_ms: float = Field(0.0, ge=0, description="End after a window whose P99 exceeds this (0: none).")
    max_error_share: float = Field(0.01, ge=0, le=1, description="End after a window with a larger error share.")

    def describe(self) -> str:
        return (f"{self.rate:g} req/s in {self.window_s:g} s windows until {STABILITY_WINDOWS} in a row have P99s "
                f"within {self.stability_pct:g}% (at most {self.max_trials})")

    def schedule(self) -> Schedule:
        return Schedule(tuple(Step(float(self.rate), self.window_s, f"window{n:02d}@{self.rate:g}rps", False)
                              for n in range(self.max_trials)), self.kind)

    @property
    def stops_early(self) -> bool:
        return True

    @property
    def measured_windows(self) -> int:
        return STABILITY_WINDOWS

    def measurement_windows(self, ran: int, reason: str) -> int:
        """Three agreeing windows are the measurement (perf_analyzer's). A run that used its trials without three
        agreeing (``completed``) is measured on every window but the first (which starts from an empty queue): such a
        step is near the knee, where a 5 s window's P99 rests on a few requests and a queue's excursions last
        longer than three windows, so three of them read low. Measured: 15 s of a settled step read 244 ms at
        80.3 req/s where 90 s runs read 289 ms at 77.9 and 325 ms at 81.6 (docs/validation/calibrate, gen00,
        2026-12-04). Whether its windows trend (a queue still building) is the reader's to judge
        (:func:`loadtests.calibrate.rising`): they are all in the file."""
        if reason == "completed" and ran > STABILITY_WINDOWS + 1:
            return ran - 1
        return STABILITY_WINDOWS

    def judge_after_s(self) -> float:
        # As a ramp's: once the bound has passed, each request over it is recorded or unanswered past it.
        return self.p99_bound_ms / 1000.0

    def verdict(self, stats: StepStats, pending: HdrHistogram | None = None,
                earlier: list[StepStats] | tuple = ()) -> str | None:
        past = _past_bounds(stats, pending, self.p99_bound_ms, self.max_error_share)
        if past:
            return past
        _, unanswered = _p99_with_pending(stats, pending)
        if unanswered or len(earlier) < STABILITY_WINDOWS - 1:
            return None  # a window still waiting for answers has no P99 yet
        p99s = [w.quantile_ms(0.99) for w in [*earlier[-(STABILITY_WINDOWS - 1):], stats]]
        if any(p is None or p <= 0 for p in p99s):
            return None
        if max(p99s) / min(p99s) <= 1 + self.stability_pct / 100.0:
            return (f"stable: P99 {', '.join(f'{p:.1f}' for p in p99s)} ms in the last {STABILITY_WINDOWS} windows, "
                    f"within {self.stability_pct:g}%")
        return None


Shape = Annotated[Union[Steps, Ramp, Replay, ClosedLoop, Stable], Field(discriminator="kind")]
