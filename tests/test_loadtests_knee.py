"""`loadtests run` and `loadtests show` through their console entry, as the README types them, against the stub
server on loopback: the knee search stops at the first step whose P99 passes the bound, counting requests still
unanswered past the bound; and what the commands print reads right in a terminal of 80 or 120 columns. `loadtests
run` calls the console's main(argv) in-process (tests/cli_run.py); `loadtests show` runs as the installed script on a
pseudo-terminal."""
import importlib.util
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from tests.cli_run import run_cli  # noqa: E402

from .conftest import start_stub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BOUND_MS = 100
RAMP = "20:80:2"  # steps at 20, 40 and 80 req/s
RAMP_REQUESTS = 20 + 40 + 80  # a whole ramp at one second a step sends about this many
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console(name: str) -> str:
    exe = shutil.which(name, path=str(BIN))
    assert exe, f"console entry {name} not installed: pip install -e '.[test]'"
    return exe


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def _loadtests(*args, timeout=120):
    """``loadtests ARGS``: the console's main(argv) in-process (tests/cli_run.py); Locust runs in its own processes
    either way, and they inherit PYTHONPATH from the environment set for the call."""
    return run_cli("loadtests", args, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout_s=timeout)


def _stub(**params):
    proc, url = start_stub(model="cam", input_shape="3,16,16", **params)
    return proc, url


@pytest.fixture(scope="module")
def stuck_ramp(tmp_path_factory):
    """The README's knee search against a server that answers nothing within the run (20 s a request)."""
    proc, url = _stub(service_ms=20_000)
    out = tmp_path_factory.mktemp("stuck")
    try:
        run = _loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
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
        run = _loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
                         "--step-duration", "2", "--warmup", "0", "--timeout-s", "6", "--metrics-url", "",
                         "--workers", "2", "--users", "2", "--out", str(tmp_path))
    finally:
        proc.terminate()
        proc.wait(10)
    assert run.returncode == 0, run.stderr
    result = read_stress_result(tmp_path / "run.stress.json")
    assert (result.stopped["reason"], result.stopped["at_step"]) == ("p99-bound", 0), result.stopped
    assert "requests unanswered" in result.stopped["detail"], result.stopped


def test_a_ramp_under_its_bound_runs_to_the_end(tmp_path):
    """Requests in flight younger than the bound are not over it: a fast server's ramp is not stopped."""
    proc, url = _stub(service_ms=5)
    out = tmp_path
    try:
        run = _loadtests("run", "--model", "cam", "--host", url, "--ramp", RAMP, "--p99-bound-ms", str(BOUND_MS),
                         "--step-duration", "1", "--warmup", "0", "--timeout-s", "5", "--metrics-url", "",
                         "--out", str(out))
        assert run.returncode == 0, run.stderr
        result = read_stress_result(out / "run.stress.json")
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.stopped["reason"] == "completed" and len(result.steps) == 3, result.stopped
    assert "above 80 req/s" in run.stdout, run.stdout


# --- what the commands print (#12, #10) ---

@pytest.fixture(scope="module")
def fast_server():
    proc, url = _stub(service_ms=5)
    yield url
    proc.terminate()
    proc.wait(10)


def test_closed_loop_table_names_its_mode_once(fast_server, tmp_path):
    run = _loadtests("run", "--model", "cam", "--host", fast_server, "--closed-loop", "1", "--duration", "1",
                     "--timeout-s", "5", "--metrics-url", "", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "closed-loop, closed-loop" not in run.stdout
    assert "closed loop, 1 user," in run.stdout, run.stdout


def test_run_banner_says_what_is_offered(fast_server, tmp_path):
    run = _loadtests("run", "--model", "cam", "--host", fast_server, "--rates", "20,40", "--step-duration", "1",
                     "--warmup", "0", "--timeout-s", "5", "--metrics-url", "", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    first = run.stderr.splitlines()[0]
    assert "20, 40 req/s" in first and "1 s each" in first, first


@pytest.fixture(scope="module")
def steps_result(fast_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("show")
    run = _loadtests("run", "--model", "cam", "--host", fast_server, "--rates", "20,40,80", "--step-duration", "1",
                     "--warmup", "0.5", "--timeout-s", "5", "--metrics-url", "", "--out", str(out))
    assert run.returncode == 0, run.stderr
    return out / "run.stress.json"


def _show_in_terminal(path: Path, columns: int) -> list[str]:
    """`loadtests show` with its stdout on a terminal of ``columns`` columns (a pseudo-terminal; COLUMNS says its
    width, as a shell exports it: rich 15.0.0, rich/console.py, Console.__init__ and Console.size read COLUMNS)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([_console("loadtests"), "show", str(path)], stdout=follower, stderr=subprocess.PIPE,
                            env=_env(COLUMNS=str(columns), LINES="50", TERM="xterm"), cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read()
    text = ANSI.sub("", b"".join(chunks).decode())
    return [line.rstrip("\r") for line in text.split("\n")]


@pytest.mark.parametrize("columns", [80, 120])
def test_show_never_cuts_a_name_or_a_number(steps_result, columns):
    lines = _show_in_terminal(steps_result, columns)
    text = "\n".join(lines)
    assert "…" not in text, text
    for step in read_stress_result(steps_result).steps:
        assert step.name in text, (step.name, text)
        assert f"{step.achieved_rate:.1f}" in text, (step.achieved_rate, text)


@pytest.mark.parametrize("columns", [80, 120])
def test_show_fits_the_terminal(steps_result, columns):
    lines = _show_in_terminal(steps_result, columns)
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)
    # Every figure is still shown: the latency and server columns are there, in a second table if need be (a
    # header may wrap between its words; a figure never does).
    assert all(h in "\n".join(lines) for h in ("P99.9", "queue", "infer", "dropped")), "\n".join(lines)
