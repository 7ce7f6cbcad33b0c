"""planner report: an HTML page with its PNG plots, and curves that behave as costs must."""
from __future__ import annotations

import pytest

from planner.cli import main
from gpufleet.contracts.plan import write_plan
from planner.recommend import RecommendRequest, recommend
from planner.report import FleetModel, ReportInputs, _survives, write_report


@pytest.fixture(scope="module")
def plan():
    return recommend(RecommendRequest(qps=4000, p99_ms=50, gpus=["T4", "L4"]))


def test_report_writes_html_and_pngs_that_show_the_plan(plan, tmp_path):
    page = write_report(ReportInputs(plan), tmp_path).read_text()
    for png in ("cost_vs_qps.png", "p99_vs_load.png", "spot_share.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f'src="{png}"' in page
    for p in plan.pools:
        assert p.instance_type in page
    assert f"{plan.cost.usd_per_hour:,.2f}" in page


def test_cost_curves_rise_with_qps_and_the_mix_is_never_dearer(plan):
    fm = FleetModel(ReportInputs(plan))
    grid = [1000, 2000, 4000, 8000]
    per_gpu = {g: [fm.cost(q, [g]) for q in grid] for g in fm.capacity}
    mix = [fm.cost(q, sorted(fm.capacity)) for q in grid]
    assert mix == sorted(mix)
    for costs in per_gpu.values():
        assert costs == sorted(costs)
        assert all(m <= c + 1e-6 for m, c in zip(mix, costs))
    assert fm.cost(4000, sorted(fm.capacity)) == pytest.approx(plan.cost.usd_per_hour, rel=1e-6)


def test_more_spot_is_cheaper_and_survival_costs_extra(plan):
    fm = FleetModel(ReportInputs(plan))
    shares = (0.0, 0.5, 1.0)
    costs = [_survives(fm, 4000, s)[0] for s in shares]
    assert costs == sorted(costs, reverse=True)
    for s in shares:
        cheapest, _ = _survives(fm, 4000, s)
        surviving = fm.cost(4000, sorted(fm.capacity), s, True)
        assert surviving >= cheapest - 1e-6
    assert _survives(fm, 4000, 0.0)[1] is True  # no spot, nothing to lose


def test_report_cli_rejects_a_missing_plan_and_writes_one(plan, tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.json"), "--out", str(tmp_path / "r")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "docs" / "validation"


@pytest.mark.parametrize("kind", ["spot-survival", "calibration"])
def test_the_reports_cost_at_the_plans_qps_is_the_plans(kind, tmp_path):
    """The report re-solves the plan's own problem (planner.sizing, with the rates the plan records), so at the
    plan's rate it must find the plan's cost: with survival at a degraded bound (its own per-replica rates) and
    with a calibration (fitted overhead and service model, lag-aware targets). Both drifted before."""
    from gpufleet.contracts.calibration import read_calibration

    if kind == "spot-survival":
        req = RecommendRequest(qps=30000, p99_ms=50, gpus=["T4", "L4", "L40S"], max_spot_share=0.8,
                               spot_survival=True, survival_p99_ms=80, scale_up_lag_s=300, ramp_per_min=0.05)
        profiles, cal = [], None
    else:
        cal_path = VALIDATION / "calibration.json"
        profiles, cal = [VALIDATION / "profile.json"], read_calibration(cal_path)
        req = RecommendRequest(qps=60, p99_ms=400, model=cal.model, gpus=[cal.gpu], profiles=profiles,
                               calibration=cal_path)
    plan = recommend(req)
    if kind == "spot-survival":
        assert plan.request.spot_survival and plan.autoscaling.lag_aware
        assert any(s.survival_rate_per_replica > s.sizing_rate_per_replica for s in plan.sizing)
    else:
        assert plan.request.calibration and plan.autoscaling == cal.scaling
    fm = FleetModel(ReportInputs(plan, profiles=profiles, calibration=cal))
    assert fm.cost(plan.request.qps, sorted(fm.capacity)) == pytest.approx(plan.cost.usd_per_hour, rel=1e-9)


def test_a_day_plan_reports_the_curve_the_fleet_by_capacity_and_p99_per_period(tmp_path):
    from gpufleet.contracts.plan import read_plan
    from infra.settings import ROOT

    day_plan = read_plan(ROOT / "infra" / "plans" / "prod.plan.json")  # a day plan (infra/plans/README.md)
    page = write_report(ReportInputs(day_plan), tmp_path).read_text()
    data = (tmp_path / "day.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert 'src="day.png"' in page and "Over the day" in page
    for c in day_plan.day.comparisons:
        assert c.name in page and f"{c.usd_per_day:,.2f}" in page
