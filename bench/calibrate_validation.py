"""Does ``loadtests calibrate`` pin capacity? Its estimate against long fixed-rate runs, on generated profiles.

    python bench/calibrate_validation.py --out docs/validation/calibrate                 # measure, then analyze
    python bench/calibrate_validation.py --out docs/validation/calibrate --resume        # only profiles not done
    python bench/calibrate_validation.py --out docs/validation/calibrate --analyze-only  # analyze what is there
    python bench/calibrate_validation.py --out docs/validation/calibrate --repeat gen08  # its long runs again
    python bench/calibrate_validation.py --out docs/validation/calibrate --refit         # planner fit again, no load

Issue 27's done-when: on the stand-in (``serving local --standin``) with at least ten latency profiles nobody tuned
to, ``loadtests calibrate`` puts capacity at the P99 target within ±5% of the capacity measured by long runs in at
least 9 of 10, and never more than 5% above it, within a server-time budget per config (``--budget-s``).

1. **Profiles** (:func:`generate`), from ``--seed``; profile ``i`` is of kind ``KINDS[i % 4]``:

   * ``per-batch``: L(b) = c + d·b with the per-batch cost c 8-30 times the per-item cost d (batching pays);
   * ``per-item``: c 0.1-0.5 times d (batching pays little);
   * ``balanced``: c 1.5-5 times d;
   * ``overhead``: L(b) = sqrt(o² + (d·b)²) with o 4-6 times d: a per-call overhead that dominates batches of one
     or two and is hidden behind compute at eight (not affine, the shape planner fit does not model).

   Every batch size (1, 2, 4, 8) has P99/P50 drawn in 1.45-3.4 (P99/mean 1.3-2.3 as the profile is read:
   :func:`gpufleet.contracts.profile.service_quantiles_s`), a heavy tail. The Triton config is one instance, max
   batch drawn from 1/2/4/8 (weights 0.15/0.2/0.3/0.35), queue delay from 0/500/1000/2000 µs (0 at batch 1).
2. **Where the knee lies** (the rule): the profile's time scale is set so that the config's saturation throughput
   (full batches back to back, the profile alone) is drawn in 90-260 req/s (70-150 at batch 1, where the Python
   backend's own per-call cost, not in the profile, weighs most); the P99 target is what the planner's simulator
   predicts (plus its default overhead) at a load drawn in 0.65-0.85 of that saturation. The knee the profile
   implies is then 45-221 req/s: inside what Locust on this 2-core machine drives open loop (the stand-in validation
   measured 110-180 req/s; calibrate's steps go above the knee by its bracketing factor). The real server adds its
   own costs, so the true knee is lower; the long runs measure it.
3. **Per profile**: a local Triton serves the stand-in under the config (``bench/validate.py``'s ``served``);
   ``loadtests calibrate`` runs through its console entry with ``--budget-s`` (the server-time budget per config,
   default 300 s), and its capacity estimate and interval are read from its calibration. Then the true capacity:
   fixed-rate open-loop runs at ``--multiples`` (default 0.9/0.95/1.0/1.05/1.1) times calibrate's estimate,
   ``--capacity-step-s`` a step (default 90), on a fresh server; where they do not bracket the crossing, up to
   ``MAX_EXTENSIONS`` more runs of two steps extend them past it by 10% a step. Measured capacity is
   ``bench/validate.py``'s: P99 made monotone in the rate (isotonic regression weighted by requests), crossing of the
   target interpolated.
4. **Analysis**: per profile the ratio calibrate / measured; the verdict (:func:`verdict`) counts those within ±5%
   and those more than 5% above; a missing estimate or measurement counts as a miss. Writes ``summary.json``,
   ``table.md`` and ``calibrate_validation.png`` into ``--out``, beside the raw runs (``<profile>/``:
   ``profile.json``, calibrate's stress result, calibration, steps and log, the capacity runs, ``run.json``). Exit 1
   when the done-when fails.
5. **The measurement's own reproducibility** (``--repeat PROFILE``): the profile's long runs again, at the rates they
   ran, on a fresh server (``repeatN.stress.json``); each repeat's capacity is reported beside the one the ratio is
   judged on ("measured again"), never merged into it. The pairs of steps at the same rate give one run's relative
   spread of P99 (:func:`run_noise`), the figure ``planner fit --run-noise-pct`` takes.
6. **The fit again** (``--refit``): ``planner fit`` on each profile's recorded calibrate steps as the fit stands now
   (``refit.calibration.json``), no load run: what a change to the fit makes of the same measurements.

Expected time with the defaults: per profile about 15 minutes (two server starts, calibrate's 300 s plus its
start and fits, five 95 s capacity steps, more when a bracket is extended): about 2.5 hours for ten. Run it on a quiet
machine: the load generator and the server share the cores (the host-saturated steps are counted in the table).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpufleet.contracts.calibration import read_calibration  # noqa: E402
from gpufleet.contracts.profile import LatencyProfile, read_profile, service_quantiles_s, write_profile  # noqa: E402
from gpufleet.contracts.stress_result import MIN_REQUESTS_FOR_P99, read_stress_result  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from loadtests.calibrate import interval_of  # noqa: E402
from planner.capacity import ReplicaModel  # noqa: E402
from planner.pipeline import DEFAULT_OVERHEAD_MS  # noqa: E402
from serving.standin import StandIn  # noqa: E402
from validate import measured_capacity, predict, served, stress  # noqa: E402

KINDS = ("per-batch", "per-item", "balanced", "overhead")
BATCH_SIZES = (1, 2, 4, 8)
# Per kind: the per-batch (or, for "overhead", per-call) cost as a multiple of the per-item cost, drawn in this range.
COST_RATIO = {"per-batch": (8.0, 30.0), "per-item": (0.1, 0.5), "balanced": (1.5, 5.0), "overhead": (4.0, 6.0)}
P99_OVER_P50 = (1.45, 3.4)
MAX_BATCH_CHOICES, MAX_BATCH_WEIGHTS = (1, 2, 4, 8), (0.15, 0.2, 0.3, 0.35)
QUEUE_DELAYS_US = (0, 500, 1000, 2000)
SATURATION = (90.0, 260.0)  # req/s, the profile alone, batched configs
SATURATION_BATCH1 = (70.0, 150.0)
KNEE_LOAD = (0.65, 0.85)  # of saturation: where the target is set
TARGET_SIM_S = 120.0  # simulated seconds per replication when setting the target
TOLERANCE = 0.05  # the done-when's ±5%
EPS = 1e-9  # a ratio of exactly 1.05 is within (not lost to 1.05 - 1.0 > 0.05 in floating point)
NEED_PROFILES, NEED_SHARE = 10, 0.9  # at least ten profiles, 9 of 10 within
DEFAULT_BUDGET_S = 300.0
DEFAULT_STEP_S = 90.0
DEFAULT_MULTIPLES = (0.9, 0.95, 1.0, 1.05, 1.1)
EXTENSION_STEP = 0.10  # each extension step this much further past the last step measured
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class Case:
    """One generated profile, the config served and the target, with what generated them."""

    key: str
    kind: str
    profile: LatencyProfile
    config: BatchingConfig
    target_ms: float
    params: dict


def latency_shape(kind: str, ratio: float, b: int) -> float:
    """Median batch latency at batch ``b`` in units of the per-item cost."""
    if kind == "overhead":
        return math.hypot(ratio, b)
    return ratio + b


def make_profile(name: str, kind: str, ratio: float, tails: list[float], scale_ms: float, derivation: str) -> LatencyProfile:
    batches = []
    for b, tail in zip(BATCH_SIZES, tails):
        p50 = scale_ms * latency_shape(kind, ratio, b)
        batches.append({"batch_size": b, "mean_ms": p50, "p50_ms": p50, "p99_ms": tail * p50})
    data = {"schema_version": 1, "model": name, "gpu": "standin", "precision": "fp16", "backend": "triton",
            "origin": {"kind": "derived", "date": "2026-12-03", "derivation": derivation}, "batches": batches}
    draft = LatencyProfile.model_validate(data)
    # mean_ms as the planner and the stand-in read the profile (the quantile table's mean), so both agree with it.
    means = service_quantiles_s(draft, 4096).mean(axis=1) * 1000.0
    for row in data["batches"]:
        row["mean_ms"] = round(float(means[row["batch_size"]]), 4)
    return LatencyProfile.model_validate(data)


def generate(n: int, seed: int) -> list[Case]:
    """``n`` profiles, configs and targets from ``seed`` (the rule: the module's docstring)."""
    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = KINDS[i % len(KINDS)]
        ratio = float(rng.uniform(*COST_RATIO[kind]))
        tails = [float(t) for t in rng.uniform(*P99_OVER_P50, size=len(BATCH_SIZES))]
        max_batch = int(rng.choice(MAX_BATCH_CHOICES, p=MAX_BATCH_WEIGHTS))
        delay = 0 if max_batch == 1 else int(rng.choice(QUEUE_DELAYS_US))
        sat = float(rng.uniform(*(SATURATION_BATCH1 if max_batch == 1 else SATURATION)))
        load = float(rng.uniform(*KNEE_LOAD))
        cfg = BatchingConfig(max_batch_size=max_batch, max_queue_delay_microseconds=delay, preferred_batch_sizes=(),
                             instance_count=1)
        name = f"gen{i:02d}"
        derivation = (f"generated by bench/calibrate_validation.py (seed {seed}, profile {i}): kind {kind}, "
                      + ("L(b) = sqrt(o^2 + (d b)^2)" if kind == "overhead" else "L(b) = c + d b")
                      + f", {'o' if kind == 'overhead' else 'c'}/d {ratio:.3g}, P99/P50 per batch size "
                      + ", ".join(f"{t:.2f}" for t in tails) + f"; time scale set for saturation {sat:.1f} req/s")
        unit = make_profile(name, kind, ratio, tails, 1.0, derivation)
        scale = ReplicaModel.from_profile(unit).saturation_rate(cfg) / sat
        profile = make_profile(name, kind, ratio, tails, scale, derivation)
        model = ReplicaModel.from_profile(profile)
        knee = load * model.saturation_rate(cfg)
        target, _ = predict(model, cfg, knee, TARGET_SIM_S, DEFAULT_OVERHEAD_MS, seed=seed * 1000 + i)
        means = {b.batch_size: b.mean_ms for b in profile.batches}
        params = {"kind": kind, "per_item_ms": round(scale, 3),
                  ("overhead_ms" if kind == "overhead" else "per_batch_ms"): round(scale * ratio, 3),
                  "p99_over_mean": {b.batch_size: round(b.p99_ms / means[b.batch_size], 3) for b in profile.batches},
                  "saturation_rate": round(model.saturation_rate(cfg), 1), "knee_load": round(load, 3),
                  "model_knee_rate": round(knee, 1)}
        cases.append(Case(name, kind, profile, cfg, round(target, 1), params))
    return cases


def verdict(ratios: list[float | None], tolerance: float = TOLERANCE) -> dict:
    """The done-when on calibrate/measured ratios (None: no estimate or no measurement, a miss)."""
    n = len(ratios)
    within = sum(bool(r is not None and abs(r - 1.0) <= tolerance + EPS) for r in ratios)
    above = sum(bool(r is not None and r > 1.0 + tolerance + EPS) for r in ratios)
    missing = sum(r is None for r in ratios)
    met = n >= NEED_PROFILES and within >= math.ceil(NEED_SHARE * n) and above == 0
    return {"profiles": n, "within": within, "above": above, "missing": missing, "met": met,
            "line": (f"calibrate within ±{tolerance:.0%} of the measured capacity in {within} of {n} profiles, more "
                     f"than {tolerance:.0%} above it in {above}" + (f", no figure in {missing}" if missing else "")
                     + f": done-when {'met' if met else 'NOT met'} (at least {NEED_PROFILES} profiles, "
                     f"{NEED_SHARE:.0%} within, none above)")}


def long_steps(path: Path) -> list[tuple[float, float, int]]:
    """(rate, P99 ms, requests) of a capacity run's steps with a P99 resting on enough requests."""
    return [(float(s.offered_rate), float(s.latency_ms.p99), int(s.ok)) for s in read_stress_result(path).reported_steps()
            if s.latency_ms.p99 is not None and s.ok >= MIN_REQUESTS_FOR_P99]


def capacity_paths(d: Path) -> list[Path]:
    return sorted(d.glob("capacity*.stress.json"))


def extension(steps: list[tuple[float, float, int]], target_ms: float) -> list[float] | None:
    """Rates that carry the long runs past the crossing when they do not bracket it; None when they do."""
    if measured_capacity(steps, target_ms)[0] is not None or not steps:
        return None
    rates = sorted(r for r, _, _ in steps)
    if min(p for r, p, _ in steps if r == rates[0]) > target_ms:
        return [round(rates[0] * (1 - EXTENSION_STEP * k), 1) for k in (1, 2)]
    return [round(rates[-1] * (1 + EXTENSION_STEP * k), 1) for k in (1, 2)]


def loadtests_console() -> list[str]:
    exe = Path(sys.executable).with_name("loadtests")
    return [str(exe)] if exe.exists() else [shutil.which("loadtests") or "loadtests"]


def run_calibrate(case: Case, d: Path, args, seed: int) -> dict:
    """``loadtests calibrate`` against a fresh server; its figures and the time it took."""
    for stale in [d / "calibrate.stress.json", d / "calibrate.calibration.json"]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(d / "calibrate-steps", ignore_errors=True)
    standin = StandIn(case.key, case.profile)
    with served(standin, case.config) as server:
        cmd = loadtests_console() + [
            "calibrate", "--model", case.key, "--profile", str(d / "profile.json"), "--p99-ms", f"{case.target_ms:g}",
            "--host", f"http://{server.http_url}", "--metrics-url", server.metrics_url, "--budget-s",
            f"{args.budget_s:g}", "--seed", str(seed), "--out", str(d), "--name", "calibrate",
            *shlex.split(args.calibrate_args)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        t = time.monotonic()
        with open(d / "calibrate.log", "w") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        wall = time.monotonic() - t
    shown = [str(c) if not str(c).startswith(str(ROOT)) else os.path.relpath(c, ROOT) for c in cmd]
    return {"command": " ".join(shown), "exit": done.returncode, "wall_s": round(wall, 1), "budget_s": args.budget_s}


def measure(case: Case, d: Path, center: float, args, seed: int, resume: bool) -> None:
    """The long runs around ``center``, extended until they bracket the crossing (or MAX_EXTENSIONS)."""
    standin = StandIn(case.key, case.profile)
    first = d / "capacity.stress.json"
    if not (resume and first.exists()):
        rates = [round(m * center, 1) for m in args.multiples]
        print(f"   capacity run: {rates} req/s, {args.capacity_step_s:g} s a step", flush=True)
        stress(standin, case.config, rates, args.capacity_step_s, seed, d, "capacity")
    for k in range(1, MAX_EXTENSIONS + 1):
        steps = [s for p in capacity_paths(d) for s in long_steps(p)]
        more = extension(steps, case.target_ms)
        if more is None:
            return
        if resume and (d / f"capacity-ext{k}.stress.json").exists():
            continue
        print(f"   not bracketed: extension {k} at {more} req/s", flush=True)
        stress(standin, case.config, more, args.capacity_step_s, seed + k, d, f"capacity-ext{k}")


def repeat_paths(d: Path) -> list[Path]:
    return sorted(d.glob("repeat*.stress.json"))


def repeat(case: Case, d: Path, args, seed: int) -> Path:
    """The profile's long runs again, at the rates they ran, on a fresh server: how far the measured capacity itself
    moves from one run to the next on this machine."""
    rates = sorted({r for p in capacity_paths(d) for r, _, _ in long_steps(p)})
    if not rates:
        raise SystemExit(f"{case.key}: no long runs to repeat in {d}")
    k = len(repeat_paths(d)) + 1
    print(f"{case.key}: repeat {k} of the long runs at {rates} req/s, {args.capacity_step_s:g} s a step", flush=True)
    return stress(StandIn(case.key, case.profile), case.config, rates, args.capacity_step_s, seed + k, d, f"repeat{k}")


REFIT = "refit.calibration.json"


def refit(case: Case, d: Path) -> dict:
    """``planner fit`` again on calibrate's own steps, as its console stands now (``refit.calibration.json``): what a
    change to the fit makes of the same measurements, none taken anew."""
    cmd = [str(Path(sys.executable).with_name("planner")), "fit", str(d / "calibrate.stress.json"), "--profile",
           str(d / "profile.json"), "--p99-ms", f"{case.target_ms:g}", "--output", str(d / REFIT)]
    (d / REFIT).unlink(missing_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    shown = [os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd]
    return {"command": " ".join(["planner", *shown[1:]]), "exit": done.returncode}


def record(case_dir: Path) -> dict:
    """One profile's row, from its raw files."""
    profile = read_profile(case_dir / "profile.json")
    run = json.loads((case_dir / "run.json").read_text())
    target = run["target_ms"]
    row = {"profile": profile.model, **{k: run[k] for k in ("kind", "triton", "target_ms", "params")},
           "calibrate": run["calibrate"]}
    est = None
    cal_path = case_dir / "calibrate.calibration.json"
    if cal_path.exists():
        iv = interval_of(read_calibration(cal_path))
        est = iv.nominal
        row.update(estimate=round(iv.nominal, 1), interval=[round(iv.low, 1), round(iv.high, 1)],
                   confidence=iv.confidence, fit_steps=iv.steps, plan_rate_at_estimates=iv.refusal_limited)
    stress_path = case_dir / "calibrate.stress.json"
    if stress_path.exists():
        res = read_stress_result(stress_path)
        # calibrate's record: each step's windows ("sNN-windowMM@...") and the step they make ("sNN-step@...").
        windows = [s for s in res.steps if "-window" in s.name]
        row.update(stopped=res.stopped.get("reason"), stopped_detail=res.stopped.get("detail"),
                   calibrate_steps=sum("-step@" in s.name for s in res.steps),
                   calibrate_window_s=round(sum(s.duration_s for s in windows), 1))
    steps, saturated = [], 0
    for p in capacity_paths(case_dir):
        steps += long_steps(p)
        saturated += sum(bool(s.server and s.server.host_cpu_saturated) for s in read_stress_result(p).reported_steps())
    cap, how = measured_capacity(steps, target) if steps else (None, "no capacity run")
    row.update(measured=None if cap is None else round(float(cap), 1), measured_how=how,
               measured_steps=[[r, round(p, 2), n] for r, p, n in sorted(steps)], host_saturated_steps=saturated)
    if (case_dir / REFIT).exists():
        cal = read_calibration(case_dir / REFIT)
        iv, t = interval_of(cal), cal.thresholds[0]
        row["refit"] = {"estimate": round(iv.nominal, 1), "interval": [round(iv.low, 1), round(iv.high, 1)],
                        "run_noise": cal.uncertainty.run_noise, "plan_max_rate": t.max_rate_per_replica,
                        "low_over_measured": None if cap is None else round(float(iv.low / cap), 4),
                        "command": run.get("refit", {}).get("command")}
    # Repeats are not in the measured capacity (which stays the one the ratio was judged on): each is its own.
    repeats = [measured_capacity(long_steps(p), target) for p in repeat_paths(case_dir)]
    row["repeats"] = [{"file": p.name, "measured": None if c is None else round(float(c), 1), "how": how,
                       "steps": [[r, round(q, 2), n] for r, q, n in sorted(long_steps(p))]}
                      for p, (c, how) in zip(repeat_paths(case_dir), repeats)]
    row["ratio"] = None if est is None or cap is None else round(float(est / cap), 4)
    row["low_over_measured"] = None if "interval" not in row or cap is None else round(float(row["interval"][0] / cap), 4)
    return row


def run_noise(rows: list[dict]) -> dict | None:
    """How far a run's P99 moves from one run to the next: every repeated step beside the first run's step at the
    same offered rate. Two runs' log ratio has twice one run's variance, so one run's relative spread is the ratios'
    root mean square over sqrt 2 (their mean is not taken out: a shared offset is part of what moves)."""
    pairs = []
    for r in rows:
        first = {rate: p99 for rate, p99, _ in r["measured_steps"]}
        for rep in r.get("repeats", []):
            pairs += [(r["profile"], rate, first[rate], p99) for rate, p99, _ in rep["steps"] if rate in first]
    if not pairs:
        return None
    logs = np.log([b / a for _, _, a, b in pairs])
    return {"pairs": len(pairs), "profiles": sorted({p for p, *_ in pairs}),
            "log_ratio_mean": round(float(logs.mean()), 4), "log_ratio_rms": round(float(np.sqrt((logs ** 2).mean())), 4),
            "run_noise": round(float(np.sqrt((logs ** 2).mean() / 2)), 4),
            "ratios": [[p, rate, round(b / a, 3)] for p, rate, a, b in pairs]}


def earlier_meta(out: Path, meta: dict) -> dict:
    """The command and settings that made the runs in ``out`` (its summary.json), for a mode that only adds to them
    or analyzes them; ``meta`` where there is none."""
    old = out / "summary.json"
    if not old.exists():
        return meta
    return {k: v for k, v in json.loads(old.read_text()).items() if k not in ("verdict", "profiles")}


def analyze(out: Path, meta: dict) -> dict:
    rows = [record(d) for d in sorted(out.iterdir()) if (d / "run.json").exists()]
    v = verdict([r["ratio"] for r in rows])
    meta = {**meta, "verdict": v, "profiles": rows, "run_noise": run_noise(rows)}
    (out / "summary.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "table.md").write_text(table(meta))
    if rows:
        plot(meta, out / "calibrate_validation.png")
    print(table(meta))
    print(v["line"])
    return meta


def table(meta: dict) -> str:
    lines = [f"Command: `{meta.get('command', '')}`", "",
             "| profile | kind | per-batch / overhead ms | per-item ms | P99/mean | Triton | target ms | calibrate "
             "(interval) req/s | steps / server s / budget s | stopped | measured req/s | measured again req/s | ratio | "
             "within ±5% | above +5% | host-saturated steps | refit (interval) req/s | refit low / measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in meta["profiles"]:
        p = r["params"]
        fixed = p.get("per_batch_ms", p.get("overhead_ms"))
        tails = list(p["p99_over_mean"].values())
        est = "-" if r.get("estimate") is None else f"{r['estimate']:.1f} ({r['interval'][0]:.1f}-{r['interval'][1]:.1f})"
        meas = r["measured_how"] if r["measured"] is None else f"{r['measured']:.1f}"
        rf = r.get("refit")
        refit_cells = ("- | -" if rf is None else f"{rf['estimate']:.1f} ({rf['interval'][0]:.1f}-{rf['interval'][1]:.1f})"
                       f" | {'-' if rf['low_over_measured'] is None else format(rf['low_over_measured'], '.3f')}")
        again = ", ".join(x["how"] if x["measured"] is None else f"{x['measured']:.1f}"
                          for x in r.get("repeats", [])) or "-"
        ratio = r["ratio"]
        within = "-" if ratio is None else ("yes" if abs(ratio - 1) <= TOLERANCE + EPS else "no")
        above = "-" if ratio is None else ("**yes**" if ratio > 1 + TOLERANCE + EPS else "no")
        lines.append(f"| {r['profile']} | {r['kind']} | {fixed:.2f} | {p['per_item_ms']:.2f} | {min(tails):.2f}-"
                     f"{max(tails):.2f} | {r['triton']} | {r['target_ms']:g} | {est} | {r.get('calibrate_steps', '-')} / "
                     f"{r['calibrate']['wall_s']:g} / {r['calibrate']['budget_s']:g} | {r.get('stopped', '-')} | {meas} "
                     f"| {again} | {'-' if ratio is None else f'{ratio:.3f}'} | {within} | {above} | {r['host_saturated_steps']} | {refit_cells} |")
    noises = {r["refit"]["run_noise"] for r in meta["profiles"] if r.get("refit")}
    if noises:
        lines += ["", "Refit: `planner fit` again on calibrate's own steps as it stands now (`--refit`, no new "
                  f"measurement), with run-to-run P99 noise {', '.join(f'{x * 100:g}%' for x in sorted(noises))} in "
                  "capacity's interval."]
    noise = meta.get("run_noise")
    if noise:
        lines += ["", f"Run to run (`--repeat`): {noise['pairs']} steps of {', '.join(noise['profiles'])} repeated at "
                  f"the same rate on a fresh server; P99 repeat / first {min(x[2] for x in noise['ratios']):.3f}-"
                  f"{max(x[2] for x in noise['ratios']):.3f}, one run's relative spread (RMS of the log ratios / "
                  f"sqrt 2) {noise['run_noise'] * 100:.1f}%."]
    lines += ["", meta["verdict"]["line"] + ".", "",
              "Server s: the wall time of `loadtests calibrate` against its server (start of its preflight to its "
              "exit; the server's own start not counted)."]
    return "\n".join(lines) + "\n"


def plot(meta: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = meta["profiles"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 4.5))
    ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="tab:green", alpha=0.15, label="±5% of measured")
    ax.axhline(1.0, color="grey", lw=1)
    for i, r in enumerate(rows):
        if r["ratio"] is None:
            ax.text(i, 1.0, "no\nfigure", ha="center", va="center", color="tab:red", fontsize=8)
            continue
        lo, hi = (x / r["measured"] for x in r["interval"])
        color = "tab:red" if r["ratio"] > 1 + TOLERANCE else "tab:blue"
        # The interval is stored rounded to 0.1 req/s and the ratio is not: an end at the estimate can round past it.
        ax.errorbar([i], [r["ratio"]], yerr=[[max(r["ratio"] - lo, 0.0)], [max(hi - r["ratio"], 0.0)]], fmt="o",
                    color=color, capsize=3, label="calibrate (its interval)" if i == 0 else None)
        rf = r.get("refit")
        if rf:
            est = rf["estimate"] / r["measured"]
            rlo, rhi = (x / r["measured"] for x in rf["interval"])
            ax.errorbar([i + 0.25], [est], yerr=[[max(est - rlo, 0.0)], [max(rhi - est, 0.0)]], fmt="s",
                        color="tab:grey", capsize=3, label=f"refit, run noise {rf['run_noise'] * 100:g}%"
                        if not any(x.get("refit") for x in rows[:i]) else None)
    ax.set_xticks(range(len(rows)), [f"{r['profile']}\n{r['kind']}" for r in rows], fontsize=7)
    ax.set_ylabel("calibrate's capacity / measured (bars: its interval)")
    ax.set_title(f"loadtests calibrate against long runs, stand-in ({meta['verdict']['within']}/"
                 f"{meta['verdict']['profiles']} within ±5%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation" / "calibrate")
    ap.add_argument("--profiles", type=int, default=NEED_PROFILES, help="how many profiles to generate")
    ap.add_argument("--seed", type=int, default=27, help="seed of the generated profiles")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="calibrate's budget per config, s")
    ap.add_argument("--capacity-step-s", type=float, default=DEFAULT_STEP_S, help="seconds per long capacity step")
    ap.add_argument("--multiples", type=float, nargs="+", default=list(DEFAULT_MULTIPLES),
                    help="capacity steps as multiples of calibrate's estimate")
    ap.add_argument("--calibrate-args", default="", help="more options for loadtests calibrate, one string (e.g. "
                    "'--stability-pct 20'); they are in each profile's run.json")
    ap.add_argument("--analyze-only", action="store_true", help="analyze the runs already in --out")
    ap.add_argument("--refit", action="store_true", help="planner fit again on each finished profile's calibrate "
                    "steps (refit.calibration.json; no load runs), then analyze")
    ap.add_argument("--repeat", nargs="+", default=[], metavar="PROFILE", help="run these profiles' long runs again "
                    "(the same rates, a fresh server) as repeatN.stress.json, then analyze: the measurement's own "
                    "reproducibility")
    ap.add_argument("--resume", action="store_true", help="keep what is already in --out; measure the rest")
    ap.add_argument("--recalibrate", action="store_true", help="with --resume: run calibrate again on the profiles "
                    "already done and keep their long runs (they measure the profile, not calibrate; they are "
                    "extended when they do not bracket the new estimate's crossing)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "command": " ".join(["python", "bench/calibrate_validation.py"] + sys.argv[1:]), "seed": args.seed,
            "budget_s": args.budget_s, "calibrate_args": args.calibrate_args,
            "capacity_step_s": args.capacity_step_s, "multiples": args.multiples}
    if args.analyze_only:
        return 0 if analyze(out, earlier_meta(out, meta))["verdict"]["met"] else 1
    if args.refit:
        meta = earlier_meta(out, meta)
        for i, case in enumerate(generate(args.profiles, args.seed)):
            d = out / case.key
            if (d / "done").exists() and (d / "calibrate.stress.json").exists():
                run = json.loads((d / "run.json").read_text())
                run["refit"] = refit(case, d)
                (d / "run.json").write_text(json.dumps(run, indent=2) + "\n")
                print(f"{case.key}: refit exit {run['refit']['exit']}", flush=True)
        return 0 if analyze(out, meta)["verdict"]["met"] else 1
    if args.repeat:
        cases = {c.key: (i, c) for i, c in enumerate(generate(args.profiles, args.seed))}
        unknown = [k for k in args.repeat if k not in cases or not (out / k / "done").exists()]
        if unknown:
            print(f"error: --repeat: no finished profile {', '.join(unknown)} in {out}", file=sys.stderr)
            return 2
        meta = earlier_meta(out, meta)
        for key in args.repeat:
            i, case = cases[key]
            repeat(case, out / key, args, seed=3000 + 10 * i)
        return 0 if analyze(out, meta)["verdict"]["met"] else 1
    for i, case in enumerate(generate(args.profiles, args.seed)):
        d = out / case.key
        print(f"{case.key} ({case.kind}, {case.config.describe()}, target {case.target_ms:g} ms, the profile's knee "
              f"{case.params['model_knee_rate']:g} req/s)", flush=True)
        if args.resume and (d / "run.json").exists() and (d / "done").exists():
            if not args.recalibrate:
                print("   kept from an earlier run", flush=True)
                continue
            run = json.loads((d / "run.json").read_text())
            run["calibrate"] = run_calibrate(case, d, args, seed=1000 + 100 * i)
            (d / "run.json").write_text(json.dumps(run, indent=2) + "\n")
            print(f"   calibrated again: exit {run['calibrate']['exit']}, {run['calibrate']['wall_s']:g} s; the long "
                  "runs kept", flush=True)
            cal_path = d / "calibrate.calibration.json"
            if cal_path.exists():
                measure(case, d, interval_of(read_calibration(cal_path)).nominal, args, seed=2000 + 10 * i,
                        resume=True)
            continue
        d.mkdir(parents=True, exist_ok=True)
        write_profile(case.profile, d / "profile.json")
        run_path = d / "run.json"
        run = json.loads(run_path.read_text()) if args.resume and run_path.exists() else None
        if run is None or not (d / "calibrate.stress.json").exists():
            cal = run_calibrate(case, d, args, seed=1000 + 100 * i)
            run = {"kind": case.kind, "triton": case.config.describe(), "target_ms": case.target_ms,
                   "params": case.params, "calibrate": cal}
            run_path.write_text(json.dumps(run, indent=2) + "\n")
            for f in capacity_paths(d):  # measured around an earlier estimate
                f.unlink()
        cal_path = d / "calibrate.calibration.json"
        center = (interval_of(read_calibration(cal_path)).nominal if cal_path.exists()
                  else case.params["model_knee_rate"])
        print(f"   calibrate: exit {run['calibrate']['exit']}, {run['calibrate']['wall_s']:g} s; "
              f"{'estimate' if cal_path.exists() else 'no calibration; the profile knee'} {center:.1f} req/s", flush=True)
        measure(case, d, center, args, seed=2000 + 10 * i, resume=args.resume)
        (d / "done").write_text("")
    return 0 if analyze(out, meta)["verdict"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
