"""`planner check` on a shared Deployment (a mix's models in one Triton server per GPU), against a real Prometheus
holding synthetic history (Debian's prometheus, backfilled with promtool as in tests/test_production.py).

The history is the co-location simulation (planner.simulate.simulate_colocated) of one shared replica serving both
models of the plan at rates that vary per window, the two models' rates moving differently (a shared replica's P99
depends on every model's rate in the window): one server that matches the plan, and one whose first model runs 20%
slower in service time, which also delays the second model's batches behind it on the GPU."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from gpufleet.contracts.plan import read_plan
from gpufleet.net import LOOPBACK, free_port
from planner.capacity import ReplicaModel
from planner.profiles import load_profiles
from planner.service import ServiceTime
from planner.simulate import simulate_colocated
from tests.cli_run import run_cli

from .conftest import prometheus_tool, stop_process, wait_prometheus_ready
from .triton_history import gpu_series, model_series, openmetrics

MIX = "model,qps,p99_ms\nyolov8m-seg-640,100,150\nyolov8n-640,150,50\n"  # tests/test_mix.py's LIGHT: they share a T4
WINDOW_S = 60
SCRAPE_S = 15
# Each model's per-replica rate in each window, as a share of its planned rate: each held two windows (the summary's
# sliding minute), the two models' shares out of step.
SHARES = ((0.5, 1.0), (0.5, 1.0), (1.0, 0.5), (1.0, 0.5), (0.9, 0.9), (0.9, 0.9))
SLOWER = 1.2
READY_S = 20


def history(job: str, plan, services: list[ServiceTime], t0: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    shared = plan.deployments
    cfgs = [d.triton.latency_shape for d in shared]
    speedup = [0.0] + [1.0] * sum(c.instance_count for c in cfgs)  # processor sharing at no gain: one of the two
    per_model = [{"done": [], "lat": [], "queue": [], "batch": []} for _ in shared]
    busy = []
    for k, shares in enumerate(SHARES):
        start = t0 + k * WINDOW_S
        arrivals = [np.sort(rng.uniform(0, WINDOW_S, rng.poisson(s * d.rate_per_replica * WINDOW_S)))
                    for s, d in zip(shares, shared)]
        results = simulate_colocated(arrivals, cfgs, services, [rng.random(len(a)) for a in arrivals], speedup,
                                     warmup_fraction=0.0)
        for got, a, res in zip(per_model, arrivals, results):
            got["done"].append(start + a + res.latency_s)
            got["lat"].append(res.latency_s)
            got["queue"].append(res.queue_s)
            got["batch"].append(np.full(len(a), res.mean_batch_size))
        busy.append(results[0].busy_fraction)
    end = t0 + len(SHARES) * WINDOW_S
    # The plan's replicas, each with this history (its traffic at the plan's total, so none reads over-bought).
    lines = []
    for r in range(shared[0].replicas):
        instance = f"{job}-{r}:8002"
        lines += gpu_series(job, busy, t0, WINDOW_S, SCRAPE_S, instance=instance)
        for d, got in zip(shared, per_model):
            lines += model_series(job, d.model, *(np.concatenate(got[x]) for x in ("done", "lat", "queue", "batch")),
                                  t0, end, SCRAPE_S, instance=instance)
    return lines


@pytest.fixture(scope="module")
def stand(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    (tmp / "mix.csv").write_text(MIX)
    plan_path = tmp / "plan.json"
    r = run_cli("planner", ["recommend", "--mix", tmp / "mix.csv", "--gpu", "T4", "--output", plan_path])
    assert r.returncode == 0, r.stderr
    plan = read_plan(plan_path)
    assert len(plan.units()) == 1 and all(d.shared for d in plan.deployments), plan.deployments
    profiles = load_profiles()
    services = [ReplicaModel.from_profile(profiles[(d.model, d.gpu)]).service for d in plan.deployments]
    slower = [ServiceTime([t * SLOWER for t in services[0].tables]), *services[1:]]
    t0 = float(int(time.time() // 60) * 60 - 60 - len(SHARES) * WINDOW_S)
    lines = history("matching", plan, services, t0, seed=1) + history("slower", plan, slower, t0, seed=2)
    (tmp / "history.om").write_text(openmetrics(lines))
    data = tmp / "tsdb"
    subprocess.run([prometheus_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(tmp / "history.om"),
                    str(data)], check=True, capture_output=True, timeout=60)
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    proc = subprocess.Popen([prometheus_tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={data}", f"--web.listen-address={LOOPBACK}:{port}",
                             "--storage.tsdb.retention.time=30d"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_prometheus_ready(proc, url, READY_S)
        yield {"url": url, "plan": plan_path, "end": t0 + len(SHARES) * WINDOW_S, "models": [
            d.model for d in plan.deployments]}
    finally:
        stop_process(proc)


def check(stand, job: str):
    return run_cli("planner", ["check", "--prometheus", stand["url"], "--plan", stand["plan"], "--window",
                               f"{WINDOW_S}s", "--range", f"{len(SHARES) * WINDOW_S}s", "--end", f"{stand['end']:.0f}",
                               "--selector", f'job="{job}"'])


def verdicts(stdout: str, models: list[str]) -> dict[str, str]:
    """Each model's verdict in the summary table (its last rows, one per model)."""
    out = {}
    for line in stdout.splitlines():
        for m in models:
            if f" {m} " in line and any(v in line for v in ("matches", "slower", "faster")):
                out[m] = next(v for v in ("matches", "slower", "faster") if v in line)
    return out


def test_a_shared_replica_that_matches_its_plan_matches_for_every_model(stand):
    """Every window of both models, each predicted at both models' rates in that window: exit 0."""
    r = check(stand, "matching")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(verdicts(r.stdout, stand["models"]).values()) == {"matches"}, r.stdout
    assert "over-bought" not in r.stdout and "unknown" not in r.stdout


def test_a_shared_replica_whose_first_model_is_slower_is_reported_slower(stand):
    """The first model 20% slower in service time: reported slower, exit 3 (the second, delayed behind its batches,
    may be too)."""
    r = check(stand, "slower")
    assert r.returncode == 3, r.stdout + r.stderr
    assert verdicts(r.stdout, stand["models"])[stand["models"][0]] == "slower", r.stdout
