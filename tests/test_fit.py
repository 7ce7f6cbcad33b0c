"""planner fit: the calibration recovers known parameters, and recommend uses what it learned."""
from __future__ import annotations

import json
import math

import pytest

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.stress_result import HOST_CPU_SATURATED
from gpufleet.errors import ContractError
from planner.capacity import CapacitySearch, ReplicaModel
from planner.cli import main
from planner.fit import fit
from planner.service import ServerCost
from planner.recommend import RecommendRequest, recommend
from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.contracts.profile import write_profile
from tests.synthetic import affine_profile, stress_result

TRUTH = {"overhead_ms": 4.0, "batch_overhead_ms": 3.0, "item_overhead_ms": 0.8, "spread": 1.6}
TRUE_COST = ServerCost(TRUTH["batch_overhead_ms"], TRUTH["item_overhead_ms"], TRUTH["spread"])
CONFIGS = (BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(), instance_count=1), BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two configs, steps at 30-80% of each one's true saturation, plus one overloaded step and a warm-up."""
    root = tmp_path_factory.mktemp("fit")
    profile = affine_profile()
    truth = ReplicaModel.from_profile(profile, TRUE_COST)
    paths = []
    for i, cfg in enumerate(CONFIGS):
        sat = truth.saturation_rate(cfg)
        rates = [round(f * sat, 1) for f in (0.3, 0.55, 0.8)] + ([round(1.3 * sat, 1)] if i == 0 else [])
        path = root / f"run{i}.stress.json"
        stress_result(profile, cfg, rates, overhead_ms=TRUTH["overhead_ms"], cost=TRUE_COST, duration_s=30,
                      seed=100 + i, path=path, warmup_rate=rates[0])
        paths.append(path)
    prof_path = root / "profile.json"
    write_profile(profile, prof_path)
    return profile, prof_path, paths


@pytest.fixture(scope="module")
def calibration(runs):
    profile, _, paths = runs
    return fit(profile, paths, p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))


def test_fit_recovers_the_parameters_that_generated_the_runs(calibration):
    """What the server adds per batch and per item, told apart from each other and from the overhead outside the
    batcher: the estimates are near the truth, and the 90% intervals cover it (each covers it with probability
    0.9, so at least three of the four do with probability 0.95)."""
    p = calibration.parameters
    covered = [getattr(p, name).low <= true <= getattr(p, name).high for name, true in TRUTH.items()]
    assert sum(covered) >= 3, p
    assert all(getattr(p, n).identified and not getattr(p, n).at_bound for n in TRUTH)
    assert p.overhead_ms.value == pytest.approx(TRUTH["overhead_ms"], abs=1.5)
    assert p.batch_overhead_ms.value == pytest.approx(TRUTH["batch_overhead_ms"], abs=1.5)
    assert p.item_overhead_ms.value == pytest.approx(TRUTH["item_overhead_ms"], abs=0.4)
    assert p.spread.value == pytest.approx(TRUTH["spread"], rel=0.25)
    assert calibration.warnings == []
    assert calibration.fit.median_abs_p99_error <= 0.1


def test_intervals_contain_the_estimates_and_the_planned_capacity_is_their_safe_end(calibration):
    p = calibration.parameters
    for name in TRUTH:
        par = getattr(p, name)
        assert par.low <= par.value <= par.high and par.high > par.low
    assert len(calibration.uncertainty.draws) == calibration.uncertainty.resamples
    for t in calibration.thresholds:
        lo, hi = t.max_rate_interval
        assert lo <= t.max_rate_per_replica <= t.nominal_max_rate_per_replica <= hi
        assert t.max_rate_per_replica < t.nominal_max_rate_per_replica  # uncertain data cost capacity


# How far below the truth the planned capacity (the safe end of its 90% interval) may lie. Since issue 27 a capacity
# also holds the queue bound's refusals within planner.capacity.REFUSED_SHARE_MAX, and that limit, not the P99,
# binds here: it moves with the spread of a full batch (the timeout is the budget less a full batch's P99), which
# these steps pin down less than P99 alone needed. Measured: 0.901 and 0.854 of the truth (0.946 and 0.926 before).
PLANNED_SHORTFALL = 0.18


def test_planned_capacity_is_near_the_truth_and_never_above_it(calibration, runs):
    """The issue's promise on known truth: capacity extrapolated from steps at 30-80% load holds at the target."""
    profile, _, _ = runs
    truth = CapacitySearch(ReplicaModel.from_profile(profile, TRUE_COST))
    for t in calibration.thresholds:
        true_rate = truth.max_rate(t.config, (t.p99_ms - TRUTH["overhead_ms"]) / 1000.0)
        assert (1 - PLANNED_SHORTFALL) * true_rate <= t.max_rate_per_replica <= true_rate, (t.config.describe(),
                                                                                            true_rate)


def test_overloaded_and_warmup_steps_are_left_out_with_the_reason(calibration):
    reasons = [e.reason for e in calibration.fit.excluded]
    assert sum(r == "warm-up" for r in reasons) == 2
    assert sum(r.startswith("overloaded") for r in reasons) == 1
    assert len(calibration.steps) == 6


def test_fit_predicts_the_batching_it_did_not_fit_on(calibration):
    """Mean batch size is not in the objective; the server counters still agree with the calibrated model."""
    for s in calibration.steps:
        assert s.predicted_mean_batch == pytest.approx(s.measured_mean_batch, rel=0.15)


def test_thresholds_allow_for_the_scale_up_lag(calibration):
    lag = AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02)
    assert {(t.config.max_batch_size, t.config.max_queue_delay_microseconds) for t in calibration.thresholds} == {(8, 2000), (4, 0)}
    for t in calibration.thresholds:
        assert 0 < t.hpa_target_rate_per_replica < t.max_rate_per_replica
        assert t.hpa_target_rate_per_replica == pytest.approx(lag.hpa_target(t.max_rate_per_replica), rel=1e-4)
        assert t.predicted_queue_us_at_target > 0


def test_the_hpa_target_grown_through_the_reaction_time_lands_on_the_p99_limit():
    lag = AutoscalingSpec(scale_up_lag_s=300, ramp_per_min=0.05)
    target = lag.hpa_target(1000.0)
    # The HPA acts at target x (1 + tolerance); traffic then compounds for the reaction time.
    at_arrival = target * (1 + lag.tolerance) * (1 + lag.ramp_per_min) ** (lag.reaction_s / 60)
    assert at_arrival == pytest.approx(1000.0)
    assert AutoscalingSpec(scale_up_lag_s=0, ramp_per_min=0, tolerance=0).hpa_target(1000.0) == 1000.0
    assert AutoscalingSpec(scale_up_lag_s=600, ramp_per_min=0.05).hpa_target(1000.0) < target < AutoscalingSpec(scale_up_lag_s=120, ramp_per_min=0.05).hpa_target(1000.0)


def test_recommend_uses_the_calibration(runs, calibration, tmp_path):
    _, prof_path, _ = runs
    cal_path = tmp_path / "cal.json"
    cal_path.write_text(calibration.model_dump_json())
    # The plan deploys batch 16, which the runs (batch 8 and 4) never served: its capacity interval is ±15.4%, just
    # past the gate's default. This test is about how a calibration is used; the gate has tests/test_capacity_gate.py.
    wide = 20.0
    req = RecommendRequest(qps=2000, p99_ms=100, model="synthetic", gpus=["T4"], profiles=[prof_path],
                           calibration=cal_path, max_capacity_spread_pct=wide)
    plan = recommend(req)
    assert plan.request.overhead_ms == calibration.overhead_ms
    assert "planner fit" in plan.request.overhead_source and plan.request.calibration == str(cal_path)
    (dep,) = plan.deployments
    lag = AutoscalingSpec(scale_up_lag_s=calibration.scaling.scale_up_lag_s, ramp_per_min=calibration.scaling.ramp_per_min)
    auto = dep.autoscaling
    assert plan.autoscaling == calibration.scaling
    assert plan.autoscaling.scale_up_lag_s == 360 and plan.autoscaling.ramp_per_min == 0.02
    assert auto.target_rate_per_replica == pytest.approx(lag.hpa_target(auto.max_rate_per_replica), rel=1e-3)
    # The fleet is sized so that a replica carries no more than the HPA target in steady state.
    assert dep.rate_per_replica <= auto.target_rate_per_replica * 1.0001
    # The calibration's uncertainty: the plan sizes with the safe end of capacity's interval, and records it.
    (record,) = plan.sizing
    ci = record.capacity_interval
    assert ci is not None and ci.confidence == calibration.uncertainty.confidence
    assert ci.low <= record.max_rate_per_replica <= ci.nominal <= ci.high
    assert "the safe end" in plan.why
    surer = recommend(RecommendRequest(qps=2000, p99_ms=100, model="synthetic", gpus=["T4"], profiles=[prof_path],
                                       calibration=cal_path, confidence=0.6, max_capacity_spread_pct=wide))
    assert surer.sizing[0].max_rate_per_replica > record.max_rate_per_replica  # less confidence asked, less margin
    uncalibrated = recommend(RecommendRequest(qps=2000, p99_ms=100, model="synthetic", gpus=["T4"],
                                              profiles=[prof_path]))
    assert uncalibrated.autoscaling.lag_aware and uncalibrated.sizing[0].capacity_interval is None
    assert plan.replicas > uncalibrated.replicas  # the server's own costs take capacity the bare profile has


def test_fit_cli_writes_a_calibration_and_rejects_bad_input(runs, tmp_path, capsys):
    _, prof_path, paths = runs
    out = tmp_path / "cal.json"
    assert main(["fit", str(paths[1]), "--profile", str(prof_path), "--output", str(out),
                 "--scale-up-lag-min", "4"]) == 0
    assert read_calibration(out).scaling.scale_up_lag_s == 240
    capsys.readouterr()
    missing = tmp_path / "nope.json"
    assert main(["fit", str(missing), "--profile", str(prof_path), "--output", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0] and not (tmp_path / "x.json").exists()
    assert main(["recommend", "--qps", "100", "--calibration", str(out)]) == 2
    assert "calibrated for model 'synthetic'" in capsys.readouterr().err


def test_runs_without_a_recorded_config_need_one_given(runs, tmp_path, capsys):
    profile, prof_path, paths = runs
    doc = json.loads(paths[1].read_text())
    doc["target"]["triton"] = None
    bare = tmp_path / "bare.stress.json"
    bare.write_text(json.dumps(doc))
    assert main(["fit", str(bare), "--profile", str(prof_path), "--output", str(tmp_path / "c.json")]) == 2
    assert "--triton-config" in capsys.readouterr().err
    assert main(["fit", str(bare), "--profile", str(prof_path), "--output", str(tmp_path / "c.json"),
                 "--triton-config", "4:0:1"]) == 0
    cal = read_calibration(tmp_path / "c.json")
    assert cal.steps[0].config.max_batch_size == 4 and math.isfinite(cal.overhead_ms)


BATCH_ONE = BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1)


def _runs(tmp_path, cost, cfg=BATCH_ONE, loads=(0.3, 0.55, 0.8), late_share=0.0, seed=7, host_cpu=None):
    profile = affine_profile()
    sat = ReplicaModel.from_profile(profile, cost).saturation_rate(cfg)
    path = tmp_path / f"run-{seed}.stress.json"
    stress_result(profile, cfg, [round(f * sat, 1) for f in loads], overhead_ms=3.0, cost=cost, duration_s=30,
                  seed=seed, path=path, late_share=late_share, host_cpu=host_cpu)
    return profile, path


def test_with_batches_of_one_the_per_request_cost_is_held_and_said_so(tmp_path):
    profile, path = _runs(tmp_path, ServerCost(2.0, 0.5, 1.0))
    cal = fit(profile, [path], p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    item = cal.parameters.item_overhead_ms
    assert not item.identified and item.value == 0.0 and "batches of about one request" in item.note
    assert any(w.startswith("item_overhead_ms not identified") for w in cal.warnings)
    # The per-batch cost carries both: at batch 1 the server's 2.5 ms is all there.
    assert cal.parameters.batch_overhead_ms.value == pytest.approx(2.5, abs=1.0)


def test_a_parameter_on_its_bound_is_a_warning(tmp_path):
    """A server far faster than its profile: the per-batch cost would have to go below what the model allows."""
    profile, path = _runs(tmp_path, ServerCost(-8.0, 0.0, 1.0), cfg=CONFIGS[1])
    cal = fit(profile, [path], p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    assert cal.parameters.batch_overhead_ms.at_bound
    assert any("batch_overhead_ms" in w and "sits on its bound" in w for w in cal.warnings)


def test_steps_where_the_load_generator_fell_behind_are_flagged_and_left_out(tmp_path):
    profile, good = _runs(tmp_path, TRUE_COST, cfg=CONFIGS[1])
    _, late = _runs(tmp_path, TRUE_COST, cfg=CONFIGS[0], late_share=0.05, seed=8)
    cal = fit(profile, [good, late], p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    flagged = [e for e in cal.fit.excluded if e.reason.startswith("host-bound")]
    assert len(flagged) == 3 and all(e.source == str(late) for e in flagged)
    assert "load generator fell behind" in flagged[0].reason
    # Too few clean steps left: all are fitted, and the calibration says it describes the test bed.
    alone = fit(profile, [late], p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    assert len(alone.steps) == 3 and any("too many to leave out" in w for w in alone.warnings)
    assert {s.source for s in cal.steps} == {str(good)}
    assert any("host-bound" in w for w in cal.warnings)


def test_steps_where_the_hosts_cpu_was_saturated_are_kept_and_named_in_a_warning(tmp_path):
    """Issue 27, item 4: Triton's nv_cpu_utilization over a step at the saturation mark or above is the whole host's
    CPU (the load generator's too on a shared host), so it flags the step, in the fit's warnings, and leaves the
    verdict to Triton's own execution time: a step it did not inflate is kept (on two shared cores every step near
    the knee reads saturated, and leaving them out left `loadtests calibrate` nothing to fit)."""
    profile, calm = _runs(tmp_path, TRUE_COST, cfg=CONFIGS[1], host_cpu=0.55)
    _, busy = _runs(tmp_path, TRUE_COST, cfg=CONFIGS[0], seed=8, host_cpu=HOST_CPU_SATURATED + 0.05)
    cal = fit(profile, [calm, busy], p99_ms=100.0, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    assert not [e for e in cal.fit.excluded if e.reason.startswith("host-bound")]
    assert {s.source for s in cal.steps} == {str(calm), str(busy)}
    (warning,) = [w for w in cal.warnings if "host's CPU" in w]
    assert f"{HOST_CPU_SATURATED:.0%} or more busy" in warning and str(busy) in warning and str(calm) not in warning


def test_a_calibration_of_schema_one_is_refused_with_the_command_that_makes_a_new_one(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema_version": 1, "overhead_ms": 1.0, "service_scale": 1.2}))
    with pytest.raises(ContractError, match="run planner fit again"):
        read_calibration(old)



# A profile whose batch time grows mostly with the batch (2 ms + 4 ms per image), as a GPU model's does: the spread of
# batch sizes at a step then moves Triton's compute per request far from the time of a batch of the mean size.
STEEP = dict(base_ms=2.0, per_image_ms=4.0)
DELAYED = CONFIGS[0]  # max batch 8, 2 ms queue delay
LOADS = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95)  # of saturation: light to near the knee


def _triton_step(profile, cfg, load, seed, service_factor=1.0):
    """One step of a server whose batches take ``service_factor`` x the profile's time, as Triton reports it: the
    mean batch is nv_inference_count / nv_inference_exec_count (requests / batches), and the compute time per
    request is each batch's execution added once per request in it, over the requests (core@84868f1
    src/infer_stats.cc UpdateSuccessWithDuration), which is the simulation's time in batch per request."""
    import numpy as np
    from planner.fit import Observation
    from planner.service import ServiceTime
    from planner.simulate import simulate
    model = ReplicaModel.from_profile(profile)
    service = ServiceTime([t * service_factor for t in model.service.tables])
    rate = load * model.saturation_rate(cfg)
    rng = np.random.default_rng(seed)
    n = int(rate * 60)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    res = simulate(arrivals, cfg, service, rng.random(n), model.speedup, warmup_fraction=0.0)
    compute_ms = float((res.latency_s - res.queue_s).mean() * 1000.0)
    return Observation("run", f"{load:g}", cfg, rate, 60.0, n, {"p50": 20.0, "p90": 30.0, "p99": 40.0},
                       res.mean_batch_size, compute_ms)


@pytest.mark.parametrize("cfg", [DELAYED, CONFIGS[1].model_copy(update={"max_batch_size": 8})],
                         ids=["delay-2ms", "no-delay"])
def test_a_server_that_matches_its_profile_is_never_host_bound(cfg):
    """Light to near-knee steps of a server whose every batch takes exactly the profile's time: Triton's compute per
    request is a mean over requests, so a step's larger batches weigh more in it than in the mean batch size; that
    is how Triton counts, not the host setting the pace, and no step may be left out for it."""
    from planner.fit import host_bound
    profile = affine_profile(**STEEP)
    obs = [_triton_step(profile, cfg, load, seed=i) for i, load in enumerate(LOADS)]
    assert host_bound(obs, profile) == {}


def test_a_heavy_step_whose_batches_took_40_percent_longer_is_host_bound():
    """The rule's purpose: on one heavy step (60% of saturation, 84% for a server 40% slower, still stable) the same
    batches took 40% longer, as when a saturated CPU feeds them; that step alone is left out, with the reason."""
    from planner.fit import host_bound
    profile = affine_profile(**STEEP)
    obs = [_triton_step(profile, DELAYED, load, seed=i, service_factor=1.4 if load == 0.6 else 1.0)
           for i, load in enumerate(LOADS)]
    flagged = host_bound(obs, profile)
    assert list(flagged) == [2] and "above the" in flagged[2]
