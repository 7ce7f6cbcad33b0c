"""Issue 26, item 4 (proof), through the CLI: a flat curve's day plan is the point plan at that rate, exactly.

The console entry function runs in-process with its argv (planner.cli.main), as a user's command line does, and the
plans are read back through the contract reader.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.contracts.plan import read_plan
from planner.cli import main

FLAT_HOURS = 24


def plan_through_cli(tmp_path: Path, name: str, args: list[str]):
    out = tmp_path / f"{name}.plan.json"
    status = main(["recommend", *args, "--format", "json", "--output", str(out)])
    assert status == 0
    return read_plan(out)


def fleet(plan) -> tuple:
    """What would be deployed: pools with their counts, and each Deployment's GPU type, replicas and Triton config."""
    pools = sorted((p.instance_type, p.capacity_type, p.count) for p in plan.pools)
    deployments = sorted((d.model, d.gpu, d.replicas, d.triton.model_dump_json()) for d in plan.deployments)
    return pools, deployments


@pytest.mark.parametrize("model,p99_ms", [("yolov8s-1280x720", 100.0), ("resnet50", 50.0)])
@pytest.mark.parametrize("qps", [250.0, 2_000.0, 9_000.0])
def test_a_flat_curve_day_plan_is_the_point_plan_through_the_cli(tmp_path, model, p99_ms, qps):
    common = ["--model", model, "--p99-ms", f"{p99_ms:g}"]
    curve = tmp_path / "flat.csv"
    curve.write_text("time,qps\n" + "".join(f"{h:02d}:00,{qps:g}\n" for h in range(FLAT_HOURS)))
    point = plan_through_cli(tmp_path, "point", ["--qps", f"{qps:g}", *common])
    day = plan_through_cli(tmp_path, "day", ["--qps-curve", str(curve), *common])
    assert fleet(day) == fleet(point)
    assert {tuple(sorted(p.instances.items())) for p in day.day.periods} == \
        {tuple(sorted((f"{p.instance_type}/{p.capacity_type}", p.count) for p in point.pools))}
    # Every hour costs what the point plan costs per hour, to the contract's rounding (4 decimals per hour, cents
    # per day).
    assert {p.usd / p.hours for p in day.day.periods} == {point.cost.usd_per_hour}
    assert day.day.usd_per_day == round(point.cost.usd_per_hour * FLAT_HOURS, 2)
