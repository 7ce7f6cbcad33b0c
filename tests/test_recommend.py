"""Plans from the embedded data: internally consistent, within the target, and shaped by the constraints."""
import json

import pytest

from planner.errors import PlannerInputError
from planner.recommend import RecommendRequest, recommend
from gpufleet.contracts.profile import read_profile, write_profile
from importlib import resources


@pytest.fixture(scope="module")
def plan_5k():
    return recommend(RecommendRequest(qps=5000, p99_ms=100))


@pytest.fixture(scope="module")
def plan_50k():
    return recommend(RecommendRequest(qps=50_000, p99_ms=30))


@pytest.mark.parametrize("name", ["plan_5k", "plan_50k"])
def test_plan_is_consistent_and_meets_its_target(name, request):
    plan = request.getfixturevalue(name)
    assert plan.predicted.p99_ms <= plan.request.p99_ms
    assert all(d.predicted.p99_ms <= plan.request.p99_ms for d in plan.deployments)
    assert plan.cost.usd_per_hour == pytest.approx(sum(p.usd_per_hour for p in plan.pools), rel=1e-6)
    assert sum(d.routing_weight for d in plan.deployments) == pytest.approx(1.0, abs=1e-5)
    for d in plan.deployments:
        assert d.replicas == sum(p.replicas for p in plan.pools if p.gpu == d.gpu)
        assert d.rate_per_replica <= d.autoscaling.max_rate_per_replica + 1e-6
        # The HPA acts once the metric passes its target by more than its tolerance: that must happen below the
        # rate at which P99 reaches the target.
        assert (d.autoscaling.target_rate_per_replica * (1 + plan.autoscaling.tolerance)
                <= d.autoscaling.max_rate_per_replica * (1 + 1e-6))
        assert d.rate_per_replica * d.replicas == pytest.approx(d.routing_weight * plan.request.qps, rel=1e-4)
    spot = sum(p.replicas for p in plan.pools if p.capacity_type == "spot")
    assert spot <= plan.request.max_spot_share * plan.replicas
    if plan.request.spot_survival and plan.survival is not None:
        assert plan.survival.holds and plan.survival.constraint_holds
    assert plan.solver.mip_gap <= 1e-6
    assert plan.cost.usd_per_million_inferences == pytest.approx(
        plan.cost.usd_per_hour / (plan.request.qps * 3600) * 1e6, rel=1e-4)


def test_short_horizon_buys_no_reservation():
    plan = recommend(RecommendRequest(qps=20_000, p99_ms=50, horizon_months=3))
    assert not [p for p in plan.pools if p.capacity_type.startswith("reserved")]


def test_on_demand_only_when_asked():
    plan = recommend(RecommendRequest(qps=20_000, p99_ms=50, capacity_types=["on-demand"]))
    assert {p.capacity_type for p in plan.pools} == {"on-demand"}


def test_equal_routing_gives_every_replica_the_same_rate():
    plan = recommend(RecommendRequest(qps=30_000, p99_ms=50, routing="equal", gpus=["T4", "L4"]))
    rates = {round(d.rate_per_replica, 3) for d in plan.deployments}
    assert len(rates) == 1


def test_a_measured_profile_replaces_the_embedded_one(tmp_path):
    ref = read_profile(resources.files("planner.data").joinpath("profiles/resnet50-T4.json"))
    slower = ref.model_copy(update={"batches": [b.model_copy(update={
        "mean_ms": b.mean_ms * 2, "p50_ms": b.p50_ms * 2, "p99_ms": b.p99_ms * 2}) for b in ref.batches]})
    path = tmp_path / "t4.json"
    write_profile(slower, path)
    base = recommend(RecommendRequest(qps=2000, p99_ms=50, model="resnet50", gpus=["T4"]))
    slow = recommend(RecommendRequest(qps=2000, p99_ms=50, model="resnet50", gpus=["T4"], profiles=[path]))
    assert slow.deployments[0].autoscaling.max_rate_per_replica < 0.6 * base.deployments[0].autoscaling.max_rate_per_replica


def test_tight_pool_limit_is_infeasible_with_one_line():
    with pytest.raises(PlannerInputError, match="infeasible"):
        recommend(RecommendRequest(qps=500_000, p99_ms=50, gpus=["T4"], max_instances_per_pool=2))


def test_spot_survival_with_a_degraded_bound_is_checked_by_simulation(tmp_path):
    # Spot priced far below half of on-demand, so that spot backed by spot pays even under survival.
    cat = json.loads(resources.files("gpufleet.data").joinpath("catalog-us-east-1.json").read_text())
    for it in cat["instances"]:
        if it["instance_type"] in ("g6.xlarge", "g6.2xlarge", "g6.12xlarge") and it["spot"] is None:
            it["spot"] = {"usd_per_hour_range": [0.1, 0.1], "source": "skypilot-v7"}
        if it["spot"] is not None and it["gpu"] == "L4":
            it["spot"]["usd_per_hour_range"] = [0.05 * it["gpu_count"]] * 2
    path = tmp_path / "cheap-spot.json"
    path.write_text(json.dumps(cat))
    plan = recommend(RecommendRequest(qps=60_000, p99_ms=20, model="resnet50", spot_survival=True, survival_p99_ms=60,
                                      max_spot_share=1.0, gpus=["L4"], catalog=path,
                                      capacity_types=["on-demand", "spot"]))
    assert any(p.capacity_type == "spot" for p in plan.pools)
    assert plan.predicted.p99_ms <= 20
    assert plan.survival is not None and plan.survival.holds and plan.survival.p99_ms_after_loss <= 60
    lost = next(p for p in plan.pools if f"{p.instance_type}/{p.capacity_type}" == plan.survival.lost_pool)
    assert lost.replicas == max(p.replicas for p in plan.pools if p.capacity_type == "spot")


def _queue_depth_at_arrival(arrivals_s, queue_s):
    """Requests waiting (arrived, batch not started) when each request arrives, from a simulated FIFO replica."""
    import numpy as np

    started = arrivals_s + queue_s
    order = np.sort(started)
    # Earlier arrivals whose batch has not started by this arrival; FIFO, so all of them are ahead of it.
    started_by = np.searchsorted(order, arrivals_s, side="right")
    index = np.arange(len(arrivals_s))
    return index - np.minimum(started_by, index)


def test_the_rate_a_replica_carries_while_a_spot_pool_is_lost_is_judged_with_the_queue_bound_it_runs(tmp_path):
    """With --spot-survival and a looser degraded P99, a replica may carry more while a spot pool is lost
    (sizing.survival_rate_per_replica). It still runs the queue bound the plan writes for the normal target (the
    deployed config does not change when a pool is lost), so that rate must be judged with it: simulated at the
    survival rate, the written bound turns away at most REFUSED_SHARE_MAX. It was judged with the bound of the
    degraded budget, a longer wait than the one deployed."""
    import numpy as np

    from planner.capacity import REFUSED_SHARE_MAX, SEARCH_REQUESTS, CapacitySearch
    from planner.simulate import Workload
    from planner.sizing import replica_model

    path = tmp_path / "standin.json"
    path.write_text(json.dumps({
        "schema_version": 1, "model": "standin", "gpu": "T4", "precision": "fp16", "backend": "triton",
        "origin": {"kind": "derived", "date": "2026-12-04", "derivation": "synthetic: base + per image"},
        "batches": [{"batch_size": b, "mean_ms": 20.0 + 4.0 * b, "p50_ms": 20.0 + 4.0 * b,
                     "p99_ms": 1.05 * (20.0 + 4.0 * b)} for b in (1, 2, 4, 8)]}))
    plan = recommend(RecommendRequest(model="standin", gpus=["T4"], profiles=[path], qps=400, p99_ms=100,
                                      spot_survival=True, survival_p99_ms=200))
    (sizing,) = [s for s in plan.sizing if s.gpu == "T4"]
    t = plan.deployments[0].triton
    assert sizing.triton.latency_shape == t.latency_shape
    model = replica_model(read_profile(path), None)
    workload = Workload.poisson(SEARCH_REQUESTS, seed=1)
    res = CapacitySearch(model, workload).simulate(sizing.survival_rate_per_replica, t.latency_shape)
    refused = float(np.mean(res.queue_s * 1e6 > t.queue_timeout_microseconds))
    assert refused <= REFUSED_SHARE_MAX, (sizing.max_rate_per_replica, sizing.survival_rate_per_replica, refused)


@pytest.mark.parametrize("name", ["plan_5k", "plan_50k"])
def test_each_deployment_sheds_only_what_would_miss_the_target(name, request):
    """The queue policy is set per deployment; at the planned rate it turns away (almost) nobody, and an admitted
    request at the depth bound, or at the wait bound, still fits the device budget."""
    from planner.capacity import CapacitySearch
    from planner.profiles import load_profiles
    from planner.sizing import replica_model
    from planner.simulate import Workload

    plan = request.getfixturevalue(name)
    budget_ms = plan.request.p99_ms - plan.request.overhead_ms
    profiles = load_profiles()
    for d in plan.deployments:
        t = d.triton
        assert t.max_queue_size >= t.effective_max_batch * t.instance_count - 1 >= 1
        assert 0 < t.queue_timeout_microseconds < budget_ms * 1000
        model = replica_model(profiles[(plan.request.model, d.gpu)], None)
        workload = Workload.poisson(20_000, seed=5)
        res = CapacitySearch(model, workload).simulate(d.rate_per_replica, t.latency_shape)
        arrivals = workload.unit_arrivals[-len(res.queue_s):] / d.rate_per_replica
        depth = _queue_depth_at_arrival(arrivals, res.queue_s)
        assert (depth >= t.max_queue_size).mean() < 0.001
        assert (res.queue_s * 1e6 > t.queue_timeout_microseconds).mean() < 0.01


def test_the_default_plan_is_a_yolo_detector_with_production_safeguards(plan_5k):
    """No --model, no lag, no environment: a YOLO-class detector, lag-aware HPA targets, two replicas per type."""
    from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S
    assert plan_5k.request.model.startswith("yolov8")
    assert plan_5k.request.environment == "production" and plan_5k.request.min_replicas_per_gpu == 2
    assert plan_5k.autoscaling.scale_up_lag_s == DEFAULT_SCALE_UP_LAG_S
    assert plan_5k.autoscaling.ramp_per_min == DEFAULT_RAMP_PER_MIN
    for d in plan_5k.deployments:
        assert d.replicas >= 2
        # The HPA target leaves room for traffic to grow while a GPU node starts: well under the capacity.
        assert d.autoscaling.target_rate_per_replica == pytest.approx(
            plan_5k.autoscaling.hpa_target(d.autoscaling.max_rate_per_replica), rel=1e-3)
        assert d.autoscaling.target_rate_per_replica < 0.8 * d.autoscaling.max_rate_per_replica
    assert "Production: at least 2 replicas" in plan_5k.why and "6-minute GPU scale-up" in plan_5k.why


def test_a_development_plan_may_run_one_replica():
    plan = recommend(RecommendRequest(qps=50, p99_ms=100, environment="development"))
    assert plan.replicas == 1 and "Production" not in plan.why
    with pytest.raises(PlannerInputError, match="--environment"):
        recommend(RecommendRequest(qps=50, environment="staging"))


def test_the_queue_bound_a_plan_writes_turns_away_almost_nobody_up_to_its_capacity(tmp_path):
    """A tight target for a slow batch (20 ms + 4 ms per image, P99 100 ms): a full batch takes more than half the
    budget, so the wait Triton's queue policy allows (the budget less a full batch) is shorter than a request may
    wait behind a batch in progress at normal load. The Deployment's own config, simulated at its planned rate and
    at its max_rate, with each request the written policy refuses counted (over the depth when it arrives, or
    waiting past the timeout when its batch would start: Triton core PolicyQueue::Enqueue / ApplyPolicy), must
    refuse at most REFUSED_SHARE_MAX: at max_rate on the search's own sample path (a capacity is judged on it, its P99
    as well), at the planned rate on another. (Before the fix: 2.95% at max_rate.)"""
    from planner.capacity import REFUSED_SHARE_MAX, SEARCH_REQUESTS, CapacitySearch
    from planner.sizing import replica_model
    from planner.simulate import Workload

    base_ms, per_image_ms = 20.0, 4.0
    path = tmp_path / "standin.json"
    path.write_text(json.dumps({
        "schema_version": 1, "model": "standin", "gpu": "T4", "precision": "fp16", "backend": "triton",
        "origin": {"kind": "derived", "date": "2026-12-03", "derivation": "synthetic: base + per image"},
        "batches": [{"batch_size": b, "mean_ms": base_ms + per_image_ms * b, "p50_ms": base_ms + per_image_ms * b,
                     "p99_ms": 1.05 * (base_ms + per_image_ms * b)} for b in (1, 2, 4, 8)]}))
    plan = recommend(RecommendRequest(model="standin", gpus=["T4"], profiles=[path], qps=50, p99_ms=100,
                                      environment="development", capacity_types=["on-demand"]))
    d = plan.deployments[0]
    t = d.triton
    model = replica_model(read_profile(path), None)
    for rate, workload in ((d.rate_per_replica, Workload.poisson(40_000, seed=11)),
                           (d.autoscaling.max_rate_per_replica, Workload.poisson(SEARCH_REQUESTS, seed=1))):
        res = CapacitySearch(model, workload).simulate(rate, t.latency_shape)
        arrivals = workload.unit_arrivals[-len(res.queue_s):] / rate
        refused = (_queue_depth_at_arrival(arrivals, res.queue_s) >= t.max_queue_size) | (
            res.queue_s * 1e6 > t.queue_timeout_microseconds)
        assert refused.mean() <= REFUSED_SHARE_MAX, (rate, refused.mean(), t)
