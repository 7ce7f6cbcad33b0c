"""`planner fit --prometheus` on a live stand-in, against the stand-in's capacity measured by long open-loop steps
(issue 28, done-when: "a calibration fitted from the Prometheus windows of a stand-in run predicts that stand-in's
capacity within 10%"). Run by hand, alone on the machine (about 10 minutes):

    python bench/production_fit.py --out docs/validation/production

One real Triton (the bundled tritonserver) serves the GPU stand-in of PROFILE (a latency profile served by
sleeping, serving.standin) with max batch 8, no queue delay, no queue bound; Debian's Prometheus scrapes it every
second; one open-loop Locust run sends, in this order:

1. calibration: CALIBRATION_RATES, STEP_S each (light to heavy load). `planner fit --prometheus` (the console entry)
   reads them back as windows of STEP_S aligned to the steps' ends and fits the calibration at TARGET_MS (Triton's
   own P99: its summary starts at its frontend, so the target is the server's share);
2. capacity: the planner's capacity is of the config as the plan writes it, with the queue bound
   (planner.capacity.queue_bound) of the calibrated model, refusing at most REFUSED_SHARE_MAX. That config is
   published into the polling Triton (version 2), and Locust sends CAPACITY_MULTIPLES x the fitted capacity,
   CAPACITY_STEP_S each. Triton's P99 of each step is its summary (a sliding minute, prometheus-cpp's max_age)
   averaged over the step's last 15 s of scrapes, so its minute lies inside the step; the refused share is Locust's
   (Triton answers a full queue 503 without counting it). The measured capacity is the first rate where either
   breaks the promise, each made monotone in the rate and interpolated (bench/validate.measured_capacity). Locust's
   end-to-end P99 per step is recorded beside it.

Writes to --out: profile.json, prometheus.yml, the Locust run (run/), calibration.json with its windows
(calibration.windows.json), the fit's console output (fit.txt), results.json and table.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.validate import first_crossing, measured_capacity  # noqa: E402
from gpufleet.contracts.calibration import read_calibration  # noqa: E402
from gpufleet.contracts.profile import LatencyProfile  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from gpufleet.net import LOOPBACK, free_port  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from gpufleet.triton import loaded_batching  # noqa: E402
from planner.capacity import REFUSED_SHARE_MAX, CapacitySearch, ReplicaModel, queue_bound  # noqa: E402
from planner.uncertainty import CalibratedModel  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.standin import StandIn  # noqa: E402

MODEL, GPU = "standin", "T4"
# The stand-in of tests/test_production_live.py: a service time large beside the Python backend's own cost.
BASE_MS, PER_IMAGE_MS = 30.0, 5.0
CFG = BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=0)
TARGET_MS = 150.0  # the profile's own capacity here is ~63 req/s, ~56% of its saturation (113 req/s)
CALIBRATION_RATES = (15.0, 30.0, 45.0, 60.0)
STEP_S = 60.0
WARMUP_S = 5.0
CAPACITY_MULTIPLES = (0.85, 0.95, 1.05, 1.15)  # of the fitted capacity
CAPACITY_STEP_S = 60.0
SCRAPE_S = 1
SUMMARY_TAIL_S = 15  # the scrapes whose minute lies inside a capacity step
JOB = "triton"


def profile() -> LatencyProfile:
    def ms(b: int) -> float:
        return BASE_MS + PER_IMAGE_MS * b

    return LatencyProfile.model_validate({
        "schema_version": 1, "model": MODEL, "gpu": GPU, "precision": "fp16", "backend": "triton",
        "origin": {"kind": "derived", "date": "2026-12-03",
                   "derivation": f"synthetic stand-in profile: ({BASE_MS} + {PER_IMAGE_MS} x batch) ms"},
        "batches": [{"batch_size": b, "mean_ms": ms(b), "p50_ms": ms(b), "p99_ms": 1.05 * ms(b)} for b in (1, 2, 4, 8)]})


def p99_crossing(model: ReplicaModel, overhead_ms: float) -> float:
    """The rate at which the model's simulated P99 (plus ``overhead_ms``) reaches TARGET_MS, no queue bound: the P99
    half of the planner's capacity (planner.capacity.CapacitySearch.holds adds the bound's refusals)."""
    search = CapacitySearch(model)
    lo, hi = 0.0, model.saturation_rate(CFG)
    while hi - lo > hi / 512:
        mid = 0.5 * (lo + hi)
        if search.simulate(mid, CFG).quantile_ms(0.99) + overhead_ms <= TARGET_MS:
            lo = mid
        else:
            hi = mid
    return lo


def query(url: str, promql: str, t: float) -> list[dict]:
    q = urllib.parse.urlencode({"query": promql, "time": f"{t:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        return json.load(r)["data"]["result"]


def start_prometheus(prometheus: str, config: Path, data: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address={LOOPBACK}:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"prometheus did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bounded", action="store_true",
                    help="serve the capacity steps with the fitted model's queue bound, as the plan writes it")
    ap.add_argument("--quick", action="store_true", help="steps of 10/12 s: checks the bench runs, measures nothing")
    args = ap.parse_args()
    global STEP_S, CAPACITY_STEP_S
    if args.quick:
        STEP_S, CAPACITY_STEP_S = 10.0, 12.0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise SystemExit("needs Debian's prometheus (apt-get install prometheus)")
    prof = profile()
    (out / "profile.json").write_text(prof.model_dump_json(indent=2) + "\n")
    model = ReplicaModel.from_profile(prof)
    planned = CapacitySearch(model).max_rate(CFG, TARGET_MS / 1000)
    capacity_rates = [round(m * planned, 1) for m in CAPACITY_MULTIPLES]
    rates = [*CALIBRATION_RATES, *capacity_rates]
    durations = [STEP_S] * len(CALIBRATION_RATES) + [CAPACITY_STEP_S] * len(capacity_rates)
    print(f"profile capacity at {TARGET_MS:g} ms: {planned:.1f} req/s; steps {rates}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpufleet-prodfit-") as tmp:
        repo = Path(tmp) / "repo"
        StandIn(MODEL, prof).write(repo, CFG, version=1)
        # Polling, so the capacity part's config (the queue bound the fitted model writes) is published as version 2.
        triton = LocalTriton(repo, extra_args=["--model-control-mode=poll", "--repository-poll-secs=1",
                                               "--exit-on-error=false", "--exit-timeout-secs=5"]).start()
        prom = None
        try:
            config = out / "prometheus.yml"
            config.write_text(
                f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\nscrape_configs:\n"
                f"  - job_name: {JOB}\n    static_configs:\n      - targets: ['{LOOPBACK}:{triton.ports.metrics}']\n")
            port = free_port()
            prom = start_prometheus(prometheus, config, Path(tmp) / "tsdb", port)
            url = f"http://{LOOPBACK}:{port}"

            def run(name: str, rates: list[float], duration_s: float):
                return run_stress(StressSettings(host=f"http://{triton.http_url}", model=MODEL, out=out / "run",
                                                 metrics_url=triton.metrics_url,
                                                 shape=Steps(rates=rates, step_duration=duration_s, warmup=WARMUP_S),
                                                 seed=20261203, timeout_s=30, name=name))

            cal_run = run("calibration", list(CALIBRATION_RATES), STEP_S)
            cal_steps = cal_run.reported_steps()
            cal_end = cal_run.start_epoch_s + cal_steps[-1].start_s + cal_steps[-1].duration_s
            time.sleep(2 * SCRAPE_S)  # the last scrapes are in
            fit_cmd = [str(Path(sys.executable).parent / "planner"), "fit", "--prometheus", url, "--selector",
                       f'job="{JOB}"', "--triton-config", f"{CFG.max_batch_size}:{CFG.max_queue_delay_microseconds}:1",
                       "--window", f"{STEP_S:.0f}s", "--range", f"{STEP_S * len(cal_steps):.0f}s", "--end",
                       f"{cal_end:.3f}", "--profile", str(out / "profile.json"), "--p99-ms", f"{TARGET_MS:g}",
                       "--output", str(out / "calibration.json")]
            t = time.monotonic()
            fit = subprocess.run(fit_cmd, capture_output=True, text=True, timeout=600)
            fit_s = time.monotonic() - t
            (out / "fit.txt").write_text(" ".join(fit_cmd) + f"\n# exit {fit.returncode}, {fit_s:.1f} s\n"
                                         + fit.stdout + fit.stderr)
            print(fit.stdout[-3000:], fit.stderr[-2000:], flush=True)
            if fit.returncode != 0:
                return 1
            cal = read_calibration(out / "calibration.json")
            fitted = cal.thresholds[0].nominal_max_rate_per_replica
            # The planner's capacity is the config AS IT WRITES IT: with the queue bound (planner.capacity.queue_bound)
            # of the calibrated model at the budget the fit sized with (planner.fit.threshold: target less the fitted
            # overhead), refusing at most REFUSED_SHARE_MAX. So the stand-in serves that bound for the capacity steps.
            calibrated = CalibratedModel.from_calibration(prof, cal)
            overhead_ms = float(calibrated.values[0])
            bounded = queue_bound(calibrated.replica(), CFG, (TARGET_MS - overhead_ms) / 1000)
            p99_fitted = p99_crossing(calibrated.replica(), overhead_ms)
            if args.bounded:
                StandIn(MODEL, prof).write(repo, bounded, version=2)
                deadline = time.monotonic() + 30
                while (getattr(loaded_batching(f"http://{triton.http_url}", MODEL), "queue_timeout_microseconds",
                               None) != bounded.queue_timeout_microseconds or not triton.ready()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the bounded config did not load within 30 s")
                    time.sleep(0.5)
            centre = fitted if args.bounded else p99_fitted
            capacity_rates = [round(m * centre, 1) for m in CAPACITY_MULTIPLES]
            print(f"fitted capacity {fitted:.1f} req/s, its P99 alone {p99_fitted:.1f}; bound {bounded.max_queue_size} "
                  f"/ {bounded.queue_timeout_microseconds} us ({'served' if args.bounded else 'not served'}); "
                  f"capacity steps {capacity_rates}", flush=True)
            cap_run = run("capacity", capacity_rates, CAPACITY_STEP_S)
            time.sleep(2 * SCRAPE_S)
            steps = []
            for s in cap_run.reported_steps():
                end = cap_run.start_epoch_s + s.start_s + s.duration_s
                res = query(url, f'avg_over_time(nv_inference_request_summary_us{{job="{JOB}",model="{MODEL}",'
                                 f'version="{2 if args.bounded else 1}",quantile="0.99"}}[{SUMMARY_TAIL_S}s]) / 1000', end)
                triton_p99 = float(res[0]["value"][1]) if res else None
                steps.append({"offered": s.offered_rate, "achieved": s.achieved_rate, "sent": s.sent, "ok": s.ok,
                              "rejected": s.rejected, "errors": s.errors, "late_sends": s.late_sends,
                              "refused_share": s.rejected / s.sent if s.sent else None,
                              "locust_p99_ms": s.latency_ms.p99, "triton_p99_ms": triton_p99,
                              "server_batch": s.server.mean_batch_size if s.server else None})
        finally:
            if prom is not None:
                prom.terminate()
                prom.wait(timeout=15)
            triton.stop()
    pts = [(st["offered"], st["triton_p99_ms"], st["ok"]) for st in steps if st["triton_p99_ms"] is not None]
    p99_cap, p99_how = measured_capacity(pts, TARGET_MS)
    raw = first_crossing(pts, TARGET_MS)
    refused = [(st["offered"], st["refused_share"], st["sent"]) for st in steps]
    refused_cap, refused_how = measured_capacity(refused, REFUSED_SHARE_MAX)
    # The stand-in holds the promise up to the first rate where either breaks (None: not within the steps).
    found = [c for c in (p99_cap, refused_cap) if c is not None]
    truth = min(found) if found else None
    how = f"P99: {p99_how} ({p99_cap}); refused share: {refused_how} ({refused_cap})"
    locust_pts = [(st["offered"], st["locust_p99_ms"], st["ok"]) for st in steps if st["locust_p99_ms"] is not None]
    locust_truth, locust_how = measured_capacity(locust_pts, TARGET_MS)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
            "cpus": __import__("os").cpu_count(), "target_ms": TARGET_MS, "config": CFG.model_dump(mode="json"),
            "profile_capacity": planned, "bound": {"max_queue_size": bounded.max_queue_size,
                                                   "queue_timeout_microseconds": bounded.queue_timeout_microseconds}, "calibration_rates": list(CALIBRATION_RATES), "step_s": STEP_S,
            "capacity_step_s": CAPACITY_STEP_S, "fit_seconds": fit_s,
            "load_average_after": __import__("os").getloadavg(),
            "parameters": json.loads(cal.model_dump_json())["parameters"],
            "fitted_capacity": fitted, "fitted_p99_capacity": p99_fitted, "bounded": args.bounded, "measured_capacity": truth, "measured_how": how, "first_crossing": raw,
            "locust_capacity": locust_truth, "locust_how": locust_how,
            "ratio": None if truth is None else (fitted if args.bounded else p99_fitted) / truth, "capacity_steps": steps}
    (out / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [f"# planner fit --prometheus vs measured capacity ({meta['date']})", "",
             f"Target: Triton's P99 {TARGET_MS:g} ms, at most {REFUSED_SHARE_MAX:.1%} refused; calibration steps "
             f"{list(CALIBRATION_RATES)} req/s x {STEP_S:g} s, max batch 8, no queue delay, no bound; capacity steps "
             f"{CAPACITY_STEP_S:g} s each " + (f"with the fitted model's queue bound {bounded.max_queue_size} / "
             f"{bounded.queue_timeout_microseconds} us." if args.bounded else "with no queue bound."), "",
             "| capacity step req/s (offered / achieved) | ok | rejected | late sends | Triton P99 ms | Locust P99 ms |",
             "|---|---|---|---|---|---|"]
    for st in steps:
        lines.append(f"| {st['offered']:.1f} / {st['achieved']:.1f} | {st['ok']} | {st['rejected']} | "
                     f"{st['late_sends']} | {st['triton_p99_ms'] if st['triton_p99_ms'] is None else round(st['triton_p99_ms'], 1)} | "
                     f"{st['locust_p99_ms'] if st['locust_p99_ms'] is None else round(st['locust_p99_ms'], 1)} |")
    lines += ["", "| | req/s |", "|---|---|",
              f"| profile alone, as the planner sizes it (P99 and the queue bound refusing at most 0.1%; no server cost) | {planned:.1f} |",
              f"| **fitted** (`planner fit --prometheus`, nominal) | **{fitted:.1f}** |",
              f"| fitted, the threshold's lower end ({cal.uncertainty.confidence:.0%}) | {cal.thresholds[0].max_rate_per_replica:.1f} |",
              f"| **fitted, P99 alone** (the calibrated model's P99 + overhead at the target, no bound) | **{p99_fitted:.1f}** |",
              f"| **measured** (first of: Triton P99 over the target, refused share over {REFUSED_SHARE_MAX:.1%}; isotonic, "
              f"interpolated) | **{truth if truth is None else round(truth, 1)}** |",
              f"| measured: P99 crossing / refused-share crossing | {p99_cap if p99_cap is None else round(p99_cap, 1)} / "
              f"{refused_cap if refused_cap is None else round(refused_cap, 1)} |",
              f"| measured, raw first P99 crossing | {raw if raw is None else round(raw, 1)} |",
              f"| measured with Locust's end-to-end P99 ({locust_how}) | "
              f"{locust_truth if locust_truth is None else round(locust_truth, 1)} |",
              f"| {'fitted' if args.bounded else 'fitted P99 alone'} / measured | "
              f"{'-' if truth is None else format(meta['ratio'], '.3f')} |"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
