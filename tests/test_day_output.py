"""What a day plan prints: every figure says what it is measured against, and no difference is negative. Run
through the console entry point in-process (``planner.cli.main``), its text and its JSON."""
import json
import math
import re
from pathlib import Path

import pytest

from planner.cli import main

ROOT = Path(__file__).resolve().parents[1]
SATURDAY = ROOT / "bench" / "data" / "i94-saturday-2012-10-06.csv"


def planner(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["recommend", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_a_day_plan_prints_no_negative_difference(capsys):
    # The Saturday curve with yolov8m-640: the peak hour's fleet holds reserved instances bought for the day, so the
    # point problem at the peak has cheaper fleets than it; no figure may be printed as a negative extra.
    text = planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640")
    text = " ".join(text.split())
    assert not re.search(r"[+]\s?\$-|[+]-|\$-\d", text), re.findall(r".{60}(?:[+]\s?\$-|[+]-|\$-\d).{20}", text)


def _curves(tmp_path) -> dict[str, list[str]]:
    """Curves of every kind, each with the options that read it."""
    flat = tmp_path / "flat.csv"
    flat.write_text("time,qps\n" + "".join(f"{h:02d}:00,3000\n" for h in range(24)))
    # loadtests' --replay format: a qps column alone, a row a minute; an hour rising and falling by 50%.
    short = tmp_path / "replay.csv"
    short.write_text("qps\n" + "".join(f"{3000 + 1500 * math.sin(i / 60 * math.pi):.1f}\n" for i in range(60)))
    ramp = tmp_path / "ramp.csv"
    ramp.write_text("time,qps\n" + "".join(f"{300 * i},{1000 + 4000 * i / 23:.1f}\n" for i in range(24)))
    return {"flat": ["--qps-curve", flat], "short": ["--qps-curve", short, "--curve-step-min", 1, "--period-min", 60],
            "ramp": ["--qps-curve", ramp, "--period-min", 30],
            "weekday": ["--qps-curve", ROOT / "bench/data/i94-weekday-2012-10-04.csv"],
            "saturday": ["--qps-curve", SATURDAY, "--model", "yolov8m-640"]}


@pytest.mark.parametrize("kind", ["flat", "short", "ramp", "weekday", "saturday"])
def test_no_way_printed_as_holding_costs_less_than_the_day_plan(capsys, tmp_path, kind):
    plan = json.loads(planner(capsys, *_curves(tmp_path)[kind], "--format", "json"))
    day = plan["day"]
    # What the plan may lose to an alternative: its own MIP gap, and the cent each figure is rounded to.
    slack = day["usd_per_day"] * day["solver"]["mip_gap"] + 0.01
    cheaper = [(c["name"], c["usd_per_day"]) for c in day["comparisons"]
               if c["holds_target"] and c["usd_per_day"] < day["usd_per_day"] - slack]
    assert not cheaper, f"day plan ${day['usd_per_day']}/day; held and cheaper: {cheaper}"


def test_every_period_reports_its_p99_against_the_target(capsys):
    plan = json.loads(planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640", "--p99-ms", 60,
                              "--format", "json"))
    day = plan["day"]
    assert day["p99_target_ms"] == 60
    assert [p["holds_target"] for p in day["periods"]] == \
        [p["p99_ms"] is not None and p["p99_ms"] <= 60 for p in day["periods"]]


def test_the_saving_against_the_peak_held_all_day_is_reported(capsys):
    plan = json.loads(planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640", "--format", "json"))
    day = plan["day"]
    held = {c["name"]: c for c in day["comparisons"]}["point plan at the peak"]
    assert day["peak_held_usd_per_day"] == held["usd_per_day"]
    assert day["saving_vs_peak_held_usd_per_day"] == pytest.approx(held["usd_per_day"] - day["usd_per_day"], abs=0.01)
    assert day["saving_vs_peak_held_usd_per_day"] > 0  # the Saturday's night trough is bought per hour
    text = " ".join(planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640").split())
    assert f"${day['saving_vs_peak_held_usd_per_day']:,.2f}/day saved against the point plan at the peak" in text


def test_the_report_shows_each_periods_p99_against_the_target_and_the_saving(capsys, tmp_path):
    from gpufleet.contracts.plan import read_plan
    from planner.report import ReportInputs, write_report

    out = tmp_path / "plan.json"
    planner(capsys, "--qps-curve", SATURDAY, "--model", "yolov8m-640", "--p99-ms", 60, "--output", out)
    plan = read_plan(out)
    page = write_report(ReportInputs(plan), tmp_path / "report").read_text()
    assert "P99 &lt;= 60 ms" in page or "P99 <= 60 ms" in page
    verdicts = re.findall(r"<td>(holds|misses)</td>", page)
    assert verdicts == ["holds" if p.holds_target else "misses" for p in plan.day.periods]
    assert f"${plan.day.saving_vs_peak_held_usd_per_day:,.2f}/day saved against the point plan at the peak" in page


def test_a_day_plan_with_mig_buys_slices_where_they_are_cheaper(capsys, tmp_path):
    from gpufleet.contracts.profile import BatchLatency, write_profile
    from planner.profiles import load_profiles

    # A 1g.5gb slice measured at twice the whole A100's latency (a small model that leaves most of the GPU idle):
    # 56 slices on a p4d hold more than its 8 whole GPUs, so where slices may be bought they are cheaper.
    whole = load_profiles([])[("yolov8l-1280x720", "A100")]
    sliced = whole.model_copy(update={"gpu": "A100-MIG-1g.5gb", "batches": [
        BatchLatency(batch_size=b.batch_size, mean_ms=2 * b.mean_ms, p50_ms=2 * b.p50_ms,
                     p90_ms=None if b.p90_ms is None else 2 * b.p90_ms, p99_ms=2 * b.p99_ms,
                     throughput_per_s=None if b.throughput_per_s is None else b.throughput_per_s / 2)
        for b in whole.batches]})
    write_profile(sliced, tmp_path / "slice.json")
    curve = tmp_path / "day.csv"
    curve.write_text("time,qps\n" + "".join(f"{h:02d}:00,{10_000 + 6_000 * math.sin((h - 9) / 24 * 2 * math.pi):.0f}\n"
                                            for h in range(24)))
    common = ["--qps-curve", curve, "--model", "yolov8l-1280x720", "--format", "json"]
    without = json.loads(planner(capsys, *common, "--gpu", "A100"))
    with_mig = json.loads(planner(capsys, *common, "--gpu", "A100", "--gpu", "A100-MIG-1g.5gb", "--mig",
                                  "--profile", tmp_path / "slice.json"))
    day = with_mig["day"]
    assert any(p["mig_partition"] == "all-1g.5gb" and p["count"] > 0 for p in with_mig["pools"])
    assert any(p["mig_partition"] == "all-1g.5gb" for p in day["pools"])
    assert day["usd_per_day"] < without["day"]["usd_per_day"]
    assert all(p["p99_ms"] is not None and p["p99_ms"] <= 100 for p in day["periods"])


def test_a_fleet_pinned_by_its_hpa_serves_and_bills_its_size_all_day():
    import numpy as np

    from gpufleet.contracts.autoscaling import AutoscalingSpec
    from gpufleet.contracts.triton import BatchingConfig
    from planner.day import DemandCurve, replay
    from planner.sizing import GpuSizing

    class Table:
        rates = np.array([100.0, 200.0])
        samples = [np.array([1.0]), np.array([2.0])]

    cfg = BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1)
    curve = DemandCurve(np.array([100.0, 900.0, 300.0]), 1200.0, "test")  # far past what 3 replicas' target holds
    played = replay(curve, {"T4": 1.0}, {"T4": GpuSizing("T4", cfg, 150.0, 100.0, 150.0)},
                    AutoscalingSpec(scale_up_lag_s=60.0, ramp_per_min=0.0), {"T4": 3}, {"T4": (3, 3)}, {"T4": Table})
    assert set(played.serving["T4"]) == {3.0} and set(played.billed["T4"]) == {3.0}
    per = played.rate["T4"] / 3
    assert list(played.grid["T4"]) == list(np.searchsorted(Table.rates, per, side="left"))


@pytest.mark.parametrize("seed", range(4))
def test_pools_the_day_milp_drops_as_dominated_never_change_its_cost(seed):
    # Multi-GPU instances priced above and below their single-GPU equivalents, and two reserved terms, so the
    # dominance rule (same GPU type and role, a whole multiple of replicas for less) both drops pools and keeps them.
    import random

    from planner.bruteforce import brute_force_day
    from planner.catalog import Pool
    from planner.day import solve_day
    from planner.optimize import Infeasible, Problem

    rng = random.Random(seed)
    compared = 0
    for _ in range(6):
        od = round(rng.uniform(0.5, 2.0), 3)
        pools = (Pool("s.x", "T4", "on-demand", 1, od, None),
                 Pool("s.4x", "T4", "on-demand", 4, round(4 * od * rng.uniform(0.8, 1.2), 3), None),
                 Pool("s.x", "T4", "spot", 1, round(od * 0.4, 3), None),
                 Pool("s.4x", "T4", "spot", 4, round(1.6 * od * rng.uniform(0.8, 1.2), 3), None),
                 Pool("s.x", "T4", "reserved-1yr", 1, round(od * 0.7, 3), None),
                 Pool("s.x", "T4", "reserved-3yr", 1, round(od * rng.uniform(0.5, 0.9), 3), None))
        problem = Problem(pools, {"T4": 100.0}, 1.0, max_spot_share=rng.choice([1.0, 0.5]),
                          min_replicas_per_gpu=rng.choice([1, 2]), spot_survival=rng.random() < 0.3)
        demand = [round(rng.uniform(50, 700), 1) for _ in range(3)]
        hours = [rng.choice([1.0, 6.0, 12.0]) for _ in demand]
        try:
            expected = brute_force_day(problem, demand, hours)
        except Infeasible:
            continue
        assert solve_day(problem, demand, hours).usd == pytest.approx(expected, rel=1e-4), (problem, demand, hours)
        compared += 1
    assert compared >= 4
