"""Issue 25 (#3, #4): the planner's files paired wrongly, through the console entry as the README types it (its
``main(argv)`` in-process, tests/cli_run.py).

A stress run, a profile, a calibration and a plan name the model (and the profile and calibration the GPU) they are
about. A name that does not match is one stderr line and exit status 2 at the first command that can know, never a
fit, plan or report made of the wrong pair. And a gpufleet file given where another contract is read is named for
what it is, not called an old version of the one expected.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpufleet.contracts.profile import write_profile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import ReplicaModel
from planner.service import ServerCost
from tests.cli_run import Result, run_cli
from tests.synthetic import affine_profile, stress_result

COST = ServerCost(2.0, 0.5, 1.2)
CONFIG = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=2000, preferred_batch_sizes=(),
                        instance_count=1)


def planner(*args: str | Path, cwd: Path | None = None) -> Result:
    return run_cli("planner", args, cwd=cwd)


def one_line_error(proc: Result) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _stress(profile, path: Path, seed: int) -> Path:
    sat = ReplicaModel.from_profile(profile, COST).saturation_rate(CONFIG)
    stress_result(profile, CONFIG, [round(f * sat, 1) for f in (0.3, 0.55, 0.8)], overhead_ms=3.0, cost=COST,
                  duration_s=20, seed=seed, path=path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The files of the README's closed loop for model `det` on L4, plus a stress run of model `tiny`."""
    root = tmp_path_factory.mktemp("pairings")
    det, tiny = affine_profile(model="det", gpu="L4"), affine_profile(model="tiny", gpu="L4")
    out = {"root": root, "det-L4": root / "det-L4.json", "det-T4": root / "det-T4.json",
           "det-L5": root / "det-L5.json", "det.stress": _stress(det, root / "det.stress.json", 11),
           "tiny.stress": _stress(tiny, root / "tiny.stress.json", 12)}
    write_profile(det, out["det-L4"])
    write_profile(affine_profile(model="det", gpu="T4"), out["det-T4"])
    write_profile(affine_profile(model="det", gpu="L5"), out["det-L5"])
    out["cal"] = root / "calibration.json"
    made = planner("fit", out["det.stress"], "--profile", out["det-L4"], "--output", out["cal"])
    assert made.returncode == 0, made.stderr
    out["plan"] = root / "det.plan.json"
    made = planner("recommend", "--qps", "200", "--model", "det", "--profile", out["det-L4"], "--calibration",
                   out["cal"], "--format", "json", "--output", out["plan"])
    assert made.returncode == 0, made.stderr
    out["yolo.plan"] = root / "yolo.plan.json"
    made = planner("recommend", "--qps", "100", "--gpu", "L4", "--format", "json", "--output", out["yolo.plan"])
    assert made.returncode == 0, made.stderr
    return out


# --- #3: a model or GPU name that does not match ---------------------------------------------------------------

def test_fit_refuses_a_stress_run_of_another_model_than_the_profile(files):
    """The issue's case: a stress run on `tiny` fitted to the profile of `det` gave "P99 error 584865%", exit 0."""
    out = files["root"] / "wrong.cal.json"
    line = one_line_error(planner("fit", files["tiny.stress"], "--profile", files["det-L4"], "--output", out))
    assert "'tiny'" in line and "'det'" in line and not out.exists()


def test_recommend_refuses_a_profile_of_a_model_it_does_not_plan(files):
    """Forgetting --model: the measured profile of `det` was dropped and the default model planned in silence."""
    line = one_line_error(planner("recommend", "--qps", "100", "--profile", files["det-L4"]))
    assert "'det'" in line and "--model" in line


def test_recommend_names_a_profile_whose_gpu_the_catalog_lacks(files):
    line = one_line_error(planner("recommend", "--qps", "100", "--model", "det", "--profile", files["det-L5"]))
    assert "'L5'" in line and files["det-L5"].name in line


def test_recommend_refuses_a_calibration_of_a_gpu_it_does_not_plan(files):
    """A calibration fitted on L4 with --gpu T4 applied to nothing but was recorded as the plan's calibration."""
    line = one_line_error(planner("recommend", "--qps", "100", "--model", "det", "--profile", files["det-L4"],
                                  "--profile", files["det-T4"], "--gpu", "T4", "--calibration", files["cal"]))
    assert "'L4'" in line and "T4" in line


def test_report_refuses_a_calibration_of_another_model_than_the_plan(files):
    out = files["root"] / "report-cal"
    line = one_line_error(planner("report", files["yolo.plan"], "--calibration", files["cal"], "--out", out))
    assert "'det'" in line and "yolov8s-1280x720" in line and not out.exists()


def test_report_refuses_a_profile_of_another_model_than_the_plan(files):
    out = files["root"] / "report-prof"
    line = one_line_error(planner("report", files["yolo.plan"], "--profile", files["det-L4"], "--out", out))
    assert "'det'" in line and "yolov8s-1280x720" in line and not out.exists()


# --- #4: a wrong file is named for what it is ---------------------------------------------------------------------

WRONG_FILES = [
    # (argv with {placeholders} for the fixture's files, what the file given is, what the command reads there)
    (["report", "{det.stress}", "--out", "{root}/r1"], "a stress result", "a plan"),
    (["report", "{plan}", "--calibration", "{det.stress}", "--out", "{root}/r2"], "a stress result", "a calibration"),
    (["report", "{plan}", "--calibration", "{plan}", "--out", "{root}/r3"], "a plan", "a calibration"),
    (["report", "{cal}", "--out", "{root}/r4"], "a calibration", "a plan"),
    (["fit", "{plan}", "--profile", "{det-L4}", "--output", "{root}/c1.json"], "a plan", "a stress result"),
    (["fit", "{det.stress}", "--profile", "{cal}", "--output", "{root}/c2.json"], "a calibration",
     "a latency profile"),
    (["recommend", "--qps", "100", "--catalog", "{plan}"], "a plan", "a catalog"),
    (["recommend", "--qps", "100", "--model", "det", "--calibration", "{det-L4}"], "a latency profile",
     "a calibration"),
]


@pytest.mark.parametrize("argv,found,expected", WRONG_FILES, ids=[" ".join(a[:1] + a[2:4]) for a, _, _ in WRONG_FILES])
def test_a_contract_file_of_another_kind_is_named_for_what_it_is(files, argv, found, expected):
    args = []
    for a in argv:
        for key, path in files.items():
            a = a.replace("{" + key + "}", str(path))
        args.append(a)
    line = one_line_error(planner(*args))
    assert f"is {found}, not {expected}" in line and "older gpufleet" not in line


def test_an_older_plan_is_still_called_older(files):
    """The other side: a plan of schema 1 is an old plan, and says how to make a new one."""
    doc = json.loads(files["plan"].read_text())
    doc["schema_version"] = 1
    old = files["root"] / "old.plan.json"
    old.write_text(json.dumps(doc))
    line = one_line_error(planner("report", old, "--out", files["root"] / "r5"))
    assert "older gpufleet" in line and "planner recommend" in line
