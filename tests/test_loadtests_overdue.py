"""`loadtests run`'s knee search through its console entry, as the README types it, against a stub server on loopback
that answers nothing within the run (20 s a request): the ramp stops at the first step, counting requests still
unanswered past the bound, from the master's own users and from its workers'. Nothing here is close in time (the
answers are 20 s late against a 100 ms bound), so these tests run beside others (not in tests/conftest.py ALONE)."""
import importlib.util
import json

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from tests.cli_run import run_loadtests  # noqa: E402

from .conftest import start_stub  # noqa: E402

BOUND_MS = 100
RAMP = "20:80:2"  # steps at 20, 40 and 80 req/s
RAMP_REQUESTS = 20 + 40 + 80  # a whole ramp at one second a step sends about this many


def _stub(**params):
    proc, url = start_stub(model="cam", input_shape="3,16,16", **params)
    return proc, url


@pytest.fixture(scope="module")
def stuck_ramp(tmp_path_factory):
    """The README's knee search against a server that answers nothing within the run (20 s a request)."""
    proc, url = _stub(service_ms=20_000)
    out = tmp_path_factory.mktemp("stuck")
    try:
        run = run_loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
                            "--step-duration", "1", "--warmup", "0", "--timeout-s", "5", "--metrics-url", "",
                            "--out", str(out))
    finally:
        proc.terminate()
        proc.wait(10)
    result = read_stress_result(out / "run.stress.json") if (out / "run.stress.json").exists() else None
    return run, result, out


def test_a_ramp_stops_at_the_first_step_when_its_requests_are_overdue(stuck_ramp):
    run, result, _ = stuck_ramp
    assert result is not None, run.stderr
    assert (result.stopped["reason"], result.stopped["at_step"]) == ("p99-bound", 0), result.stopped


def test_the_verdict_counts_unanswered_requests_as_over_the_bound(stuck_ramp):
    _, result, _ = stuck_ramp
    step = result.steps[0]
    assert step.ok == 0
    # Every request the first step sent was still unanswered past the bound when it was judged.
    assert f"{step.sent} of {step.sent} requests unanswered" in result.stopped["detail"], result.stopped


def test_a_ramp_that_stops_stops_sending(stuck_ramp):
    _, _, out = stuck_ramp
    sent = sum(e["num_requests"] for e in json.loads((out / "run.locust.json").read_text()))
    # One second at 20 req/s, and a moment of the next step while the verdict waits for the bound: far from the
    # whole ramp, which the old verdict ran (it saw no responses, so nothing over the bound).
    assert sent < RAMP_REQUESTS / 2, sent


def test_a_knee_found_is_a_result_exit_0_and_says_where(stuck_ramp):
    run, _, _ = stuck_ramp
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    # The knee is below the first rate: no step met the bound, and the output says so rather than "stopped".
    assert "no step met the P99 bound" in run.stdout and "below 20 req/s" in run.stdout, run.stdout


def test_workers_report_their_unanswered_requests_to_the_verdict(tmp_path):
    """Distributed, the master judges: each worker's report carries how long its unanswered requests have waited."""
    proc, url = _stub(service_ms=20_000)
    try:
        run = run_loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
                            "--step-duration", "2", "--warmup", "0", "--timeout-s", "6", "--metrics-url", "",
                            "--workers", "2", "--users", "2", "--out", str(tmp_path))
    finally:
        proc.terminate()
        proc.wait(10)
    assert run.returncode == 0, run.stderr
    result = read_stress_result(tmp_path / "run.stress.json")
    assert (result.stopped["reason"], result.stopped["at_step"]) == ("p99-bound", 0), result.stopped
    assert "requests unanswered" in result.stopped["detail"], result.stopped
