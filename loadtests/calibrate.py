"""``loadtests calibrate``: open-loop steps chosen by the run itself, until the fitted capacity is pinned.

The loop, against the Triton config the server is running (read from Triton: GET /v2/models/<m>/config):

1. **Bracket**: a geometric ramp from a low rate until a step's P99 passes the target (or its requests go overdue,
   fail or are shed); down from the first rate instead when that one is already over.
2. **Refine**: steps in the bracket (geometric bisection between the highest rate under the target and the lowest
   over it), steps at fractions of the knee (light load, where batches hold one request, tells the per-batch cost
   from the per-request one), then steps either side of the fitted capacity, where capacity is decided.
3. Each step is one :class:`loadtests.shapes.Stable` run: measurement windows until three in a row agree on P99
   (perf_analyzer's rule), at most ``max_trials``; the step's measurement is its last three windows together. A
   step that used its trials without three agreeing is still measured (``settled``) when its windows' P99s show no
   upward trend (:func:`rising`): near the knee a window's P99 rests on a few requests and moves by more than any
   stability percentage from sampling alone, and those are the steps that decide capacity; a rising one is a queue
   still building, not a steady state, and is left out.
4. After each step once the knee is bracketed, ``planner fit`` runs on everything measured so far. The stages never
   import each other (pyproject's import-linter contracts), so the fit runs as its console (``python -m planner
   fit``) on the stress-result file, and its calibration file is read back through :mod:`gpufleet.contracts`. The
   capacity is the fit's latency limit (``latency_max_rate``: where P99 crosses the target, what steps without a
   queue bound measure; the plan's capacity, which the queue bound it writes may hold lower, is reported beside it).
   The run stops when that capacity's interval lies within ``±tolerance`` of the estimate, the estimate lies in the
   steps' own bracket, and the bracket is as narrow (:func:`pinned`), or when the next step would not fit in the
   time budget. The loop's fits leave out the run-to-run P99 noise (``--run-noise-pct 0``): more steps cannot narrow
   an error all of them share, so it would keep every run going to its budget. The calibration it leaves is fitted
   once more with the noise (``--run-noise-pct``, planner fit's default unless given), and the last line gives both.

It writes ``<out>/<name>.stress.json`` (every step's windows, marked discarded, and its measured step) and
``<out>/<name>.calibration.json`` (``planner fit``'s output on it), plus each step's Locust files under
``<out>/<name>-steps/``.
"""
from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.contracts.calibration import Calibration, read_calibration
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import MIN_REQUESTS_FOR_P99, StepResult, StressResult, write_stress_result
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.errors import RunFailure
from loadtests.errors import LoadTestInputError
from loadtests.shapes import STABILITY_WINDOWS, Stable
from loadtests.settings import StressSettings

# The first rate when none is given: this share of what the served config sustains by the profile (full batches of
# its largest size back to back, one instance, device time only). A quarter of saturation is well below any knee the
# server's own costs leave, yet close enough that the ramp reaches the knee in two or three steps; batch-1
# throughput, the start until issue 27's validation, left a config of batch 8 four or five ramp steps from its knee,
# and a 300 s budget ended there (docs/validation/calibrate, 2026-12-04: gen00).
START_SHARE = 0.25
# Each bracketing rate doubles the last: the knee is then bracketed within a factor of two in log2(knee / start)
# steps, and bisection, which halves the bracket's log-width a step, takes it from there.
DEFAULT_FACTOR = 2.0
DEFAULT_TOLERANCE_PCT = 5.0
DEFAULT_BUDGET_S = 900.0
# A step's measurement (its last three windows) must hold enough requests for planner fit to use its P99
# (MIN_REQUESTS_FOR_P99), with room for the Poisson count's noise (about 3 standard deviations at that size): each
# window is made long enough for its share. perf_analyzer's own floor per window (--measurement-request-count, 50, at
# triton-inference-server/perf_analyzer@263c5f6e: src/command_line_parser.h) is lower than a fit needs.
REQUEST_MARGIN = 1.25
MIN_WINDOW_REQUESTS = math.ceil(REQUEST_MARGIN * MIN_REQUESTS_FOR_P99 / STABILITY_WINDOWS)
# A window whose P99 passes this multiple of the target ends its step: the rate is past the knee however long it
# runs. Requests time out at a larger multiple (at least STEP_TIMEOUT_MIN_S), so an overloaded step drains fast.
ABORT_FACTOR = 3.0
TIMEOUT_FACTOR = 10.0
STEP_TIMEOUT_MIN_S = 1.0
# The share of requests that may fail or be shed in a step still counted under the target.
MAX_ERROR_SHARE = 0.01
# Light-load steps, as fractions of the highest rate under the target: at half the knee batches mostly hold one
# request; at 0.8 they start to fill. With the steps at the knee these separate the per-batch and per-item costs.
KNEE_FRACTIONS = (0.5, 0.8)
# A step counts as "at" a rate within this relative distance.
NEAR = 0.1
# Near the knee: the bracket is bisected until its ends lie within twice this of each other, then steps go this far
# either side of the fitted capacity, alternately, where the P99 curve crosses the target.
KNEE_SPREAD = 0.05
# The fit runs once this many steps are stable: a bootstrap over fewer resamples nothing, and its interval is a point.
MIN_FIT_STEPS = 3
# What a step costs besides its windows (Locust's start and the drain), first guessed, then measured.
STEP_OVERHEAD_GUESS_S = 4.0
# A step's window P99s rise (a queue still building) when Kendall's tau against their order is positive at this
# one-sided significance; fewer windows than TREND_MIN_WINDOWS cannot show one and do not settle a step.
TREND_P = 0.05
TREND_MIN_WINDOWS = 4


@dataclass
class Measured:
    """One calibration step as the loop decides on it."""

    n: int
    phase: str
    rate: float
    p99_ms: float | None
    windows: int
    reason: str  # stable, settled (max trials, no trend), p99-bound, error-share, completed (max trials, rising)
    error_share: float
    result: StressResult

    @property
    def stable(self) -> bool:
        """The step's measurement goes to the fit: three windows agreed, or its windows settled without a trend."""
        return self.reason in ("stable", "settled")

    def over(self, target_ms: float) -> bool:
        return (self.reason in ("p99-bound", "error-share") or self.error_share > MAX_ERROR_SHARE
                or self.p99_ms is None or self.p99_ms > target_ms)


@dataclass(frozen=True)
class Interval:
    nominal: float
    low: float
    high: float
    confidence: float
    steps: int  # steps the fit used
    # The plan's capacity at the estimates, when below this latency limit: the queue bound the plan writes refuses
    # more than its share past it (gpufleet.contracts.calibration.Threshold.latency_max_rate).
    refusal_limited: float | None = None
    run_noise: float = 0.0  # the run-to-run P99 noise the fit allows (Uncertainty.run_noise)

    @property
    def half_width(self) -> float:
        """The interval's larger distance from the estimate, as a share of it."""
        if self.nominal <= 0:
            return math.inf
        return max(self.nominal - self.low, self.high - self.nominal) / self.nominal

    def describe(self) -> str:
        return (f"{self.nominal:.1f} req/s, {self.confidence:.0%} interval {self.low:.1f}-{self.high:.1f} "
                f"(±{self.half_width:.1%})")


@dataclass
class Plan:
    """What the loop was asked for."""

    settings: dict  # StressSettings values shared by every step (host, model, metrics, protocol ...)
    profile_path: Path
    profile: LatencyProfile
    p99_ms: float
    out: Path
    name: str
    start_rate: float | None = None
    factor: float = DEFAULT_FACTOR
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT
    budget_s: float = DEFAULT_BUDGET_S
    window_s: float = Stable.model_fields["window_s"].default
    max_trials: int = Stable.model_fields["max_trials"].default
    stability_pct: float = Stable.model_fields["stability_pct"].default
    confidence: float | None = None
    run_noise_pct: float | None = None  # planner fit's --run-noise-pct; None: its default
    config: BatchingConfig | None = None  # what the server runs, once read from it
    steps: list[Measured] = field(default_factory=list)

    @property
    def stress_path(self) -> Path:
        return self.out / f"{self.name}.stress.json"

    @property
    def calibration_path(self) -> Path:
        return self.out / f"{self.name}.calibration.json"

    @property
    def steps_dir(self) -> Path:
        return self.out / f"{self.name}-steps"

    def first_rate(self) -> float:
        if self.start_rate is not None:
            return self.start_rate
        top = self.config.effective_max_batch if self.config is not None else 1
        return START_SHARE * max(b.batch_size * 1000.0 / b.mean_ms for b in self.profile.batches
                                 if b.batch_size <= top)

    def window_for(self, rate: float) -> float:
        return max(self.window_s, MIN_WINDOW_REQUESTS / rate)

    def check_budget(self) -> None:
        """One line when the budget cannot hold even the first step."""
        window = self.window_for(self.first_rate())
        if self.budget_s < STABILITY_WINDOWS * window + STEP_OVERHEAD_GUESS_S:
            raise LoadTestInputError(f"--budget-s {self.budget_s:g}: too short for one step ({STABILITY_WINDOWS} "
                                     f"windows of {window:.3g} s plus about {STEP_OVERHEAD_GUESS_S:g} s to start and "
                                     "drain)")


def check_config(profile: LatencyProfile, config: BatchingConfig | None, model: str, host: str) -> BatchingConfig:
    """The served config, checked against what the fit can model; one line when it cannot."""
    if config is None:
        raise LoadTestInputError(f"{host}: the server does not publish model {model!r}'s configuration (GET "
                                 f"/v2/models/{model}/config); calibrate fits the config Triton is running")
    top = max(profile.batch_sizes)
    if config.max_batch_size > top:
        raise LoadTestInputError(f"the server runs {model!r} with max_batch_size {config.max_batch_size}, above the "
                                 f"profile's largest measured batch ({top})")
    return config


def next_rate(steps: list[Measured], target_ms: float, first: float, factor: float, nominal: float | None) -> tuple[float, str]:
    """The next step's rate and why: bracket, bisect, light (a fraction of the knee), or knee (either side of the
    fitted capacity, alternately)."""
    if not steps:
        return first, "bracket"
    over = sorted(s.rate for s in steps if s.over(target_ms))
    under = sorted(s.rate for s in steps if not s.over(target_ms))
    if not over:
        return under[-1] * factor, "bracket"
    hi = over[0]
    below = [r for r in under if r < hi]
    if not below:
        return hi / factor, "bracket"
    lo = below[-1]
    if hi / lo > 1 + 2 * KNEE_SPREAD:
        return math.sqrt(lo * hi), "bisect"
    rates = [s.rate for s in steps]
    for share in KNEE_FRACTIONS:
        want = share * lo
        if not any(abs(r - want) <= NEAR * want for r in rates):
            return want, "light"
    knee = [s for s in steps if s.phase == "knee"]
    centre = nominal if nominal is not None and lo / factor <= nominal <= hi * factor else math.sqrt(lo * hi)
    return centre * (1 - KNEE_SPREAD if len(knee) % 2 == 0 else 1 + KNEE_SPREAD), "knee"


def bracket(steps: list[Measured], target_ms: float) -> tuple[float, float] | None:
    """The highest rate under the target below the lowest rate over it, and that lowest rate; None before both."""
    over = [s.rate for s in steps if s.over(target_ms)]
    if not over:
        return None
    below = [s.rate for s in steps if not s.over(target_ms) and s.rate < min(over)]
    return (max(below), min(over)) if below else None


def agrees(plan: Plan, interval: Interval, tolerance: float) -> bool:
    """The fitted capacity lies in the measured bracket: not above the lowest rate measured over the target (a
    capacity there would be a promise a step already broke), nor more than the tolerance below the highest rate
    under it. A fit that contradicts the steps' own verdicts is not pinned, however narrow its interval."""
    b = bracket(plan.steps, plan.p99_ms)
    return b is not None and b[0] * (1 - tolerance) <= interval.nominal < b[1]


def narrowed(plan: Plan, tolerance: float) -> bool:
    """The steps themselves bracket the crossing as closely as the interval claims to: the highest rate under the
    target and the lowest over it within ``2 x tolerance`` of each other. The fit's interval carries the spread of its
    parameters over the steps, not the model's error: three steps far apart gave ±4.1% around 68.5 req/s where long
    runs measured 78.5 (docs/validation/calibrate, gen00, 2026-12-04), the model's P99 curve bending too early."""
    b = bracket(plan.steps, plan.p99_ms)
    return b is not None and b[1] / b[0] <= 1 + 2 * tolerance


def pinned(plan: Plan, interval: Interval | None, tolerance: float) -> bool:
    """The run may stop: the interval is within the tolerance, from enough steps, agrees with the bracket, and the
    bracket is as narrow."""
    return (interval is not None and interval.steps >= MIN_FIT_STEPS and interval.half_width <= tolerance
            and agrees(plan, interval, tolerance) and narrowed(plan, tolerance))


def rising(p99s: list[float | None]) -> bool:
    """Whether a step's window P99s, in order, trend upwards (or cannot tell: a window without a P99, or too few
    windows): Kendall's tau, one-sided at :data:`TREND_P` (scipy.stats.kendalltau)."""
    from scipy.stats import kendalltau

    if len(p99s) < TREND_MIN_WINDOWS or any(p is None for p in p99s):
        return True
    return bool(kendalltau(range(len(p99s)), p99s, alternative="greater").pvalue < TREND_P)


def step_reason(result: StressResult) -> str:
    """Why a step's run ended, as the loop reads it: the run's own reason, and ``settled`` for one that used its
    trials without three windows agreeing (``completed``) whose window P99s do not rise. The first window is left
    out, as from the step's measurement (:meth:`loadtests.shapes.Stable.measurement_windows`): it starts from an
    empty queue, so it reads low, and a trend from it alone is the start, not a queue still building (it left out
    steps at 40 and 62 req/s, half and 0.8 of gen00's knee, in docs/validation/calibrate on 2026-12-04)."""
    reason = str(result.stopped.get("reason"))
    if reason == "completed" and not rising([w.latency_ms.p99 for w in result.steps if w.warmup][1:]):
        return "settled"
    return reason


def merged(plan: Plan) -> StressResult:
    """Every step's run as one stress result: windows (discarded) and each step's measurement, on one clock. A step
    that did not settle (no three windows agreeing, or ended past a bound) is kept but marked discarded, so the fit
    reads only stable measurements."""
    runs = [m.result for m in plan.steps]
    t0 = runs[0].start_epoch_s
    steps: list[StepResult] = []
    for m, run in zip(plan.steps, runs):
        shift = max(run.start_epoch_s - t0, 0.0)
        for s in run.steps:
            name = f"s{m.n:02d}-{s.name}"
            warmup = s.warmup or not m.stable
            if not s.warmup and not m.stable:
                name += f" ({m.reason}: not stable)"
            steps.append(s.model_copy(update={"index": len(steps), "name": name, "warmup": warmup,
                                              "start_s": s.start_s + shift}))
    first = runs[0]
    return first.model_copy(update={
        "steps": steps, "schedule_kind": Stable.model_fields["kind"].default,
        "locust_files": {f"step{m.n:02d}": str(plan.steps_dir / f"step{m.n:02d}.locust.json") for m in plan.steps}})


def run_fit(plan: Plan, run_noise_pct: float | None) -> tuple[Calibration | None, str]:
    """``planner fit`` on the stress result written so far: the calibration, or None and the fit's last line.
    ``run_noise_pct``: its --run-noise-pct (None: its default). The loop fits with 0, the steps' own width, which
    more steps narrow; the calibration it leaves is fitted with the user's figure."""
    cmd = [sys.executable, "-m", "planner", "fit", str(plan.stress_path), "--profile", str(plan.profile_path),
           "--output", str(plan.calibration_path), "--p99-ms", f"{plan.p99_ms:g}"]
    if plan.confidence is not None:
        cmd += ["--confidence", f"{plan.confidence:g}"]
    if run_noise_pct is not None:
        cmd += ["--run-noise-pct", f"{run_noise_pct:g}"]
    if plan.calibration_path.exists():
        plan.calibration_path.unlink()  # a stale calibration must not pass for this fit's
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not plan.calibration_path.exists():
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
        return None, lines[-1]
    return read_calibration(plan.calibration_path), ""


def interval_of(cal: Calibration) -> Interval:
    """Capacity at the target as the steps measure it: the latency limit, where P99 crosses the target (the steps
    run without a queue bound, so they bracket this rate and no other). The plan's capacity may lie below it, where
    the queue bound it writes would refuse too many first; that rate rides along. A calibration written before the
    latency limit was recorded gives the plan's capacity."""
    t = cal.thresholds[0]  # the one config the steps served
    if t.latency_max_rate is None or t.latency_max_rate_interval is None:
        low, high = t.max_rate_interval
        return Interval(t.nominal_max_rate_per_replica, low, high, cal.uncertainty.confidence, len(cal.steps),
                        run_noise=cal.uncertainty.run_noise)
    low, high = t.latency_max_rate_interval
    planned = t.nominal_max_rate_per_replica
    return Interval(t.latency_max_rate, low, high, cal.uncertainty.confidence, len(cal.steps),
                    planned if planned < t.latency_max_rate else None, cal.uncertainty.run_noise)


@dataclass
class Outcome:
    reason: str  # width, budget
    line: str
    interval: Interval | None
    calibration: Calibration | None
    stress: StressResult


def calibrate(plan: Plan, run_step, say=None, show=None) -> Outcome:
    """The loop. ``run_step(settings) -> StressResult`` runs one step (``loadtests.run.run_stress``); ``say(line)``
    gets a line per step; ``show(description, elapsed_s)`` the progress."""
    say = say or (lambda line: None)
    show = show or (lambda text, elapsed: None)
    tolerance = plan.tolerance_pct / 100.0
    started = time.monotonic()
    overhead_s = STEP_OVERHEAD_GUESS_S
    fit_s = 0.0
    interval: Interval | None = None
    cal: Calibration | None = None
    fit_error = ""
    reason = "budget"
    plan.steps_dir.mkdir(parents=True, exist_ok=True)
    while True:
        rate, phase = next_rate(plan.steps, plan.p99_ms, plan.first_rate(), plan.factor,
                                interval.nominal if interval else None)
        window = plan.window_for(rate)
        # Room for the step's fit and the last one, which adds the run-to-run noise.
        left = plan.budget_s - (time.monotonic() - started) - overhead_s - 2 * fit_s
        trials = min(plan.max_trials, int(left // window))
        if trials < STABILITY_WINDOWS:
            break
        n = len(plan.steps)
        show(f"step {n + 1} ({phase}) at {rate:.1f} req/s" + (f" · capacity {interval.describe()}" if interval
                                                              else ""), time.monotonic() - started)
        shape = Stable(rate=rate, window_s=window, max_trials=trials, stability_pct=plan.stability_pct,
                       p99_bound_ms=ABORT_FACTOR * plan.p99_ms, max_error_share=MAX_ERROR_SHARE)
        settings = StressSettings(**{**plan.settings, "seed": plan.settings.get("seed", 0) + n}, shape=shape,
                                  timeout_s=max(STEP_TIMEOUT_MIN_S, TIMEOUT_FACTOR * plan.p99_ms / 1000.0),
                                  out=plan.steps_dir, name=f"step{n:02d}")
        t = time.monotonic()
        result = run_step(settings)
        windows = [s for s in result.steps if s.warmup]
        # The guess gives way to the slowest start and drain seen.
        overhead_s = max(overhead_s if plan.steps else 0.0, time.monotonic() - t - sum(s.duration_s for s in windows))
        if not result.reported_steps():
            raise RunFailure(f"step {n + 1} at {rate:.1f} req/s recorded no window; see {settings.log_path}")
        step = result.reported_steps()[-1]
        done = step.ok + step.errors + step.dropped + step.rejected
        m = Measured(n, phase, rate, step.latency_ms.p99, len(windows), step_reason(result),
                     (step.errors + step.dropped + step.rejected) / done if done else 1.0, result)
        plan.steps.append(m)
        write_stress_result(merged(plan), plan.stress_path)
        bracketed = any(s.over(plan.p99_ms) for s in plan.steps) and any(not s.over(plan.p99_ms)
                                                                        for s in plan.steps)
        p99 = "no answers" if m.p99_ms is None else f"P99 {m.p99_ms:.1f} ms"
        verdict = "over" if m.over(plan.p99_ms) else "under"
        line = (f"step {n + 1} ({phase}): {rate:.1f} req/s, {p99} ({verdict} {plan.p99_ms:g} ms), "
                f"{m.reason if m.reason in ('stable', 'settled') else m.reason + ', left out'} after {m.windows} "
                f"window(s) of {window:.3g} s")
        if bracketed and sum(s.stable for s in plan.steps) >= MIN_FIT_STEPS:
            t = time.monotonic()
            cal, fit_error = run_fit(plan, 0.0)
            fit_s = time.monotonic() - t
            interval = interval_of(cal) if cal else None
            line += f"; capacity {interval.describe()}" if interval else f"; fit: {fit_error}"
        say(line)
        if pinned(plan, interval, tolerance):
            reason = "width"
            break
    steps_interval = interval
    # The calibration left behind carries the run-to-run noise too (the knee never bracketed: it extrapolates, and the
    # summary says so). With none asked for, the loop's last fit, on every step, is that calibration already.
    if any(s.stable for s in plan.steps) and (cal is None or plan.run_noise_pct != 0):
        cal, fit_error = run_fit(plan, plan.run_noise_pct)
        interval = interval_of(cal) if cal else None
    if not plan.steps:
        plan.check_budget()
    stress = merged(plan)
    line = summary(plan, reason, interval, fit_error, time.monotonic() - started, steps_interval)
    stress = stress.model_copy(update={"stopped": {
        "reason": reason, "detail": line, "at_step": None,
        **({"capacity": interval.nominal, "low": interval.low, "high": interval.high} if interval else {})}})
    write_stress_result(stress, plan.stress_path)
    return Outcome(reason, line, interval, cal, stress)


def summary(plan: Plan, reason: str, interval: Interval | None, fit_error: str, elapsed_s: float,
            steps_interval: Interval | None = None) -> str:
    """One line: where capacity is, how sure, why the run stopped, and what more would narrow it. ``interval``: the
    calibration's; ``steps_interval``: the steps' own (fitted without run-to-run noise), which the stop judged."""
    tol = plan.tolerance_pct / 100.0
    over = [s.rate for s in plan.steps if s.over(plan.p99_ms)]
    under = [s.rate for s in plan.steps if not s.over(plan.p99_ms)]
    if interval is None:
        return (f"Stopped at the budget ({plan.budget_s:g} s) with no calibration: {fit_error or 'no stable step'}; "
                f"a larger --budget-s, or a --window-s or --stability-pct the server's noise allows, would give one")
    head = f"Capacity at P99 {plan.p99_ms:g} ms: {interval.describe()}"
    if interval.refusal_limited is not None:
        head += (f" (the plan holds {interval.refusal_limited:.1f} req/s at the estimates: past that the queue bound "
                 f"it writes refuses more than the planner allows)")
    steps = steps_interval or interval
    noise = ""
    if interval.run_noise > 0:
        # Steps of one run share its P99 level: only other runs average that error out.
        noise = (f"; the {interval.run_noise * 100:.2g}% run-to-run P99 noise the fit allows narrows only with more "
                 f"runs fitted together (planner fit {plan.stress_path.name} LATER.stress.json)")
        if steps_interval is not None:
            noise = f"; its steps alone: {steps.low:.1f}-{steps.high:.1f} (±{steps.half_width * 100:.1f}%)" + noise
    if reason == "width":
        return (f"{head}: its steps pin it within ±{plan.tolerance_pct:g}%{noise}; stopped after {len(plan.steps)} "
                f"steps ({elapsed_s:.0f} s).")
    if not over:
        more = f"steps above {max(under):.1f} req/s (no step passed the target yet)"
    elif not under:
        more = f"steps below {min(over):.1f} req/s (every step passed the target)"
    elif steps.half_width <= tol and steps.steps < MIN_FIT_STEPS:
        more = (f"the fit used {steps.steps} step(s), too few for its interval to mean anything: at least "
                f"{MIN_FIT_STEPS} stable steps with {MIN_REQUESTS_FOR_P99} requests each")
    elif steps.half_width <= tol and not agrees(plan, steps, tol):
        lo, hi = bracket(plan.steps, plan.p99_ms)
        more = (f"the fitted capacity lies outside the measured bracket {lo:.1f}-{hi:.1f} req/s: more stable steps "
                f"in that bracket")
    elif steps.half_width <= tol:
        lo, hi = bracket(plan.steps, plan.p99_ms)
        more = (f"the steps bracket the crossing only within {lo:.1f}-{hi:.1f} req/s, wider than the interval "
                f"claims: steps in that bracket")
    else:
        # A bootstrap over steps narrows about as 1/sqrt(steps): this counts for the steps' own width only.
        k = max(1, math.ceil(steps.steps * ((steps.half_width / tol) ** 2 - 1)))
        per_step = elapsed_s / max(len(plan.steps), 1)
        more = (f"about {k} more stable step(s) near {steps.nominal:.0f} req/s (the steps' interval narrows about as "
                f"1/sqrt(steps); roughly --budget-s {plan.budget_s + k * per_step:.0f})")
    return (f"{head}, wider than ±{plan.tolerance_pct:g}%: stopped at the budget ({plan.budget_s:g} s, "
            f"{len(plan.steps)} steps); {more} would narrow it{noise}.")


class Ticker:
    """Moves a progress bar with the clock while a step runs in the foreground."""

    def __init__(self, progress, task, started: float):
        self.progress, self.task, self.started = progress, task, started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.5):
            self.progress.update(self.task, completed=time.monotonic() - self.started)

