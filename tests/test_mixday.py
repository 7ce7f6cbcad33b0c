"""Issue 26, item 2: a mix over a day. Each model gives a curve; co-located sets are sized per period at that
period's mix of rates (planner/mixday.py). Proof: a one-model mix is its day plan and a flat-curve mix is the point
mix, exactly, through the console entry; the chosen partition is the cheapest of every partition planned on its own;
every period's P99 is simulated within every model's target."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from rich.console import Console

from gpufleet.contracts.plan import Plan
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.colocate import ModelDemand, simulate_p99
from planner.profiles import load_profiles
from planner.render import render_day
from planner.cli import main
from planner.day import recommend_day
from planner.mixday import BUCKET_TOLERANCE, check_replica, direction_buckets, read_mix, recommend_mix_day
from planner.optimize import Infeasible
from planner.pipeline import RecommendRequest
from planner.errors import PlannerInputError

T4 = ["--gpu", "T4"]
# Three light models whose rates move against each other over six hours (resnet50 high when yolov8n-640 is low).
THREE = {"yolov8n-640": ([100, 300, 500, 400, 200, 100], 50), "resnet50": ([300, 200, 100, 150, 300, 400], 40),
         "yolov8s-640": ([50, 80, 120, 200, 100, 60], 80)}


def write_mix(tmp_path: Path, models: dict[str, tuple[list[float], float]], name: str = "mix.csv") -> Path:
    rows = ["time,model,qps"] + [f"{h:02d}:00,{m},{q}" for m, (qs, _) in models.items() for h, q in enumerate(qs)]
    (tmp_path / "curves.csv").write_text("\n".join(rows) + "\n")
    mix = tmp_path / name
    mix.write_text("model,curve,p99_ms\n" + "".join(f"{m},curves.csv,{t}\n" for m, (_, t) in models.items()))
    return mix


def plan_of(capsys, *argv) -> Plan:
    status = main(["recommend", *map(str, argv), "--format", "json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return Plan.model_validate_json(out)


def fleet(plan: Plan) -> list[tuple[str, str, int]]:
    return sorted((p.instance_type, p.capacity_type, p.count) for p in plan.pools)


def test_one_model_mix_with_a_curve_is_its_day_plan(tmp_path, capsys):
    qs = [300, 200, 100, 150, 300, 400]
    mix = write_mix(tmp_path, {"resnet50": (qs, 40)})
    curve = tmp_path / "one.csv"
    curve.write_text("time,qps\n" + "".join(f"{h:02d}:00,{q}\n" for h, q in enumerate(qs)))
    as_mix = plan_of(capsys, "--mix", mix, *T4)
    as_day = plan_of(capsys, "--qps-curve", curve, "--model", "resnet50", "--p99-ms", "40", *T4)
    assert (as_mix.day.usd_per_day, fleet(as_mix), [p.instances for p in as_mix.day.periods]) == (
        as_day.day.usd_per_day, fleet(as_day), [p.instances for p in as_day.day.periods])


def test_flat_curve_mix_is_the_point_mix(tmp_path, capsys):
    flat = {"yolov8m-seg-640": ([100] * 3, 150), "yolov8n-640": ([150] * 3, 50)}
    mix = write_mix(tmp_path, flat)
    point = tmp_path / "point.csv"
    point.write_text("model,qps,p99_ms\nyolov8m-seg-640,100,150\nyolov8n-640,150,50\n")
    a, b = plan_of(capsys, "--mix", mix, *T4), plan_of(capsys, "--mix", point, *T4)
    assert (a.cost, fleet(a), [d.model_dump() for d in a.deployments]) == (
        b.cost, fleet(b), [d.model_dump() for d in b.deployments])


def test_curves_at_different_steps_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("time,qps\n00:00,10\n01:00,20\n02:00,10\n")
    (tmp_path / "b.csv").write_text("time,qps\n00:00,10\n00:30,20\n01:00,10\n01:30,5\n02:00,5\n02:30,5\n")
    mix = tmp_path / "mix.csv"
    mix.write_text("model,curve,p99_ms\nresnet50,a.csv,40\nyolov8n-640,b.csv,50\n")
    assert main(["recommend", "--mix", str(mix)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "same step and times" in err


def test_a_bucket_of_mix_directions_holds_each_period_in_it():
    """The bucket's simulated direction is at least every member period's direction in every model, so the share
    found for it holds each period (the capacity region is downward closed)."""
    rng = np.random.default_rng(3)
    r = rng.uniform(0.5, 1.5, size=(24, 3)) * np.array([1.0, 2.0, 0.5])
    u = r / r.sum(axis=1)[:, None]
    for b in direction_buckets(u):
        e = u[b].max(axis=0)
        assert np.all(e[None, :] >= u[b] - 1e-15)
        assert np.all(e <= (1 + BUCKET_TOLERANCE) * u[b[0]] + 1e-12)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The 3-model x 6-period case: each model's own day plan, and the mix over the day."""
    tmp = tmp_path_factory.mktemp("mixday")
    mix = read_mix(write_mix(tmp, THREE))
    req = RecommendRequest(qps=1.0, gpus=["T4"])
    solo = {m.model: recommend_day(req.but(model=m.model, p99_ms=m.p99_ms, qps=float(m.curve.qps.max())),
                                   m.curve) for m in mix}
    return mix, req, solo, recommend_mix_day(req.but(), mix, solo=solo, workers=1)


def test_mix_day_equals_the_cheapest_partition_planned_one_by_one(three):
    """Brute force: every partition of the three models, each planned as given (its sets' columns simulated, none
    pruned), costs no less than the plan, and the cheapest is the plan's cost."""
    mix, req, solo, plan = three
    names = sorted(m.model for m in mix)
    costs = []
    for parts in _partitions(names):
        try:
            costs.append(recommend_mix_day(req.but(), mix, solo=solo, workers=1,
                                           partition=[tuple(sorted(p)) for p in parts]).day.usd_per_day)
        except (Infeasible, PlannerInputError):
            continue
    assert plan.day.usd_per_day == pytest.approx(min(costs), abs=0.01)


def test_every_period_is_simulated_within_every_models_target(three):
    mix, _, _, plan = three
    assert any(d.shared for d in plan.deployments)  # the case co-locates, so the per-period check is exercised
    for m in plan.mix.models:
        assert len(m.period_p99_ms) == 6
        assert all(p is not None and p <= m.p99_ms for p in m.period_p99_ms), (m.model, m.period_p99_ms)


def test_the_mix_over_the_day_costs_no_more_than_one_day_plan_per_model(three):
    _, _, solo, plan = three
    assert plan.day.usd_per_day <= sum(p.day.usd_per_day for p in solo.values()) + 0.01


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def test_shared_deployments_p50_and_p90_are_simulated_not_the_p99(three):
    """A shared Deployment's P50 and P90 come from its simulation (the busiest period's), not copies of its P99."""
    shared = [d for d in three[3].deployments if d.shared]
    assert shared
    assert all(d.predicted.p50_ms < d.predicted.p90_ms < d.predicted.p99_ms for d in shared), \
        [(d.model, d.predicted) for d in shared]


def test_shared_deployments_utilization_is_the_gpus_busy_time(three):
    """A shared replica's GPU is busy some of the time at its busiest period's rates: one figure per Deployment,
    the same for every model in it (they share the GPU)."""
    shared = [d for d in three[3].deployments if d.shared]
    by_name: dict[str, set[float]] = {}
    for d in shared:
        by_name.setdefault(d.shared, set()).add(d.predicted.utilization)
    assert all(len(u) == 1 and 0.0 < next(iter(u)) <= 1.0 for u in by_name.values()), by_name


def test_mix_day_render_names_the_sum_of_each_models_own_peak(three):
    """The saving line of a mix over a day compares with each model's own peak held all day, summed: not "the point
    plan at the peak" (the mix's peaks fall in different periods)."""
    console = Console(record=True, width=200)
    render_day(three[3], console)
    text = console.export_text()
    assert "point plan at the peak" not in text and "each model's own peak held all day, summed" in text, text


def test_the_periods_check_simulates_fresh_random_numbers_not_the_searchs():
    """The check of a shared replica at a period's rates is an independent sample: not the share search's numbers."""
    profiles = load_profiles([])
    demands = [ModelDemand("yolov8m-seg-640", 30.0, 150), ModelDemand("yolov8n-640", 50.0, 50)]
    models = [ReplicaModel.from_profile(profiles[(d.model, "T4")]) for d in demands]
    cfgs = [BatchingConfig(max_batch_size=b, max_queue_delay_microseconds=q, preferred_batch_sizes=(),
                           instance_count=1) for b, q in ((4, 2000), (8, 1000))]
    checked = [r.quantile_ms(0.99) / 1000.0 for r in check_replica((demands, models, cfgs, ((None, False),)))]
    searched = simulate_p99(demands, models, cfgs, 1.0, None)
    assert checked != searched


# THREE at eight times the rates: two Deployments (a pair and a single) that both buy T4 spot instances.
HEAVY = {m: ([8 * q for q in qs], t) for m, (qs, t) in THREE.items()}


@pytest.mark.parametrize("cap", [2, 5])
def test_a_pool_limit_holds_over_every_set_together_or_the_plan_says_which_pool_it_cannot(tmp_path, capsys, cap):
    """Each set's fleet is planned within --max-instances-per-pool; a plan is given only where their sum is within
    it in every period too (then it is the optimum: the sets' own optima, each within the limit, are a lower bound).
    Else one line naming the pool, its need and its limit, exit 2."""
    mix = write_mix(tmp_path, HEAVY)
    capsys.readouterr()
    status = main(["recommend", "--mix", str(mix), *T4, "--max-instances-per-pool", str(cap), "--format", "json"])
    out, err = capsys.readouterr()
    if cap == 2:  # the pair and the single each fit in two, together not (measured: 3 at 00:00)
        assert status == 2 and err.strip().count("\n") == 0 and "over its limit of 2" in err, err
        return
    assert status == 0, err
    plan = Plan.model_validate_json(out)
    assert plan.request.max_instances_per_pool == cap
    assert len({d.shared or d.model for d in plan.deployments}) > 1  # several fleets share the pools
    assert all(n <= cap for per in plan.day.periods for n in per.instances.values())
