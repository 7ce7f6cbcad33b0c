"""Several models, one fleet, end to end: `planner recommend --mix` through its console entry point, the plan it
writes, and the co-location planner against brute force on small cases."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.plan import read_plan
from planner.capacity import CapacitySearch, ReplicaModel
from planner.catalog import pools_for, read_catalog
from planner.colocate import UNMEASURED_WAYS, ModelDemand, plan_mix, simulate_p99
from planner.mixbrute import partitions
from planner.profiles import load_profiles
from tests.cli_run import run_cli

LIGHT = "model,qps,p99_ms\nyolov8m-seg-640,100,150\nyolov8n-640,150,50\n"


def mix_file(tmp_path, text, name="mix.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_mix_plan_serves_every_model_within_its_own_target(tmp_path):
    out = tmp_path / "plan.json"
    run = run_cli("planner", ["recommend", "--mix", str(mix_file(tmp_path, LIGHT)), "--gpu", "T4", "--gpu", "L4",
                              "--output", str(out)])
    assert run.returncode == 0, run.stderr
    plan = read_plan(out)
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    assert targets == {"yolov8m-seg-640": 150.0, "yolov8n-640": 50.0}
    served = {}
    for d in plan.deployments:
        assert d.predicted.p99_ms <= targets[d.model], d
        assert d.autoscaling.target_rate_per_replica <= d.autoscaling.max_rate_per_replica
        served[d.model] = served.get(d.model, 0.0) + d.routing_weight
    assert served == pytest.approx({m: 1.0 for m in targets}, abs=1e-5)  # every model's traffic goes somewhere
    # Light models share: one production floor serves both, where apart each needs its own.
    assert {d.shared for d in plan.deployments} == {"yolov8m-seg-640+yolov8n-640@T4"}
    assert plan.cost.usd_per_hour < plan.mix.separate_usd_per_hour and plan.mix.saving > 0.3
    assert plan.replicas == sum(p.replicas for p in plan.pools)
    assert plan.mix.lp_bound_usd_per_hour <= plan.cost.usd_per_hour + 1e-6
    assert "yolov8m-seg-640 100 req/s at P99 <= 150 ms" in run.stdout and "saved" in run.stdout


@pytest.mark.parametrize("text, says", [
    ("model,qps\nyolov8n-640,10\n", "missing p99_ms"),
    ("model,qps,p99_ms\nyolov8n-640,ten,50\n", "mix.csv:2: qps and p99_ms must be numbers"),
    ("model,qps,p99_ms\nyolov8n-640,10,50\nyolov8n-640,5,40\n", "appears twice"),
    ("model,qps,p99_ms\nyolov8n-640,10,-5\n", "qps and p99_ms > 0"),
    ("model,qps,p99_ms\nno-such-model,10,50\n", "unknown model 'no-such-model'"),
    ("model,qps,p99_ms\n", "one row per model"),
])
def test_a_bad_mix_exits_2_with_one_line(tmp_path, text, says):
    run = run_cli("planner", ["recommend", "--mix", str(mix_file(tmp_path, text))])
    assert run.returncode == 2, run.stdout
    assert run.stderr.strip().count("\n") == 0 and says in run.stderr and "Traceback" not in run.stderr


def test_a_mix_with_a_rate_is_refused(tmp_path):
    run = run_cli("planner", ["recommend", "--mix", str(mix_file(tmp_path, LIGHT)), "--qps", "10"])
    assert run.returncode == 2 and "exactly one of --qps, --qps-curve and --mix" in run.stderr


def brute_force(demands, profiles, pool, headroom, floor):
    """The cheapest partition and replica counts on one pool (one GPU per instance), by enumeration: a set on n
    replicas holds when each model's P99 is within its budget with every replica carrying 1/n of the traffic at the
    HPA target (1 / (n x headroom) of each model's planned rate), both ways the GPU may be shared."""
    models = {d.model: ReplicaModel.from_profile(profiles[(d.model, pool.gpu)]) for d in demands}
    configs = {m: CapacitySearch(rm).best(next(d for d in demands if d.model == m).budget_s * 1000).config
               for m, rm in models.items()}

    def replicas(names):
        ds = [d for d in demands if d.model in names]
        rms, cfgs = [models[d.model] for d in ds], [configs[d.model] for d in ds]
        ways = UNMEASURED_WAYS if len(ds) > 1 else ((None, False),)
        for n in itertools.count(floor):
            share = 1.0 / (n * headroom)
            if all(all(p <= d.budget_s for p, d in zip(simulate_p99(ds, rms, cfgs, share, s, t), ds)) for s, t in ways):
                return n

    best = min(sum(replicas(tuple(sorted(p))) for p in part) for part in partitions(sorted(models)))
    return best * pool.usd_per_hour


@pytest.mark.parametrize("mix", [
    [("yolov8m-seg-640", 100, 150), ("yolov8n-640", 150, 50)],
    [("yolov8m-seg-640", 250, 150), ("yolov8n-640", 400, 50), ("yolov8s-640", 200, 80)],
    [("yolov8s-1280x720", 300, 100), ("yolov8m-640", 120, 100)],
])
def test_the_mix_planner_matches_brute_force(mix):
    profiles = load_profiles([])
    pool = next(p for p in pools_for(read_catalog(), {"T4"}, 12.0, {"on-demand"}) if p.instance_type == "g4dn.xlarge")
    demands = [ModelDemand(m, q, t) for m, q, t in mix]
    spec = AutoscalingSpec(scale_up_lag_s=DEFAULT_SCALE_UP_LAG_S, ramp_per_min=DEFAULT_RAMP_PER_MIN)
    planned = plan_mix(demands, profiles, (pool,), spec=spec, workers=1)
    truth = brute_force(demands, profiles, pool, spec.sizing_rate(1.0), 2)
    # The planner bisects each set's share to 1/32 of its saturation bound, below the largest that holds: it may
    # buy one replica more than enumeration, never fewer (that would be a fleet enumeration found failing).
    assert truth <= planned.usd_per_hour + 1e-9 <= truth + pool.usd_per_hour + 1e-9, (truth, planned.usd_per_hour)


def test_a_mix_plan_reports_every_models_p99_against_its_target(tmp_path):
    plan_path = Path(__file__).resolve().parents[1] / "infra/plans/mix.plan.json"
    run = run_cli("planner", ["report", str(plan_path), "--out", str(tmp_path / "r")])
    assert run.returncode == 0, run.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    plan = read_plan(plan_path)
    assert (tmp_path / "r" / "mix.png").stat().st_size > 0
    assert f"{plan.mix.saving:.1%} saved" in page
    for d in plan.deployments:
        assert d.model in page and f"{d.predicted.p99_ms:.2f}" in page


def test_a_shared_replicas_written_queue_bounds_turn_away_almost_nobody_at_its_planned_rates(tmp_path):
    """Two slow-batch models (20 ms + 4 ms per image, P99 100 ms) light enough to share one T4. Each model's queue
    bound is written from the model alone (planner.capacity.queue_bound: the budget less its own full batch), while
    on a shared GPU a request also waits behind the other model's batches; the share search holds each P99 within
    its budget, which keeps those waits short of the timeout too. The shared replica, simulated at its planned rates
    on fresh numbers (both ways an unmeasured co-run may go), refuses at most REFUSED_SHARE_MAX of each model's
    requests by that timeout, as a replica of one model does (tests/test_recommend.py). Probed 2026-12-04 on
    mixes of this profile and two others, at the planned rates and at max_rate: 0.003-0.068% refused."""
    from planner.capacity import REFUSED_SHARE_MAX
    from planner.colocate import simulate_runs
    from planner.sizing import VERIFY_REQUESTS, VERIFY_SEED, replica_model
    from gpufleet.contracts.profile import read_profile

    args = []
    for m in ("cam-a", "cam-b"):
        path = tmp_path / f"{m}.json"
        path.write_text(json.dumps({
            "schema_version": 1, "model": m, "gpu": "T4", "precision": "fp16", "backend": "triton",
            "origin": {"kind": "derived", "date": "2026-12-04", "derivation": "synthetic: 20 ms + 4 ms per image"},
            "batches": [{"batch_size": b, "mean_ms": 20.0 + 4.0 * b, "p50_ms": 20.0 + 4.0 * b,
                         "p99_ms": 1.05 * (20.0 + 4.0 * b)} for b in (1, 2, 4, 8)]}))
        args += ["--profile", str(path)]
    out = tmp_path / "plan.json"
    mix = mix_file(tmp_path, "model,qps,p99_ms\ncam-a,30,100\ncam-b,30,100\n")
    run = run_cli("planner", ["recommend", "--mix", str(mix), "--gpu", "T4", *args, "--output", str(out)])
    assert run.returncode == 0, run.stderr
    plan = read_plan(out)
    shared = sorted((d for d in plan.deployments if d.shared), key=lambda d: d.model)
    assert [d.model for d in shared] == ["cam-a", "cam-b"], plan.deployments
    demands = [ModelDemand(d.model, d.rate_per_replica, 100.0, plan.request.overhead_ms) for d in shared]
    models = [replica_model(read_profile(tmp_path / f"{d.model}.json"), None) for d in shared]
    cfgs = [d.triton.latency_shape for d in shared]
    for speed, turns in UNMEASURED_WAYS:
        runs = simulate_runs(demands, models, cfgs, 1.0, speed, turns, seed=VERIFY_SEED, requests=VERIFY_REQUESTS)
        for d, res in zip(shared, runs):
            refused = float(np.mean(res.queue_s * 1e6 > d.triton.queue_timeout_microseconds))
            assert refused <= REFUSED_SHARE_MAX, (d.model, "turns" if turns else "shared", refused, d.triton)
