"""`loadtests run`'s knee search through its console entry, as the README types it, against a fast stub server on
loopback: a ramp whose P99 stays under its bound runs to the end. This is judged in time (5 ms answers against a
100 ms bound), so the file runs alone (tests/conftest.py ALONE). Requests overdue past the bound stop a ramp:
tests/test_loadtests_overdue.py; what the commands print: tests/test_loadtests_show.py."""
import importlib.util

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from tests.cli_run import run_loadtests  # noqa: E402

from .conftest import start_stub  # noqa: E402

BOUND_MS = 100
RAMP = "20:80:2"  # steps at 20, 40 and 80 req/s


def test_a_ramp_under_its_bound_runs_to_the_end(tmp_path):
    """Requests in flight younger than the bound are not over it: a fast server's ramp is not stopped."""
    proc, url = start_stub(model="cam", input_shape="3,16,16", service_ms=5)
    out = tmp_path
    try:
        run = run_loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
                            "--step-duration", "1", "--warmup", "0", "--timeout-s", "5", "--metrics-url", "",
                            "--out", str(out))
        assert run.returncode == 0, run.stderr
        result = read_stress_result(out / "run.stress.json")
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.stopped["reason"] == "completed" and len(result.steps) == 3, result.stopped
    assert "above 80 req/s" in run.stdout, run.stdout
