"""``planner recommend --mix``: several models, each at its own rate and P99, planned as one fleet.

The mix file is a CSV with one row per model: ``model,qps,p99_ms`` and optionally ``calibration`` (a ``planner fit``
calibration of the row's model, relative to the mix file); lines starting with ``#`` are comments (where the rates
and targets come from). :func:`planner.mixday.read_mix` reads it, and the form with a curve per model.
:func:`recommend_mix` finds the cheapest
partition of the models into shared Deployments (:func:`planner.colocate.plan_mix`: one set-partitioning MILP over
candidate sets) and writes it as a plan: one
``deployments`` entry per model and GPU type, the co-located ones naming their shared Deployment, and the
comparison with one Deployment per model in ``mix``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gpufleet.contracts.plan import (Autoscaling, Binding, Cost, Deployment, LatencyPrediction, MixModel,
                                     MixPlan, Plan, PlanRequest, SolverReport)
from gpufleet.contracts.calibration import Calibration, read_calibration
from gpufleet.contracts.demand import DemandCurve
from planner.capacity import REFUSED_SHARE_MAX, CapacitySearch, queue_bound
from planner.catalog import HOURS_PER_MONTH, read_catalog
from planner.colocate import PARALLEL_AT_LEAST, ModelDemand, Part, SharedPool, corun_speed, plan_mix
from planner.errors import PlannerInputError
from planner.optimize import Infeasible
from planner.profiles import load_profiles
from planner.mig import slice_profiles
from planner.pipeline import (DEFAULT_OVERHEAD_MS, OVERHEAD_ASSUMED, RecommendRequest, autoscaling_spec,
                              check_capacity_spread, planned_gpus, pool_plan, request_pairing)
from planner.sizing import FleetConstraints, calibrated_model, fleet_pools, replica_model, size_gpu

MIX_COLUMNS = ("model", "qps", "p99_ms")
# Every set of models is a candidate up to ALL_SETS_UP_TO models (2^8 - 1 = 255 sets); past it, sets of up to
# MAX_SET_SIZE models (Nexus packs a handful of models per GPU), and the plan says its optimum is over those.
ALL_SETS_UP_TO = 4
MAX_SET_SIZE = 3
MAX_MIX_MODELS = 12  # C(12, <=4) = 793 sets x GPU types: the MILP stays seconds


@dataclass(frozen=True)
class MixRow:
    """One model of a mix file: its P99 target, its rate (a point) or its curve over a day (``qps`` is then the
    curve's peak), and the calibration it is planned with, if any."""

    model: str
    qps: float
    p99_ms: float
    curve: DemandCurve | None = None
    calibration: Path | None = None


def mix_calibrations(req: RecommendRequest, mix: list[MixRow]) -> dict[str, tuple[Path, Calibration]]:
    """Each calibrated model's calibration: the mix file's ``calibration`` column, and ``--calibration`` for the
    model it was fitted on. One line and :class:`PlannerInputError` where a calibration is for another model, or a
    model is given two."""
    names = [r.model for r in mix]
    out: dict[str, tuple[Path, Calibration]] = {}
    for r in mix:
        if r.calibration is not None:
            cal = read_calibration(r.calibration)
            if cal.model != r.model:
                raise PlannerInputError(f"{r.calibration}: calibrated for model '{cal.model}', not '{r.model}' (the "
                                        "mix file's row names it)")
            out[r.model] = (r.calibration, cal)
    if req.calibration is not None:
        cal = read_calibration(req.calibration)
        if cal.model not in names:
            raise PlannerInputError(f"{req.calibration}: calibrated for model '{cal.model}', which the mix does not "
                                    f"plan ({', '.join(names)})")
        if cal.model in out and out[cal.model][0].resolve() != Path(req.calibration).resolve():
            raise PlannerInputError(f"{req.calibration}: model '{cal.model}' already has a calibration in the mix "
                                    f"file ({out[cal.model][0]}); give one")
        out[cal.model] = (Path(req.calibration), cal)
    return out


def most_cautious(cals: dict[str, tuple[Path, Calibration]]) -> Calibration | None:
    """The calibration whose scaling sizes a replica lowest (the longest lag at the steepest ramp): a Deployment
    that scales on several models' rates scales as its most cautious model needs."""
    return min((c for _, c in cals.values()), key=lambda c: c.scaling.sizing_rate(1.0), default=None)


def recommend_mix(req: RecommendRequest, mix: list[MixRow], workers: int | None = None) -> Plan:
    """The cheapest fleet for every model of ``mix`` at its own P99, models sharing Triton servers where that is
    cheaper. ``req`` carries the fleet's constraints (routing, spot share and survival, replica floors, pool
    limits, a calibration of one of the models); its rate, target and model are the mix's. Each model is planned
    with its own calibration (:func:`mix_calibrations`)."""
    if req.survival_p99_ms is not None:
        raise PlannerInputError("--survival-p99-ms is one bound; a mix holds every model's own target while a spot "
                                "pool is lost (drop --survival-p99-ms)")
    names = [r.model for r in mix]
    cals = mix_calibrations(req, mix)
    cal = most_cautious(cals)
    if cal is not None and req.scale_up_lag_s is None and req.ramp_per_min is None:
        req.scale_up_lag_s, req.ramp_per_min = cal.scaling.scale_up_lag_s, cal.scaling.ramp_per_min
    overhead = mix_overheads(req, names, cals)
    req.qps, req.p99_ms = sum(r.qps for r in mix), min(r.p99_ms for r in mix)
    req.model = "+".join(names)
    explicit_overhead = req.overhead_ms is not None
    req.overhead_ms = max(overhead.values()) if not explicit_overhead else req.overhead_ms
    if cals and not explicit_overhead:
        req.overhead_source = overhead_source(names, cals)
    if req.overhead_ms >= req.p99_ms:
        req.overhead_ms = min(overhead.values())
    req.check()
    for m, t in ((r.model, r.p99_ms) for r in mix):
        if overhead[m] >= t:
            raise PlannerInputError(f"--overhead-ms {overhead[m]:g} leaves no latency budget under {m}'s "
                                    f"P99 {t:g} ms")
    spec = autoscaling_spec(req, cal)
    catalog = read_catalog(req.catalog)
    profiles = load_profiles(req.profiles, request_pairing(req, catalog, names))
    if req.mig:
        profiles.update(slice_profiles(profiles))
    priced = planned_gpus(catalog, req.mig)
    for g in req.gpus or []:
        if g not in priced:
            raise PlannerInputError(f"unknown GPU '{g}'; the catalog has: {', '.join(sorted(priced))}")
    gpus = set(req.gpus or priced) & priced
    known = sorted({m for m, _ in profiles})
    for m in names:
        if m not in known:
            raise PlannerInputError(f"unknown model '{m}'; profiles exist for: {', '.join(known)}")
        if not any((m, g) in profiles for g in gpus):
            raise PlannerInputError(f"no latency profile for model '{m}' on {', '.join(sorted(gpus))}")
    for path, c in cals.values():
        if (c.model, c.gpu) not in {(m, g) for m, g in profiles if g in gpus}:
            raise PlannerInputError(f"{path}: calibrated on GPU '{c.gpu}', which this plan does not consider "
                                    f"({', '.join(sorted(gpus))}); plan with that GPU, or without the calibration")
    constraints = FleetConstraints(req.routing, req.max_spot_share, req.spot_survival, req.min_replicas,
                                   req.max_instances_per_pool, req.horizon_months, tuple(req.capacity_types),
                                   req.min_replicas_per_gpu, req.mig)
    pools = fleet_pools(catalog, {g for g in gpus if any((m, g) in profiles for m in names)}, constraints)
    if not pools:
        raise PlannerInputError(f"the catalog has no {'/'.join(req.capacity_types)} pools for {', '.join(sorted(gpus))}")
    demands = [ModelDemand(r.model, r.qps, r.p99_ms, overhead[r.model]) for r in mix]
    replicas, solo = _solo_sizing(req, demands, profiles, {p.gpu for p in pools}, cals, spec, workers)
    for m, (path, c) in cals.items():
        if not any(k[0] == m for k in solo):
            raise PlannerInputError(f"{path}: at {100 * (req.confidence or c.uncertainty.confidence):g}% confidence "
                                    "the calibration cannot promise any capacity at this target; add stress steps at "
                                    "50-85% load or lower --confidence")
    try:
        planned = plan_mix(demands, profiles, pools, max_spot_share=req.max_spot_share,
                           min_replicas_per_gpu=req.min_replicas_per_gpu, spec=spec, workers=workers,
                           routing=req.routing, spot_survival=req.spot_survival, min_replicas=req.min_replicas,
                           max_instances_per_pool=req.max_instances_per_pool, solo=solo, replicas=replicas,
                           max_set_size=MAX_SET_SIZE if len(mix) > ALL_SETS_UP_TO else None)
    except Infeasible as exc:
        raise PlannerInputError(f"infeasible: {exc}; no fleet holds every model's P99 target under these constraints"
                                ) from None

    by_name = {d.model: d for d in demands}
    counts: dict[str, int] = {}
    for part in planned.parts:
        for pool, n in part.counts.items():
            counts[pool] = counts.get(pool, 0) + n
    pool_plans = [pool_plan(p, counts[p.name], catalog) for p in pools if counts.get(p.name)]
    deployments, sharing = [], {}
    for part in planned.parts:
        deployments += _deployments(part, by_name, replicas, pools, spec, sharing, profiles)
    closest = max(deployments, key=lambda d: d.predicted.p99_ms / by_name[d.model].p99_ms)
    usd = planned.usd_per_hour
    lp = planned.lp_bound
    sets = [" + ".join(p.models) for p in planned.parts]
    capped = len(mix) > ALL_SETS_UP_TO
    why = (f"Cheapest partition: {'; '.join(sets)} at ${usd:,.2f}/h against ${planned.separate_usd_per_hour:,.2f}/h "
           f"for one Deployment per model ({100 * planned.saving:.1f}% saved). One set-partitioning MILP over "
           f"{planned.candidates} candidate model sets x GPU types ({'sets of up to ' + str(MAX_SET_SIZE) + ' models' if capped else 'every set'}; "
           f"{planned.pruned} more dropped as dearer than their members apart at any share), "
           f"{planned.bundles_evaluated} simulated where an optimum used them, the rest at an upper bound on their "
           f"share: the optimum over {'those' if capped else 'all'} candidates, within the MIP gap "
           f"{planned.mip_gap:.2%}; LP bound ${lp if lp is not None else float('nan'):,.2f}/h. "
           "Co-located models keep each one's best Triton config alone; the shared Deployment scales on every "
           "model's rate (one HPA metric each).")
    if any("unmeasured" in v for v in sharing.values()):
        why += (" Where `serving profile --corun` did not measure a pair, every model holds its target both with "
                "batches taking turns on the GPU and with processor sharing at no gain.")
    if req.spot_survival:
        why += (" Spot survival: every Deployment holds each model's target on its other replicas when any one of "
                "its spot pools is lost.")
    try:
        pkg_version = version("gpufleet")
    except PackageNotFoundError:
        pkg_version = "unknown"
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), gpufleet_version=pkg_version,
        request=PlanRequest(qps=req.qps, p99_ms=req.p99_ms, model=req.model, region=catalog.region,
                            gpus=sorted({p.gpu for p in pools}), capacity_types=list(req.capacity_types),
                            routing=req.routing, max_spot_share=req.max_spot_share, spot_survival=req.spot_survival,
                            survival_p99_ms=None, horizon_months=req.horizon_months, overhead_ms=req.overhead_ms,
                            overhead_source=req.overhead_source, min_replicas=req.min_replicas,
                            max_instances_per_pool=req.max_instances_per_pool,
                            environment=req.environment, min_replicas_per_gpu=req.min_replicas_per_gpu,
                            catalog_as_of=catalog.as_of, mig=req.mig,
                            calibration=None if req.calibration is None else str(req.calibration)),
        pools=pool_plans, deployments=deployments, predicted=closest.predicted,
        cost=Cost(usd_per_hour=round(usd, 4), usd_per_month=round(usd * HOURS_PER_MONTH, 2),
                  usd_per_million_inferences=round(usd / (req.qps * 3600.0) * 1e6, 6)),
        solver=SolverReport(solver="HiGHS (highspy), one set-partitioning MILP over candidate sets",
                            status=planned.status, mip_gap=planned.mip_gap,
                            lp_relaxation_usd_per_hour=None if lp is None else round(lp, 4),
                            lp_gap=None if lp is None or usd <= 0 else round((usd - lp) / usd, 6),
                            wall_s=round(planned.wall_s, 4)),
        binding_constraint=Binding(name="the partition into shared Deployments", usd_per_hour_if_relaxed=None),
        runner_up=None, survival=None, sizing=[], autoscaling=spec, why=why,
        mix=MixPlan(models=[MixModel(model=d.model, qps=d.qps, p99_ms=d.p99_ms,
                                     calibration=str(cals[d.model][0]) if d.model in cals else None)
                            for d in demands],
                    separate_usd_per_hour=round(planned.separate_usd_per_hour, 4), saving=round(planned.saving, 6),
                    partitions_evaluated=max(planned.milps, 1), bundles_evaluated=planned.bundles_evaluated,
                    gpu_sharing=sharing, lp_bound_usd_per_hour=None if lp is None else round(lp, 4)))


def _solo_sizing(req: RecommendRequest, demands: list[ModelDemand], profiles: dict, gpus: set[str], cals: dict,
                 spec, workers) -> tuple[dict, dict]:
    """Per model and GPU type: the replica model (calibrated on the calibration's GPU) and its sizing alone, as a
    point plan sizes it (:func:`planner.sizing.size_gpu`: the best config at the target, the HPA target, the
    safe end of a calibrated capacity)."""
    keys = sorted((d.model, g) for d in demands for g in gpus if (d.model, g) in profiles)
    by_name = {d.model: d for d in demands}
    calibrated = {k: calibrated_model(profiles[k], cals[k[0]][1], req.confidence) if k[0] in cals else None
                  for k in keys}
    replicas = {k: calibrated[k].replica() if calibrated[k] else replica_model(profiles[k], None) for k in keys}
    searches = {k: CapacitySearch(replicas[k]) for k in keys}
    with SharedPool({"searches": searches}, workers if len(keys) >= PARALLEL_AT_LEAST else 1) as pool:
        caps = pool.map(_best, [(k, by_name[k[0]].budget_s * 1000.0, req.exhaustive) for k in keys])
    solo = {}
    for k, cap in zip(keys, caps):
        if cap is None:
            continue
        d = by_name[k[0]]
        z = size_gpu(searches[k], cap, spec, d.p99_ms, None, d.overhead_ms, False, calibrated[k])
        check_capacity_spread(req.max_capacity_spread_pct, cals[k[0]][0] if k[0] in cals else None, k[0],
                              d.p99_ms, z)
        if z.sizing_rate > 0:
            solo[k] = z
    return replicas, solo


def mix_overheads(req: RecommendRequest, names: list[str], cals: dict) -> dict[str, float]:
    """Each model's overhead: ``--overhead-ms`` when given, else its calibration's, else the default."""
    return {m: req.overhead_ms if req.overhead_ms is not None else cals[m][1].overhead_ms if m in cals else
            DEFAULT_OVERHEAD_MS for m in names}


def overhead_source(names: list[str], cals: dict) -> str:
    """Where each model's overhead comes from, for the plan's ``overhead_source``."""
    fitted = [f"{m}: fitted by planner fit on {c.created_at[:10]} from {len(c.steps)} stress steps"
              for m, (_, c) in cals.items()]
    rest = [m for m in names if m not in cals]
    return "; ".join(fitted + ([f"{'the other models' if len(rest) > 1 else rest[0]}: {DEFAULT_OVERHEAD_MS:g} ms, "
                                f"{OVERHEAD_ASSUMED}"] if rest else []))


def _best(shared: dict, job):
    key, budget_ms, exhaustive = job
    return shared["searches"][key].best(budget_ms, exhaustive=exhaustive)


def shared_name(models: tuple[str, ...], gpu: str) -> str:
    return f"{'+'.join(models)}@{gpu}"


def _deployments(part: Part, by_name: dict[str, ModelDemand], replicas: dict, pools, spec,
                 sharing: dict[str, str], profiles: dict) -> list[Deployment]:
    """The set's Deployments, one entry per model and GPU type; a single model's as a point plan writes it."""
    out = []
    for bundle in part.bundles:
        g, reps = bundle.gpu, part.replicas[bundle.gpu]
        holds, total = part.weights[g]
        models = [replicas[(m, g)] for m in part.models]
        busy = sum(by_name[m].qps * holds / total / reps / rm.saturation_rate(c)
                   for m, rm, c in zip(part.models, models, bundle.configs))
        floor = sum(p.gpus_per_instance * part.counts.get(p.name, 0) for p in pools
                    if p.gpu == g and not p.is_spot)
        name = shared_name(part.models, g) if len(part.models) > 1 else None
        if name is not None:
            speed = corun_speed(part.models, g, 2, profiles)
            sharing[name] = (f"measured: {speed[2]:g}x one batch's speed with batches of two models in flight "
                             "(serving profile --corun)" if speed is not None else
                             "unmeasured: holds both with batches taking turns and with processor sharing at no gain")
        for i, m in enumerate(part.models):
            d, run, cfg = by_name[m], part.results[g][i], bundle.configs[i]
            p50, p90, p99 = (run.quantile_ms(q) + d.overhead_ms for q in (0.5, 0.9, 0.99))
            traffic = d.qps * holds / total
            most = bundle.max_rates[i]
            target = spec.sizing_rate(most) if spec.lag_aware else traffic / reps
            out.append(Deployment(
                gpu=g, model=m, replicas=reps, routing_weight=round(traffic / d.qps, 6),
                rate_per_replica=round(traffic / reps, 3), triton=queue_bound(models[i], cfg, d.budget_s),
                predicted=LatencyPrediction(p50_ms=round(p50, 3), p90_ms=round(p90, 3), p99_ms=round(p99, 3),
                                            utilization=round(min(busy, 1.0), 4),
                                            mean_batch_size=round(run.mean_batch_size, 2)),
                autoscaling=Autoscaling(
                    target_rate_per_replica=round(target, 3), max_rate_per_replica=round(most, 3),
                    refused_share_max=REFUSED_SHARE_MAX,
                    min_replicas=max(floor, 1), max_replicas=max(2 * reps, reps + 1),
                    basis=spec.basis(most) + (f" Co-located in {name}: max_rate is this model's share of the "
                                              "largest traffic share one replica holds with every model of it "
                                              "within its target." if name else "")),
                profile_origin=f"{profiles[(m, g)].origin.kind} ({profiles[(m, g)].origin.date})", shared=name))
    return out
