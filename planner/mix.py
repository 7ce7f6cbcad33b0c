"""``planner recommend --mix``: several models, each at its own rate and P99, planned as one fleet.

The mix file is a CSV with one row per model: ``model,qps,p99_ms``. :func:`recommend_mix` finds the cheapest
partition of the models into shared Deployments (:func:`planner.colocate.plan_mix`) and writes it as a plan: one
``deployments`` entry per model and GPU type, the co-located ones naming their shared Deployment, and the
comparison with one Deployment per model in ``mix``.
"""
from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gpufleet.contracts.plan import (Alternative, Autoscaling, Binding, Cost, Deployment, LatencyPrediction, MixModel,
                                     MixPlan, Plan, PlanRequest, SolverReport)
from planner.capacity import ReplicaModel, queue_bound
from planner.catalog import HOURS_PER_MONTH, read_catalog
from planner.colocate import ModelDemand, Part, corun_speed, plan_mix
from planner.errors import PlannerInputError
from planner.optimize import Infeasible
from planner.profiles import load_profiles
from planner.mig import slice_profiles
from planner.pipeline import RecommendRequest, autoscaling_spec, planned_gpus, pool_plan, request_pairing
from planner.sizing import FleetConstraints, fleet_pools

MIX_COLUMNS = ("model", "qps", "p99_ms")
MAX_MIX_MODELS = 5  # 52 partitions; each added model multiplies them (Bell numbers) and the sets to simulate


def read_mix(path: Path | str) -> list[tuple[str, float, float]]:
    """(model, qps, p99_ms) per row of a mix CSV; :class:`PlannerInputError` with one line on any defect."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
            header = tuple(rows[0].keys()) if rows else ()
    except OSError as exc:
        raise PlannerInputError(f"{path}: cannot read mix: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PlannerInputError(f"{path}: not a CSV: {exc}") from None
    missing = [c for c in MIX_COLUMNS if c not in header]
    if not rows or missing:
        raise PlannerInputError(f"{path}: a mix needs a header {','.join(MIX_COLUMNS)} and one row per model"
                                + (f"; missing {', '.join(missing)}" if rows else ""))
    mix, seen = [], set()
    for line, row in enumerate(rows, start=2):
        name = (row["model"] or "").strip()
        try:
            qps, p99 = float(row["qps"]), float(row["p99_ms"])
        except (TypeError, ValueError):
            raise PlannerInputError(f"{path}:{line}: qps and p99_ms must be numbers") from None
        if not name or not all(math.isfinite(v) and v > 0 for v in (qps, p99)):
            raise PlannerInputError(f"{path}:{line}: a model name, and qps and p99_ms > 0")
        if name in seen:
            raise PlannerInputError(f"{path}:{line}: model {name!r} appears twice")
        seen.add(name)
        mix.append((name, qps, p99))
    if len(mix) > MAX_MIX_MODELS:
        raise PlannerInputError(f"{path}: {len(mix)} models; a mix plans up to {MAX_MIX_MODELS} together")
    return mix


def recommend_mix(req: RecommendRequest, mix: list[tuple[str, float, float]], workers: int | None = None) -> Plan:
    """The cheapest fleet for every model of ``mix`` at its own P99, models sharing Triton servers where that is
    cheaper. ``req`` carries the fleet's constraints; its rate, target and model are the mix's."""
    if req.spot_survival or req.calibration is not None or req.max_instances_per_pool is not None \
            or req.routing != "weighted" or req.min_replicas != 1:
        raise PlannerInputError("--mix plans with weighted routing and the production/development floor; "
                                "--spot-survival, --calibration, --max-instances-per-pool, --min-replicas and "
                                "--routing equal are not planned for a mix yet")
    req.qps, req.p99_ms = sum(q for _, q, _ in mix), min(t for _, _, t in mix)
    req.model = "+".join(m for m, _, _ in mix)
    req.check()
    for m, _, t in mix:
        if req.overhead_ms >= t:
            raise PlannerInputError(f"--overhead-ms {req.overhead_ms:g} leaves no latency budget under {m}'s "
                                    f"P99 {t:g} ms")
    spec = autoscaling_spec(req, None)
    catalog = read_catalog(req.catalog)
    profiles = load_profiles(req.profiles, request_pairing(req, catalog, [m for m, _, _ in mix]))
    if req.mig:
        profiles.update(slice_profiles(profiles))
    priced = planned_gpus(catalog, req.mig)
    for g in req.gpus or []:
        if g not in priced:
            raise PlannerInputError(f"unknown GPU '{g}'; the catalog has: {', '.join(sorted(priced))}")
    gpus = set(req.gpus or priced) & priced
    known = sorted({m for m, _ in profiles})
    for m, _, _ in mix:
        if m not in known:
            raise PlannerInputError(f"unknown model '{m}'; profiles exist for: {', '.join(known)}")
        if not any((m, g) in profiles for g in gpus):
            raise PlannerInputError(f"no latency profile for model '{m}' on {', '.join(sorted(gpus))}")
    constraints = FleetConstraints(req.routing, req.max_spot_share, False, 1, None, req.horizon_months,
                                   tuple(req.capacity_types), req.min_replicas_per_gpu, req.mig)
    pools = fleet_pools(catalog, {g for g in gpus if any((m, g) in profiles for m, _, _ in mix)}, constraints)
    if not pools:
        raise PlannerInputError(f"the catalog has no {'/'.join(req.capacity_types)} pools for {', '.join(sorted(gpus))}")
    demands = [ModelDemand(m, q, t, req.overhead_ms) for m, q, t in mix]
    try:
        planned = plan_mix(demands, profiles, pools, max_spot_share=req.max_spot_share,
                           min_replicas_per_gpu=req.min_replicas_per_gpu, spec=spec, workers=workers)
    except Infeasible:
        raise PlannerInputError("infeasible: some model's P99 target cannot be met on any GPU type here, even alone"
                                ) from None

    by_name = {d.model: d for d in demands}
    counts: dict[str, int] = {}
    for part in planned.parts:
        for pool, n in part.counts.items():
            counts[pool] = counts.get(pool, 0) + n
    pool_plans = [pool_plan(p, counts[p.name], catalog) for p in pools if counts.get(p.name)]
    headroom = spec.sizing_rate(1.0)
    deployments, sharing = [], {}
    for part in planned.parts:
        deployments += _deployments(part, by_name, profiles, pools, spec, headroom, sharing)
    closest = max(deployments, key=lambda d: d.predicted.p99_ms / by_name[d.model].p99_ms)
    usd = planned.usd_per_hour
    sols = [p.solution for p in planned.parts]
    lp = planned.lp_bound
    sets = [" + ".join(p.models) for p in planned.parts]
    why = (f"Cheapest partition: {'; '.join(sets)} at ${usd:,.2f}/h against ${planned.separate_usd_per_hour:,.2f}/h "
           f"for one Deployment per model ({100 * planned.saving:.1f}% saved); {planned.partitions} partitions "
           f"costed, {planned.bundles_evaluated} model sets x GPU types simulated. Co-located models keep each one's "
           "best Triton config alone; the shared Deployment scales on every model's rate (one HPA metric each).")
    if any("unmeasured" in v for v in sharing.values()):
        why += (" Where `serving profile --corun` did not measure a pair, every model holds its target both with "
                "batches taking turns on the GPU and with processor sharing at no gain.")
    try:
        pkg_version = version("gpufleet")
    except PackageNotFoundError:
        pkg_version = "unknown"
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), gpufleet_version=pkg_version,
        request=PlanRequest(qps=req.qps, p99_ms=req.p99_ms, model=req.model, region=catalog.region,
                            gpus=sorted({p.gpu for p in pools}), capacity_types=list(req.capacity_types),
                            routing=req.routing, max_spot_share=req.max_spot_share, spot_survival=False,
                            survival_p99_ms=None, horizon_months=req.horizon_months, overhead_ms=req.overhead_ms,
                            overhead_source=req.overhead_source, min_replicas=1, max_instances_per_pool=None,
                            environment=req.environment, min_replicas_per_gpu=req.min_replicas_per_gpu,
                            catalog_as_of=catalog.as_of, calibration=None, mig=req.mig),
        pools=pool_plans, deployments=deployments, predicted=closest.predicted,
        cost=Cost(usd_per_hour=round(usd, 4), usd_per_month=round(usd * HOURS_PER_MONTH, 2),
                  usd_per_million_inferences=round(usd / (req.qps * 3600.0) * 1e6, 6)),
        solver=SolverReport(solver="HiGHS (scipy.optimize.milp), one MILP per shared set",
                            status="; ".join(sorted({s.status for s in sols})),
                            mip_gap=max(s.mip_gap for s in sols),
                            lp_relaxation_usd_per_hour=None if lp is None else round(lp, 4),
                            lp_gap=None if lp is None or usd <= 0 else round((usd - lp) / usd, 6),
                            wall_s=round(sum(s.wall_s for s in sols), 4)),
        binding_constraint=Binding(name="the partition into shared Deployments", usd_per_hour_if_relaxed=None),
        runner_up=None if planned.runner_up is None else Alternative(
            pools=[" + ".join(s) for s in planned.runner_up[0]], usd_per_hour=round(planned.runner_up[1], 4)),
        survival=None, sizing=[], autoscaling=spec, why=why,
        mix=MixPlan(models=[MixModel(model=d.model, qps=d.qps, p99_ms=d.p99_ms) for d in demands],
                    separate_usd_per_hour=round(planned.separate_usd_per_hour, 4), saving=round(planned.saving, 6),
                    partitions_evaluated=planned.partitions, bundles_evaluated=planned.bundles_evaluated,
                    gpu_sharing=sharing, lp_bound_usd_per_hour=None if lp is None else round(lp, 4)))


def shared_name(models: tuple[str, ...], gpu: str) -> str:
    return f"{'+'.join(models)}@{gpu}"


def _deployments(part: Part, by_name: dict[str, ModelDemand], profiles: dict, pools, spec, headroom: float,
                 sharing: dict[str, str]) -> list[Deployment]:
    out = []
    for bundle in part.bundles:
        g, reps = bundle.gpu, part.replicas[bundle.gpu]
        weight = part.solution.traffic[g]  # of each member's traffic: the set is sized in units of it
        share = weight / reps
        models = [ReplicaModel.from_profile(profiles[(m, g)]) for m in part.models]
        busy = sum(share * by_name[m].qps / rm.saturation_rate(c) for m, rm, c in zip(part.models, models,
                                                                                   bundle.configs))
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
            most = d.qps * bundle.share
            out.append(Deployment(
                gpu=g, model=m, replicas=reps, routing_weight=round(weight, 6),
                rate_per_replica=round(share * d.qps, 3), triton=queue_bound(models[i], cfg, d.budget_s),
                predicted=LatencyPrediction(p50_ms=round(p50, 3), p90_ms=round(p90, 3), p99_ms=round(p99, 3),
                                            utilization=round(min(busy, 1.0), 4),
                                            mean_batch_size=round(run.mean_batch_size, 2)),
                autoscaling=Autoscaling(
                    target_rate_per_replica=round(most * headroom, 3), max_rate_per_replica=round(most, 3),
                    min_replicas=max(floor, 1), max_replicas=max(2 * reps, reps + 1),
                    basis=spec.basis(most) + (f" Co-located in {name}: max_rate is this model's share of the "
                                              "largest traffic share one replica holds with every model of it "
                                              "within its target." if name else "")),
                profile_origin=f"{profiles[(m, g)].origin.kind} ({profiles[(m, g)].origin.date})", shared=name))
    return out
