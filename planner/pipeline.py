"""The stages every plan shares (a point: :mod:`planner.recommend`; a day: :mod:`planner.day`; a mix:
:mod:`planner.mix`), each once: the request (:class:`RecommendRequest`); :func:`prepare`, per GPU type the Triton
config with the most per-replica capacity at the device budget (target minus fixed overhead) by simulation, and its
sizing rates; the MILP sizes the fleet (:mod:`planner.optimize`, its problem built by
:func:`planner.sizing.fleet_problem`); :func:`verify_at` simulates the chosen fleet at its planned rates on fresh
random numbers, and a miss tightens that GPU type's sizing (:data:`TIGHTEN`, at most :data:`MAX_ROUNDS` rounds);
:func:`finish` builds the plan (binding constraint, runner-up, spot-loss check). :func:`why_no_fleet` is the one line
an infeasible problem is refused with.

A plan module imports these and never another plan module (the layers contract in ``pyproject.toml``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.calibration import Calibration, capacity_spread, read_calibration
from gpufleet.contracts.catalog import CapacityType, check_gpu_type
from gpufleet.contracts.model import Strict
from gpufleet.contracts.plan import (Alternative, Autoscaling, Binding, Cost, Deployment, Environment,
                                     LatencyPrediction, Plan, PlanRequest, PoolPlan, Routing, SolverReport,
                                     SurvivalCheck)
from planner.capacity import REFUSED_SHARE_MAX, Capacity, CapacitySearch, queue_bound
from planner.catalog import CAPACITY_TYPES, HOURS_PER_MONTH, Catalog, Pool, read_catalog
from planner.errors import PlannerInputError
from planner.optimize import Problem, Solution, binding_constraint, replicas_by_gpu, runner_up
from planner.mig import slice_profiles, slices
from planner.profiles import DEFAULT_MODEL, Pairing, load_profiles
from planner.simulate import SimResult, Workload
from planner.sizing import (MAX_ROUNDS, TIGHTEN, VERIFY_REQUESTS, VERIFY_SEED, GpuSizing, calibrated_model,
                            constraints_of, fleet_pools, replica_model, size_gpu)
from planner.survival import mixture_quantile, replica_through_loss

DEFAULT_OVERHEAD_MS = 2.0
# Far beyond any AWS account's GPU quota; past it the MILP's numbers lose the precision that makes it exact.
MAX_FLEET_REPLICAS = 1_000_000
AFTER_REPLACEMENT_S = 60.0
# A production plan runs at least this many replicas of every GPU type that serves: with one, a single spot reclaim
# or node failure takes that type's whole share of traffic down until a replacement serves (minutes).
PRODUCTION_MIN_REPLICAS_PER_GPU = 2
OVERHEAD_ASSUMED = ("assumed default for network transfer and pre/post-processing; "
                    "calibrate it from stress runs with `planner fit`")


class RecommendRequest(Strict):
    """What the user asks: the one request model. Each field's default is declared here once and the CLI's options
    read it (:func:`gpufleet.contracts.model.default_of`); the plan records the request as its dump
    (:meth:`recorded`). Every value is checked where it is set, at construction and on assignment (the day and mix
    plans set the rate and target in place), and a bad one is :class:`PlannerInputError` with one line naming the
    option (:func:`request_error`). Fields left ``None`` are filled from the calibration or the defaults named
    beside them by :func:`prepare`."""

    model_config = ConfigDict(validate_assignment=True)

    qps: float = Field(gt=0)  # the rate the fleet must hold at its busiest (a day's peak, a mix's sum)
    p99_ms: float = Field(100.0, gt=0)
    model: str = Field(DEFAULT_MODEL, min_length=1)
    catalog: Path | None = None  # None: the embedded catalog (before gpus: their check reads it)
    gpus: list[str] | None = None  # None: every GPU type with a profile and a price
    profiles: list[Path] = Field(default_factory=list)
    capacity_types: list[CapacityType] = Field(default_factory=lambda: list(CAPACITY_TYPES), min_length=1)
    routing: Routing = "weighted"
    max_spot_share: float = Field(0.7, ge=0, le=1)  # of each GPU type's replicas: at least 30% stay on a floor
    spot_survival: bool = False
    survival_p99_ms: float | None = Field(None, gt=0)  # None: the target
    horizon_months: float = Field(12.0, gt=0)
    overhead_ms: float | None = Field(None, ge=0)  # None: the calibration's, else DEFAULT_OVERHEAD_MS
    overhead_source: str = OVERHEAD_ASSUMED
    calibration: Path | None = None
    confidence: float | None = Field(None, gt=0.5, lt=1)  # None: the calibration's
    # How far a calibrated capacity's interval at the target may reach from its estimate, percent (the farther end:
    # gpufleet.contracts.calibration.capacity_spread); a wider one is refused (check_capacity_spread). 15%: the
    # plan then sizes within 15% of what the fit believes; the three guessed rates gave a factor of six.
    # inf accepts any calibration, even one whose width is unknown (an interval of one point).
    max_capacity_spread_pct: float = Field(15.0, gt=0, allow_inf_nan=True)
    scale_up_lag_s: float | None = Field(None, ge=0)  # with ramp_per_min: lag-aware HPA targets
    ramp_per_min: float | None = Field(None, ge=0)  # None for both: the calibration's, else the autoscaling defaults
    min_replicas: int = Field(1, ge=1)
    max_instances_per_pool: int | None = Field(None, ge=1)
    exhaustive: bool = False
    environment: Environment = "production"
    mig: bool = False  # MIG slices as capacity (planner.mig)

    def __init__(self, **values) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise request_error(exc) from None

    def __setattr__(self, name: str, value) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise request_error(exc) from None

    @field_validator("gpus")
    @classmethod
    def _known_gpus(cls, gpus: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # A name no catalog has is refused before any profile is read; whether a slice may be planned (--mig) and
        # whether a profile exists for it is _gpus_to_plan's.
        if gpus is not None and "catalog" in info.data:
            for g in gpus:
                check_gpu_type(g, info.data["catalog"])
        return gpus

    @model_validator(mode="after")
    def _consistent(self) -> "RecommendRequest":
        if self.overhead_ms is not None and self.overhead_ms >= self.p99_ms:
            raise ValueError(f"--overhead-ms {self.overhead_ms:g} leaves no latency budget under --p99-ms "
                             f"{self.p99_ms:g}")
        if self.survival_p99_ms is not None and self.survival_p99_ms < self.p99_ms:
            raise ValueError(f"--survival-p99-ms {self.survival_p99_ms:g} must be >= --p99-ms {self.p99_ms:g}")
        return self

    @property
    def min_replicas_per_gpu(self) -> int:
        return PRODUCTION_MIN_REPLICAS_PER_GPU if self.environment == "production" else 1

    def check(self) -> None:
        """Fill the overhead's default (after the calibration had its say) and check the whole request again: a list
        edited in place is not an assignment."""
        if self.overhead_ms is None:
            self.overhead_ms = DEFAULT_OVERHEAD_MS
        type(self)(**self.model_dump())

    def but(self, **changes) -> "RecommendRequest":
        """A new request with ``changes``, checked as a whole (pydantic's ``model_copy`` would skip the checks)."""
        return type(self)(**{**self.model_dump(), **changes})

    def recorded(self, **found) -> PlanRequest:
        """The request as a plan records it: this model's dump, with what planning found (``found``: the region,
        the GPU types sized, the catalog's date)."""
        asked = self.model_dump(mode="json", include=set(PlanRequest.model_fields) - set(found))
        return PlanRequest(**asked, min_replicas_per_gpu=self.min_replicas_per_gpu, **found)


# A request field whose option has another name, and the factor from the field's unit to the option's.
_OPTIONS = {"gpus": ("--gpu", None), "profiles": ("--profile", None), "capacity_types": ("--capacity-type", None),
            "scale_up_lag_s": ("--scale-up-lag-min", 1 / 60), "ramp_per_min": ("--ramp-pct-per-min", 100)}


def option_of(field: str) -> str:
    """The command-line option that fills request field ``field``."""
    return _OPTIONS.get(field, ("--" + field.replace("_", "-"), None))[0]


def request_error(exc: ValidationError) -> PlannerInputError:
    """The first defect of a request as one line naming its option (and the value as the option took it)."""
    err = exc.errors()[0]
    message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    field = next((str(p) for p in err["loc"] if not isinstance(p, int)), None)
    if err["type"] == "value_error" or field is None:
        return PlannerInputError(message)  # our validators' messages name the option already
    if err["type"] == "extra_forbidden":
        return PlannerInputError(f"a request has no field {field!r}; its fields: {', '.join(RecommendRequest.model_fields)}")
    option, factor = _OPTIONS.get(field, (option_of(field), None))
    value = err.get("input")
    if factor is not None and isinstance(value, (int, float)):
        value = value * factor  # the value as typed; the only bound of these fields is 0, the same in either unit
    return PlannerInputError(f"{option} {value!r}: {message}")


def planned_gpus(catalog: Catalog, mig: bool) -> set[str]:
    """The GPU types a plan may buy: the catalog's, and with ``mig`` the MIG slices of its MIG-capable ones."""
    priced = catalog.gpus()
    return priced | ({s.gpu_type for s in slices() if s.gpu in priced} if mig else set())


def request_pairing(req: RecommendRequest, catalog: Catalog, models: list[str] | None = None) -> Pairing:
    """What the request's --profile files must be about: its model(s), on a GPU it may plan."""
    priced = planned_gpus(catalog, req.mig)
    models = models or [req.model]
    return Pairing(
        models=models,
        gpus=set(req.gpus) if req.gpus else priced,  # an unknown --gpu is named by _gpus_to_plan
        models_are=(f"this plan is for '{req.model}' (--model picks the model)" if len(models) == 1 else
                    f"the mix plans {', '.join(models)}"),
        gpus_are=(f"--gpu chose {', '.join(req.gpus)}" if req.gpus else
                  f"the catalog has {', '.join(sorted(priced))}"))


def _gpus_to_plan(req: RecommendRequest, catalog: Catalog, profiles: dict) -> list[str]:
    models = sorted({m for m, _ in profiles})
    if req.model not in models:
        raise PlannerInputError(f"unknown model '{req.model}'; profiles exist for: {', '.join(models)}")
    profiled = {g for m, g in profiles if m == req.model}
    priced = planned_gpus(catalog, req.mig)
    if req.gpus:
        for g in req.gpus:
            if g not in priced:
                raise PlannerInputError(f"unknown GPU '{g}'; the catalog has: {', '.join(sorted(priced))}")
            if g not in profiled:
                raise PlannerInputError(f"no latency profile for model '{req.model}' on GPU '{g}'; "
                                        f"profiled: {', '.join(sorted(profiled))}")
        return sorted(set(req.gpus))
    usable = sorted(profiled & priced)
    if not usable:
        raise PlannerInputError(f"no GPU type has both a catalog entry and a '{req.model}' profile")
    return usable


def _fleet_quantiles(results: dict[str, SimResult], traffic: dict[str, float], overhead_ms: float,
                     qs: tuple[float, ...]) -> list[float]:
    """Quantiles of the traffic-weighted mixture of per-deployment latency samples, end to end."""
    samples, weights = [], []
    total = sum(traffic[g] for g in results)
    for g, res in results.items():
        samples.append(res.latency_s * 1000.0 + overhead_ms)
        weights.append(np.full(len(res.latency_s), traffic[g] / total / len(res.latency_s)))
    lat = np.concatenate(samples)
    w = np.concatenate(weights)
    order = np.argsort(lat)
    lat, cdf = lat[order], np.cumsum(w[order])
    return [float(lat[min(np.searchsorted(cdf, q), len(lat) - 1)]) for q in qs]


def _routing(problem: Problem, sol: Solution) -> dict[str, float]:
    """Traffic per GPU type as deployed: weighted routes in proportion to each type's holdable rate."""
    reps = replicas_by_gpu(problem.pools, sol.counts)
    used = [g for g, n in reps.items() if n > 0]
    if problem.routing == "equal":
        total = sum(reps.values())
        return {g: problem.qps * reps[g] / total for g in used}
    holdable = problem.holdable(tuple(sol.counts[p.name] for p in problem.pools))
    total = sum(holdable[g] for g in used)
    return {g: problem.qps * holdable[g] / total for g in used}


def describe_pools(pools: tuple[Pool, ...], counts: dict[str, int]) -> list[str]:
    """'2 x g6e.2xlarge spot' per pool bought; a pool left out of the counts holds none (as a period records it)."""
    return [f"{counts[p.name]} x {p.instance_type} {p.capacity_type}" for p in pools if counts.get(p.name, 0) > 0]


def _apply_calibration(req: RecommendRequest) -> Calibration | None:
    """Take the overhead and the scaling inputs from the calibration where the request leaves them open."""
    if req.calibration is None:
        return None
    cal = read_calibration(req.calibration)
    if cal.model != req.model:
        raise PlannerInputError(f"{req.calibration}: calibrated for model '{cal.model}', not '{req.model}'")
    if req.overhead_ms is None:
        req.overhead_ms = cal.overhead_ms
        req.overhead_source = (f"fitted by planner fit on {cal.created_at[:10]} from {len(cal.steps)} stress steps "
                               f"({', '.join(Path(s).name for s in cal.sources)})")
    if req.scale_up_lag_s is None and req.ramp_per_min is None:
        req.scale_up_lag_s, req.ramp_per_min = cal.scaling.scale_up_lag_s, cal.scaling.ramp_per_min
    return cal


def autoscaling_spec(req: RecommendRequest, cal: Calibration | None) -> AutoscalingSpec:
    """The plan's autoscaling spec: the calibration's where the request leaves lag and ramp open; lag-aware targets
    when either is given."""
    if cal is not None and (req.scale_up_lag_s, req.ramp_per_min) == (cal.scaling.scale_up_lag_s,
                                                                       cal.scaling.ramp_per_min):
        return cal.scaling
    if req.scale_up_lag_s is None and req.ramp_per_min is None:
        # Not calibrated and nothing asked: size for a GPU node's start-up at the default ramp, so the HPA target is
        # never the capacity itself (by the time a new replica serves, traffic has grown past it).
        return AutoscalingSpec(scale_up_lag_s=DEFAULT_SCALE_UP_LAG_S, ramp_per_min=DEFAULT_RAMP_PER_MIN)
    return AutoscalingSpec(scale_up_lag_s=DEFAULT_SCALE_UP_LAG_S if req.scale_up_lag_s is None else req.scale_up_lag_s,
                           ramp_per_min=req.ramp_per_min or 0.0)


@dataclass
class Sized:
    """Everything sizing decided before the optimizer runs: shared by the point plan and the day plan."""

    cal: Calibration | None
    spec: AutoscalingSpec
    catalog: Catalog
    profiles: dict
    caps: dict[str, Capacity]
    searches: dict[str, CapacitySearch]
    sizing: dict[str, GpuSizing]
    constraints: FleetConstraints
    pools: tuple[Pool, ...]


def prepare(req: RecommendRequest) -> Sized:
    """Check the request; per GPU type, the best Triton config and the rates a replica is sized at (``req.qps`` is
    the rate the fleet must hold at its busiest)."""
    cal = _apply_calibration(req)
    req.check()
    spec = autoscaling_spec(req, cal)
    catalog = read_catalog(req.catalog)
    profiles = load_profiles(req.profiles, request_pairing(req, catalog))
    if req.mig:
        profiles.update(slice_profiles(profiles))
    gpus = _gpus_to_plan(req, catalog, profiles)
    if cal is not None and cal.gpu not in gpus:
        # Its server costs apply to its own GPU only: planned without it, the plan would name a calibration it
        # never used.
        raise PlannerInputError(f"{req.calibration}: calibrated on GPU '{cal.gpu}', which this plan does not "
                                f"consider ({', '.join(gpus)}); plan with that GPU, or without the calibration")
    budget_ms = req.p99_ms - req.overhead_ms

    calibrated = {g: calibrated_model(profiles[(req.model, g)], cal, req.confidence) for g in gpus}
    searches = {g: CapacitySearch(calibrated[g].replica() if calibrated[g] else replica_model(profiles[(req.model, g)], None))
                for g in gpus}
    caps: dict[str, Capacity] = {}
    for g, search in searches.items():
        cap = search.best(budget_ms, exhaustive=req.exhaustive)
        if cap is not None:
            caps[g] = cap
    if not caps:
        lowest = min((s.lowest_p99_ms() + req.overhead_ms, g) for g, s in searches.items())
        raise PlannerInputError(f"infeasible: P99 <= {req.p99_ms:g} ms cannot be met; the lowest P99 reachable is "
                                f"{lowest[0]:.2f} ms (on {lowest[1]}, batch 1, no load, overhead "
                                f"{req.overhead_ms:g} ms)")

    constraints = constraints_of(req)
    pools = fleet_pools(catalog, set(caps), constraints)
    if not pools:
        raise PlannerInputError(f"the catalog has no {'/'.join(req.capacity_types)} pools for {', '.join(caps)}")
    # Each replica carries at most its sizing rate in steady state: with a scale-up lag, the HPA target, so that
    # P99 holds while traffic ramps and new GPU nodes start.
    sizing = {g: size_gpu(searches[g], c, spec, req.p99_ms, req.survival_p99_ms, req.overhead_ms, req.spot_survival,
                          calibrated[g]) for g, c in caps.items()}

    for z in sizing.values():
        check_capacity_spread(req.max_capacity_spread_pct, req.calibration, req.model, req.p99_ms, z)
    if all(z.sizing_rate <= 0 for z in sizing.values()):
        raise PlannerInputError(f"{req.calibration}: at {100 * (req.confidence or cal.uncertainty.confidence):g}% "
                                "confidence the calibration cannot promise any capacity at this target; add stress "
                                "steps at 50-85% load or lower --confidence")
    sizing = {g: z for g, z in sizing.items() if z.sizing_rate > 0}
    caps = {g: c for g, c in caps.items() if g in sizing}
    fastest = max(sizing.values(), key=lambda z: z.sizing_rate)
    fewest = req.qps / fastest.sizing_rate
    if fewest > MAX_FLEET_REPLICAS:
        raise PlannerInputError(f"--qps {req.qps:g} needs at least {fewest:,.0f} GPU replicas at P99 <= {req.p99_ms:g} "
                                f"ms (the fastest, {fastest.gpu}, holds {fastest.sizing_rate:,.0f} req/s each); the "
                                f"planner sizes fleets of up to {MAX_FLEET_REPLICAS:,} replicas")
    return Sized(cal, spec, catalog, profiles, caps, searches, sizing, constraints, pools)


def check_capacity_spread(bound_pct: float, calibration: Path | None, model: str, p99_ms: float,
                          z: GpuSizing) -> None:
    """Fail closed on a calibration that cannot promise: :class:`PlannerInputError` when the capacity interval the
    plan would size ``model`` with (the Triton config chosen for ``z.gpu`` at ``p99_ms``, at the confidence in force)
    reaches further than ``bound_pct`` percent from its estimate. Sizing at the interval's safe end does not make a
    wide interval safe: the end itself is an extrapolation from steps far from the knee (issue 27: a factor-of-six
    interval over-promised capacity by 40%). An uncalibrated GPU type (no interval) is not judged."""
    ci = z.interval
    if ci is None:
        return
    # An interval of one point is no certainty: the fit's draws did not move (fewer than two fitted steps to
    # resample, or every parameter held), so the width is unknown, not zero. Only an unbounded gate accepts it.
    unknown = ci.nominal > 0 and ci.high <= ci.low
    spread = float("inf") if unknown else capacity_spread(ci.nominal, ci.low, ci.high)
    if 100.0 * spread <= bound_pct:
        return
    narrow = f"run `loadtests calibrate --model {model} --p99-ms {p99_ms:g} ...` to narrow it"
    if unknown:
        raise PlannerInputError(
            f"{calibration}: '{model}' on {z.gpu} ({z.config.short()}, the config the plan would deploy) holds "
            f"{ci.nominal:,.1f} req/s per replica at P99 <= {p99_ms:g} ms as fitted, with no interval: the fit "
            f"measured no uncertainty (fewer than two fitted steps, or every parameter held); {narrow}, or pass "
            f"--max-capacity-spread-pct inf to accept it")
    accept = f"pass --max-capacity-spread-pct {math.ceil(100.0 * spread)} to accept it" if math.isfinite(spread) \
        else "it cannot be accepted"
    raise PlannerInputError(
        f"{calibration}: '{model}' on {z.gpu} ({z.config.short()}, the config the plan would deploy) holds "
        f"{ci.nominal:,.1f} req/s per replica at P99 <= {p99_ms:g} ms as fitted, {ci.low:,.1f}-{ci.high:,.1f} at "
        f"{ci.confidence:.0%} confidence: ±{100.0 * spread:.1f}% of the estimate, wider than "
        f"--max-capacity-spread-pct {bound_pct:g}; {narrow}, or {accept}")


def verify_at(sized: Sized, problem: Problem, sol: Solution, verify: Workload, req: RecommendRequest):
    """Simulate each deployment at its planned per-replica rate: (traffic, replicas, results, GPU types whose P99
    missed the target)."""
    traffic = _routing(problem, sol)
    reps = replicas_by_gpu(problem.pools, sol.counts)
    results = {g: verify.run(traffic[g] / reps[g], sized.caps[g].config, sized.searches[g].model.service,
                             sized.searches[g].model.speedup) for g in traffic}
    missed = [g for g, r in results.items() if r.quantile_ms(0.99) + req.overhead_ms > req.p99_ms]
    return traffic, reps, results, missed


def finish(req: RecommendRequest, sized: Sized, problem: Problem, sol: Solution, traffic, reps, results,
           verify: Workload) -> Plan:
    """The plan for fleet ``sol``: what relaxing each constraint would save, the runner-up, the spot-loss check."""
    binding, saving = binding_constraint(problem, sol)
    second = runner_up(problem, sol)
    survival = _survival_check(problem, sol, traffic, sized.caps, sized.searches, verify, req, sized.spec)
    return _build_plan(req, sized.catalog, problem, sol, traffic, reps, results, sized.caps, sized.searches,
                       sized.sizing, sized.profiles, binding, saving, second, survival, sized.spec)


def why_no_fleet(problem: Problem) -> str:
    """The one line an infeasible fleet problem is refused with: the limits the request set that could be why."""
    limits = []
    if problem.max_spot_share < 1:
        limits.append(f"max spot share {problem.max_spot_share:g}")
    if problem.max_instances_per_pool is not None or any(p.max_instances is not None for p in problem.pools):
        most = sum(problem.capacity[p.gpu] * p.gpus_per_instance * problem.upper_bound(p) for p in problem.pools
                   if not p.is_spot or problem.max_spot_share > 0)
        limits.append(f"pool instance limits (at most about {most:,.0f} req/s in all)")
    if problem.spot_survival:
        limits.append("spot survival")
    return ("infeasible: no fleet meets the target at this QPS under " + (", ".join(limits) or "these constraints")
            + "; raise the limits or lower --qps")


def _survival_check(problem: Problem, sol: Solution, traffic: dict[str, float], caps: dict[str, Capacity],
                    searches: dict[str, CapacitySearch], verify: Workload, req: RecommendRequest,
                    spec: AutoscalingSpec) -> SurvivalCheck | None:
    """Lose the largest spot pool, routing as deployed: steady state on what remains, then in time through the
    cold-start window and after it (:mod:`planner.survival`)."""
    spot = [p for p in problem.pools if p.is_spot and sol.counts[p.name] > 0]
    if not spot:
        return None
    lost = max(spot, key=lambda p: (p.gpus_per_instance * sol.counts[p.name], p.name))
    lost_reps = lost.gpus_per_instance * sol.counts[lost.name]
    reps = replicas_by_gpu(problem.pools, sol.counts)
    after = dict(reps)
    after[lost.gpu] -= lost_reps
    bound = req.survival_p99_ms or req.p99_ms
    cold_start_s = spec.scale_up_lag_s if spec.scale_up_lag_s > 0 else DEFAULT_SCALE_UP_LAG_S
    if problem.routing == "weighted":
        during = {g: traffic[g] / after[g] if after[g] else math.inf for g in traffic}
        constraint = all(problem.surv_cap(g) * after[g] >= traffic[g] * (1 - 1e-9) for g in traffic)
    else:
        total = sum(after.values())
        during = {g: req.qps / total if after[g] else 0.0 for g in traffic}
        constraint = total > 0 and all(req.qps <= problem.surv_cap(g) * total * (1 + 1e-9)
                                       for g in traffic if after[g])
    new_traffic = {g: during[g] * after[g] for g in traffic if after[g]}
    if not new_traffic or math.isinf(during[lost.gpu]):  # no replica of the lost type, or none at all, remains
        return SurvivalCheck(lost_pool=lost.name, replicas_lost=lost_reps, p99_ms_after_loss=None,
                             bound_ms=bound, holds=False, cold_start_s=cold_start_s, p99_ms_cold_start=None,
                             constraint_holds=constraint)
    steady = {g: verify.run(during[g], caps[g].config, searches[g].model.service, searches[g].model.speedup)
              for g in new_traffic}
    (p99,) = _fleet_quantiles(steady, new_traffic, req.overhead_ms, (0.99,))
    window, later, simulated = [], [], cold_start_s
    for i, g in enumerate(sorted(new_traffic)):
        m = searches[g].model
        loss = replica_through_loss(caps[g].config, m.service, m.speedup, traffic[g] / reps[g], during[g],
                                    traffic[g] / reps[g], cold_start_s, AFTER_REPLACEMENT_S, seed=VERIFY_SEED + i)
        window.append(loss.window * 1000.0 + req.overhead_ms)
        later.append(loss.after * 1000.0 + req.overhead_ms)
        simulated = min(simulated, loss.window_simulated_s)
    weights = [new_traffic[g] for g in sorted(new_traffic)]
    p99_window = mixture_quantile(window, weights, 0.99)
    p99_later = mixture_quantile(later, [traffic[g] for g in sorted(new_traffic)], 0.99)
    return SurvivalCheck(lost_pool=lost.name, replicas_lost=lost_reps, p99_ms_after_loss=round(p99, 3),
                         bound_ms=bound, holds=p99_window <= bound, cold_start_s=cold_start_s,
                         window_simulated_s=round(simulated, 1), p99_ms_cold_start=round(p99_window, 3),
                         p99_ms_after_replacement=round(p99_later, 3), constraint_holds=constraint)


def pool_plan(p: Pool, count: int, catalog: Catalog) -> PoolPlan:
    """``count`` instances of pool ``p``, with the catalog's facts about them that infra needs."""
    facts = {i.instance_type: i for i in catalog.instances}
    spot_types = []
    if p.is_spot:
        me = facts[p.instance_type]
        same = [i for i in catalog.instances if (i.gpu, i.gpu_count, i.architecture) == (me.gpu, me.gpu_count,
                                                                                           me.architecture)]
        spot_types = [i.instance_type for i in sorted(same, key=lambda i: (i.vcpu, i.instance_type))]
    return PoolPlan(instance_type=p.instance_type, gpu=p.gpu, capacity_type=p.capacity_type, count=count,
                    gpus_per_instance=p.gpus_per_instance, architecture=facts[p.instance_type].architecture,
                    vcpu=facts[p.instance_type].vcpu, spot_instance_types=spot_types,
                    replicas=p.gpus_per_instance * count, usd_per_hour_per_instance=round(p.usd_per_hour, 4),
                    usd_per_hour=round(p.usd_per_hour * count, 4), mig_partition=p.partition,
                    mig_slices_per_gpu=p.gpus_per_instance // facts[p.instance_type].gpu_count if p.partition else None)


def _build_plan(req, catalog: Catalog, problem, sol, traffic, reps, results, caps, searches,
                sizing: dict[str, GpuSizing], profiles, binding, saving, second, survival,
                spec: AutoscalingSpec) -> Plan:
    pool_plans = [pool_plan(p, sol.counts[p.name], catalog) for p in problem.pools if sol.counts[p.name] > 0]
    # Throughput utilization: the planned rate over what the config serves with back-to-back full batches.
    util = {g: traffic[g] / reps[g] / searches[g].model.saturation_rate(caps[g].config) for g in traffic}
    deployments = []
    for g in sorted(traffic):
        res, cfg = results[g], caps[g].config
        p50, p90, p99 = (res.quantile_ms(q) + req.overhead_ms for q in (0.5, 0.9, 0.99))
        per_replica = traffic[g] / reps[g]
        floor = sum(p.replicas for p in pool_plans if p.gpu == g and p.capacity_type != "spot")
        deployments.append(Deployment(
            gpu=g, model=req.model, replicas=reps[g], routing_weight=round(traffic[g] / req.qps, 6),
            rate_per_replica=round(per_replica, 3),
            triton=queue_bound(searches[g].model, cfg, (req.p99_ms - req.overhead_ms) / 1000.0),
            predicted=LatencyPrediction(p50_ms=round(p50, 3), p90_ms=round(p90, 3), p99_ms=round(p99, 3),
                                        utilization=round(min(util[g], 1.0), 4),
                                        mean_batch_size=round(res.mean_batch_size, 2)),
            autoscaling=Autoscaling(
                target_rate_per_replica=round(sizing[g].sizing_rate if spec.lag_aware else per_replica, 3),
                max_rate_per_replica=round(sizing[g].max_rate, 3), refused_share_max=REFUSED_SHARE_MAX,
                min_replicas=max(floor, 1), max_replicas=max(2 * reps[g], reps[g] + 1),
                basis=spec.basis(sizing[g].max_rate) if spec.lag_aware else (
                    f"target = the planned per-replica rate, at most max_rate / (1 + HPA tolerance "
                    f"{spec.tolerance:g}) so that scale-up starts before P99 passes the target; replicas scale in "
                    "proportion to traffic. max_rate is where simulated P99 meets the target (or, lower, where the "
                    "written queue bound would refuse more than refused_share_max). Give a scale-up "
                    "lag and ramp (or a `planner fit` calibration) for a target that allows for GPU node start-up.")),
            profile_origin=f"{profiles[(req.model, g)].origin.kind} ({profiles[(req.model, g)].origin.date})"))
    p50, p90, p99 = _fleet_quantiles(results, traffic, req.overhead_ms, (0.5, 0.9, 0.99))
    fleet_util = sum(util[g] * reps[g] for g in traffic) / sum(reps[g] for g in traffic)
    usd = sol.usd_per_hour
    lp_gap = (usd - sol.lp_bound) / usd if sol.lp_bound is not None and usd > 0 else None
    mix = ", ".join(describe_pools(problem.pools, sol.counts))
    why = f"Cheapest fleet: {mix} at ${usd:,.2f}/h. Binding: {binding}"
    why += f" (relaxing it would save ${saving:,.2f}/h)." if saving > 0 else "."
    if second is not None:
        extra = second.usd_per_hour - usd
        why += (f" Runner-up: {', '.join(describe_pools(problem.pools, second.counts))} at ${second.usd_per_hour:,.2f}/h "
                f"(+${extra:,.2f}/h, +{100 * extra / usd:.1f}%).")
    if req.min_replicas_per_gpu > 1:
        why += (f" Production: at least {req.min_replicas_per_gpu} replicas of every GPU type that serves, because one "
                "replica is an outage of that type's share on a single spot reclaim or node failure "
                "(--environment development allows one).")
    if spec.lag_aware and req.calibration is None and (req.scale_up_lag_s, req.ramp_per_min) == (None, None):
        why += (f" HPA targets allow for a {spec.scale_up_lag_s / 60:g}-minute GPU scale-up at "
                f"{100 * (spec.ramp_per_min or 0):g}%/min traffic growth (defaults; calibrate with planner fit or set "
                "--scale-up-lag-min/--ramp-pct-per-min).")
    for g in sorted(sizing):
        ci = sizing[g].interval
        if ci is not None:
            why += (f" {g} capacity {ci.nominal:,.1f} req/s per replica as fitted, {ci.low:,.1f}-{ci.high:,.1f} at "
                    f"{ci.confidence:.0%}; sized at {sizing[g].max_rate:,.1f}, the safe end.")
    try:
        pkg_version = version("gpufleet")
    except PackageNotFoundError:
        pkg_version = "unknown"
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        gpufleet_version=pkg_version,
        request=req.recorded(region=catalog.region, gpus=sorted(caps), catalog_as_of=catalog.as_of),
        pools=pool_plans, deployments=deployments,
        predicted=LatencyPrediction(p50_ms=round(p50, 3), p90_ms=round(p90, 3), p99_ms=round(p99, 3),
                                    utilization=round(min(fleet_util, 1.0), 4)),
        cost=Cost(usd_per_hour=round(usd, 4), usd_per_month=round(usd * HOURS_PER_MONTH, 2),
                  usd_per_million_inferences=round(usd / (req.qps * 3600.0) * 1e6, 6)),
        solver=SolverReport(solver="HiGHS (highspy)", status=sol.status, mip_gap=sol.mip_gap,
                            lp_relaxation_usd_per_hour=None if sol.lp_bound is None else round(sol.lp_bound, 4),
                            lp_gap=None if lp_gap is None else round(lp_gap, 6), wall_s=round(sol.wall_s, 4)),
        binding_constraint=Binding(name=binding, usd_per_hour_if_relaxed=round(usd - saving, 4) if saving > 0 else None),
        runner_up=None if second is None else Alternative(pools=describe_pools(problem.pools, second.counts),
                                                          usd_per_hour=round(second.usd_per_hour, 4)),
        survival=survival, sizing=[sizing[g].record() for g in sorted(sizing)], autoscaling=spec, why=why)
