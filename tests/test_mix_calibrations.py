"""Issue 26, item 2: each model of a mix is planned with its own calibration. A mix file's optional ``calibration``
column names each row's `planner fit` file (``--calibration`` still gives one model's); a point mix and a mix over
a day both take them. Proof through the console entry: the column plans what the flag plans, a one-model mix over
a day with a calibration is the calibrated day plan, and two calibrated models each keep their own fitted overhead.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.plan import Plan
from gpufleet.contracts.profile import write_profile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.cli import main
from planner.service import ServerCost
from tests.cli_run import run_cli
from tests.synthetic import affine_profile, stress_result

CONFIG = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(),
                        instance_count=1)
# Two models whose servers cost differently, each fitted on its own stress runs (as tests/test_planner_pairings.py).
COSTS = {"det": ServerCost(2.0, 0.5, 1.2), "seg": ServerCost(4.0, 0.2, 1.1)}
OVERHEADS = {"det": 3.0, "seg": 6.0}
L4 = ["--gpu", "L4"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Per model: its profile on L4 and its calibration from three stress steps; and det's saturation rate."""
    root = tmp_path_factory.mktemp("cals")
    sat = {}
    for i, (model, cost) in enumerate(COSTS.items()):
        profile = affine_profile(model=model, gpu="L4", base_ms=8.0 + 4 * i)
        write_profile(profile, root / f"{model}-L4.json")
        sat[model] = ReplicaModel.from_profile(profile, cost).saturation_rate(CONFIG)
        stress_result(profile, CONFIG, [round(f * sat[model], 1) for f in (0.3, 0.55, 0.8)],
                      overhead_ms=OVERHEADS[model], cost=cost, duration_s=20, seed=11 + i,
                      path=root / f"{model}.stress.json")
        # Simulated steps (tests/synthetic.py) share no run-level error: the fit is told so.
        assert main(["fit", str(root / f"{model}.stress.json"), "--profile", str(root / f"{model}-L4.json"),
                     "--run-noise-pct", "0", "--output", str(root / f"{model}.cal.json")]) == 0
    return root, sat


def plan_of(capsys, *argv) -> Plan:
    capsys.readouterr()
    status = main(["recommend", *map(str, argv), "--format", "json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return Plan.model_validate_json(out)


def profiles(root: Path, *models: str) -> list:
    """``--profile`` for each of these models (a profile of a model the mix does not plan is refused)."""
    return [a for m in models or COSTS for a in ("--profile", root / f"{m}-L4.json")]


def day_mix(root: Path, name: str, rows: dict[str, tuple[list[float], float, str]]) -> Path:
    """A mix over six hours: per model (its curve, its target, its calibration column)."""
    (root / f"{name}.curves.csv").write_text(
        "time,model,qps\n" + "".join(f"{h:02d}:00,{m},{q:.1f}\n" for m, (qs, _, _) in rows.items()
                                     for h, q in enumerate(qs)))
    path = root / f"{name}.csv"
    path.write_text("model,curve,p99_ms,calibration\n" + "".join(
        f"{m},{name}.curves.csv,{t},{c}\n" for m, (_, t, c) in rows.items()))
    return path


def test_a_calibration_column_plans_what_the_flag_plans(fitted, tmp_path, capsys):
    root, _ = fitted
    flag = tmp_path / "flag.csv"
    flag.write_text("model,qps,p99_ms\ndet,300,100\nyolov8n-640,200,50\n")
    column = root / "column.csv"
    column.write_text("model,qps,p99_ms,calibration\ndet,300,100,det.cal.json\nyolov8n-640,200,50,\n")
    by_flag = plan_of(capsys, "--mix", flag, *profiles(root, "det"), "--calibration", root / "det.cal.json", *L4)
    by_column = plan_of(capsys, "--mix", column, *profiles(root, "det"), *L4)
    assert by_column.cost == by_flag.cost and by_column.deployments == by_flag.deployments
    assert {m.model: m.calibration for m in by_column.mix.models} == {"det": str(root / "det.cal.json"),
                                                                     "yolov8n-640": None}


def test_two_calibrated_models_each_keep_their_own_fitted_overhead(fitted, capsys):
    root, sat = fitted
    mix = root / "two.csv"
    mix.write_text(f"model,qps,p99_ms,calibration\ndet,{0.8 * sat['det']:.0f},120,det.cal.json\n"
                   f"seg,{0.8 * sat['seg']:.0f},150,seg.cal.json\n")
    plan = plan_of(capsys, "--mix", mix, *profiles(root), *L4)
    fitted_overhead = {m: read_calibration(root / f"{m}.cal.json").overhead_ms for m in COSTS}
    assert fitted_overhead["det"] < fitted_overhead["seg"]  # else the test cannot tell them apart
    for d in plan.deployments:  # a prediction is queue + device + the model's own overhead
        assert d.predicted.p50_ms >= fitted_overhead[d.model]
    assert all(f"{m}: fitted by planner fit" in plan.request.overhead_source for m in COSTS)


def test_a_one_model_mix_over_a_day_with_a_calibration_is_the_calibrated_day_plan(fitted, capsys):
    root, sat = fitted
    curve = [round(f * sat["det"], 1) for f in (0.5, 1.0, 2.0, 3.0, 1.5, 0.7)]
    mix = day_mix(root, "one", {"det": (curve, 100, "")})
    (root / "det-curve.csv").write_text("time,qps\n" + "".join(f"{h:02d}:00,{q}\n" for h, q in enumerate(curve)))
    args = [*profiles(root, "det"), "--calibration", root / "det.cal.json", *L4]
    mixed = plan_of(capsys, "--mix", mix, *args)
    day = plan_of(capsys, "--qps-curve", root / "det-curve.csv", "--p99-ms", "100", "--model", "det", *args)
    assert mixed.request.calibration == day.request.calibration == str(root / "det.cal.json")
    assert mixed.cost == day.cost and mixed.deployments == day.deployments and mixed.day.periods == day.day.periods


def test_a_mix_over_a_day_plans_calibrated_models_within_their_targets_every_period(fitted, capsys):
    root, sat = fitted
    mix = day_mix(root, "pair", {
        "det": ([round(f * sat["det"], 1) for f in (0.2, 0.5, 1.0, 1.5, 0.8, 0.3)], 120, "det.cal.json"),
        "seg": ([round(f * sat["seg"], 1) for f in (0.6, 0.4, 0.3, 0.2, 0.5, 0.9)], 150, "seg.cal.json")})
    plan = plan_of(capsys, "--mix", mix, *profiles(root), *L4)
    assert plan.day.holds_target
    for m in plan.mix.models:
        assert m.calibration == str(root / f"{m.model}.cal.json")
        assert all(p is not None and p <= m.p99_ms for p in m.period_p99_ms), (m.model, m.period_p99_ms)
    overhead = {m: read_calibration(root / f"{m}.cal.json").overhead_ms for m in COSTS}
    assert all(d.predicted.p50_ms >= overhead[d.model] for d in plan.deployments)


@pytest.mark.parametrize("rows, flag, says", [
    ("model,qps,p99_ms,calibration\ndet,300,100,seg.cal.json\nseg,100,150,\n", None,
     "calibrated for model 'seg', not 'det'"),
    ("model,qps,p99_ms,calibration\ndet,300,100,det.cal.json\nyolov8n-640,200,50,\n", "seg.cal.json",
     "which the mix does not plan"),
    ("model,qps,p99_ms,calibration\ndet,300,100,det.cal.json\nseg,100,150,\n", "seg-again.cal.json",
     None),  # the flag for a model the column leaves uncalibrated: planned (see the next case for a clash)
    ("model,qps,p99_ms,calibration\ndet,300,100,det.cal.json\nseg,100,150,\n", "det-again.cal.json",
     "already has a calibration"),
])
def test_a_calibration_for_the_wrong_model_or_given_twice_exits_2_with_one_line(fitted, tmp_path, rows, flag, says):
    root, _ = fitted
    for name in ("seg-again", "det-again"):  # the same fits under other names
        (root / f"{name}.cal.json").write_bytes((root / f"{name.split('-')[0]}.cal.json").read_bytes())
    mix = root / "bad.csv"
    mix.write_text(rows)
    models = [line.split(",")[0] for line in rows.splitlines()[1:] if line.split(",")[0] in COSTS]
    argv = ["recommend", "--mix", str(mix), *map(str, profiles(root, *models)), *L4, "--format", "json"]
    if flag:
        argv += ["--calibration", str(root / flag)]
    run = run_cli("planner", argv)
    if says is None:
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode == 2, run.stdout
    assert run.stderr.strip().count("\n") == 0 and says in run.stderr and "Traceback" not in run.stderr
