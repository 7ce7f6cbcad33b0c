"""Spot survival: the time-based loss simulation agrees with the planner's survival constraint."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from planner.capacity import CapacitySearch, ReplicaModel
from planner.profiles import load_profiles
from planner.recommend import RecommendRequest, recommend
from gpufleet.contracts.triton import BatchingConfig
from planner.survival import replica_through_loss
from tests.cli_run import run_cli


@pytest.fixture(scope="module")
def cheap_spot_catalog(tmp_path_factory):
    """L4 spot far below on-demand, so the cheapest fleet leans on spot unless survival is required."""
    cat = json.loads(resources.files("gpufleet.data").joinpath("catalog-us-east-1.json").read_text())
    for it in cat["instances"]:
        if it["instance_type"] in ("g6.xlarge", "g6.2xlarge", "g6.12xlarge") and it["spot"] is None:
            it["spot"] = {"usd_per_hour_range": [0.1, 0.1], "source": "skypilot-v7"}
        if it["spot"] is not None and it["gpu"] == "L4":
            it["spot"]["usd_per_hour_range"] = [0.05 * it["gpu_count"]] * 2
    path = tmp_path_factory.mktemp("cat") / "cheap-spot.json"
    path.write_text(json.dumps(cat))
    return path


@pytest.mark.parametrize("required", [False, True])
def test_loss_simulation_agrees_with_the_survival_constraint(cheap_spot_catalog, required):
    plan = recommend(RecommendRequest(qps=60_000, p99_ms=20, model="resnet50", gpus=["L4"], catalog=cheap_spot_catalog,
                                      capacity_types=["on-demand", "spot"], max_spot_share=1.0,
                                      spot_survival=required, survival_p99_ms=60))
    sv = plan.survival
    assert sv is not None and sv.cold_start_s == 360
    assert sv.constraint_holds is required  # without the requirement the cheap fleet leans on one spot pool
    assert sv.holds is sv.constraint_holds
    if required:
        assert sv.p99_ms_cold_start <= 60 and sv.p99_ms_after_replacement <= 60
    else:
        assert sv.p99_ms_cold_start is None or sv.p99_ms_cold_start > 60
    assert read_plan_back(plan).survival == sv  # null, never Infinity, where no replica is left


def read_plan_back(plan):
    from gpufleet.contracts.plan import Plan
    return Plan.model_validate_json(plan.model_dump_json())


def test_the_window_carries_the_raised_rate_and_the_backlog_drains_after():
    model = ReplicaModel.from_profile(load_profiles()[("resnet50", "T4")])
    cfg = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1)
    sat = model.saturation_rate(cfg)
    steady = CapacitySearch(model).simulate(0.6 * sat, cfg).quantile_ms(0.99)
    calm = replica_through_loss(cfg, model.service, model.speedup, 0.4 * sat, 0.6 * sat, 0.4 * sat, 30, 30, seed=1)
    import numpy as np
    assert np.quantile(calm.window, 0.99) * 1000 == pytest.approx(steady, rel=0.15)
    flooded = replica_through_loss(cfg, model.service, model.speedup, 0.4 * sat, 1.3 * sat, 0.4 * sat, 20, 60,
                                   seed=1)
    # Over capacity the queue grows through the window: P99 is seconds, not milliseconds ...
    assert np.quantile(flooded.window, 0.99) > 2.0
    # ... and requests arriving after the replacements still wait out the backlog at first.
    assert np.max(flooded.after) > np.quantile(calm.after, 0.99)


@pytest.mark.parametrize("routing", ["weighted", "equal"])
def test_an_all_spot_fleet_of_one_pool_reports_that_nothing_survives(routing, tmp_path):
    """Losing the only pool leaves no replica at all: the check says so (it crashed under equal routing)."""
    from gpufleet.contracts.plan import read_plan

    out = tmp_path / "plan.json"
    run = run_cli("planner", ["recommend", "--qps", "3000", "--p99-ms", "100", "--max-spot-share", "1.0",
                              "--capacity-type", "spot", "--routing", routing, "--output", str(out)])
    assert run.returncode == 0, run.stderr
    check = read_plan(out).survival
    assert check is not None and not check.holds and check.constraint_holds is False
    assert check.p99_ms_cold_start is None and check.p99_ms_after_loss is None
