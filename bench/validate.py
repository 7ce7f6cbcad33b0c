"""Does the planner predict a real Triton, and is its capacity the real one? Predicted against measured, by hand.

    python bench/validate.py --out docs/validation                 # measure, then analyze (~25 minutes)
    python bench/validate.py --out docs/validation --resume        # measure only the runs not yet in --out
    python bench/validate.py --out docs/validation --analyze-only  # analyze the runs already in --out

The server is the real ``tritonserver`` bundled with PyTriton on 127.0.0.1, serving the GPU stand-in
(:mod:`serving.standin`, what ``serving local --standin PROFILE`` serves): a Python-backend model that sleeps each
batch's device time, drawn from the latency profile. Triton's batcher, queue, instances and HTTP path are real; the
"device" costs no CPU, so the load generator keeps the machine's cores, as it would beside a GPU.

1. Calibration runs: each Triton config at 35/55/75% of the profile's saturation throughput (own seeds), then
   ``planner fit`` on the three runs together. No validation step is in the fit.
2. Validation runs: each config at 30/50/70/85% of its calibrated saturation throughput, and at 1.0, 1.05, 1.11
   and 1.2 times its planned capacity at the P99 target (the lower end of capacity's interval at the calibration's
   confidence). Poisson arrivals, open loop, latency from the scheduled send.
3. Capacity runs: each config at 0.95, 1.0, 1.05 and 1.1 times its planned capacity, 120 s a step. A 40 s step's
   P99 rests on a few dozen requests in the tail (about +-7% at these rates), too few to say where P99 crosses the
   target when the curve is nearly flat there; 120 s steps triple the tail.
4. Analysis: predicted (the calibrated model replaying each step, 8 seeded replications) against measured P99, and
   the measured capacity against the planned one. Measured capacity: where the capacity run's P99, made monotone
   in the rate (isotonic regression weighted by requests: P99 cannot fall as the rate rises, so a step below its
   lighter neighbour is noise), crosses the target, interpolated between the steps either side; the validation
   run's steps extend it where the capacity run does not bracket the crossing. Writes ``validation.json``, ``table.md`` and ``validation.png``; the runs stay beside
   them.

Every run is on loopback and bounded by its schedule.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.contracts.autoscaling import AutoscalingSpec  # noqa: E402
from gpufleet.contracts.calibration import write_calibration  # noqa: E402
from gpufleet.contracts.profile import read_profile, write_profile  # noqa: E402
from gpufleet.contracts.stress_result import read_stress_result  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402
from planner.capacity import ReplicaModel  # noqa: E402
from planner.fit import fit  # noqa: E402
from planner.pipeline import DEFAULT_OVERHEAD_MS  # noqa: E402
from planner.simulate import simulate  # noqa: E402
from planner.uncertainty import CalibratedModel  # noqa: E402
from serving.local import LocalTriton  # noqa: E402
from serving.standin import StandIn  # noqa: E402

DEFAULT_PROFILE = ROOT / "planner" / "data" / "profiles" / "yolov8m-640-T4.json"
CONFIGS = {
    "A": BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0, preferred_batch_sizes=(), instance_count=1),
    "B": BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=2000, preferred_batch_sizes=(), instance_count=1),
    "C": BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=1000, preferred_batch_sizes=(), instance_count=1),
}
CALIBRATION_LOADS = (0.35, 0.55, 0.75)  # of the profile's saturation throughput
LOADS = (0.30, 0.50, 0.70, 0.85)  # of the calibrated saturation throughput
CAPACITY_MULTIPLES = (1.0, 1.05, 1.11, 1.2)  # of the planned capacity
CAPACITY_RUN_MULTIPLES = (0.95, 1.0, 1.05, 1.1)  # of the planned capacity, in the capacity run
CAPACITY_STEP_S = 120.0
REPLICATIONS = 8
WARMUP_S = 5.0


def predict(model: ReplicaModel, cfg: BatchingConfig, rate: float, duration_s: float, overhead_ms: float,
            seed: int) -> tuple[float, float]:
    """P99 (ms, end to end) and mean batch size of a step like the measured one, pooled over replications."""
    lat, batch = [], []
    n = int(rate * duration_s)
    for r in range(REPLICATIONS):
        rng = np.random.default_rng([seed, r])
        res = simulate(np.cumsum(rng.exponential(1.0 / rate, n)), cfg, model.service, rng.random(n), model.speedup,
                       warmup_fraction=0.0)
        lat.append(res.latency_s)
        batch.append(res.mean_batch_size)
    return float(np.quantile(np.concatenate(lat), 0.99) * 1000.0 + overhead_ms), float(np.mean(batch))


@contextlib.contextmanager
def served(standin: StandIn, cfg: BatchingConfig):
    """A local Triton serving the stand-in under ``cfg`` for the ``with`` block (bench/calibrate_validation.py
    serves its calibrate runs with it too), stopped however the block ends."""
    with tempfile.TemporaryDirectory(prefix="gpufleet-validate-") as tmp:
        standin.write(Path(tmp) / "repo", cfg)
        server = LocalTriton(Path(tmp) / "repo", extra_args=["--exit-timeout-secs=5"]).start(timeout_s=120)
        try:
            yield server
        finally:
            server.stop()


def stress(standin: StandIn, cfg: BatchingConfig, rates: list[float], duration_s: float, seed: int, out: Path,
           name: str) -> Path:
    with served(standin, cfg) as server:
        run = StressSettings(host=f"http://{server.http_url}", model=standin.name, out=out,
                             metrics_url=server.metrics_url,
                             shape=Steps(rates=rates, step_duration=duration_s, warmup=WARMUP_S),
                             seed=seed, timeout_s=30, name=name)
        run_stress(run)
        return run.result_path


STANDIN_NAME = "standin"  # the model name the stand-in serves (and the runs record)


def calibrate(profile, out: Path, target_ms: float):
    paths = sorted(out.glob("calibration-*.stress.json"))
    # The runs are of the stand-in, which serves this profile's timing under its own name; planner fit refuses a run
    # of one model fitted with another's profile, so the profile is given the stand-in's name.
    served = profile.model_copy(update={"model": STANDIN_NAME})
    cal = fit(served, paths, p99_ms=target_ms, lag=AutoscalingSpec(scale_up_lag_s=360, ramp_per_min=0.02))
    write_calibration(cal, out / "calibration.json")
    return cal


def measured_capacity(steps: list[tuple[float, float, int]], target_ms: float) -> tuple[float | None, str]:
    """Where measured P99 crosses the target. ``steps``: (rate, P99 ms, requests). P99 is made monotone in the rate
    first (isotonic regression weighted by requests), then interpolated linearly between the steps either side."""
    pts = sorted(steps)
    rates = [r for r, _, _ in pts]
    p99 = isotonic_regression([p for _, p, _ in pts], weights=[float(n) for _, _, n in pts]).x
    if p99[0] > target_ms:
        return None, f"P99 above the target already at {rates[0]:.1f} req/s"
    for i in range(1, len(pts)):
        if p99[i] > target_ms:
            r0, r1, p0, p1 = rates[i - 1], rates[i], p99[i - 1], p99[i]
            return r0 + (target_ms - p0) * (r1 - r0) / (p1 - p0), "interpolated"
    return None, f"P99 within the target up to the highest rate measured ({rates[-1]:.1f} req/s)"


def first_crossing(steps: list[tuple[float, float, int]], target_ms: float) -> float | None:
    """The raw first crossing, no smoothing: reported beside the estimate."""
    pts = sorted(steps)
    for (r0, p0, _), (r1, p1, _) in zip(pts, pts[1:]):
        if p0 <= target_ms < p1:
            return r0 + (target_ms - p0) * (r1 - r0) / (p1 - p0)
    return None


def capacity_steps(out: Path, key: str, validation: list[tuple[float, float, int]],
                   target_ms: float) -> list[tuple[float, float, int]]:
    """The capacity run's steps, extended by the validation run's beyond its range where it does not bracket the
    crossing (all of the validation run's when there is no capacity run)."""
    path = out / f"capacity-{key}.stress.json"
    if not path.exists():
        return validation
    own = [(float(s.offered_rate), float(s.latency_ms.p99), int(s.ok)) for s in read_stress_result(path).reported_steps()
           if s.latency_ms.p99 is not None and s.ok >= 200]
    lo, hi = min(r for r, _, _ in own), max(r for r, _, _ in own)
    extra = []
    if min(p for r, p, _ in own if r == lo) > target_ms:
        extra += [v for v in validation if v[0] < lo]
    if max(p for r, p, _ in own if r == hi) <= target_ms:
        extra += [v for v in validation if v[0] > hi]
    return own + extra


def analyze(out: Path, profile, target_ms: float, meta: dict) -> dict:
    cal = calibrate(profile, out, target_ms)
    model = CalibratedModel.from_calibration(profile, cal)
    replica = model.replica()
    raw = ReplicaModel.from_profile(profile)
    points, capacities = [], []
    for key, cfg in CONFIGS.items():
        path = out / f"config-{key}.stress.json"
        if not path.exists():
            continue
        result = read_stress_result(path)
        planned = model.capacity(cfg, target_ms, cal.overhead_ms)
        steps = []
        for s in result.reported_steps():
            if s.latency_ms.p99 is None or s.ok < 200:
                continue
            rate = float(s.offered_rate)
            pred, pred_batch = predict(replica, cfg, rate, s.duration_s, cal.overhead_ms, seed=ord(key))
            pred_raw, _ = predict(raw, cfg, rate, s.duration_s, DEFAULT_OVERHEAD_MS, seed=ord(key))
            meas = s.latency_ms.p99
            steps.append({"config": key, "triton": cfg.describe(), "rate": round(rate, 1),
                          "load": round(rate / replica.saturation_rate(cfg), 3),
                          "kind": "capacity" if round(rate, 1) in meta.get("capacity_rates", {}).get(key, []) else "load",
                          "measured_p99_ms": round(meas, 2), "predicted_p99_ms": round(pred, 2),
                          "error": round((pred - meas) / meas, 4), "uncalibrated_p99_ms": round(pred_raw, 2),
                          "uncalibrated_error": round((pred_raw - meas) / meas, 4),
                          "measured_p50_ms": s.latency_ms.p50, "ok": s.ok, "errors": s.errors,
                          "late_sends": s.late_sends, "lag_p99_ms": s.lag_p99_ms,
                          "measured_mean_batch": s.server.mean_batch_size if s.server else None,
                          "predicted_mean_batch": round(pred_batch, 3)})
        points.extend(steps)
        validation = [(p["rate"], p["measured_p99_ms"], p["ok"]) for p in steps]
        measured = capacity_steps(out, key, validation, target_ms)
        cap, how = measured_capacity(measured, target_ms)
        raw_cross = first_crossing(validation, target_ms)
        capacities.append({"config": key, "triton": cfg.describe(), "planned": round(planned.planned, 1),
                           "nominal": round(planned.nominal, 1), "interval": [round(planned.low, 1), round(planned.high, 1)],
                           "measured": None if cap is None else round(cap, 1), "measured_how": how,
                           "measured_steps": [[r, round(p, 2), n] for r, p, n in sorted(measured)],
                           "validation_run_first_crossing": None if raw_cross is None else round(raw_cross, 1),
                           "planned_over_measured": None if cap is None else round(planned.planned / cap, 4)})
    load_points = [p for p in points if p["kind"] == "load"]
    errs = np.abs([p["error"] for p in load_points])
    raw_errs = np.abs([p["uncalibrated_error"] for p in load_points])
    ratios = [c["planned_over_measured"] for c in capacities]
    summary = {"median_abs_error": float(np.median(errs)), "worst_abs_error": float(np.max(errs)),
               "uncalibrated_median_abs_error": float(np.median(raw_errs)),
               "uncalibrated_worst_abs_error": float(np.max(raw_errs)),
               "capacity_ratios": ratios,
               "goal": "P99: median |error| <= 10%, worst <= 25% at 30-85% load; planned capacity within 10% of the "
                       "measured one and never above it",
               "p99_met": bool(np.median(errs) <= 0.10 and np.max(errs) <= 0.25),
               "capacity_met": all(r is not None and 0.9 <= r <= 1.0 for r in ratios)}
    meta.update({"target_p99_ms": target_ms, "calibration": {
        "parameters": cal.describe_parameters(), "warnings": cal.warnings,
        "median_abs_p99_error_in_fit": cal.fit.median_abs_p99_error,
        "excluded": [f"{e.source.rsplit('/', 1)[-1]} {e.step}: {e.reason}" for e in cal.fit.excluded if e.reason != "warm-up"]},
        "summary": summary, "capacities": capacities, "points": points})
    (out / "validation.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "table.md").write_text(table(meta))
    plot(meta, out / "validation.png")
    print(table(meta))
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation")
    ap.add_argument("--standin", type=Path, default=DEFAULT_PROFILE, help="latency profile the stand-in serves")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per measured step")
    ap.add_argument("--target-ms", type=float, default=60.0, help="P99 target for capacity")
    ap.add_argument("--analyze-only", action="store_true", help="fit and compare the runs already in --out")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out; measure the others")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "validation.json"
    if args.analyze_only:
        meta = json.loads(meta_path.read_text())
        profile = read_profile(out / "profile.json")
        analyze(out, profile, meta.get("target_p99_ms", args.target_ms),
                {k: v for k, v in meta.items() if k not in ("summary", "capacities", "points", "calibration")})
        return 0
    profile = read_profile(args.standin)
    write_profile(profile, out / "profile.json")
    standin = StandIn(STANDIN_NAME, profile)
    raw = ReplicaModel.from_profile(profile)
    meta = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "command": " ".join(["python", "bench/validate.py"] + sys.argv[1:]), "step_seconds": args.duration,
            "server": f"tritonserver (PyTriton's), Python-backend stand-in sleeping {profile.model} on {profile.gpu} "
                      f"({profile.origin.kind})", "capacity_rates": {}}
    for i, (key, cfg) in enumerate(CONFIGS.items()):
        rates = [round(f * raw.saturation_rate(cfg), 1) for f in CALIBRATION_LOADS]
        print(f"1. calibration run, config {key} ({cfg.describe()}): {rates} req/s", flush=True)
        if args.resume and (out / f"calibration-{key}.stress.json").exists():
            print("   kept from an earlier run", flush=True)
            continue
        stress(standin, cfg, rates, args.duration, 100 + i, out, f"calibration-{key}")
    cal = calibrate(profile, out, args.target_ms)
    print(f"   {cal.describe_parameters()}", flush=True)
    model = CalibratedModel.from_calibration(profile, cal)
    for i, (key, cfg) in enumerate(CONFIGS.items()):
        saturation = model.replica().saturation_rate(cfg)
        planned = model.capacity(cfg, args.target_ms, cal.overhead_ms).planned
        load_rates = [round(f * saturation, 1) for f in LOADS]
        cap_rates = [round(f * planned, 1) for f in CAPACITY_MULTIPLES]
        rates = sorted(set(load_rates + cap_rates))
        meta["capacity_rates"][key] = [r for r in cap_rates if r not in load_rates]
        print(f"2. config {key}: saturation {saturation:.1f}, planned capacity {planned:.1f} req/s; measuring {rates}",
              flush=True)
        if args.resume and (out / f"config-{key}.stress.json").exists():
            kept = [round(float(s.offered_rate), 1) for s in read_stress_result(out / f"config-{key}.stress.json").steps]
            earlier = json.loads(meta_path.read_text()).get("capacity_rates", {}) if meta_path.exists() else {}
            # Which of the kept steps were capacity steps is the earlier run's record (the fit may have moved since).
            meta["capacity_rates"][key] = earlier.get(key) or [r for r in kept
                                                               if min(abs(r - x) for x in load_rates) > 0.15]
            print(f"   kept from an earlier run: {kept}", flush=True)
            continue
        stress(standin, cfg, rates, args.duration, 200 + i, out, f"config-{key}")
    for i, (key, cfg) in enumerate(CONFIGS.items()):
        planned = model.capacity(cfg, args.target_ms, cal.overhead_ms).planned
        rates = [round(f * planned, 1) for f in CAPACITY_RUN_MULTIPLES]
        print(f"3. capacity run, config {key}: {rates} req/s, {CAPACITY_STEP_S:g} s a step", flush=True)
        if args.resume and (out / f"capacity-{key}.stress.json").exists():
            print("   kept from an earlier run", flush=True)
            continue
        stress(standin, cfg, rates, CAPACITY_STEP_S, 300 + i, out, f"capacity-{key}")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    analyze(out, profile, args.target_ms, meta)
    return 0


def table(meta: dict) -> str:
    lines = ["| config | Triton | kind | load | req/s | measured P99 ms | predicted P99 ms | error | uncalibrated ms | "
             "uncal. error | batch meas / pred |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in meta["points"]:
        mb = "-" if p["measured_mean_batch"] is None else f"{p['measured_mean_batch']:.2f}"
        lines.append(f"| {p['config']} | {p['triton']} | {p['kind']} | {p['load']:.0%} | {p['rate']:.1f} | "
                     f"{p['measured_p99_ms']:.1f} | {p['predicted_p99_ms']:.1f} | {p['error']:+.1%} | "
                     f"{p['uncalibrated_p99_ms']:.1f} | {p['uncalibrated_error']:+.1%} | {mb} / "
                     f"{p['predicted_mean_batch']:.2f} |")
    s = meta["summary"]
    lines += ["", f"P99 at 30-85% load (kind `load`): median |error| {s['median_abs_error']:.1%}, worst "
              f"{s['worst_abs_error']:.1%} ({'met' if s['p99_met'] else 'not met'}: median <= 10%, worst <= 25%). "
              f"Uncalibrated: median {s['uncalibrated_median_abs_error']:.1%}, worst "
              f"{s['uncalibrated_worst_abs_error']:.1%}.", "",
              f"| config | planned capacity req/s (at P99 <= {meta['target_p99_ms']:g} ms) | estimate | interval | "
              "measured capacity | planned / measured | first crossing in the 40 s steps |", "|---|---|---|---|---|---|---|"]
    for c in meta["capacities"]:
        ratio = "-" if c["planned_over_measured"] is None else f"{c['planned_over_measured']:.3f}"
        measured = c["measured_how"] if c["measured"] is None else f"{c['measured']:.1f}"
        cross = c.get("validation_run_first_crossing")
        lines.append(f"| {c['config']} | {c['planned']:.1f} | {c['nominal']:.1f} | {c['interval'][0]:.1f}-"
                     f"{c['interval'][1]:.1f} | {measured} | {ratio} | {'-' if cross is None else f'{cross:.1f}'} |")
    lines += ["", f"Capacity: {'met' if s['capacity_met'] else 'not met'} (planned within 10% of measured and never "
              "above it, every config)."]
    return "\n".join(lines) + "\n"


def plot(meta: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = meta["points"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for key, color in zip(sorted({p["config"] for p in points}), ("tab:blue", "tab:orange", "tab:green")):
        ps = sorted((p for p in points if p["config"] == key), key=lambda p: p["rate"])
        rates = [p["rate"] for p in ps]
        ax.plot(rates, [p["predicted_p99_ms"] for p in ps], "-", color=color, label=f"{key} predicted ({ps[0]['triton']})")
        ax.plot(rates, [p["measured_p99_ms"] for p in ps], "o", color=color, label=f"{key} measured")
        cap = next(c for c in meta["capacities"] if c["config"] == key)
        ax.axvline(cap["planned"], color=color, ls=":", lw=1)
        if cap.get("measured_steps"):
            ax.plot([r for r, _, _ in cap["measured_steps"]], [p for _, p, _ in cap["measured_steps"]], "s",
                    mfc="none", color=color, label=f"{key} capacity run (120 s steps)")
        if cap.get("measured") is not None:
            ax.plot([cap["measured"]], [meta["target_p99_ms"]], "x", color=color, ms=10, mew=2)
    ax.axhline(meta["target_p99_ms"], color="grey", ls="--", lw=1, label="P99 target")
    ax.set_xlabel("offered rate, req/s (dotted: planned capacity; x: measured capacity)")
    ax.set_ylabel("P99 latency, ms (end to end)")
    ax.set_yscale("log")
    ax.set_title("Predicted vs measured P99: local Triton, GPU stand-in")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
