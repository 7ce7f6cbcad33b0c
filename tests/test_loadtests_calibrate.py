"""`loadtests calibrate` through its console entry against the GPU stand-in (`serving local --standin PROFILE`):
Triton's real HTTP path and batcher in front of a model that sleeps a latency profile's time. What a user relies on:
the steps it chose bracket the knee, the interval it prints is the calibration file's, it stops at the interval's
width or at the budget and says which, and bad input costs one line and exit 2 before any load. Windows are short
and budgets small so the module stays well under a minute; the capacities they give are not the point here (the
validation bench is where they are measured)."""
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from tritonclient import http as httpclient  # noqa: E402

from gpufleet.contracts.calibration import read_calibration  # noqa: E402
from gpufleet.contracts.profile import LatencyProfile, write_profile  # noqa: E402
from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from loadtests.recorder import StepStats  # noqa: E402
from loadtests.shapes import Stable  # noqa: E402
from tests.cli_run import run_cli  # noqa: E402

from gpufleet.net import free_ports  # noqa: E402

from .conftest import stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "standin"
P99_MS = 30.0
# Short windows, a loose stability rule and a first rate near this stand-in's knee (about 70 req/s at 30 ms on this
# machine, batch 1): a run brackets the knee in two or three steps.
FAST = ["--window-s", "1", "--max-trials", "4", "--stability-pct", "100", "--start-rate", "60", "--factor", "1.3",
        "--p99-ms", f"{P99_MS:g}"]
# Any interval from three stable steps is within it. The budget allows about seven steps: on two shared cores a
# step at the knee often never settles, and a full run once fitted only two of four steps in 40 s.
WIDTH = ["--tolerance-pct", "100", "--budget-s", "70"]
BUDGET_S = 9.0
BUDGET = ["--tolerance-pct", "0.1", "--budget-s", f"{BUDGET_S:g}"]  # no interval is this narrow


def profile(base_ms: float = 5.0, per_image_ms: float = 1.0) -> LatencyProfile:
    return LatencyProfile.model_validate({
        "schema_version": 1, "model": MODEL, "gpu": "T4", "precision": "fp16", "backend": "triton",
        "origin": {"kind": "derived", "date": "2026-12-03", "derivation": "synthetic test profile: base + per image"},
        "batches": [{"batch_size": b, "mean_ms": base_ms + per_image_ms * b, "p50_ms": base_ms + per_image_ms * b,
                     "p99_ms": 1.1 * (base_ms + per_image_ms * b)} for b in (1, 2, 4, 8)]})


def _calibrate(args, out: Path, timeout=90):
    started = time.monotonic()
    run = run_cli("loadtests", ["calibrate", "--model", MODEL, *args, "--out", str(out)],
                  env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout_s=timeout)
    return run, time.monotonic() - started


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The stand-in on loopback (batch 1), and the two runs the tests read: one stopped by width, one by budget."""
    tmp = tmp_path_factory.mktemp("calibrate")
    path = tmp / "profile.json"
    write_profile(profile(), path)
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "serving.cli", "local", "--standin", str(path), "--max-batch-size", "1",
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    host = f"http://127.0.0.1:{ports[0]}"
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready(MODEL):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        client.close()
        common = ["--profile", str(path), "--host", host, "--metrics-url", f"http://127.0.0.1:{ports[2]}/metrics",
                  *FAST]
        width = _calibrate([*common, *WIDTH], tmp / "width")
        budget = _calibrate([*common, *BUDGET], tmp / "budget")
        yield {"width": (*width, tmp / "width"), "budget": (*budget, tmp / "budget"), "common": common, "tmp": tmp}
    finally:
        stop_process(proc, grace_s=30)


def _files(out: Path):
    return read_stress_result(out / "calibrate.stress.json"), read_calibration(out / "calibrate.calibration.json")


def test_the_steps_it_chose_bracket_the_knee(served):
    run, _, out = served["width"]
    assert run.returncode == 0, run.stderr
    stress, _ = _files(out)
    measured = [s for s in stress.steps if "-step@" in s.name]  # each step's measurement, stable or not
    p99s = [s.latency_ms.p99 for s in measured]
    assert any(p is not None and p <= P99_MS for p in p99s), p99s
    assert any(p is None or p > P99_MS for p in p99s), p99s


def test_the_capacity_it_pins_is_below_every_rate_it_measured_over_the_target(served):
    run, _, out = served["width"]
    stress, _ = _files(out)
    over = [s.offered_rate for s in stress.steps
            if "-step@" in s.name and (s.latency_ms.p99 is None or s.latency_ms.p99 > P99_MS)]
    assert stress.stopped["reason"] == "width", run.stdout
    assert stress.stopped["capacity"] < min(over), (stress.stopped, over)


def test_the_interval_it_prints_is_the_calibration_files(served):
    run, _, out = served["width"]
    stress, cal = _files(out)
    t = cal.thresholds[0]
    printed = re.search(r"Capacity at P99 \S+ ms: ([\d.]+) req/s, \d+% interval ([\d.]+)-([\d.]+)", run.stdout)
    assert printed, run.stdout
    # Capacity as the steps measure it: where P99 crosses the target (the plan's may lie lower, under its queue bound).
    assert [float(x) for x in printed.groups()] == [round(v, 1) for v in (t.latency_max_rate,
                                                                          *t.latency_max_rate_interval)]
    assert (stress.stopped["capacity"], stress.stopped["low"], stress.stopped["high"]) == \
        (t.latency_max_rate, *t.latency_max_rate_interval)


def test_it_stops_once_the_interval_is_within_the_tolerance_and_says_so(served):
    run, _, out = served["width"]
    stress, cal = _files(out)
    t = cal.thresholds[0]
    low, high = t.latency_max_rate_interval
    half = max(t.latency_max_rate - low, high - t.latency_max_rate) / t.latency_max_rate
    assert stress.stopped["reason"] == "width", run.stdout
    assert half <= 1.0
    assert "within ±100%" in run.stdout.splitlines()[-2], run.stdout


def test_it_stops_at_the_budget_and_says_what_would_narrow_the_interval(served):
    run, took_s, out = served["budget"]
    assert run.returncode == 0, run.stderr
    stress = read_stress_result(out / "calibrate.stress.json")
    assert stress.stopped["reason"] == "budget", stress.stopped
    line = run.stdout.splitlines()[-2]
    assert f"stopped at the budget ({BUDGET_S:g} s" in line and "would" in line, run.stdout
    # The last step is started only if it can end in time; a fit may follow it.
    assert took_s < BUDGET_S + 15, took_s


@pytest.mark.parametrize("args, says", [
    (["--p99-ms", "0"], "--p99-ms"),
    (["--factor", "1"], "--factor"),
    (["--max-trials", "2"], "--max-trials"),
    (["--window-s", "0"], "--window-s"),
    (["--budget-s", "0"], "--budget-s"),
    (["--budget-s", "5"], "too short for one step"),
    (["--other-model"], "not 'standin'"),
    (["--host", "http://127.0.0.1:9"], "127.0.0.1:9"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_load(served, args, says):
    common = list(served["common"])
    if args == ["--other-model"]:
        other = served["tmp"] / "other.json"
        write_profile(profile().model_copy(update={"model": "other"}), other)
        common[common.index("--profile") + 1] = str(other)
        args = []
    elif "--host" in args:
        common[common.index("--host") + 1] = args[1]
        args = []
    out = served["tmp"] / f"bad{abs(hash(says))}"
    run, _ = _calibrate([*common, *args], out, timeout=30)
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], run.stderr
    assert not (out / "calibrate.stress.json").exists()


def _window(p99_ms: float, n: int = 200) -> StepStats:
    s = StepStats()
    for i in range(n):  # 1% of the requests at the P99, the rest well under it
        s.latency.record_value(int(p99_ms * 1000) if i >= n - 2 else int(p99_ms * 500))
    s.ok = s.sent = n
    return s


def test_a_step_is_stable_when_three_windows_p99s_agree_within_the_percentage():
    shape = Stable(rate=100, window_s=1, stability_pct=10)
    assert shape.verdict(_window(21.0), None, [_window(20.0), _window(20.5)]).startswith("stable")
    assert shape.verdict(_window(24.0), None, [_window(20.0), _window(20.5)]) is None  # 20% apart
    assert shape.verdict(_window(20.0), None, [_window(20.0)]) is None  # two windows are not three
