"""Which calibration steps reach the fit: a step whose windows never agreed within the stability percentage is still
measured when its P99s show no upward trend (loadtests.calibrate.rising), and left out when they rise.

The recorded steps are docs/validation/verify's `loadtests calibrate` run (2026-12-03, the stand-in on this 2-core
VM): its three steps near the knee used their ten windows without three agreeing within 20%, and so the fit saw only
light-load steps and could not pin capacity (±42%)."""
from pathlib import Path

import pytest

from gpufleet.contracts.stress_result import read_stress_result
from loadtests.calibrate import TREND_MIN_WINDOWS, Measured, Plan, merged, rising, step_reason

STEPS = Path(__file__).resolve().parents[1] / "docs" / "validation" / "verify" / "runs" / "calibrate-steps"


def window_p99s(n: int) -> list[float | None]:
    run = read_stress_result(STEPS / f"step{n:02d}.stress.json")
    return [w.latency_ms.p99 for w in run.steps if w.warmup]


@pytest.mark.parametrize("n", [6, 9, 10])
def test_a_step_near_the_knee_that_never_agreed_within_20_percent_but_does_not_trend_is_measured(n):
    run = read_stress_result(STEPS / f"step{n:02d}.stress.json")
    assert run.stopped["reason"] == "completed"  # its trials ran out without three windows agreeing
    p99s = window_p99s(n)
    assert max(p99s) / min(p99s) > 1.2
    assert not rising(p99s), p99s


def test_the_settled_steps_reach_the_fit_as_measured_steps(tmp_path):
    """The loop's reading of the recorded run: the three steps near the knee are settled, and the stress result it
    writes for planner fit carries their measurement (not discarded); steps past the bound stay out."""
    from gpufleet.contracts.profile import read_profile

    profile = STEPS.parent.parent / "profile.json"
    plan = Plan(settings={}, profile_path=profile, profile=read_profile(profile), p99_ms=300.0, out=tmp_path,
                name="replay")
    for n in range(11):
        run = read_stress_result(STEPS / f"step{n:02d}.stress.json")
        step = run.reported_steps()[-1]
        plan.steps.append(Measured(n, "replay", step.offered_rate, step.latency_ms.p99, 0, step_reason(run), 0.0,
                                   run))
    assert [m.reason for m in plan.steps if m.reason not in ("stable",)] == [
        "p99-bound", "p99-bound", "settled", "settled", "settled"]
    measured = {s.name.split("-")[0] for s in merged(plan).steps if not s.warmup}
    assert measured == {f"s{n:02d}" for n in (0, 1, 2, 4, 6, 7, 8, 9, 10)}


def test_a_queue_still_building_is_left_out():
    """Window P99s of an overloaded step, each above the last (as step 3's two windows before its bound ended it:
    691.7 and 1439.7 ms), with noise."""
    assert rising([150.0, 210.0, 190.0, 320.0, 410.0, 380.0, 560.0, 700.0])


def test_too_few_windows_or_an_unanswered_one_cannot_settle_a_step():
    assert rising([100.0] * (TREND_MIN_WINDOWS - 1))
    assert rising([100.0, 120.0, None, 90.0, 110.0])


def test_a_step_that_used_its_trials_is_measured_on_every_window_but_the_first():
    """Three windows are the measurement when they agree (perf_analyzer's rule); a step that used its trials without
    three agreeing is measured on all of them but the first, which started from an empty queue (15 s of such a step
    read 244 ms at 80.3 req/s where 90 s runs read 289 ms at 77.9: docs/validation/calibrate gen00, 2026-12-04)."""
    from loadtests.shapes import STABILITY_WINDOWS, Stable

    shape = Stable(rate=80.0, max_trials=10)
    assert shape.measurement_windows(10, "completed") == 9
    assert shape.measurement_windows(6, "stable") == STABILITY_WINDOWS
    assert shape.measurement_windows(10, "p99-bound") == STABILITY_WINDOWS
