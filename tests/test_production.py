"""`planner check`, `planner fit --prometheus` and `planner demand` against a real Prometheus server (Debian's
prometheus 2.42, /usr/bin/prometheus) holding synthetic Triton history backfilled with `promtool tsdb
create-blocks-from openmetrics`.

The history is the planner's own batcher simulation of one replica at chosen rates, scraped every 15 s the way
Triton exposes it (core@r25.01: counters nv_inference_request_success, nv_inference_count, nv_inference_exec_count,
nv_inference_queue_duration_us, nv_inference_compute_{input,infer,output}_duration_us,
nv_inference_request_duration_us; nv_inference_request_failure by reason; the summary
nv_inference_request_summary_us over a sliding minute with quantiles 0.5/0.9/0.99, infra.triton.METRICS_ARGS; the
gauge nv_gpu_utilization): one server that matches the plan (job="matching") and one 20% slower in service time
(job="slower"), scraped directly as the local stand-in is (no namespace or service label: --selector).
"""
from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from gpufleet.contracts.calibration import read_calibration
from gpufleet.contracts.demand import read_demand_curve
from gpufleet.contracts.plan import read_plan
from gpufleet.contracts.stress_result import read_stress_result
from gpufleet.deployed import DEFAULT_NAMESPACE, stack_app, unit_name
from gpufleet.net import LOOPBACK, free_port
from planner.capacity import ReplicaModel
from planner.profiles import load_profiles
from planner.service import ServiceTime
from planner.simulate import simulate
from tests.cli_run import run_cli

from .conftest import prometheus_tool, stop_process, wait_prometheus_ready
from .triton_history import gpu_series, model_series, openmetrics

MODEL, GPU, QPS, P99_MS = "yolov8m-seg-1280x720", "T4", 60, 400
WINDOW_S = 60
# Per-replica rate in each window: each held for two windows, so the summary's sliding minute that opens a window is
# mostly of its own rate, and low to high so the fit sees light and heavy load (batches of one and of several).
RATES = (20.0, 20.0, 45.0, 45.0, 70.0, 70.0)
SCRAPE_S = 15
SLOWER = 1.2
READY_S = 20
# A day's worth for the demand curve is more than the planner needs: it plans a curve of an hour or more. Requests/s
# over an hour in windows of five minutes (served counts only).
TRAFFIC_WINDOW_S = 300
TRAFFIC = (10.0, 12.0, 15.0, 20.0, 30.0, 45.0, 60.0, 95.0, 60.0, 40.0, 25.0, 15.0)


def traffic(t_end: float, seed: int) -> list[str]:
    """nv_inference_request_success of a model's traffic over TRAFFIC (Poisson counts per scrape)."""
    rng = np.random.default_rng(seed)
    t0 = t_end - len(TRAFFIC) * TRAFFIC_WINDOW_S
    count, out = 0, []
    for t in np.arange(t0 + SCRAPE_S, t_end + 1e-9, SCRAPE_S):
        count += int(rng.poisson(TRAFFIC[min(int((t - t0 - 1e-9) // TRAFFIC_WINDOW_S), len(TRAFFIC) - 1)] * SCRAPE_S))
        out.append(f'nv_inference_request_success{{job="traffic",instance="traffic:8002",model="{MODEL}"}} '
                   f"{float(count)!r} {t:.3f}")
    return out


def history(job: str, service: ServiceTime, cfg, t0: float, seed: int, scrape: str = "") -> list[str]:
    """OpenMetrics samples of one replica's Triton series over the windows of RATES, starting at ``t0``; ``scrape``:
    more labels, as a ServiceMonitor's scrape adds them."""
    rng = np.random.default_rng(seed)
    done, lat, queue, batch_of = [], [], [], []
    busy = []
    for k, rate in enumerate(RATES):
        start = t0 + k * WINDOW_S
        n = rng.poisson(rate * WINDOW_S)
        arrivals = np.sort(rng.uniform(0, WINDOW_S, n))
        res = simulate(arrivals, cfg, service, rng.random(n), warmup_fraction=0.0)
        done.append(start + arrivals + res.latency_s)
        lat.append(res.latency_s)
        queue.append(res.queue_s)
        batch_of.append(np.full(n, res.mean_batch_size))
        busy.append(res.busy_fraction)
    end = t0 + len(RATES) * WINDOW_S
    return (model_series(job, MODEL, *(np.concatenate(x) for x in (done, lat, queue, batch_of)), t0, end, SCRAPE_S,
                         scrape)
            + gpu_series(job, busy, t0, WINDOW_S, SCRAPE_S, scrape))


@pytest.fixture(scope="module")
def stand(tmp_path_factory):
    """The plan, and a Prometheus on loopback holding both servers' history; stopped whatever happens."""
    tmp = tmp_path_factory.mktemp("production")
    plan_path = tmp / "plan.json"
    r = run_cli("planner", ["recommend", "--qps", QPS, "--model", MODEL, "--gpu", GPU, "--p99-ms", P99_MS,
                            "--output", plan_path])
    assert r.returncode == 0, r.stderr
    plan = read_plan(plan_path)
    d = plan.deployments[0]
    profile = load_profiles()[(MODEL, GPU)]
    service = ReplicaModel.from_profile(profile).service
    slower = ServiceTime([t * SLOWER for t in service.tables])
    t0 = float(int(time.time() // 60) * 60 - 60 - len(RATES) * WINDOW_S)
    # The matching server as the cluster's ServiceMonitor labels it too (namespace, the pool Service, the pod).
    deployment = unit_name(stack_app(plan), plan.units()[0])
    lines = history("matching", service, d.triton.latency_shape, t0, seed=1,
                    scrape=f',namespace="{DEFAULT_NAMESPACE}",service="{deployment}",pod="{deployment}-7d9f-x2k4q"')
    lines += history("slower", slower, d.triton.latency_shape, t0, seed=2)
    lines += traffic(t0 + len(RATES) * WINDOW_S, seed=3)
    text = tmp / "history.om"
    text.write_text(openmetrics(lines))
    data = tmp / "tsdb"
    subprocess.run([prometheus_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(text), str(data)],
                   check=True, capture_output=True, timeout=60)
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    proc = subprocess.Popen([prometheus_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address={LOOPBACK}:{port}", "--storage.tsdb.retention.time=30d"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_prometheus_ready(proc, url, READY_S)
        yield {"url": url, "plan": plan_path, "t0": t0, "end": t0 + len(RATES) * WINDOW_S, "tmp": tmp,
               "profile": profile, "deployment": d, "plan_model": plan}
    finally:
        stop_process(proc)


def check(stand, job: str, *extra, windows: int = len(RATES), end: float | None = None):
    return run_cli("planner", ["check", "--prometheus", stand["url"], "--plan", stand["plan"], "--window",
                               f"{WINDOW_S}s", "--range", f"{windows * WINDOW_S}s", "--end",
                               f"{stand['end'] if end is None else end:.0f}", "--selector", f'job="{job}"', *extra])


def test_query_range_points_are_the_windows_ends(stand):
    """Prometheus evaluates a range query at start, start + step, ... (so each point of rate(x[step]) is the window
    that ends there), and the summary's P99 is a series of its own under quantile="0.99"."""
    from gpufleet.prometheus import Prometheus
    end, start = stand["end"], stand["end"] - (len(RATES) - 1) * WINDOW_S
    got = Prometheus(stand["url"]).query_range(
        f'nv_inference_request_summary_us{{job="matching",quantile="0.99"}}', start, end, WINDOW_S)
    assert [t for t, _ in got[0].points] == [start + k * WINDOW_S for k in range(len(RATES))]
    assert got[0].labels["quantile"] == "0.99"


def test_check_matching_history_matches(stand):
    """Every window of the matching server, light load to heavy, within the band at its own rate: exit 0."""
    r = check(stand, "matching")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "matches" in r.stdout and "nothing" in r.stdout
    assert "slower" not in r.stdout and "faster" not in r.stdout, r.stdout


def test_check_reports_drift_of_slower_service(stand):
    """20% slower in service time: the whole range reports it (exit 3, the finding's status), and so does its first
    window alone, at the lightest load: the drift is reported within one window."""
    r = check(stand, "slower")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "slower" in r.stdout and "refit" in r.stdout
    first = check(stand, "slower", windows=1, end=stand["t0"] + WINDOW_S)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "slower" in first.stdout


def test_check_finds_the_deployment_by_the_clusters_labels(stand):
    """Without --selector, the Deployment's series are found by namespace and its pool Service, as infra names
    them (the alerts select them the same way)."""
    r = run_cli("planner", ["check", "--prometheus", stand["url"], "--plan", stand["plan"], "--window",
                            f"{WINDOW_S}s", "--range", f"{len(RATES) * WINDOW_S}s", "--end", f"{stand['end']:.0f}"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "matches" in r.stdout and "too little traffic" not in r.stdout


def test_check_after_the_history_is_stale(stand):
    """Past the last sample by more than a window, rate() has no points: the check makes up no zeros; with no series
    for any Deployment it says so in one line, as bad input (the labels or the range name nothing)."""
    r = run_cli("planner", ["check", "--prometheus", stand["url"], "--plan", stand["plan"], "--window",
                            f"{WINDOW_S}s", "--range", f"{WINDOW_S}s", "--end", f"{stand['end'] + 3 * WINDOW_S:.0f}",
                            "--selector", 'job="matching"'])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "holds no nv_inference_request_success" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_check_bad_selector_is_bad_input(stand):
    r = check(stand, 'x",job=~"(')
    assert r.returncode == 2 and "refused the query" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_check_a_url_that_is_no_prometheus_is_a_runtime_failure(stand):
    """A server that answers, but not the API (here Prometheus under a wrong path prefix): one line, exit 1."""
    r = run_cli("planner", ["check", "--prometheus", f"{stand['url']}/not-prometheus", "--plan", stand["plan"]])
    assert r.returncode == 1 and "has no Prometheus API" in r.stderr, r.stderr


def test_check_unreachable_prometheus_is_a_runtime_failure(stand):
    r = run_cli("planner", ["check", "--prometheus", f"http://{LOOPBACK}:{free_port()}", "--plan", stand["plan"]])
    assert r.returncode == 1 and "cannot be reached" in r.stderr


def traffic_check(stand, first: int, count: int):
    """`planner check` over windows first..first+count-1 of TRAFFIC (rates only: no P99 to judge)."""
    end = stand["end"] - (len(TRAFFIC) - first - count) * TRAFFIC_WINDOW_S
    return run_cli("planner", ["check", "--prometheus", stand["url"], "--plan", stand["plan"], "--window", "5m",
                               "--range", f"{count * 5}m", "--end", f"{end:.0f}", "--selector", 'job="traffic"'])


def test_check_names_a_rate_over_the_plans_capacity(stand):
    """A window whose per-replica rate passes max_rate_per_replica: over capacity, re-plan at the peak (exit 3)."""
    d = stand["deployment"]
    assert max(TRAFFIC) > d.autoscaling.max_rate_per_replica > sorted(TRAFFIC)[-2]
    r = traffic_check(stand, TRAFFIC.index(max(TRAFFIC)) - 1, 3)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "over capacity" in r.stdout and "re-plan at the observed peak" in r.stdout


def test_check_names_a_fleet_bought_too_large(stand):
    """Peak traffic under half of what the Deployment was sized for: over-bought (exit 3)."""
    d = stand["deployment"]
    assert max(TRAFFIC[:3]) < 0.5 * d.rate_per_replica * d.replicas
    r = traffic_check(stand, 0, 3)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "over-bought" in r.stdout and "re-plan at the observed peak" in r.stdout


def test_check_that_judged_no_p99_is_a_finding_not_a_match(stand):
    """Windows within the plan's capacity, not over-bought, but with no P99 (the traffic job exports rates only, as a
    Triton without its latency summaries does): nothing confirms the promise, so the check does not pass it (it
    exited 0 here, "nothing to do"); it names the server flag that would let it judge (exit 3)."""
    d = stand["deployment"]
    first, count = 5, 2
    peak = max(TRAFFIC[first:first + count])
    assert d.autoscaling.max_rate_per_replica > peak >= 0.5 * d.rate_per_replica * d.replicas
    r = traffic_check(stand, first, count)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "within" in r.stdout and "summary_latencies=true" in r.stdout, r.stdout


@pytest.fixture(scope="module")
def fitted(stand):
    """`planner fit --prometheus` on the matching server's windows, at the plan's device budget (Triton's P99 starts
    at its frontend, so the fitted overhead is Triton's own and the budget leaves the plan's overhead out)."""
    tmp, plan = stand["tmp"], stand["plan_model"]
    profile = tmp / "profile.json"
    profile.write_text(stand["profile"].model_dump_json())
    out = tmp / "cal.json"
    budget = plan.request.p99_ms - plan.request.overhead_ms
    r = run_cli("planner", ["fit", "--prometheus", stand["url"], "--plan", stand["plan"], "--selector",
                            'job="matching"', "--window", f"{WINDOW_S}s", "--range", f"{len(RATES) * WINDOW_S}s",
                            "--end", f"{stand['end']:.0f}", "--profile", profile, "--p99-ms", f"{budget:g}",
                            "--output", out])
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_fit_from_production_windows_recovers_capacity(stand, fitted):
    """The windows become a stress result's steps; the fit's capacity is the matching server's (the profile's own,
    which the plan sized with) within 10%."""
    windows = read_stress_result(fitted.with_name("cal.windows.json"))
    assert windows.schedule_kind == "production" and len(windows.steps) == len(RATES)
    truth = next(s for s in stand["plan_model"].sizing if s.gpu == GPU).max_rate_per_replica
    fitted_rate = read_calibration(fitted).thresholds[0].nominal_max_rate_per_replica
    print(f"fitted capacity {fitted_rate:.2f} req/s, plan's {truth:.2f}")
    assert abs(fitted_rate / truth - 1) < 0.10


def test_fit_from_production_windows_leaves_no_window_of_the_matching_server_out(fitted):
    """Each window's compute per request is Triton's (a batch counted once per request in it), so a heavy window's
    larger batches weigh more in it than in its mean batch; the matching server's windows are all fitted, none
    called host-bound."""
    cal = read_calibration(fitted)
    assert [e.reason for e in cal.fit.excluded if e.reason.startswith("host-bound")] == []
    assert len(cal.steps) == len(RATES)


def test_check_with_the_fitted_calibration(stand, fitted):
    """With the calibration fitted on production (its band carried through the P99's gradient), the server it was
    fitted on matches and the 20%-slower one is still reported."""
    assert check(stand, "matching", "--calibration", fitted).returncode == 0
    assert check(stand, "slower", "--calibration", fitted).returncode == 3


def test_demand_curve_plans(stand):
    """An hour of observed traffic becomes the demand curve that `planner recommend --qps-curve` plans a day from."""
    tmp = stand["tmp"]
    curve = tmp / "curve.csv"
    r = run_cli("planner", ["demand", "--prometheus", stand["url"], "--model", MODEL, "--selector", 'job="traffic"',
                            "--window", "5m", "--range", "1h", "--end", f"{stand['end']:.0f}", "--output", curve])
    assert r.returncode == 0, r.stdout + r.stderr
    read = read_demand_curve(curve)
    assert read.step_s == TRAFFIC_WINDOW_S and len(read.qps) == len(TRAFFIC)
    assert np.allclose(read.qps, TRAFFIC, rtol=0.1)
    r = run_cli("planner", ["recommend", "--qps-curve", curve, "--model", MODEL, "--gpu", GPU, "--p99-ms", P99_MS,
                            "--period-min", "15", "--format", "json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["request"]["qps"] == pytest.approx(max(read.qps))
