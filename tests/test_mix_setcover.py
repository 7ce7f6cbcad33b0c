"""Issue 26: a mix is planned by one set-partitioning MILP over candidate co-location sets (planner/setcover.py),
candidates simulated lazily. Proof against the old way (every partition, each set sized by the point MILP:
planner/mixbrute.py), the one-model mix against the point plan through the console entry, and every fleet
constraint a point plan takes, now planned for a mix and checked for what it promises."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.plan import Plan
from gpufleet.contracts.profile import write_profile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.catalog import pools_for, read_catalog
from planner.cli import main
from planner.colocate import UNMEASURED_WAYS, ModelDemand, plan_mix, search_share, simulate_p99
from planner.mixbrute import cheapest_partition
from planner.profiles import load_profiles
from planner.service import ServerCost
from tests.synthetic import affine_profile, stress_result

LIGHT = "model,qps,p99_ms\nyolov8m-seg-640,100,150\nyolov8n-640,150,50\n"
THREE = "model,qps,p99_ms\nyolov8m-seg-640,300,150\nyolov8n-640,500,50\nyolov8s-640,400,80\n"
T4_L4 = ["--gpu", "T4", "--gpu", "L4"]


@pytest.fixture(scope="module")
def profiles():
    return load_profiles([])


def plan_of(capsys, *argv: str | Path) -> Plan:
    status = main(["recommend", *map(str, argv), "--format", "json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return Plan.model_validate_json(out)


def mix_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.csv"
    path.write_text(text)
    return path


def seeded_mixes(seed: int, n: int) -> list[tuple[str, float, float]]:
    """``n`` models with rates and targets drawn from ``seed`` (rates 50-600 req/s, targets the model can meet)."""
    rng = np.random.default_rng(seed)
    menu = [("yolov8n-640", 40), ("yolov8s-640", 70), ("yolov8m-seg-640", 150), ("resnet50", 40), ("yolov8m-640", 100)]
    picked = rng.choice(len(menu), n, replace=False)
    return [(menu[i][0], float(rng.integers(50, 600)), float(menu[i][1] * rng.uniform(1.0, 1.5))) for i in picked]


CASES = [seeded_mixes(s, n) for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 4), (6, 4))]


@pytest.mark.parametrize("mix", CASES, ids=[f"{len(m)}models-{i}" for i, m in enumerate(CASES)])
def test_the_set_cover_milp_equals_every_partition_costed(profiles, mix):
    """The lazy set-partitioning MILP, decomposed, against every partition (Bell numbers) each set sized by the
    point MILP, at the same candidates' shares (every candidate simulated for the reference)."""
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    demands = [ModelDemand(m, q, t) for m, q, t in mix]
    lazy = plan_mix(demands, profiles, pools, workers=1, verify=False)
    full = plan_mix(demands, profiles, pools, workers=1, verify=False, simulate_all=True)
    truth, _ = cheapest_partition([d.model for d in demands], full.columns, pools, max_spot_share=0.7,
                                  min_replicas_per_gpu=2)
    assert lazy.usd_per_hour == pytest.approx(truth, abs=1e-9)
    assert lazy.lp_bound <= lazy.usd_per_hour + 1e-9


def test_the_share_search_run_a_step_at_a_time_finds_what_the_whole_bracket_finds(profiles):
    """plan_mix runs each candidate's share search a step at a time (so it can stop bisecting candidates an
    optimum drops); finished, every candidate's share is the one search_share's whole bracket finds, to the bit."""
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    demands = [ModelDemand(m, q, t) for m, q, t in CASES[3]]
    by_name = {d.model: d for d in demands}
    full = plan_mix(demands, profiles, pools, workers=1, verify=False, simulate_all=True)
    shared = [c for c in full.columns.values() if len(c.models) > 1]
    assert shared
    for c in shared:
        rms = [ReplicaModel.from_profile(profiles[(m, c.gpu)]) for m in c.models]
        lo, _, _ = search_share(([by_name[m] for m in c.models], rms, list(c.data["configs"]), c.data["speed"],
                                 c.data["bound"], 0.0))
        assert c.data["lo"] == lo, f"{c.models}@{c.gpu}"


@pytest.mark.parametrize("constraints", [
    {"spot_survival": True}, {"routing": "equal"}, {"min_replicas": 5}, {"max_spot_share": 0.0},
], ids=lambda c: next(iter(c)))
def test_the_set_cover_milp_equals_every_partition_under_each_constraint(profiles, constraints):
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    demands = [ModelDemand(m, q, t) for m, q, t in CASES[4]]
    kw = {"max_spot_share": 0.7, **constraints}
    lazy = plan_mix(demands, profiles, pools, workers=1, verify=False, **kw)
    full = plan_mix(demands, profiles, pools, workers=1, verify=False, simulate_all=True, **kw)
    truth, _ = cheapest_partition([d.model for d in demands], full.columns, pools, min_replicas_per_gpu=2, **kw)
    assert lazy.usd_per_hour == pytest.approx(truth, abs=1e-9)


def test_pool_limits_shared_by_the_sets_are_planned_by_the_joint_milp(profiles):
    """A pool limit binds every set's fleet together: the joint MILP holds it (no pool over the limit), at no less
    than the unlimited optimum."""
    pools = tuple(pools_for(read_catalog(), {"T4", "L4"}, 12.0))
    demands = [ModelDemand(m, q, t) for m, q, t in CASES[4]]
    free = plan_mix(demands, profiles, pools, workers=1)
    limited = plan_mix(demands, profiles, pools, workers=1, max_instances_per_pool=2)
    used: dict[str, int] = {}
    for part in limited.parts:
        for pool, n in part.counts.items():
            used[pool] = used.get(pool, 0) + n
    assert max(used.values()) <= 2
    assert limited.usd_per_hour >= free.usd_per_hour - 1e-9


def test_a_one_model_mix_is_the_point_plan(tmp_path, capsys):
    mix = mix_file(tmp_path, "model,qps,p99_ms\nyolov8s-640,700,80\n")
    mixed = plan_of(capsys, "--mix", mix, *T4_L4)
    point = plan_of(capsys, "--qps", "700", "--p99-ms", "80", "--model", "yolov8s-640", *T4_L4)
    assert mixed.cost == point.cost
    assert mixed.pools == point.pools
    assert mixed.deployments == point.deployments


def test_a_mix_plans_with_a_floor_of_replicas_per_deployment(tmp_path, capsys):
    plan = plan_of(capsys, "--mix", mix_file(tmp_path, LIGHT), *T4_L4, "--min-replicas", "5")
    assert plan.request.min_replicas == 5
    for unit in plan.units():
        assert unit[0].replicas >= 5, unit


def test_a_mix_plans_within_a_pool_limit(tmp_path, capsys):
    plan = plan_of(capsys, "--mix", mix_file(tmp_path, THREE), *T4_L4, "--max-instances-per-pool", "2")
    assert plan.request.max_instances_per_pool == 2
    assert plan.pools and max(p.count for p in plan.pools) <= 2
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    assert all(d.predicted.p99_ms <= targets[d.model] for d in plan.deployments)


def test_a_mix_with_equal_routing_gives_every_replica_of_a_deployment_the_same_rate(tmp_path, capsys):
    plan = plan_of(capsys, "--mix", mix_file(tmp_path, THREE), *T4_L4, "--routing", "equal")
    assert plan.request.routing == "equal"
    for d in plan.deployments:
        mine = [e for e in plan.deployments if e.model == d.model and e.shared == d.shared]
        total = sum(e.replicas for e in mine)
        assert d.routing_weight == pytest.approx(d.replicas / total, abs=1e-5)
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    assert all(d.predicted.p99_ms <= targets[d.model] for d in plan.deployments)


def test_a_mix_with_spot_survival_holds_every_target_on_its_other_replicas(tmp_path, capsys, profiles):
    """Lose every spot replica of each Deployment (each GPU type has one spot pool here, so that is the largest
    spot pool): what remains, its non-spot floor, carries the Deployment's traffic with every model's P99 within
    its target, simulated as the planner simulates co-located models."""
    plan = plan_of(capsys, "--mix", mix_file(tmp_path, THREE), *T4_L4, "--spot-survival")
    assert plan.request.spot_survival
    assert len({p.gpu for p in plan.pools if p.capacity_type == "spot"}) == len(
        [p for p in plan.pools if p.capacity_type == "spot"])
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    assert any(p.capacity_type == "spot" for p in plan.pools)
    for unit in plan.units():
        left = unit[0].autoscaling.min_replicas  # the Deployment's replicas on non-spot capacity
        gpu = unit[0].gpu
        share = unit[0].routing_weight / left  # of each model's traffic, per remaining replica
        demands = [ModelDemand(d.model, d.rate_per_replica * d.replicas / d.routing_weight, targets[d.model])
                   for d in unit]
        models = [ReplicaModel.from_profile(profiles[(d.model, gpu)]) for d in unit]
        cfgs = [d.triton for d in unit]
        ways = UNMEASURED_WAYS if len(unit) > 1 else ((None, False),)
        for speed, turns in ways:
            p99 = simulate_p99(demands, models, cfgs, share, speed, turns)
            assert all(p <= dm.budget_s for p, dm in zip(p99, demands)), (unit[0].shared or unit[0].model, p99)


COST = ServerCost(2.0, 0.5, 1.2)
CONFIG = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(),
                        instance_count=1)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A model `det` on L4 with a calibration fitted on three stress steps (as tests/test_planner_pairings.py)."""
    root = tmp_path_factory.mktemp("cal")
    det = affine_profile(model="det", gpu="L4")
    write_profile(det, root / "det-L4.json")
    sat = ReplicaModel.from_profile(det, COST).saturation_rate(CONFIG)
    stress_result(det, CONFIG, [round(f * sat, 1) for f in (0.3, 0.55, 0.8)], overhead_ms=3.0, cost=COST,
                  duration_s=20, seed=11, path=root / "det.stress.json")
    assert main(["fit", str(root / "det.stress.json"), "--profile", str(root / "det-L4.json"), "--output",
                 str(root / "cal.json")]) == 0
    return root


def test_a_one_model_mix_with_a_calibration_is_the_calibrated_point_plan(calibrated, tmp_path, capsys):
    capsys.readouterr()
    args = ["--profile", calibrated / "det-L4.json", "--calibration", calibrated / "cal.json", "--gpu", "L4"]
    mixed = plan_of(capsys, "--mix", mix_file(tmp_path, "model,qps,p99_ms\ndet,300,100\n"), *args)
    point = plan_of(capsys, "--qps", "300", "--p99-ms", "100", "--model", "det", *args)
    assert mixed.request.calibration == point.request.calibration
    assert mixed.cost == point.cost and mixed.deployments == point.deployments


def test_a_mix_with_a_calibrated_model_plans_it_with_its_fitted_overhead(calibrated, tmp_path, capsys):
    capsys.readouterr()
    mix = mix_file(tmp_path, "model,qps,p99_ms\ndet,300,100\nyolov8n-640,200,50\n")
    plan = plan_of(capsys, "--mix", mix, "--profile", calibrated / "det-L4.json", "--calibration",
                   calibrated / "cal.json", "--gpu", "L4")
    cal = read_calibration(calibrated / "cal.json")
    assert plan.request.calibration == str(calibrated / "cal.json")
    targets = {m.model: m.p99_ms for m in plan.mix.models}
    assert all(d.predicted.p99_ms <= targets[d.model] for d in plan.deployments)
    det = [d for d in plan.deployments if d.model == "det"]
    # The fitted overhead is in det's predicted P99 at least: its prediction is queue + device + overhead.
    assert det and all(d.predicted.p50_ms >= cal.overhead_ms for d in det)
    assert "det: fitted by planner fit" in plan.request.overhead_source


def test_a_co_located_sets_verification_simulates_fresh_random_numbers_not_the_searchs():
    """The plan's check of a shared replica is an independent sample, as a point plan's is: not the numbers the
    share search bisected on (a share tuned to one sample passes that sample by construction)."""
    from planner.capacity import ReplicaModel
    from planner.colocate import simulate_runs, verify_runs
    from planner.profiles import load_profiles
    from gpufleet.contracts.triton import BatchingConfig
    profiles = load_profiles([])
    demands = [ModelDemand("yolov8m-seg-640", 30.0, 150), ModelDemand("yolov8n-640", 50.0, 50)]
    models = [ReplicaModel.from_profile(profiles[(d.model, "T4")]) for d in demands]
    cfgs = [BatchingConfig(max_batch_size=b, max_queue_delay_microseconds=q, preferred_batch_sizes=(),
                           instance_count=1) for b, q in ((4, 2000), (8, 1000))]
    verified = verify_runs(demands, models, cfgs, (1.0, 1.0, 1), None)
    # The search's sample at the same share, both ways of sharing the GPU, the worse kept per model (as verified).
    ways = [simulate_runs(demands, models, cfgs, 1.0, None, turns=t) for t in (False, True)]
    searched = [max(a, b, key=lambda r: r.quantile_ms(0.99)) for a, b in zip(*ways)]
    assert not any(len(v.latency_s) == len(s.latency_s) and np.array_equal(v.latency_s, s.latency_s)
                   for v, s in zip(verified, searched))
