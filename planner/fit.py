"""``fit``: calibrate the latency model on stress runs, and derive lag-aware HPA thresholds from it.

Each reported open-loop step of a stress run is one observation: a Poisson rate offered to one Triton replica
with a known batching config, and the P50/P90/P99 measured from the scheduled send. The model replays the step
(same rate, same length, several seeded replications pooled) through the dynamic-batcher simulation. Its
parameters (:data:`gpufleet.contracts.calibration.PARAMETER_NAMES`): ``overhead_ms`` paid per request outside the
batcher; ``batch_overhead_ms`` and ``item_overhead_ms`` the server adds per batch and per request while it holds
the model instance (they decide capacity); ``spread`` for the tail. ``scipy.optimize.least_squares`` minimizes the
relative errors of the three quantiles, and of Triton's execution time per request where /metrics was scraped,
over all steps. The replications use fixed seeds (common random numbers), so the objective is a deterministic
function of the parameters.

Identifiability: a parameter the steps cannot tell apart from the others (the per-item cost when every batch held
one request; the per-batch cost when every step ran lightly loaded) is held at its neutral value and the
calibration says so; the choice of which one to hold leans to the safe side (a cost the server pays is kept, so
capacity is not overstated). A parameter that ends on a bound of its range is reported as a warning.

Uncertainty: a bootstrap over steps, linearized at the estimate (each resample of the steps moves the estimate by
one Gauss-Newton step on that resample's residuals), gives parameter draws; capacity is carried through its
gradient (:mod:`planner.uncertainty`), and the thresholds take the lower end at the requested confidence.

Steps the model is not meant to describe are left out with the reason: warm-up, closed-loop runs, steps with
errors or dropped sends, overloaded steps (achieved rate under 90% of offered), whose P99 grows with the
step's length rather than settling, and host-bound steps, where the server's own figures show the machine, not the
model, set the pace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.calibration import (PARAMETER_NAMES, Calibration, Excluded, FitReport, Parameter, Parameters,
                                            StepFit, Threshold, Uncertainty, run_noise_error)
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.stress_result import (
    HOST_CPU_SATURATED, MIN_REQUESTS_FOR_P99, StressResult, read_stress_result)
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import CapacitySearch, ReplicaModel
from planner.errors import PlannerInputError
from planner.service import ServiceTime
from planner.simulate import Workload, simulate
from planner.uncertainty import DEFAULT_CONFIDENCE, DEFAULT_RUN_NOISE, CalibratedModel

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
REPLICATIONS = 6
MAX_REQUESTS_PER_REPLICATION = 20_000
MIN_OK = MIN_REQUESTS_FOR_P99  # fewer successful requests than this give no usable P99
OVERLOADED = 0.9  # achieved / offered below this: the queue was still growing
# Host-bound steps. The load generator fell behind: more than this share of sends left late, by enough (send lag P99
# over this share of the step's measured P99) that its own delay is a visible part of the tail.
LATE_SHARE = 0.01
LAG_SHARE_OF_P99 = 0.1
MIN_CLEAN_STEPS = 2  # fewer steps than this left after the host-bound ones: fit on all, with a warning
# Triton's execution time per request above what a server matching the profile at the run's lightest step's scale
# reports at the same mean batch, by more than this factor: the host's CPU (the backend, the frontend), not the model,
# set the pace.
HOST_INFLATION = 1.25
# What a server matching its profile reports per request at a given mean batch is read off simulated steps at these
# shares of the config's saturation rate (the last past it: batches all full), each this many Poisson requests.
EXPECTED_LOADS = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.2)
EXPECTED_REQUESTS = 4000
NEUTRAL = {"overhead_ms": 0.0, "batch_overhead_ms": 0.0, "item_overhead_ms": 0.0, "spread": 1.0}
# When parameters are confounded, the one held at its neutral value, first to last: a cost the server pays in the
# model instance is kept over one paid outside it, so capacity is not overstated.
HOLD_ORDER = ("item_overhead_ms", "overhead_ms", "spread", "batch_overhead_ms")
# A direction in parameter space the steps do not constrain: the smallest singular value of the scaled Jacobian
# under this fraction of the largest.
UNIDENTIFIED_RCOND = 1e-2
ONE_PER_BATCH = 1.1  # every step's mean batch size under this: per-request and per-batch costs are one
BOOTSTRAP_RESAMPLES = 400
FD_STEP = 0.05  # finite-difference step, as a share of each parameter's scale


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
    late_share: float = 0.0
    lag_p99_ms: float = 0.0
    host_cpu: float | None = None  # Triton's nv_cpu_utilization over the step, mean (the whole host, 0-1)
    host_cpu_saturated: bool = False  # gpufleet.contracts.stress_result.HOST_CPU_SATURATED
    run: str = ""  # when the run started (its stress result's started_at): the run, whatever its file is called


def _config_of(result: StressResult, source: str, fallback: BatchingConfig | None) -> BatchingConfig:
    t = result.target.triton
    if t is None:
        if fallback is None:
            raise PlannerInputError(f"{source}: the run did not record Triton's batching config; pass "
                                    "--triton-config MAX_BATCH:QUEUE_DELAY_US:INSTANCES")
        return fallback
    # A queue bound changes which requests are refused, not the latency of those served.
    return t.latency_shape


def observations(paths: list[Path], fallback: BatchingConfig | None = None,
                 model: str | None = None) -> tuple[list[Observation], list[Excluded]]:
    """The usable steps of the stress results, and the steps left out with the reason. With ``model`` (the
    profile's), every run must have served that model: another's latencies fit nothing and only look like a bad fit."""
    obs: list[Observation] = []
    excluded: list[Excluded] = []
    results = [(str(path), read_stress_result(path)) for path in paths]  # every file checked before any is used
    for source, result in results:
        if model is not None and result.target.model != model:
            raise PlannerInputError(f"{source}: a stress run of model '{result.target.model}', but the profile is of "
                                    f"'{model}'; fit each model's runs with its own profile")
    for source, result in results:
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
                                   s.server.mean_batch_size if s.server else None, _compute_ms(s.server),
                                   s.late_sends / max(s.sent, 1), s.lag_p99_ms or 0.0,
                                   s.server.cpu_utilization_mean if s.server else None,
                                   bool(s.server and s.server.host_cpu_saturated), result.started_at))
    if not obs:
        why = "; ".join(f"{e.source} {e.step}: {e.reason}" for e in excluded[:3])
        raise PlannerInputError(f"no usable open-loop step in the stress results{': ' + why if why else ''}")
    return obs, excluded


def host_bound(obs: list[Observation], profile: LatencyProfile) -> dict[int, str]:
    """Steps whose own figures show the machine, not the model, set the pace: index into ``obs`` -> the reason.

    * The load generator fell behind its schedule (more than ``LATE_SHARE`` of sends late): the arrivals were not
      the Poisson process the step reports.
    * Triton's execution time per request exceeds what a server matching the profile, at the scale of the run's
      lightest step, reports at this step's mean batch size by more than ``HOST_INFLATION``: the same batches took
      longer because the CPU that feeds them was saturated. Triton adds a batch's execution once per request in it
      and divides by the requests, while the mean batch is requests over executions (see :func:`_triton_compute`),
      so the expectation is the simulation's figure counted the same way, not the profile's time of a batch of the
      mean size: at a mean batch near 2 with batches of 1 to 8 the two differ by more than ``HOST_INFLATION``.

    A busy host alone (Triton's ``nv_cpu_utilization`` at :data:`HOST_CPU_SATURATED` or more) is not a reason: that
    gauge is the whole host's CPU, the load generator's too when it shares the host (on this 2-core machine every
    step near the knee reads 90% or more), so it cannot tell whether Triton itself was held up; the execution-time
    rule above can. :func:`busy_host_warning` names such steps instead.
    """
    flagged: dict[int, str] = {}
    for i, o in enumerate(obs):
        if o.late_share > LATE_SHARE and o.lag_p99_ms > LAG_SHARE_OF_P99 * o.measured_ms["p99"]:
            flagged[i] = (f"host-bound: {o.late_share:.1%} of sends left late, send lag P99 {o.lag_p99_ms:.1f} ms "
                          "(the load generator fell behind)")
    groups: dict[tuple[str, BatchingConfig], list[int]] = {}
    for i, o in enumerate(obs):
        if o.measured_compute_ms is not None and o.measured_mean_batch is not None:
            groups.setdefault((o.source, o.config), []).append(i)
    replica = ReplicaModel.from_profile(profile)
    for (_, cfg), members in groups.items():
        if cfg.effective_max_batch > replica.service.max_batch_size or cfg.instance_count > replica.max_instances:
            continue  # the profile cannot describe this config; StepModel refuses it with the reason
        base = obs[min(members, key=lambda i: obs[i].rate)]
        # The lightest step's scale, then the curve of a server at that scale (the queue delay does not scale with
        # the service, so it moves the batches a little), anchored on the lightest step again.
        curve = _triton_compute(replica, cfg, 1.0)
        curve = _triton_compute(replica, cfg, base.measured_compute_ms / curve(base.measured_mean_batch))
        anchor = base.measured_compute_ms / curve(base.measured_mean_batch)
        for i in members:
            o = obs[i]
            expected = anchor * curve(o.measured_mean_batch)
            ratio = o.measured_compute_ms / expected
            if ratio > HOST_INFLATION and i not in flagged:
                flagged[i] = (f"host-bound: Triton's execution time per request {o.measured_compute_ms:.2f} ms is "
                              f"{ratio - 1:.0%} above the {expected:.2f} ms a server like the lightest step reports "
                              f"at mean batch {o.measured_mean_batch:.2f}")
    return flagged


def busy_host_warning(obs: list[Observation], flagged: dict[int, str]) -> str | None:
    """One warning naming the kept steps during which the host's CPU was saturated, or None."""
    busy = [o for i, o in enumerate(obs) if o.host_cpu_saturated and i not in flagged]
    if not busy:
        return None
    return (f"{len(busy)} step(s) ran with the host's CPU {HOST_CPU_SATURATED:.0%} or more busy (Triton's "
            f"nv_cpu_utilization: the whole host, the load generator too if it shares it): "
            f"{', '.join(f'{o.source}:{o.step}' for o in busy[:4])}{' ...' if len(busy) > 4 else ''}; kept, since "
            "Triton's own execution time did not inflate; measure with the load generator on other cores to be sure")


def _triton_compute(replica: ReplicaModel, cfg: BatchingConfig, scale: float):
    """Mean batch size -> execution time per request (ms), as Triton reports them for a server whose batches take
    ``scale`` x the profile's time, read off simulated Poisson steps from light load to saturation.

    Triton counts both per request: the backend reports each request of a batch with the batch's start and end
    (python_backend@r24.10 src/pb_metric_reporter.cc, ~PbMetricReporter: TRITONBACKEND_ModelInstanceReportStatistics
    per request with the batch's exec_start/compute_start/compute_end/exec_end, ReportBatchStatistics once), and
    core adds each request's compute durations to nv_inference_compute_{input,infer,output}_duration_us and 1 to
    nv_inference_request_success (core@84868f1, r24.10 as nvidia-pytriton's Triton 2.51.0 bundles it,
    src/infer_stats.cc lines 96-133 UpdateSuccessWithDuration), but nv_inference_exec_count once per batch (lines
    401-431 UpdateInferBatchStatsWithDuration). So compute per request is sum(n_b d_b) / sum(n_b), a mean over
    batches weighted by their size, while the mean batch is sum(n_b) / batches: the simulation's time in batch per
    request and its mean batch size are the same two figures."""
    service = ServiceTime([t * scale for t in replica.service.tables])
    top = cfg.effective_max_batch
    saturation = top * replica.speedup[cfg.instance_count] / service.mean(top)
    work = Workload.poisson(EXPECTED_REQUESTS, seed=20261203)
    points = []
    for load in EXPECTED_LOADS:
        res = simulate(work.unit_arrivals / (load * saturation), cfg, service, work.draws, replica.speedup,
                       warmup_fraction=0.0)
        points.append((res.mean_batch_size, float(np.mean(res.latency_s - res.queue_s)) * 1000.0))
    points.sort()
    batches = np.array([b for b, _ in points])
    compute = np.maximum.accumulate([c for _, c in points])  # more batching never reports less: no sampling dips

    def at(mean_batch: float) -> float:
        return float(np.interp(mean_batch, batches, compute))
    return at


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

    def predict(self, values) -> list[tuple[dict[str, float], float, float]]:
        """Per observation: predicted quantiles (ms, end to end), mean batch size, and mean execution time per
        request (ms; a request's batch from start to finish, as Triton's compute durations count it)."""
        model = CalibratedModel(self.profile, tuple(values)).replica()
        out = []
        for o, reps in zip(self.obs, self.workloads):
            lat, batches, compute = [], [], []
            for arrivals, draws in reps:
                res = simulate(arrivals, o.config, model.service, draws, model.speedup, warmup_fraction=0.0)
                lat.append(res.latency_s)
                compute.append(res.latency_s - res.queue_s)
                batches.append(res.mean_batch_size)
            pooled = np.concatenate(lat) * 1000.0 + values[0]
            out.append(({k: float(np.quantile(pooled, q)) for k, q in QUANTILES.items()}, float(np.mean(batches)),
                        float(np.concatenate(compute).mean() * 1000.0)))
        return out

    def residual_rows(self, values) -> list[np.ndarray]:
        """Per observation, its relative errors: P50, P90, P99, and Triton's execution time per request where
        /metrics was scraped."""
        rows = []
        for o, (p, _, compute) in zip(self.obs, self.predict(values)):
            row = [(p[k] - o.measured_ms[k]) / o.measured_ms[k] for k in QUANTILES]
            if o.measured_compute_ms is not None:
                row.append((compute - o.measured_compute_ms) / o.measured_compute_ms)
            rows.append(np.array(row))
        return rows


@dataclass
class _Solution:
    values: np.ndarray
    free: list[str]
    jac: np.ndarray  # d residuals / d free parameters, at values
    rows: list[np.ndarray]  # residuals per observation, at values
    cost: float
    evaluations: int
    held: dict[str, str]  # parameter -> why it was held at its neutral value
    initial: dict[str, float]


def _bounds(profile: LatencyProfile) -> dict[str, tuple[float, float]]:
    """Each parameter's range. The server costs may be negative (a profile slower than the server measured), but not
    so negative that a batch would take no time."""
    p50_1 = profile.batches[0].p50_ms
    per_item = min(b.p50_ms / b.batch_size for b in profile.batches)
    return {"overhead_ms": (0.0, 10_000.0), "batch_overhead_ms": (-0.5 * p50_1, 10_000.0),
            "item_overhead_ms": (-0.5 * per_item, 1_000.0), "spread": (0.0, 20.0)}


def _solve(model: StepModel, x0: dict[str, float], free: list[str], bounds: dict[str, tuple[float, float]],
           scales: dict[str, float]) -> tuple[np.ndarray, object]:
    def full(x_free: np.ndarray) -> np.ndarray:
        values = np.array([x0[n] for n in PARAMETER_NAMES])
        for n, v in zip(free, x_free):
            values[PARAMETER_NAMES.index(n)] = v
        return values

    def residuals(x_free: np.ndarray) -> np.ndarray:
        return np.concatenate(model.residual_rows(full(x_free)))

    lo = [bounds[n][0] for n in free]
    hi = [bounds[n][1] for n in free]
    start = np.clip([x0[n] for n in free], lo, hi)
    # scipy steps by diff_step x max(1, |x|): this makes each step FD_STEP of the parameter's own scale, so a cost
    # near 0 is not stepped by nothing, nor by a whole millisecond when its scale is a tenth of one.
    steps = np.array([FD_STEP * scales[n] / max(1.0, abs(v)) for n, v in zip(free, start)])
    solution = least_squares(residuals, start, bounds=(lo, hi), diff_step=steps,
                             x_scale=[scales[n] for n in free], max_nfev=80)
    return full(solution.x), solution


def _jacobian(model: StepModel, values: np.ndarray, free: list[str], scales: dict[str, float],
              bounds: dict[str, tuple[float, float]]) -> np.ndarray:
    """Central differences of the residuals over FD_STEP of each free parameter's scale, at ``values`` (kept
    inside the bounds): the one Jacobian identifiability and the bootstrap read."""
    cols = []
    for n in free:
        j = PARAMETER_NAMES.index(n)
        h = FD_STEP * scales[n]
        up, down = values.copy(), values.copy()
        up[j] = min(values[j] + h, bounds[n][1])
        down[j] = max(values[j] - h, bounds[n][0])
        cols.append((np.concatenate(model.residual_rows(up)) - np.concatenate(model.residual_rows(down)))
                    / (up[j] - down[j]))
    return np.column_stack(cols)


def _unidentified(jac: np.ndarray, free: list[str], scales: dict[str, float]) -> str | None:
    """The free parameter to hold, if the steps leave a direction of the free parameters unconstrained."""
    scaled = jac * np.array([scales[n] for n in free])
    norms = np.linalg.norm(scaled, axis=0)
    if np.any(norms == 0):
        return free[int(np.argmin(norms))]
    sv, vt = np.linalg.svd(scaled, full_matrices=False)[1:]
    if sv[-1] >= UNIDENTIFIED_RCOND * sv[0]:
        return None
    weak = np.abs(vt[-1])
    involved = [n for n, w in zip(free, weak) if w > 0.3]
    return min(involved, key=HOLD_ORDER.index)


def _hold_reason(name: str, model: StepModel, values: np.ndarray, partners: list[str]) -> str:
    batches = [b for _, b, _ in model.predict(values)]
    if name == "item_overhead_ms" and max(batches) < ONE_PER_BATCH:
        return ("every step ran batches of about one request, so the cost per request cannot be told from the cost "
                "per batch; held at 0 (the per-batch cost carries both). Add steps with larger batches to separate "
                "them")
    if name == "overhead_ms" and "batch_overhead_ms" in partners:
        return ("the steps do not load the server enough to tell a cost outside the batcher from one inside it; "
                "held at 0, so all of it is counted against capacity (the safe side). Add steps at 60-85% of "
                "capacity to separate them")
    return f"the steps cannot separate it from {', '.join(partners) or 'the others'}; held at {NEUTRAL[name]:g}"


def estimate(model: StepModel) -> _Solution:
    """Least squares over the identifiable parameters: fit, hold what the steps cannot constrain, fit again."""
    profile = model.profile
    bounds = _bounds(profile)
    obs = model.obs
    # Start from the profile as measured, with the overhead that explains the median at the lightest step.
    light = min(range(len(obs)), key=lambda i: obs[i].rate)
    neutral = np.array([NEUTRAL[n] for n in PARAMETER_NAMES])
    p50_model = model.predict(neutral)[light][0]["p50"]
    x0 = dict(NEUTRAL, overhead_ms=max(obs[light].measured_ms["p50"] - p50_model, 0.0))
    scales = {"overhead_ms": max(x0["overhead_ms"], 1.0), "batch_overhead_ms": max(profile.batches[0].p50_ms, 0.1),
              "item_overhead_ms": max(min(b.p50_ms / b.batch_size for b in profile.batches), 0.05), "spread": 1.0}
    initial = dict(x0)
    free = list(PARAMETER_NAMES)
    held: dict[str, str] = {}
    # Structural: with (nearly) one request per batch in every step, a cost per request is a cost per batch. The
    # numerical test below sees this only through the finite differences' noise, so it is decided here.
    batches = [o.measured_mean_batch if o.measured_mean_batch is not None else b
               for o, (_, b, _) in zip(obs, model.predict(neutral))]
    if max(batches) < ONE_PER_BATCH:
        held["item_overhead_ms"] = _hold_reason("item_overhead_ms", model, neutral, ["batch_overhead_ms"])
        free.remove("item_overhead_ms")
    evaluations = 0
    while True:
        values, sol = _solve(model, x0, free, bounds, scales)
        jac = _jacobian(model, values, free, scales, bounds)
        evaluations += int(sol.nfev) + 2 * len(free)
        drop = _unidentified(jac, free, scales) if len(free) > 1 else None
        if drop is None:
            break
        scaled = jac * np.array([scales[n] for n in free])
        weak = np.abs(np.linalg.svd(scaled, full_matrices=False)[2][-1])
        partners = [n for n, w in zip(free, weak) if w > 0.3 and n != drop]
        held[drop] = _hold_reason(drop, model, values, partners)
        free.remove(drop)
        x0 = {n: (NEUTRAL[n] if n == drop else float(values[PARAMETER_NAMES.index(n)])) for n in PARAMETER_NAMES}
    return _Solution(values, free, jac, model.residual_rows(values), float(sol.cost), evaluations, held, initial)


def bootstrap(solution: _Solution, bounds: dict[str, tuple[float, float]], resamples: int,
              seed: int = 20261122) -> np.ndarray:
    """Parameter draws: resample the steps with replacement and take one Gauss-Newton step from the estimate on
    each resample's residuals (a linearized bootstrap; a full refit per resample would cost hundreds of fits)."""
    rows = solution.rows
    sizes = [len(r) for r in rows]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    idx = [PARAMETER_NAMES.index(n) for n in solution.free]
    rng = np.random.default_rng(seed)
    draws = np.tile(solution.values, (resamples, 1))
    if not solution.free or len(rows) < 2:
        return draws
    for k in range(resamples):
        pick = rng.integers(len(rows), size=len(rows))
        sel = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in pick])
        step = np.linalg.lstsq(solution.jac[sel], -np.concatenate([rows[i] for i in pick]), rcond=None)[0]
        for j, n in zip(idx, solution.free):
            lo, hi = bounds[n]
            draws[k, j] = float(np.clip(solution.values[j] + step[solution.free.index(n)], lo, hi))
    return draws


def fit(profile: LatencyProfile, stress_paths: list[Path], p99_ms: float, lag: AutoscalingSpec,
        fallback_config: BatchingConfig | None = None, replications: int = REPLICATIONS,
        confidence: float = DEFAULT_CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
        run_noise: float = DEFAULT_RUN_NOISE) -> Calibration:
    """Calibrate on the stress results; thresholds for each measured config at ``p99_ms``."""
    if not (math.isfinite(p99_ms) and p99_ms > 0):
        raise PlannerInputError(f"--p99-ms must be a positive number, got {p99_ms}")
    if not (0.5 < confidence < 1):
        raise PlannerInputError(f"--confidence must lie strictly between 0.5 and 1, got {confidence}")
    if run_noise_error(run_noise * 100):
        raise PlannerInputError(run_noise_error(run_noise * 100))
    obs, excluded = observations(stress_paths, fallback_config, profile.model)
    flagged = host_bound(obs, profile)
    host_warning = None
    if len(obs) - len(flagged) >= MIN_CLEAN_STEPS:
        excluded += [Excluded(source=obs[i].source, step=obs[i].step, reason=r) for i, r in sorted(flagged.items())]
        kept = [o for i, o in enumerate(obs) if i not in flagged]
        if flagged:
            host_warning = (f"{len(flagged)} host-bound step(s) left out of the fit (see fit.excluded): the machine, "
                            "not the model, set their pace")
    else:
        kept = obs
        if flagged:
            host_warning = (f"{len(flagged)} of {len(obs)} steps are host-bound, too many to leave out; fitted on them "
                            f"all, so the calibration describes this test bed: {next(iter(flagged.values()))}. "
                            "Measure with the load generator on its own cores")
    model = StepModel(profile, kept, replications)
    solution = estimate(model)
    bounds = _bounds(profile)
    draws = bootstrap(solution, bounds, resamples)
    c = confidence
    parameters = {}
    warnings = [f"{n} not identified: {why}" for n, why in solution.held.items()]
    for j, n in enumerate(PARAMETER_NAMES):
        v = float(solution.values[j])
        lo, hi = bounds[n]
        at_bound = n in solution.free and (math.isclose(v, lo, abs_tol=1e-6 * max(1.0, abs(lo)))
                                           or math.isclose(v, hi, abs_tol=1e-6 * max(1.0, abs(hi))))
        if at_bound:
            warnings.append(f"{n} = {v:g} sits on its bound: the steps pull it past the range the model allows "
                            f"({lo:g} to {hi:g}); the model does not describe this server, and its thresholds are "
                            "suspect")
        low, high = (float(np.quantile(draws[:, j], q)) for q in ((1 - c) / 2, (1 + c) / 2))
        parameters[n] = Parameter(value=round(v, 4), low=round(min(low, v), 4), high=round(max(high, v), 4),
                                  identified=n not in solution.held, at_bound=at_bound,
                                  note=solution.held.get(n, ""))
    if host_warning:
        warnings.append(host_warning)
    busy = busy_host_warning(obs, flagged)
    if busy:
        warnings.append(busy)
    values = tuple(p.value for p in parameters.values())
    # The level error of several runs of a config averages out as 1/sqrt(runs). A run is told by its start (a file
    # copied or named twice is one run); the noise is one figure, so the config measured in the fewest runs sets it.
    runs = min(len({o.run for o in kept if o.config == cfg}) for cfg in {o.config for o in kept})
    # Rounded down: the figure written must stay inside the contract's bound.
    noise = math.floor(run_noise / math.sqrt(runs) * 1e6) / 1e6
    calibrated = CalibratedModel(profile, values, draws, confidence, noise)
    pred = model.predict(values)
    steps = []
    for o, (p, batch, _) in zip(kept, pred):
        steps.append(StepFit(source=o.source, step=o.step, config=o.config, offered_rate=o.rate,
                             requests=o.requests, measured_ms={k: round(v, 3) for k, v in o.measured_ms.items()},
                             predicted_ms={k: round(v, 3) for k, v in p.items()},
                             p99_error=round((p["p99"] - o.measured_ms["p99"]) / o.measured_ms["p99"], 4),
                             measured_mean_batch=None if o.measured_mean_batch is None else round(o.measured_mean_batch, 3),
                             predicted_mean_batch=round(batch, 3)))
    errors = sorted(abs(s.p99_error) for s in steps)
    thresholds = [threshold(calibrated, cfg, p99_ms, lag) for cfg in sorted({o.config for o in kept},
                                                                          key=BatchingConfig.sort_key)]
    return Calibration(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=profile.model, gpu=profile.gpu,
        profile_origin=f"{profile.origin.kind} {profile.backend} {profile.precision} ({profile.origin.date})",
        parameters=Parameters(**parameters),
        uncertainty=Uncertainty(
            method=(f"bootstrap over the {len(kept)} fitted steps ({resamples} resamples with replacement), each "
                    "resample moving the estimate by one Gauss-Newton step on its residuals; intervals central at "
                    f"the confidence; capacity's draws also read the target off by a run-to-run P99 noise of "
                    f"{run_noise * 100:g}% a run (one standard deviation) over {runs} run(s) of each config: "
                    f"{noise * 100:.3g}%"),
            confidence=confidence, resamples=resamples, draws=[[round(float(v), 5) for v in d] for d in draws],
            run_noise=noise),
        warnings=warnings,
        sources=sorted({o.source for o in kept}),
        fit=FitReport(method="scipy.optimize.least_squares (trust region reflective, bounded)",
                      residuals="(predicted - measured) / measured for P50, P90, P99 of every step, and for "
                                "Triton's compute time per request where /metrics was scraped",
                      initial={n: round(float(v), 4) for n, v in solution.initial.items()},
                      cost=round(solution.cost, 6), evaluations=solution.evaluations,
                      median_abs_p99_error=round(float(np.median(errors)), 4),
                      worst_abs_p99_error=round(errors[-1], 4), excluded=excluded),
        steps=steps,
        scaling=lag,
        thresholds=thresholds)


def threshold(model: CalibratedModel, cfg: BatchingConfig, p99_ms: float, lag: AutoscalingSpec) -> Threshold:
    """The rate one replica holds at ``p99_ms`` with this config (the safe end of its interval), and the HPA target
    that keeps it there."""
    overhead_ms = float(model.values[0])
    cap = model.capacity(cfg, p99_ms, overhead_ms)
    latency = model.capacity(cfg, p99_ms, overhead_ms, refusals=False)
    target = lag.hpa_target(cap.planned)
    search = CapacitySearch(model.replica())
    queue_us = float(np.mean(search.simulate(target, cfg).queue_s)) * 1e6 if target > 0 else None
    return Threshold(config=cfg, p99_ms=p99_ms, max_rate_per_replica=round(cap.planned, 3),
                     nominal_max_rate_per_replica=round(cap.nominal, 3),
                     max_rate_interval=(round(cap.low, 3), round(cap.high, 3)),
                     latency_max_rate=round(latency.nominal, 3),
                     latency_max_rate_interval=(round(latency.low, 3), round(latency.high, 3)),
                     hpa_target_rate_per_replica=round(target, 3),
                     predicted_queue_us_at_target=None if queue_us is None else round(queue_us, 1))
