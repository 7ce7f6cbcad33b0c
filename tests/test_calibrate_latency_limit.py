"""Calibrate's capacity is the rate its steps measure: where P99 crosses the target.

The steps run without a queue bound, so they bracket the latency limit. The plan's capacity can lie below it, where
the queue bound the plan writes would refuse more than the planner allows first. Calibrate used to judge its steps'
bracket against that lower rate, so a run whose refusal limit binds could neither agree with its own steps nor stop
at the width, and docs/validation/calibrate compared the refusal limit with capacity measured by P99 alone
(2026-12-04: 72.0 against 96.8 req/s on gen02).

The recorded run is tests/data/calibrate-gen02 (see tests/data/SOURCES.md)."""
from pathlib import Path

import pytest

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.profile import read_profile
from gpufleet.contracts.stress_result import read_stress_result
from loadtests.calibrate import Measured, Plan, agrees, bracket, interval_of, narrowed, pinned, summary
from tests.cli_run import run_console

RUN = Path(__file__).resolve().parent / "data" / "calibrate-gen02"
TARGET_MS = 214.6


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "gen02.calibration.json"
    done = run_console("planner", ["fit", RUN / "calibrate.stress.json", "--profile", RUN / "profile.json",
                                   "--p99-ms", f"{TARGET_MS:g}", "--output", out])
    assert done.returncode == 0, done.stderr
    return read_calibration(out)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """The recorded steps as the loop holds them: each measured step with its P99."""
    p = Plan(settings={}, profile_path=RUN / "profile.json", profile=read_profile(RUN / "profile.json"),
             p99_ms=TARGET_MS, out=tmp_path_factory.mktemp("replay"), name="replay")
    run = read_stress_result(RUN / "calibrate.stress.json")
    for n, s in enumerate(x for x in run.steps if not x.warmup):
        p.steps.append(Measured(n, "replay", s.offered_rate, s.latency_ms.p99, 3, "stable", 0.0, run))
    return p


def test_the_queue_bound_limits_the_plan_below_the_latency_limit_here(fitted):
    t = fitted.thresholds[0]
    assert t.latency_max_rate > 1.2 * t.nominal_max_rate_per_replica


def test_calibrate_reports_the_latency_limit_and_its_interval(fitted):
    t = fitted.thresholds[0]
    iv = interval_of(fitted)
    assert (iv.nominal, iv.low, iv.high) == (t.latency_max_rate, *t.latency_max_rate_interval)
    assert iv.refusal_limited == t.nominal_max_rate_per_replica


def test_the_capacity_lies_in_the_bracket_its_own_steps_measured(fitted, plan):
    lo, hi = bracket(plan.steps, TARGET_MS)
    assert (lo, hi) == pytest.approx((102.629, 111.917), abs=1e-3)
    assert agrees(plan, interval_of(fitted), 0.05)


def test_the_summary_names_the_plans_lower_capacity(fitted, plan):
    line = summary(plan, "budget", interval_of(fitted), "", 300.0)
    assert f"the plan holds {fitted.thresholds[0].nominal_max_rate_per_replica:.1f} req/s" in line


EARLY = Path(__file__).resolve().parent / "data" / "calibrate-gen00-early"


def test_a_narrow_fit_over_a_wide_bracket_does_not_stop_the_run():
    """Recorded: steps at 31.0 and 61.9 req/s under the target, 87.6 and 123.8 over; the fit said 68.5 req/s ±4.1%
    and the run stopped there. Long runs measured 78.5 req/s. The steps pinned the crossing only within 41%."""
    cal = read_calibration(EARLY / "calibrate.calibration.json")
    p = Plan(settings={}, profile_path=EARLY / "profile.json", profile=read_profile(EARLY / "profile.json"),
             p99_ms=294.7, out=EARLY, name="replay")
    run = read_stress_result(EARLY / "calibrate.stress.json")
    for n, s in enumerate(x for x in run.steps if not x.warmup):
        p.steps.append(Measured(n, "replay", s.offered_rate, s.latency_ms.p99, 3, "stable", 0.0, run))
    iv = interval_of(cal)
    assert iv.half_width <= 0.05 and agrees(p, iv, 0.05)  # what stopped it
    assert not narrowed(p, 0.05)
    assert not pinned(p, iv, 0.05)
    assert "bracket the crossing only within 61.9-87.6 req/s" in summary(p, "budget", iv, "", 140.0)
