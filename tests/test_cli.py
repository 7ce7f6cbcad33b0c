"""The planner command line: bad input gets one stderr line and exit status 2; good input a plan.

The cases call the console's ``main(argv)`` in-process (tests/cli_run.py); ``python -m planner`` and the installed
``planner`` script run as processes in a bad-input case, a good-input case and the pipe case."""
import json
import subprocess
import sys

import pytest

from tests.cli_run import run_cli

from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.catalog import EMBEDDED_CATALOG
from importlib import resources


def run(*args, cwd=None):
    return run_cli("planner", args, cwd=cwd)


def run_module(*args, cwd=None):
    """``python -m planner ...``: the module entry (planner/__main__.py) in its own interpreter."""
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("qps", ["0", "-5", "nan"])
def test_non_positive_qps(qps):
    assert_one_line_error(run("recommend", "--qps", qps), "--qps")


def test_unparsable_qps():
    assert_one_line_error(run("recommend", "--qps", "lots"), "--qps")


def test_unknown_model_lists_known_ones():
    assert_one_line_error(run("recommend", "--qps", "100", "--model", "yolov99"), "yolov99", "resnet50")


def test_unknown_gpu_lists_catalog_gpus():
    assert_one_line_error(run("recommend", "--qps", "100", "--gpu", "V100"), "V100", "T4")


def test_infeasible_target_names_the_lowest_reachable_p99():
    proc = run("recommend", "--qps", "100", "--p99-ms", "2.1")
    assert_one_line_error(proc, "infeasible", "lowest P99 reachable")


def embedded_catalog():
    return json.loads(resources.files("gpufleet.data").joinpath(EMBEDDED_CATALOG).read_text())


def test_malformed_catalog_names_the_field(tmp_path):
    cat = embedded_catalog()
    del cat["instances"][2]["on_demand"]["usd_per_hour"]
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(cat))
    assert_one_line_error(run("recommend", "--qps", "100", "--catalog", str(path)),
                          "instances.2.on_demand.usd_per_hour")


def test_catalog_that_is_not_json(tmp_path):
    path = tmp_path / "cat.json"
    path.write_text("{not json")
    assert_one_line_error(run("recommend", "--qps", "100", "--catalog", str(path)), "not JSON")


def test_malformed_profile_names_the_field(tmp_path):
    prof = json.loads(resources.files("planner.data").joinpath("profiles/resnet50-T4.json").read_text())
    prof["batches"][1]["p99_ms"] = -1
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    assert_one_line_error(run("recommend", "--qps", "100", "--profile", str(path)), "batches.1.p99_ms")


def test_missing_profile_file(tmp_path):
    assert_one_line_error(run("recommend", "--qps", "100", "--profile", str(tmp_path / "nope.json")), "nope.json")


def test_failed_run_writes_no_plan(tmp_path):
    out = tmp_path / "plan.json"
    assert_one_line_error(run_module("recommend", "--qps", "-1", "--output", str(out)), "--qps")
    assert not out.exists()


def test_json_plan_is_valid_and_written_to_output(tmp_path):
    out = tmp_path / "plan.json"
    proc = run_module("recommend", "--qps", "5000", "--p99-ms", "100", "--format", "json", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    plan = read_plan(out)
    assert printed["cost"] == plan.cost.model_dump()
    assert plan.predicted.p99_ms <= 100
    assert plan.request.qps == 5000


def test_table_output_names_the_binding_constraint():
    proc = run("recommend", "--qps", "5000", "--p99-ms", "100")
    assert proc.returncode == 0, proc.stderr
    assert "Binding:" in proc.stdout and "$" in proc.stdout


def test_tables_are_not_cut_when_stdout_is_a_pipe():
    """A plan printed into a file keeps every figure: no ellipsis, no folded cell (rich assumes 80 columns)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    planner = shutil.which("planner", path=str(Path(sys.executable).parent))
    proc = subprocess.run([planner, "recommend", "--qps", "60000", "--p99-ms", "50", "--max-spot-share", "0.5"],
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "COLUMNS": "40"})
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    why = [line for line in proc.stdout.splitlines() if line.startswith("Why:")]
    assert len(why) == 1 and why[0].rstrip().endswith("--ramp-pct-per-min)."), why
