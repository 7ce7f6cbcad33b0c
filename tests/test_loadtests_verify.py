"""`loadtests verify PLAN` on the real local Triton: a plan true for the server holds its promises, an over-promised
one fails naming the Deployment and the promise, and a server with another config is refused before any load.

The server is `serving local --standin PROFILE --plan PLAN` in its own process (the user's shell 1), serving the
synthetic profile SERVED (20 ms + 4 ms per image) with the plan's Triton config. The plan is `planner recommend`'s,
from PLANNED: the same profile plus part of what the stand-in's Python backend adds per batch on this machine, which a
calibration would carry (Triton's compute_infer per execution minus the profile's sleep, measured 2026-12-03 with
`loadtests verify` runs on this 2-core VM: 2.9 ms at a mean batch of 1.5, 4.5 ms at 3.5). PLANNED places the
stand-in's true capacity inside the promise's window (max_rate, 1.1 x max_rate]: quiet, alone, the stand-in served
139.7 req/s within the target in six runs of 2026-12-04 (P99 256-278 ms, at most 1.4% turned away) and turned away 21%
at 145.7 req/s (2026-12-03). With PLANNED (21.0, 4.15) the plan promises 132.9 req/s, so 1.1 x max_rate is 146.2;
with (22.0, 4.3) it promised 127.0, and 1.1 x 127.0 = 139.7 was still within the target: the test failed as
"under-promised" in six of seven runs.
"""
import importlib.util
import json
import signal
import subprocess
import sys
import time

import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[loadtests]')", allow_module_level=True)

from gpufleet.contracts.plan import read_plan  # noqa: E402
from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from gpufleet.net import free_ports  # noqa: E402
from planner.capacity import REFUSED_SHARE_MAX  # noqa: E402

from tests.cli_run import run_cli  # noqa: E402

from .conftest import stop_process  # noqa: E402

SERVED = (20.0, 4.0)  # the stand-in's sleep per batch: base + per image, ms
PLANNED = (21.0, 4.15)  # SERVED plus part of the Python backend's cost per batch (module docstring)
TARGET_MS = 300.0
QPS = 60.0  # one replica: the planned per-replica rate is 60 req/s, about 45% of its capacity
# Short steps keep the test bounded: 6 s at 60 req/s is ~360 requests, whose P99 is the 4th slowest; on this shared
# machine it moved 88-113 ms across runs of the same plan (predicted 83), so the band is widened from the default.
SHORT = ["--step-duration", "6", "--warmup", "1", "--timeout-s", "2", "--band-pct", "50"]
READY_S = 60
ATTEMPTS = 2


def profile(base_ms: float, per_image_ms: float) -> dict:
    return {"schema_version": 1, "model": "standin", "gpu": "T4", "precision": "fp16", "backend": "triton",
            "origin": {"kind": "derived", "date": "2026-12-03", "derivation": "synthetic test profile: base + per "
                                                                              "image"},
            "batches": [{"batch_size": b, "mean_ms": base_ms + per_image_ms * b, "p50_ms": base_ms + per_image_ms * b,
                         "p99_ms": 1.05 * (base_ms + per_image_ms * b)} for b in (1, 2, 4, 8)]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The plan, and the stand-in serving its config: (plan path, HTTP URL, metrics URL, folder)."""
    tmp = tmp_path_factory.mktemp("verify")
    for name, figures in (("served", SERVED), ("planned", PLANNED)):
        (tmp / f"{name}.json").write_text(json.dumps(profile(*figures)))
    plan = tmp / "plan.json"
    made = run_cli("planner", ["recommend", "--model", "standin", "--gpu", "T4", "--profile", tmp / "planned.json",
                               "--qps", QPS, "--p99-ms", TARGET_MS, "--environment", "development",
                               "--capacity-type", "on-demand", "--output", plan])
    assert made.returncode == 0, made.stderr
    ports = free_ports(3)
    log = open(tmp / "serving.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "local", "--standin", str(tmp / "served.json"),
                             "--plan", str(plan), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                             "--metrics-port", str(ports[2])], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_S
        while "Triton ready" not in (tmp / "serving.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "serving.log").read_text()
            time.sleep(0.1)
        yield plan, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}/metrics", tmp
    finally:
        stop_process(proc, signal.SIGINT, grace_s=30)  # the user's Ctrl-C
        log.close()


def verify(plan, host, metrics, out):
    return run_cli("loadtests", ["verify", plan, "--standin", "--host", host, "--metrics-url", metrics,
                                 "--out", out, *SHORT])


def test_a_plan_true_for_the_server_holds_its_three_promises_and_leaves_stress_results(served):
    plan, host, metrics, tmp = served
    # The window is narrow by design: true capacity must lie between max_rate and 1.1 x max_rate, and on two shared
    # cores a burst of other work slows the stand-in's Python backend for part of a 6 s step (1 run in 5 turned
    # away 10% at max_rate; the other four 0.3% or less). A run where a promise failed is run once more; both
    # failing fails the test, and every run's table is printed.
    for attempt in range(ATTEMPTS):
        done = verify(plan, host, metrics, tmp / "held")
        print(done.stdout)
        if done.returncode != 1:
            break
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every promise holds (3)" in done.stdout
    d = read_plan(plan).deployments[0]
    result = read_stress_result(tmp / "held" / "verify-standin-T4.stress.json")
    top = d.autoscaling.max_rate_per_replica
    assert [s.offered_rate for s in result.reported_steps()] == pytest.approx([d.rate_per_replica, top, 1.1 * top])
    assert result.target.triton.max_queue_size == d.triton.max_queue_size  # the plan's config was served
    # The queue bound the plan wrote turns away (almost) nobody at the planned rate: the planner's promise
    # (planner.capacity.REFUSED_SHARE_MAX; at ~325 requests, none). At this target the wait bound also absorbs the
    # batcher wake-ups Triton misses under a queue policy (planner.capacity.queue_bound); at 100 ms it does not.
    planned = result.reported_steps()[0]
    assert planned.rejected <= REFUSED_SHARE_MAX * planned.sent, (planned.rejected, planned.sent)


def test_capacity_promised_40_percent_over_the_plan_fails_at_max_rate(served):
    plan, host, metrics, tmp = served
    data = json.loads(plan.read_text())
    data["deployments"][0]["autoscaling"]["max_rate_per_replica"] *= 1.4
    over = tmp / "over.json"
    over.write_text(json.dumps(data))
    done = verify(over, host, metrics, tmp / "over")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 3 promises does not hold: standin@T4 (standin) max_rate" in done.stdout
    assert (tmp / "over" / "verify-standin-T4.stress.json").is_file()


def test_a_server_with_another_config_is_refused_before_any_load(served):
    plan, host, metrics, tmp = served
    data = json.loads(plan.read_text())
    data["deployments"][0]["triton"]["max_batch_size"] = 4
    other = tmp / "other.json"
    other.write_text(json.dumps(data))
    done = verify(other, host, metrics, tmp / "other")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "batch<=8" in done.stderr and "batch<=4" in done.stderr
    assert not (tmp / "other").exists()
