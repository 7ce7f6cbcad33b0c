"""``fit``: calibrate the latency model on stress runs, and derive lag-aware HPA thresholds from it.

Each reported open-loop step of a stress run is one observation: a Poisson rate offered to one Triton replica
with a known batching config, and the P50/P90/P99 measured from the scheduled send. The model replays the step
(same rate, same length, several seeded replications pooled) through the dynamic-batcher simulation and adds a
fixed per-request overhead. ``scipy.optimize.least_squares`` chooses ``overhead_ms``, ``spread`` and
``service_scale`` to minimize the relative errors of the three quantiles over all steps. The replications use
fixed seeds (common random numbers), so the objective is a deterministic function of the parameters.

Steps the model is not meant to describe are left out with the reason: warm-up, closed-loop runs, steps with
errors or dropped sends, and overloaded steps (achieved rate under 90% of offered), whose P99 grows with the
step's length rather than settling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.calibration import Calibration, Excluded, FitReport, StepFit, Threshold
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import StressResult, read_stress_result
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import CapacitySearch, ReplicaModel
from planner.errors import PlannerInputError
from planner.simulate import simulate

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
REPLICATIONS = 6
MAX_REQUESTS_PER_REPLICATION = 20_000
MIN_OK = 200  # fewer successful requests than this give no usable P99
OVERLOADED = 0.9  # achieved / offered below this: the queue was still growing


@dataclass(frozen=True)
class Observation:
    source: str
    step: str
    config: BatchingConfig
    rate: float
    duration_s: float
    requests: int
    measured_ms: dict[str, float]
    measured_mean_batch: float | None
    measured_compute_ms: float | None  # Triton's compute input+infer+output per request


def _config_of(result: StressResult, source: str, fallback: BatchingConfig | None) -> BatchingConfig:
    t = result.target.triton
    if t is None:
        if fallback is None:
            raise PlannerInputError(f"{source}: the run did not record Triton's batching config; pass "
                                    "--triton-config MAX_BATCH:QUEUE_DELAY_US:INSTANCES")
        return fallback
    # A queue bound changes which requests are refused, not the latency of those served.
    return t.latency_shape


def observations(paths: list[Path], fallback: BatchingConfig | None = None) -> tuple[list[Observation], list[Excluded]]:
    """The usable steps of the stress results, and the steps left out with the reason."""
    obs: list[Observation] = []
    excluded: list[Excluded] = []
    for path in paths:
        source = str(path)
        result = read_stress_result(path)
        if result.target.request_batch != 1:
            raise PlannerInputError(f"{source}: requests carried {result.target.request_batch} images; fit models "
                                    "one image per request")
        if result.mode != "open-loop":
            excluded.extend(Excluded(source=source, step=s.name, reason="closed loop: no offered rate")
                            for s in result.steps)
            continue
        cfg = _config_of(result, source, fallback)
        for s in result.steps:
            reason = None
            lat = s.latency_ms
            if s.warmup:
                reason = "warm-up"
            elif s.errors or s.dropped:
                reason = f"{s.errors} errors, {s.dropped} dropped"
            elif s.rejected:
                # The queue bound cut the tail off: the served requests' quantiles are not the model's.
                reason = f"{s.rejected} rejected by the queue policy"
            elif s.ok < MIN_OK or lat.p99 is None or lat.p50 is None or lat.p90 is None:
                reason = f"{s.ok} successful requests; need {MIN_OK} for a P99"
            elif s.achieved_rate < OVERLOADED * (s.offered_rate or 0):
                reason = f"overloaded: achieved {s.achieved_rate:.1f} of {s.offered_rate:g} req/s offered"
            if reason:
                excluded.append(Excluded(source=source, step=s.name, reason=reason))
                continue
            obs.append(Observation(source, s.name, cfg, float(s.offered_rate), s.duration_s, s.ok,
                                   {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99},
                                   s.server.mean_batch_size if s.server else None, _compute_ms(s.server)))
    if not obs:
        why = "; ".join(f"{e.source} {e.step}: {e.reason}" for e in excluded[:3])
        raise PlannerInputError(f"no usable open-loop step in the stress results{': ' + why if why else ''}")
    return obs, excluded


def _compute_ms(server) -> float | None:
    """Triton's execution time per request (input + infer + output), which pins the service scale directly."""
    if server is None:
        return None
    parts = (server.compute_input_us_per_request, server.compute_infer_us_per_request,
             server.compute_output_us_per_request)
    if any(p is None for p in parts) or sum(parts) <= 0:
        return None
    return sum(parts) / 1000.0


class StepModel:
    """Replays observations through the simulation for given parameters; fixed seeds per observation."""

    def __init__(self, profile: LatencyProfile, obs: list[Observation], replications: int = REPLICATIONS):
        self.profile = profile
        self.obs = obs
        top = max(profile.batch_sizes)
        measured_k = max(profile.concurrency_speedup or {1: 1.0})
        for o in obs:
            if o.config.max_batch_size > top:
                raise PlannerInputError(f"{o.source}: max_batch_size {o.config.max_batch_size} is above the "
                                        f"profile's largest measured batch ({top})")
            if o.config.instance_count > measured_k:
                raise PlannerInputError(f"{o.source}: {o.config.instance_count} model instances, but the profile "
                                        f"measured concurrency up to {measured_k} only (serving profile --instances)")
        self.workloads = []
        for i, o in enumerate(obs):
            n = min(max(int(round(o.rate * o.duration_s)), 50), MAX_REQUESTS_PER_REPLICATION)
            reps = []
            for r in range(replications):
                rng = np.random.default_rng([i, r, 20261121])
                reps.append((np.cumsum(rng.exponential(1.0 / o.rate, n)), rng.random(n)))
            self.workloads.append(reps)

    def replica(self, spread: float, scale: float) -> ReplicaModel:
        return ReplicaModel.from_profile(self.profile, spread, scale)

    def predict(self, overhead_ms: float, spread: float, scale: float) -> list[tuple[dict[str, float], float, float]]:
        """Per observation: predicted quantiles (ms, end to end), mean batch size, and mean execution time per
        request (ms; a request's batch from start to finish, as Triton's compute durations count it)."""
        model = self.replica(spread, scale)
        out = []
        for o, reps in zip(self.obs, self.workloads):
            lat, batches, compute = [], [], []
            for arrivals, draws in reps:
                res = simulate(arrivals, o.config, model.service, draws, model.speedup, warmup_fraction=0.0)
                lat.append(res.latency_s)
                compute.append(res.latency_s - res.queue_s)
                batches.append(res.mean_batch_size)
            pooled = np.concatenate(lat) * 1000.0 + overhead_ms
            out.append(({k: float(np.quantile(pooled, q)) for k, q in QUANTILES.items()}, float(np.mean(batches)),
                        float(np.concatenate(compute).mean() * 1000.0)))
        return out

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Relative errors of P50, P90, P99, and of Triton's execution time per request where it was scraped."""
        res = []
        for o, (p, _, compute) in zip(self.obs, self.predict(*x)):
            res.extend((p[k] - o.measured_ms[k]) / o.measured_ms[k] for k in QUANTILES)
            if o.measured_compute_ms is not None:
                res.append((compute - o.measured_compute_ms) / o.measured_compute_ms)
        return np.array(res)


def fit(profile: LatencyProfile, stress_paths: list[Path], p99_ms: float, lag: AutoscalingSpec,
        fallback_config: BatchingConfig | None = None, replications: int = REPLICATIONS) -> Calibration:
    """Calibrate on the stress results; thresholds for each measured config at ``p99_ms``."""
    if not (math.isfinite(p99_ms) and p99_ms > 0):
        raise PlannerInputError(f"--p99-ms must be a positive number, got {p99_ms}")
    obs, excluded = observations(stress_paths, fallback_config)
    model = StepModel(profile, obs, replications)
    # Start from the profile as measured, with the overhead that explains the median at the lightest step.
    light = min(range(len(obs)), key=lambda i: obs[i].rate)
    p50_model = model.predict(0.0, 1.0, 1.0)[light][0]["p50"]
    x0 = np.array([max(obs[light].measured_ms["p50"] - p50_model, 0.0), 1.0, 1.0])
    solution = least_squares(model.residuals, x0, bounds=([0.0, 0.0, 0.1], [np.inf, 20.0, 10.0]),
                             diff_step=0.05, x_scale=[max(x0[0], 1.0), 1.0, 1.0], max_nfev=60)
    overhead, spread, scale = (float(v) for v in solution.x)
    pred = model.predict(overhead, spread, scale)
    steps = []
    for o, (p, batch, _) in zip(obs, pred):
        steps.append(StepFit(source=o.source, step=o.step, config=o.config, offered_rate=o.rate,
                             requests=o.requests, measured_ms={k: round(v, 3) for k, v in o.measured_ms.items()},
                             predicted_ms={k: round(v, 3) for k, v in p.items()},
                             p99_error=round((p["p99"] - o.measured_ms["p99"]) / o.measured_ms["p99"], 4),
                             measured_mean_batch=None if o.measured_mean_batch is None else round(o.measured_mean_batch, 3),
                             predicted_mean_batch=round(batch, 3)))
    errors = sorted(abs(s.p99_error) for s in steps)
    replica = model.replica(spread, scale)
    thresholds = [threshold(replica, cfg, p99_ms, overhead, lag)
                  for cfg in sorted({o.config for o in obs}, key=BatchingConfig.sort_key)]
    return Calibration(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=profile.model, gpu=profile.gpu,
        profile_origin=f"{profile.origin.kind} {profile.backend} {profile.precision} ({profile.origin.date})",
        overhead_ms=round(overhead, 4), spread=round(spread, 4), service_scale=round(scale, 4),
        sources=sorted({o.source for o in obs}),
        fit=FitReport(method="scipy.optimize.least_squares (trust region reflective, bounded)",
                      residuals="(predicted - measured) / measured for P50, P90, P99 of every step, and for "
                                "Triton's compute time per request where /metrics was scraped",
                      initial={"overhead_ms": round(float(x0[0]), 4), "spread": 1.0, "service_scale": 1.0},
                      cost=round(float(solution.cost), 6), evaluations=int(solution.nfev),
                      median_abs_p99_error=round(float(np.median(errors)), 4),
                      worst_abs_p99_error=round(errors[-1], 4), excluded=excluded),
        steps=steps,
        scaling=lag,
        thresholds=thresholds)


def threshold(replica: ReplicaModel, cfg: BatchingConfig, p99_ms: float, overhead_ms: float,
              lag: AutoscalingSpec) -> Threshold:
    """The rate one replica holds at ``p99_ms`` with this config, and the HPA target that keeps it there."""
    search = CapacitySearch(replica)
    budget_s = (p99_ms - overhead_ms) / 1000.0
    max_rate = search.max_rate(cfg, budget_s) if budget_s > 0 else 0.0
    target = lag.hpa_target(max_rate)
    queue_us = float(np.mean(search.simulate(target, cfg).queue_s)) * 1e6 if target > 0 else None
    return Threshold(config=cfg, p99_ms=p99_ms, max_rate_per_replica=round(max_rate, 3),
                     hpa_target_rate_per_replica=round(target, 3),
                     predicted_queue_us_at_target=None if queue_us is None else round(queue_us, 1))
