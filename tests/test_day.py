"""The day plan: its MILP against enumeration, the cases whose answer is known, the HPA replay, the curve reader and
the console entry point."""
import random
from pathlib import Path

import numpy as np
import pytest

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.demand import DemandCurve
from gpufleet.contracts.plan import read_plan
from planner.catalog import Pool
from planner.day import (SCALE_DOWN_STABILIZATION_S, read_day_curve, recommend_day, replay,
                         solve_day)
from planner.errors import PlannerInputError
from planner.optimize import Problem, solve
from planner.recommend import RecommendRequest, recommend
from planner.sizing import GpuSizing
from gpufleet.contracts.triton import BatchingConfig
from tests.cli_run import run_cli
from tests.day_enumeration import against_enumeration, random_case

ROOT = Path(__file__).resolve().parents[1]


def pool(name, gpu, ctype, usd, per=1, limit=None):
    return Pool(name, gpu, ctype, per, usd, limit)


def random_day(rng: random.Random):
    gpus = ["A", "B"][: rng.randint(1, 2)]
    pools = []
    for g in gpus:
        od = round(rng.uniform(0.5, 2.0), 3)
        pools.append(pool(f"{g}.x", g, "on-demand", od))
        if rng.random() < 0.6:
            pools.append(pool(f"{g}.x", g, "spot", round(od * rng.uniform(0.3, 0.6), 3)))
        pools.append(pool(f"{g}.x", g, rng.choice(["reserved-1yr", "reserved-3yr"]), round(od * rng.uniform(0.5, 0.9), 3)))
    return random_case(rng, pools, gpus, capacity=(200, 600), spot_shares=[1.0, 0.5], periods=(2, 4),
                       demand=(50, 1200))


@pytest.mark.parametrize("seed", range(3))
def test_day_milp_cost_equals_enumeration_on_small_curves(seed):
    rng = random.Random(seed)
    compared = 0
    for case, got, expected in against_enumeration(random_day(rng) for _ in range(12)):
        assert got.usd == pytest.approx(expected, rel=1e-9, abs=1e-9), case
        assert got.lp_bound is None or got.lp_bound <= got.usd + 1e-9
        compared += 1
    assert compared >= 8


def test_a_flat_curve_costs_the_point_plan_all_day():
    problem = Problem((pool("g.x", "T4", "on-demand", 1.0), pool("g.x", "T4", "spot", 0.35),
                       pool("g.x", "T4", "reserved-1yr", 0.7)), {"T4": 100.0}, 950.0, max_spot_share=0.5)
    day = solve_day(problem, [950.0] * 24, [1.0] * 24)
    point = solve(problem)
    assert day.usd == pytest.approx(point.usd_per_hour * 24)
    assert all(c == day.counts[0] for c in day.counts)


def test_a_short_peak_buys_no_reserved_capacity_for_the_peak():
    # Reserved at 0.7 of on-demand pays only where it is busy 16.8 h a day: a one-hour peak is on-demand.
    problem = Problem((pool("g.x", "T4", "on-demand", 1.0), pool("g.x", "T4", "reserved-1yr", 0.7)),
                      {"T4": 100.0}, 1.0)
    base, peak = 400.0, 1200.0
    day = solve_day(problem, [base] * 23 + [peak], [1.0] * 24)
    assert day.counts[0]["g.x/reserved-1yr"] == 4  # the base: busy all day
    assert day.counts[-1]["g.x/on-demand"] == 8  # the peak's extra is bought for its hour only
    assert day.usd == pytest.approx(4 * 0.7 * 24 + 8 * 1.0)


def test_weighted_routing_keeps_one_weight_per_gpu_type_all_day():
    pools = (pool("a.x", "A", "on-demand", 1.0), pool("b.x", "B", "on-demand", 1.5))
    problem = Problem(pools, {"A": 100.0, "B": 200.0}, 1.0)
    demand = [300.0, 900.0, 500.0]
    day = solve_day(problem, demand, [8.0, 8.0, 8.0])
    for q, traffic in zip(demand, day.traffic):
        for g, w in day.weights.items():
            assert traffic[g] == pytest.approx(w * q, abs=1e-6)
    assert sum(day.weights.values()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ the HPA replay

class _Constant:
    """A latency table whose every rate up to ``top`` req/s per replica has latency 1 ms: the replay's
    accounting of replicas is what these tests read."""

    def __init__(self, top: float):
        self.rates = np.array([top])
        self.samples = [np.array([1.0])]


def _sizing(target: float) -> dict[str, GpuSizing]:
    cfg = BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1)
    return {"T4": GpuSizing("T4", cfg, target * 1.5, target, target * 1.5)}


def test_replay_scales_up_after_the_lag_and_down_after_the_stabilization_window():
    spec = AutoscalingSpec(scale_up_lag_s=300.0, ramp_per_min=0.0)
    # 100 req/s for an hour, 400 for an hour, 100 for an hour; rows of 10 minutes (linear between midpoints).
    qps = np.array([100.0] * 6 + [400.0] * 6 + [100.0] * 6)
    curve = DemandCurve(qps, 600.0, "test")
    played = replay(curve, {"T4": 1.0}, _sizing(100.0), spec, {"T4": 1}, {"T4": (1, 10)}, {"T4": _Constant(1e9)})
    serving = played.serving["T4"]
    t = played.times
    rise = np.argmax(curve.rate_at(t) > 110.0)  # traffic first past the target by the tolerance
    more = np.argmax(serving > 1)
    assert t[more] - t[rise] >= spec.scale_up_lag_s  # nothing serves before a node could start
    assert t[more] - t[rise] <= spec.scale_up_lag_s + spec.metric_delay_s + 2 * spec.hpa_sync_s
    assert serving.max() == 4
    fall = np.argmax((t > 6000) & (curve.rate_at(t) < 400 / 1.1 * 0.99))
    fewer = fall + np.argmax(serving[fall:] < 4)
    assert t[fewer] - t[fall] >= SCALE_DOWN_STABILIZATION_S
    assert serving[-1] == 1
    assert np.all(played.billed["T4"] >= serving)


def test_replay_never_exceeds_the_hpa_bounds_and_reports_overload():
    spec = AutoscalingSpec(scale_up_lag_s=60.0, ramp_per_min=0.0)
    curve = DemandCurve(np.array([100.0, 2000.0, 2000.0, 2000.0]), 900.0, "test")
    table = _Constant(150.0)
    played = replay(curve, {"T4": 1.0}, _sizing(100.0), spec, {"T4": 1}, {"T4": (1, 3)}, {"T4": table})
    assert played.serving["T4"].max() == 3
    assert played.p99_ms({"T4": table}, 1800.0, 3600.0) is None  # 2000 req/s on 3 replicas: overloaded


# ------------------------------------------------------------------------------------------------ the curve reader

def write(tmp_path, text, name="curve.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_curve_formats(tmp_path):
    hhmm = read_day_curve(write(tmp_path, "time,qps\n00:00,1\n00:30,2\n01:00,3\n"))
    assert hhmm.step_s == 1800 and list(hhmm.qps) == [1, 2, 3]
    iso = read_day_curve(write(tmp_path, "timestamp,qps\n2026-01-01T00:00:00,5\n2026-01-01T00:15:00,6\n"
                                            "2026-01-01T00:30:00,7\n2026-01-01T00:45:00,8\n"))
    assert iso.step_s == 900 and iso.span_s == 3600
    replay_format = read_day_curve(write(tmp_path, "qps\n" + "10\n" * 60), step_min=1)
    assert replay_format.step_s == 60 and replay_format.span_s == 3600
    overnight = read_day_curve(write(tmp_path, "time,qps\n23:00,1\n23:30,2\n00:00,3\n00:30,4\n"))
    assert overnight.step_s == 1800 and list(overnight.qps) == [1, 2, 3, 4]


@pytest.mark.parametrize("text, step, needle", [
    ("time,qps\n00:00,1\n00:30,2\n01:30,3\n", None, "line 4: rows must be at one regular"),
    ("time,qps\n00:00,1\n00:30,-2\n", None, "line 3: qps -2"),
    ("time,rate\n00:00,1\n", None, "'qps' column"),
    ("qps\n1\n2\n", None, "no 'time' column"),
    ("time,qps\n00:00,1\n00:10,2\n", None, "at least 1 hour"),
    ("time,qps\n00:00,0\n00:30,0\n01:00,0\n", None, "every qps is 0"),
    ("time,qps\n00:00,1\nnoon,2\n", None, "line 3: time 'noon'"),
    ("time,qps\n0,1\nnan,2\n", None, "line 3: time 'nan'"),
])
def test_curve_errors_are_one_line(tmp_path, text, step, needle):
    with pytest.raises(PlannerInputError, match=needle.replace("(", r"\(")):
        read_day_curve(write(tmp_path, text), step)


# ------------------------------------------------------------------------------------------------ end to end

def flat_csv(tmp_path, qps: float, hours: int = 24) -> Path:
    return write(tmp_path, "time,qps\n" + "".join(f"{h:02d}:00,{qps}\n" for h in range(hours)), "flat.csv")


def test_a_flat_day_plan_is_the_point_plan(tmp_path):
    kwargs = dict(model="resnet50", gpus=["T4"], p99_ms=50.0, ramp_per_min=0.02)
    point = recommend(RecommendRequest(qps=900.0, **kwargs))
    day = recommend_day(RecommendRequest(qps=1.0, **kwargs), read_day_curve(flat_csv(tmp_path, 900.0)))
    assert {(p.instance_type, p.capacity_type, p.count) for p in day.pools} == \
        {(p.instance_type, p.capacity_type, p.count) for p in point.pools}
    assert day.day.usd_per_day == pytest.approx(point.cost.usd_per_hour * 24, rel=1e-3)
    assert day.day.holds_target and day.day.ramp.holds


def test_day_plan_through_the_console_entry_point(tmp_path):
    out = tmp_path / "plan.json"
    run = run_cli("planner", ["recommend", "--qps-curve", str(ROOT / "bench/data/i94-weekday-2012-10-04.csv"),
                              "--output", str(out)])
    assert run.returncode == 0, run.stderr
    plan = read_plan(out)
    day = plan.day
    assert day is not None and len(day.periods) == 24
    assert plan.request.qps == pytest.approx(5000.0)
    assert day.holds_target and day.ramp.holds
    by_name = {c.name: c for c in day.comparisons}
    assert day.usd_per_day <= by_name["peak on-demand"].usd_per_day
    assert day.usd_per_day <= by_name["peak reserved"].usd_per_day
    # The point plan at the mean is cheaper only because it cannot hold the morning peak.
    assert not by_name["point plan at the mean"].holds_target
    # The fleet follows the curve: fewer replicas at 03:00 than at the 07:00 peak.
    night, peak = day.periods[3], day.periods[7]
    assert sum(night.replicas.values()) < sum(peak.replicas.values())
    for d in plan.deployments:
        assert d.autoscaling.min_replicas <= min(sum(p.replicas.values()) for p in day.periods)
    assert "Over the day" in run.stdout


def test_a_bad_curve_exits_2_with_one_line(tmp_path):
    bad = write(tmp_path, "time,qps\n00:00,1\n00:30,abc\n")
    run = run_cli("planner", ["recommend", "--qps-curve", str(bad)])
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "line 3: qps 'abc'" in run.stderr
    both = run_cli("planner", ["recommend", "--qps", "10", "--qps-curve", str(bad)])
    assert both.returncode == 2 and "exactly one of --qps, --qps-curve and --mix" in both.stderr
