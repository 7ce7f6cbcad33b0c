"""Several models, each over its own day: ``planner recommend --mix FILE`` where the file gives each model a curve.

The mix file's rows are ``model,curve,p99_ms``: ``curve`` names a demand CSV (relative to the mix file) read by
:func:`gpufleet.contracts.demand.read_demand` (the one reader): a one-model curve, or a long-form ``time,model,qps``
file from which the row's model is taken. Every model's curve must have the same step and the same times.

The plan. Periods come from the curves (``--period-min``, the day plan's default). A set of models is either one
model alone -- planned by :func:`planner.day.recommend_day` exactly as ``--qps-curve`` plans it (reserved shared over
the day, elastic per period, replayed through its HPA) -- or several models co-located on one Triton server per GPU,
planned by one set-cover MILP over the periods (:func:`planner.setcover.solve_set_cover`: reserved counts shared by
every period, on-demand and spot per period, one column per GPU type). The partition into sets is chosen by
:func:`planner.setcover.choose_partition` over the sets' own optimal day costs: with no pool limit coupling the
sets' fleets the joint problem decomposes into exactly that (see :func:`planner.colocate.plan_mix`). With pool
limits (``--max-instances-per-pool``, a catalog pool's own) each set's fleet is planned within them; the partition's
cost is then a lower bound on any fleet that holds them together, and where the chosen sets' fleets fit together in
every period it is the optimum. Where they do not, the sets compete for a pool and the plan says which pool and when
(exit 2) rather than plan what this decomposition cannot. Sets are
costed lazily: an unevaluated set enters the master at a lower bound (GPU time at the cheapest per-replica price,
the replica floors, every period); the master is re-solved until every chosen set is costed by its own MILP. The
optimum is then the optimum over the candidate sets (every set up to ``MAX_SET_SIZE`` models), within the MIP gaps.

The shared replica's capacity region. The models' rates do not move in proportion over a day, so a co-located
replica has no one "share". Its capacity region is the set of per-model rate vectors one replica serves with every
member's simulated P99 within its own target; it is downward closed (less of any model's traffic never raises a
P99: fewer arrivals into every batcher and less GPU time taken from the others). We represent it by rays: in
period t the set's rate vector is r_t (each member's peak in the period); the share f_t is the largest scale such
that one replica holds f_t x r_t, found by bisection on the simulation (:func:`planner.colocate.share_bracket`) in
the period's direction u_t = r_t / sum(r_t). Periods with similar directions share one simulation: a bucket holds
periods whose directions lie within ``BUCKET_TOLERANCE`` (relative, per model) of the bucket's first; it is
simulated in the direction e = the members' component-wise maximum of u_t (each model floored at
``MIN_DIRECTION`` of the largest so no simulated rate is 0). e >= u_t component-wise for every period of the
bucket, so a replica that holds s x e holds s x u_t (the region is downward closed): the bucket's share is
conservative for each of its periods, and it loses at most the tolerance against simulating each. Then
f_t = s x ref x min_m(e_m / u_t,m) / sum(r_t) is the fraction of period t's traffic one replica holds, ref the set's largest
total rate of the day, the scale it is simulated at.

Check by simulation. After the MILP, each chosen co-located Deployment is simulated at every period's own rates per
replica (its routed fraction of r_t over its replicas, not the bucket's envelope), every way the GPU may be shared;
a period where a member's P99 misses its target tightens that column's share in that period by
:data:`planner.sizing.TIGHTEN` and the set is solved again (as colocate's verify-and-tighten does for a point).
"""
from __future__ import annotations

import csv
import itertools
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from gpufleet.contracts.demand import DemandCurve, read_demand
from gpufleet.contracts.profile import read_profile
from gpufleet.contracts.plan import (Autoscaling, Binding, Cost, DayComparison, DayPeriod, DayPlan, DayPool,
                                     Deployment, LatencyPrediction, MixModel, MixPlan, Plan, PlanRequest, SolverReport)
from gpufleet.contracts.autoscaling import AutoscalingSpec
from planner.capacity import REFUSED_SHARE_MAX, queue_bound
from planner.catalog import HOURS_PER_MONTH, read_catalog
from planner.colocate import (UNMEASURED_WAYS, ModelDemand, SharedPool, capacity_of, corun_speed, least_per_replica,
                              search_share, simulate_runs)
from planner.day import DAY_MIP_REL_GAP, DEFAULT_PERIOD_S, HOURS_PER_DAY, MIN_SPAN_S, PEAK_POINT, recommend_day
from planner import highs
from planner.errors import PlannerInputError
from planner.mig import slice_profiles
from planner.mix import (MAX_MIX_MODELS, MixRow, mix_calibrations, mix_overheads, overhead_source, recommend_mix,
                         shared_name)
from planner.optimize import Infeasible
from planner.pipeline import RecommendRequest, planned_gpus, pool_plan, request_pairing
from planner.profiles import load_profiles
from planner.setcover import Column, SetCoverProblem, choose_partition, solve_set_cover
from planner.simulate import SimResult
from planner.sizing import (MAX_ROUNDS, TIGHTEN, VERIFY_REQUESTS, VERIFY_SEED, FleetConstraints,
                             calibrated_model, fleet_pools, replica_model)

# Periods whose per-model share of the set's traffic differs by at most 20% (relative) from the bucket's first
# share one simulation; its envelope direction is then at most 20% above the first period's in any model, which the
# share pays for conservatively (a replica is simulated with more of some models than the period sends). Safe at any
# tolerance (the envelope dominates every member period); the tolerance trades cost for simulations: at 10% the
# camera stack's pairs and triples need 13 buckets on average of 24 periods, at 20% 10, at 30% 7.
BUCKET_TOLERANCE = 0.20
MIN_DIRECTION = 0.02  # a member's floor in a simulated direction, of the largest member's rate
# A co-located set's own day MILP stops within the day plan's gap (DAY_MIP_REL_GAP: cents a day), or at this time
# limit with the gap it reached (the plan reports the largest); its periods repeat near-symmetric pool choices.
SET_TIME_LIMIT_S = 5.0
MAX_SET_SIZE = 3  # co-located sets of up to three models (Nexus packs a handful per GPU) ...
ALL_TRIPLES_UP_TO = 4  # ... past four models, pairs only: each set over a day costs ~10 bucket bisections, each
# simulating up to 100k requests where the members' rates differ 20-fold; the 8-model stack's 56 triples took minutes


def read_mix(path: Path | str) -> list[MixRow]:
    """The mix file, one reader for both forms: per row a model, its P99 target (``p99_ms``), and either its rate
    (``qps``: a point mix) or its curve (``curve``: a demand CSV relative to the mix file, read by
    :func:`gpufleet.contracts.demand.read_demand`: a one-model curve, or a long-form ``time,model,qps`` file from
    which the row's model is taken); optionally a ``calibration`` (a ``planner fit`` file of the row's model,
    relative to the mix file; empty for none). Lines starting with ``#`` are comments. Every curve must have the
    same step and times. :class:`PlannerInputError` with one line on any defect."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(line for line in f if not line.lstrip().startswith("#")))
    except OSError as exc:
        raise PlannerInputError(f"{path}: cannot read mix: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PlannerInputError(f"{path}: not a CSV: {exc}") from None
    header = [h.strip() for h in rows[0].keys() if h is not None] if rows else []
    forms = [c for c in ("qps", "curve") if c in header]
    missing = [c for c in ("model", "p99_ms") if c not in header]
    if not rows or missing or len(forms) != 1:
        raise PlannerInputError(
            f"{path}: a mix needs a header model,qps,p99_ms (a rate per model) or model,curve,p99_ms (a curve per "
            "model), optionally calibration, and one row per model"
            + (f"; missing {', '.join(missing)}" if rows and missing else "")
            + ("; give qps or curve, not both" if len(forms) == 2 else ""))
    over_day = forms[0] == "curve"
    out: list[MixRow] = []
    first: tuple[str, DemandCurve] | None = None
    for line, row in enumerate(({(k or "").strip(): (v or "").strip() if isinstance(v, str) else v
                                 for k, v in r.items()} for r in rows), start=2):
        name = row.get("model") or ""
        try:
            p99 = float(row["p99_ms"])
            qps = None if over_day else float(row["qps"])
        except (TypeError, ValueError):
            raise PlannerInputError(f"{path}:{line}: {'p99_ms' if over_day else 'qps and p99_ms'} must be "
                                    f"number{'' if over_day else 's'}") from None
        if not name or not all(math.isfinite(v) and v > 0 for v in (p99, qps or 1.0)) or (over_day and not row["curve"]):
            raise PlannerInputError(f"{path}:{line}: " + ("a model name, a curve file and p99_ms > 0" if over_day else
                                                          "a model name, and qps and p99_ms > 0"))
        if any(m.model == name for m in out):
            raise PlannerInputError(f"{path}:{line}: model {name!r} appears twice")
        cal = path.parent / row["calibration"] if row.get("calibration") else None
        curve = None
        if over_day:
            where = row["curve"]
            curves = read_demand(path.parent / where, error=PlannerInputError, min_span_s=MIN_SPAN_S)
            curve = curves.get(name) if name in curves else curves.get("") if len(curves) == 1 else None
            if curve is None:
                raise PlannerInputError(f"{path}:{line}: {where} has no curve for model {name!r} "
                                        f"(it has {', '.join(repr(m) for m in curves)})")
            if first is None:
                first = (name, curve)
            elif (curve.step_s, len(curve.qps), curve.start_s) != (first[1].step_s, len(first[1].qps),
                                                                   first[1].start_s):
                raise PlannerInputError(f"{path}:{line}: model {name!r}'s curve ({curve.step_s:g} s x {len(curve.qps)} "
                                        f"rows from {curve.start_s or 0:g} s) and {first[0]!r}'s ({first[1].step_s:g} "
                                        f"s x {len(first[1].qps)} from {first[1].start_s or 0:g} s) differ: every "
                                        "model's curve must have the same step and times")
            qps = float(curve.qps.max())
        out.append(MixRow(name, qps, p99, curve, cal))
    if len(out) > MAX_MIX_MODELS:
        raise PlannerInputError(f"{path}: {len(out)} models; a mix plans up to {MAX_MIX_MODELS} together")
    return out


def direction_buckets(directions: np.ndarray) -> list[list[int]]:
    """Periods grouped by direction (rows of ``directions``, each summing to 1): a period joins the first bucket whose
    first period's share of every model is within BUCKET_TOLERANCE of its own, relative."""
    out: list[list[int]] = []
    for t, u in enumerate(directions):
        for b in out:
            ref = directions[b[0]]
            if np.all(np.abs(u - ref) <= BUCKET_TOLERANCE * np.maximum(ref, 1e-12)):
                b.append(t)
                break
        else:
            out.append([t])
    return out


@dataclass
class _Set:
    models: tuple[str, ...]
    columns: list[Column]
    usd_per_day: float | None = None  # its own MILP's optimum
    sol: object = None
    lp_usd_per_day: float | None = None  # its LP relaxation at bounded shares: a lower bound
    bound: float = 0.0  # the GPU-time lower bound


def recommend_mix_day(req: RecommendRequest, mix: list[MixRow], period_s: float = DEFAULT_PERIOD_S,
                      workers: int | None = None, *, partition: list[tuple[str, ...]] | None = None,
                      solo: dict[str, Plan] | None = None) -> Plan:
    """The cheapest fleet for every model of ``mix`` over its own curve at its own P99 (see the module's doc).

    ``partition``: plan this partition of the models (sorted tuples) instead of choosing one, every set of it costed
    (none pruned): the reference the tests enumerate. ``solo``: each model's day plan, when already made (it is
    what :func:`planner.day.recommend_day` returns for the model over its curve).

    Calibrations (:func:`planner.mix.mix_calibrations`): a calibrated model's day plan is the calibrated day plan;
    co-located, it is simulated with the calibration's server costs on the GPU it was fitted on, and a set with it
    holds the fraction of its simulated share that the model's capacity interval keeps at its safe end (as a point
    mix does), the least such fraction of its members."""
    if req.survival_p99_ms is not None:
        raise PlannerInputError("--survival-p99-ms is one bound; a mix holds every model's own target while a spot "
                                "pool is lost (drop --survival-p99-ms)")
    flat = all(np.all(m.curve.qps == m.curve.qps[0]) for m in mix)
    if flat:  # a point: the point mix, exactly
        return recommend_mix(req, [MixRow(m.model, float(m.curve.qps[0]), m.p99_ms, None, m.calibration)
                                   for m in mix], workers)
    t0 = time.perf_counter()
    names = tuple(sorted(m.model for m in mix))
    by_name = {m.model: m for m in mix}
    curve0 = mix[0].curve
    periods = {m.model: m.curve.periods(max(period_s, curve0.step_s)) for m in mix}
    hours = [p[1] for p in periods[mix[0].model]]
    span_h = sum(hours)
    weights = tuple(h / span_h for h in hours)
    T = len(hours)
    peaks = {m: np.array([p[2] for p in periods[m]]) for m in names}
    cals = mix_calibrations(req, mix)
    overhead = mix_overheads(req, list(names), cals)

    catalog = read_catalog(req.catalog)
    profiles = load_profiles(req.profiles, request_pairing(req, catalog, list(names)))  # checks every --profile
    if req.mig:
        profiles.update(slice_profiles(profiles))
    priced = planned_gpus(catalog, req.mig)
    gpus = sorted(set(req.gpus or priced) & priced)
    constraints = FleetConstraints(req.routing, req.max_spot_share, req.spot_survival, req.min_replicas,
                                   req.max_instances_per_pool, req.horizon_months, tuple(req.capacity_types),
                                   req.min_replicas_per_gpu, req.mig)
    pools = fleet_pools(catalog, {g for g in gpus if any((m, g) in profiles for m in names)}, constraints)
    gpus = sorted({p.gpu for p in pools})
    demand = {m: ModelDemand(m, float(peaks[m].max()), by_name[m].p99_ms, overhead[m]) for m in names}
    replica = {(m, g): replica_model(profiles[(m, g)], cals[m][1] if m in cals else None)
               for m in names for g in gpus if (m, g) in profiles}
    keys = sorted(replica)
    # One pool of workers for the whole plan, forked once with the replica models (jobs name them by key).
    with SharedPool({"replica": replica}, workers) as pool:
        # Each model alone over its day: the day plan exactly as --qps-curve makes it (the singleton sets' cost), with
        # the model's own --profile files and calibration.
        solo_plans: dict[str, Plan] = dict(solo or {})
        todo = [m for m in names if m not in solo_plans]
        own = {m: [p for p in req.profiles if read_profile(p).model == m] for m in todo}
        # The models' day plans are independent: one worker each (up to the cores).
        jobs = [(req.but(model=m, p99_ms=by_name[m].p99_ms, qps=float(by_name[m].curve.qps.max()), profiles=own[m],
                         calibration=cals[m][0] if m in cals else None), by_name[m].curve, period_s) for m in todo]
        solo_plans.update(zip(todo, pool.map(_day_plan, jobs)))
        if len(names) == 1:
            return solo_plans[names[0]]
        solo_usd = {m: solo_plans[m].day.usd_per_day for m in names}

        # The HPA the shared Deployments scale on: the day plans' most cautious (the steepest ramp of any model's
        # curve).
        spec = min((p.autoscaling for p in solo_plans.values()), key=lambda a: a.sizing_rate(1.0))
        caps = dict(zip(keys, pool.map(capacity_of, [(demand[k[0]], k) for k in keys])))
        caps = {k: c for k, c in caps.items() if c is not None and c.max_rate > 0}
        # A calibrated model's capacity is its interval's safe end at the confidence (planner.sizing.size_gpu): a set
        # with it holds that fraction of its simulated share.
        safety = {}
        for k, cap in caps.items():
            cm = calibrated_model(profiles[k], cals[k[0]][1], req.confidence) if k[0] in cals else None
            if cm is not None:
                ci = cm.capacity(cap.config, by_name[k[0]].p99_ms, overhead[k[0]], nominal=cap.max_rate)
                safety[k] = ci.planned / ci.nominal if ci.nominal > 0 else 0.0
        headroom = spec.sizing_rate(1.0)
        cheapest = {g: least_per_replica([p for p in pools if p.gpu == g], req.max_spot_share) for g in gpus}
        floor = max(req.min_replicas_per_gpu, req.min_replicas)

        def safe(s: tuple[str, ...], g: str) -> float:
            return min(safety.get((m, g), 1.0) for m in s)

        def rates(s: tuple[str, ...]) -> np.ndarray:  # T x members: each member's peak in each period
            return np.stack([peaks[m] for m in s], axis=1)

        def lower_bound(s: tuple[str, ...]) -> float:
            """No fleet of the set costs less: per period, its GPU time at the cheapest per-replica price on the best
            type (the shares' device loads sum to at most 1), or the replica floor."""
            r = rates(s)
            usd = 0.0
            for t in range(T):
                best = math.inf
                for g in gpus:
                    if not all((m, g) in caps for m in s):
                        continue
                    busy = sum(r[t, i] / replica[(m, g)].saturation_rate(caps[(m, g)].config) for i, m in enumerate(s))
                    best = min(best, cheapest[g] * max(busy / headroom, floor))
                usd += weights[t] * best
            return usd * HOURS_PER_DAY

        sets: dict[tuple[str, ...], _Set] = {}
        largest = MAX_SET_SIZE if len(names) <= ALL_TRIPLES_UP_TO else 2
        for n in range(2, min(largest, len(names)) + 1):
            for s in itertools.combinations(names, n):
                if partition is not None:
                    if s in partition:
                        sets[s] = _Set(s, [], bound=lower_bound(s))
                elif (lb := lower_bound(s)) < sum(solo_usd[m] for m in s) - 1e-9:
                    sets[s] = _Set(s, [], bound=lb)
        simulated = [0]
        sharing: dict[str, str] = {}

        def problem(s: tuple[str, ...], cols) -> SetCoverProblem:
            return SetCoverProblem(s, tuple(cols), pools, weights=weights, routing=req.routing,
                                   max_spot_share=req.max_spot_share, spot_survival=req.spot_survival,
                                   min_replicas=req.min_replicas, min_replicas_per_gpu=req.min_replicas_per_gpu,
                                   max_instances_per_pool=req.max_instances_per_pool)

        def evaluate(s: tuple[str, ...]) -> None:
            """The set's columns (one per GPU type holding every member) at upper bounds on their shares, unsimulated:
            per period, the GPU-time bound in the period's direction (the members' device loads sum to at most 1) and
            each member alone (a model sharing the GPU is never faster than alone on it)."""
            r = rates(s)
            cols = []
            for g in gpus:
                if not all((m, g) in caps for m in s):
                    continue
                f = []
                for t in range(T):
                    busy = sum(r[t, i] / replica[(m, g)].saturation_rate(caps[(m, g)].config) for i, m in enumerate(s))
                    alone = min(caps[(m, g)].max_rate / r[t, i] if r[t, i] > 0 else math.inf for i, m in enumerate(s))
                    f.append(min(1.0 / busy if busy > 0 else math.inf, alone, 1e6) * safe(s, g))
                speed = corun_speed(s, g, sum(caps[(m, g)].config.instance_count for m in s), profiles)
                cols.append(Column(s, g, tuple(v * headroom for v in f), tuple(f), False,
                                   {"speed": speed, "configs": tuple(caps[(m, g)].config for m in s)}))
            sets[s].columns = cols

        def simulate(s: tuple[str, ...], cols: list[Column]) -> None:
            """Simulate these columns' shares: one bisection per direction bucket (the module's doc)."""
            r = rates(s)
            total = r.sum(axis=1)
            u = r / total[:, None]
            buckets = direction_buckets(u)
            ref = float(total.max())  # simulate at the day's scale of the set's traffic
            jobs, where = [], []
            for c in cols:
                for b in buckets:
                    e = u[b].max(axis=0)
                    e = np.maximum(e, MIN_DIRECTION * e.max())
                    ds = [ModelDemand(m, float(e[i] * ref), by_name[m].p99_ms, overhead[m]) for i, m in enumerate(s)]
                    jobs.append((ds, [(m, c.gpu) for m in s], list(c.data["configs"]), c.data["speed"]))
                    where.append((c, b, e))
            found = pool.map(_share_of, jobs)
            simulated[0] += len(jobs)
            f = {id(c): [0.0] * T for c in cols}
            for (c, b, e), (lo, _, _) in zip(where, found):
                for t in b:
                    # One replica holds lo x ref x e; period t's traffic is total_t x u_t, so a fraction f of it fits
                    # where f x total_t x u_t <= lo x ref x e in every model: f = lo x ref x min(e / u_t) / total_t.
                    fit = min(e[i] / u[t, i] for i in range(len(s)) if u[t, i] > 0)
                    f[id(c)][t] = min(lo * safe(s, c.gpu) * ref * fit / total[t], 1e6) if total[t] > 0 else 1e6
            for c in cols:
                c.share, c.survival, c.exact = tuple(v * headroom for v in f[id(c)]), tuple(f[id(c)]), True
            sets[s].columns = [c for c in sets[s].columns if not c.exact or all(v > 0 for v in c.survival)]

        def solve_set(s: tuple[str, ...]) -> None:
            """The set's own optimum over the day, one GPU type per shared Deployment: each type's column by its own
            MILP, in the order of their LP bounds (at bounded shares until simulated), stopping where the next bound is
            no less than the best found -- the optimum over the set's columns at their simulated shares."""
            st = sets[s]
            incumbent = sum(solo_usd[m] for m in s) / HOURS_PER_DAY
            order = []
            for c in st.columns:
                try:
                    order.append((solve_set_cover(problem(s, [c]), relax=True, incumbent=incumbent).usd_per_hour, c))
                except Infeasible:
                    continue
            best, st.sol = math.inf, None
            for lp, c in sorted(order, key=lambda x: x[0]):
                if lp * HOURS_PER_DAY >= best - 1e-9:
                    break
                if not c.exact:
                    simulate(s, [c])
                    if c not in st.columns:
                        continue
                try:
                    sol = solve_set_cover(problem(s, [c]), time_limit_s=SET_TIME_LIMIT_S, incumbent=incumbent,
                                          mip_rel_gap=DAY_MIP_REL_GAP)
                except Infeasible:
                    continue
                if sol.usd_per_hour * HOURS_PER_DAY < best:
                    best, st.sol = sol.usd_per_hour * HOURS_PER_DAY, sol
            st.usd_per_day = best

        def master() -> tuple[list[tuple[str, ...]], float]:
            while True:
                costs = {(m,): solo_usd[m] for m in names if partition is None or (m,) in partition}
                for s, st in sets.items():
                    v = (st.usd_per_day if st.usd_per_day is not None else st.lp_usd_per_day
                         if st.lp_usd_per_day is not None else st.bound)
                    if v < math.inf:
                        costs[s] = v
                chosen, usd = choose_partition(names, costs)
                pending = [s for s in chosen if len(s) > 1 and sets[s].usd_per_day is None]
                if not pending:
                    return chosen, usd
                # A chosen set's cost is raised a level at a time, each a lower bound on the next: the GPU-time bound,
                # then its LP relaxation at bounded shares (an LP: fast), then its own MILP to simulated columns only.
                for s in pending:
                    st = sets[s]
                    if st.lp_usd_per_day is None:
                        evaluate(s)
                        try:
                            st.lp_usd_per_day = solve_set_cover(problem(s, st.columns), relax=True, incumbent=sum(
                                solo_usd[m] for m in s) / HOURS_PER_DAY).usd_per_hour * HOURS_PER_DAY if st.columns \
                                else math.inf
                        except Infeasible:
                            st.lp_usd_per_day = math.inf
                    else:
                        solve_set(s)

        checks: dict[tuple[str, ...], dict] = {}
        for _ in range(MAX_ROUNDS):
            chosen, usd_day = master()
            missed = False
            for s in chosen:
                if len(s) == 1:
                    continue
                checks[s] = _check_set(sets[s], rates(s), pools, req.routing, by_name, replica, overhead, T, pool)
                for g, per in checks[s].items():
                    bad = [t for t, (_, lat, _, _) in per.items()
                           if any(p99 > by_name[m].p99_ms for (_, _, p99), m in zip(lat, s))]
                    if bad:
                        missed = True
                        for c in sets[s].columns:
                            if c.gpu == g:
                                c.share = tuple(v * TIGHTEN if t in bad else v for t, v in enumerate(c.share))
                                c.survival = tuple(v * TIGHTEN if t in bad else v for t, v in enumerate(c.survival))
                if missed:
                    solve_set(s)
            if not missed:
                break
        else:
            raise PlannerInputError(f"infeasible: simulation could not confirm every model's P99 in every period after "
                                    f"{MAX_ROUNDS} rounds")

        # Pool limits. Each set's own fleet is planned within them (its day plan or its MILP), so the partition's
        # cost is a lower bound on any fleet that holds them together; where the sets' fleets also fit together, that
        # fleet is the optimum. Where they do not, the sets compete for a pool, which this decomposition does not plan:
        # say so.
        crowded = over_limit(pool_use(chosen, sets, solo_plans, T), pools, req.max_instances_per_pool,
                             [p[0] for p in periods[names[0]]])
        if crowded is not None:
            raise PlannerInputError(f"infeasible as planned: the models' fleets together need {crowded}; a mix over a "
                                    "day plans pool limits where each set's cheapest fleet fits beside the others' "
                                    "(raise --max-instances-per-pool, or plan the mix at its peak rates)")

        # The LP bound over every candidate: the master's LP with each set at its own LP relaxation (unevaluated sets at
        # their lower bound), the singletons at their day plan's LP bound.
        lp_costs = {(m,): solo_plans[m].day.solver.lp_relaxation_usd_per_hour * HOURS_PER_DAY for m in names}
        for s, st in sets.items():
            if st.usd_per_day is None:
                lp_costs[s] = st.lp_usd_per_day if st.lp_usd_per_day is not None else st.bound
            elif st.usd_per_day < math.inf:
                relaxed = solve_set_cover(problem(s, st.columns), relax=True,
                                          incumbent=sum(solo_usd[m] for m in s) / HOURS_PER_DAY)
                lp_costs[s] = relaxed.usd_per_hour * HOURS_PER_DAY
        lp_day = _lp_master(names, lp_costs)
        gaps = [solo_plans[s[0]].solver.mip_gap if len(s) == 1 else sets[s].sol.mip_gap for s in chosen]
        return _plan(req, catalog, pools, mix, names, chosen, sets, solo_plans, checks, spec, replica, profiles,
                     by_name, peaks, periods, hours, usd_day, lp_day, max(gaps), simulated[0], len(sets), sharing,
                     time.perf_counter() - t0, overhead, period_s, cals)


def _day_plan(shared: dict, job) -> Plan:
    req, curve, period_s = job
    return recommend_day(req, curve, period_s)


def _share_of(shared: dict, job):
    """A set's share search in one direction (``job``: demands, replica keys, configs, co-run speed)."""
    ds, keys, cfgs, speed = job
    return search_share((ds, [shared["replica"][k] for k in keys], cfgs, speed, None, 0.0))


def _check_of(shared: dict, job) -> list[SimResult]:
    """:func:`check_replica` with the replica models named by key."""
    ds, keys, cfgs, ways = job
    return check_replica((ds, [shared["replica"][k] for k in keys], cfgs, ways))


def _lp_master(names: tuple[str, ...], costs: dict[tuple[str, ...], float]) -> float:
    """The master problem's LP relaxation: each model in exactly one set, fractions of sets allowed."""
    sets = sorted(costs)
    a = np.array([[1.0 if m in s else 0.0 for s in sets] for m in names])
    rows, cols = np.nonzero(a)
    c = np.array([costs[s] for s in sets])
    res = highs.solve(c, rows, cols, a[rows, cols], np.ones(len(names)), np.ones(len(names)), np.zeros(len(sets)),
                      np.ones(len(sets)), np.zeros(len(sets)))
    return float(c @ res.x) if res.status == 0 else math.nan


def _reps(sol, key, pools, t: int) -> int:
    by = {p.name: p for p in pools}
    return sum(by[p].gpus_per_instance * v[t] for p, v in sol.counts.get(key, {}).items())


def check_replica(job) -> list[SimResult]:
    """One co-located replica at a period's per-replica rates, as the check simulates it: on fresh random numbers
    (:data:`planner.sizing.VERIFY_SEED`, :data:`planner.sizing.VERIFY_REQUESTS` of the busiest model), not the
    share search's, so the check is a sample independent of the search it checks (as a point plan verifies). Per
    model the run of the way of sharing the GPU with the higher P99 (``ways``: (co-run speed, turns) pairs).
    ``job``: (demands at the per-replica rates, replica models, configs, ways)."""
    ds, rms, cfgs, ways = job
    worst: list[SimResult] | None = None
    for speed, turns in ways:
        runs = simulate_runs(ds, rms, cfgs, 1.0, speed, turns, seed=VERIFY_SEED, requests=VERIFY_REQUESTS)
        worst = runs if worst is None else [max(a, b, key=lambda r: r.quantile_ms(0.99)) for a, b in zip(worst, runs)]
    return worst


def _check_set(st: _Set, r: np.ndarray, pools, routing: str, by_name, replica, overhead: dict[str, float], T: int,
               pool: SharedPool):
    """Every used column of the set's fleet simulated at every period's own per-replica rates (:func:`check_replica`):
    GPU type -> period -> (per-replica rates, each member's (P50, P90, P99) in ms end to end, each member's mean
    batch size, the replica's GPU busy fraction: the members' device loads at those rates, summed, at most 1)."""
    sol = st.sol
    jobs, where = [], []
    cols = {c.gpu: c for c in st.columns}
    for key in sol.used():
        g = key[1]
        c = cols[g]
        ways = ((c.data["speed"], False),) if c.data["speed"] is not None else UNMEASURED_WAYS
        for t in range(T):
            n = _reps(sol, key, pools, t)
            if n == 0:
                continue
            if routing == "equal":
                n_all = sum(_reps(sol, k, pools, t) for k in sol.used())
                frac = n / n_all
            else:
                frac = sol.traffic[key][t]
            per = [max(frac * float(r[t, i]) / n, 1e-6) for i in range(len(st.models))]
            ds = [ModelDemand(m, q, by_name[m].p99_ms, overhead[m]) for m, q in zip(st.models, per)]
            jobs.append((ds, [(m, g) for m in st.models], list(c.data["configs"]), ways))
            where.append((g, t, per))
    found = pool.map(_check_of, jobs)
    out: dict[str, dict[int, tuple]] = {}
    for (g, t, per), (_, keys, cfgs, _), runs in zip(where, jobs, found):
        # The GPU's busy fraction as the point mix writes it (planner.mix: each member's rate over its saturation
        # rate with its config, summed): what the members' batches take of the device at these rates.
        busy = min(sum(q / replica[k].saturation_rate(c) for q, k, c in zip(per, keys, cfgs)), 1.0)
        out.setdefault(g, {})[t] = (per, [tuple(v + overhead[m] for v in r.quantiles_ms((0.5, 0.9, 0.99)))
                                          for r, m in zip(runs, st.models)],
                                    [r.mean_batch_size for r in runs], busy)
    return out


def _plan(req, catalog, pools, mix, names, chosen, sets, solo_plans, checks, spec: AutoscalingSpec, replica,
          profiles, by_name, peaks, periods, hours, usd_day, lp_day, gap, simulated, candidates, sharing, wall,
          overhead, period_s, cals) -> Plan:
    T = len(hours)
    span_h = sum(hours)
    price = {p.name: p for p in pools}
    inst = pool_use(chosen, sets, solo_plans, T)
    deployments: list[Deployment] = []
    period_p99: dict[str, list[float | None]] = {m: [None] * T for m in names}
    for s in chosen:
        if len(s) == 1:
            plan = solo_plans[s[0]]
            for t, per in enumerate(plan.day.periods):
                period_p99[s[0]][t] = per.p99_ms
            deployments += plan.deployments
            continue
        sol = sets[s].sol
        for g, per in checks[s].items():
            for t, (_, lat, _, _) in per.items():
                for m, (_, _, p) in zip(s, lat):
                    period_p99[m][t] = max(period_p99[m][t] or 0.0, p)
            name = shared_name(s, g)
            sharing[name] = ("measured co-run speed (serving profile --corun)" if sets[s].columns and
                             next(c for c in sets[s].columns if c.gpu == g).data["speed"] is not None else
                             "unmeasured: holds both with batches taking turns and with processor sharing at no gain")
            key = (s, g)
            top = max(per, key=lambda t: sum(per[t][0]))  # the period this Deployment is busiest
            rates_top, lat_top, batch_top, busy_top = per[top]
            reps_top = _reps(sol, key, pools, top)
            reps_all = [_reps(sol, key, pools, t) for t in range(T)]
            col = next(c for c in sets[s].columns if c.gpu == g)
            for i, m in enumerate(s):
                cfg = col.data["configs"][i]
                most = col.survival[top] * float(peaks[m][top])
                deployments.append(Deployment(
                    gpu=g, model=m, replicas=max(reps_top, 1),
                    routing_weight=round(min(max(sol.traffic[key][top], 0.0), 1.0), 6),
                    rate_per_replica=round(rates_top[i], 3),
                    triton=queue_bound(replica[(m, g)], cfg, (by_name[m].p99_ms - overhead[m]) / 1000.0),
                    # The check's simulation at the busiest period (the one rate_per_replica gives); every
                    # period's P99 is in mix.models[].period_p99_ms.
                    predicted=LatencyPrediction(p50_ms=round(lat_top[i][0], 3), p90_ms=round(lat_top[i][1], 3),
                                                p99_ms=round(lat_top[i][2], 3), utilization=round(busy_top, 4),
                                                mean_batch_size=round(batch_top[i], 2)),
                    autoscaling=Autoscaling(
                        target_rate_per_replica=round(max(col.share[top] * float(peaks[m][top]), 1e-3), 3),
                        max_rate_per_replica=round(max(most, 1e-3), 3), refused_share_max=REFUSED_SHARE_MAX,
                        min_replicas=max(min(v for v in reps_all if v) if any(reps_all) else 1, 1),
                        max_replicas=max(max(reps_all), 1),
                        basis=f"co-located in {name}: this model's rate in the Deployment's busiest period at the share "
                              "one replica holds in that period's mix of rates (simulated at every period's mix)"),
                    profile_origin=f"{profiles[(m, g)].origin.kind} ({profiles[(m, g)].origin.date})", shared=name))
    used_pools = sorted({p for per in inst for p in per})
    held = {p: max(per.get(p, 0) for per in inst) for p in used_pools}
    pool_plans = [pool_plan(price[p], held[p], catalog) for p in used_pools if held[p]]
    day_periods = []
    for t in range(T):
        usd = sum(price[p].usd_per_hour * n for p, n in inst[t].items())
        reps_by_type: dict[str, int] = {}
        for p, n in inst[t].items():
            ct = price[p].capacity_type
            reps_by_type[ct] = reps_by_type.get(ct, 0) + n * price[p].gpus_per_instance
        worst = [period_p99[m][t] for m in names]
        ratio = max((p / by_name[m].p99_ms if p is not None else math.inf) for p, m in zip(worst, names))
        worst_m = max(names, key=lambda m: (period_p99[m][t] or math.inf) / by_name[m].p99_ms)
        day_periods.append(DayPeriod(
            start_s=periods[names[0]][t][0], hours=hours[t], qps=float(sum(peaks[m][t] for m in names)),
            mean_qps=float(sum(periods[m][t][3] for m in names)), instances={p: n for p, n in inst[t].items() if n},
            replicas=reps_by_type, usd=round(usd * hours[t], 4), p99_ms=period_p99[worst_m][t],
            replicas_serving=float(sum(reps_by_type.values())), holds_target=ratio <= 1.0))
    separate = sum(p.day.usd_per_day for p in solo_plans.values())
    at_peak = {m: next((c for c in solo_plans[m].day.comparisons if c.name == PEAK_POINT), None) for m in names}
    # Without a point plan at its peak (none held the peak), a model's own day plan stands in for its cost; such an
    # alternative then is not one that holds.
    peak_held = sum(at_peak[m].usd_per_day if at_peak[m] else solo_plans[m].day.usd_per_day for m in names)
    holds = all(p is not None and p <= by_name[m].p99_ms for m in names for p in period_p99[m])
    usd_h = usd_day / HOURS_PER_DAY
    comparisons = [
        _summed("one day plan per model", "each model alone over its own curve (planner recommend --qps-curve), summed",
                separate, {m: (solo_plans[m].day.worst_period_p99_ms, solo_plans[m].day.holds_target) for m in names},
                by_name),
        _summed("peak held all day, one fleet per model",
                "each model's point plan at its own curve's peak, held all day, summed", peak_held,
                {m: (at_peak[m].worst_period_p99_ms, at_peak[m].holds_target) if at_peak[m] else (None, False)
                 for m in names}, by_name)]
    ramps = [p.day.ramp for p in solo_plans.values()]
    ramp = max(ramps, key=lambda r: r.fastest_ramp_per_min)
    sets_text = "; ".join(" + ".join(s) for s in chosen)
    lines = [f"Cheapest partition over the day: {sets_text} at ${usd_day:,.2f}/day, against ${separate:,.2f}/day for "
             f"one day plan per model ({_saving(separate, usd_day)}) and ${peak_held:,.2f}/day for each model's peak "
             f"held all day ({_saving(peak_held, usd_day)})."]
    lines.append(f"MIP gap {gap:.2%} (the largest of the sets' own MILPs); LP bound ${lp_day:,.2f}/day over "
                 f"{candidates} candidate sets of 2-{MAX_SET_SIZE if len(names) <= ALL_TRIPLES_UP_TO else 2} models (unevaluated ones at their lower bound) and "
                 f"the singletons' day LPs; {simulated} co-located simulations for shares.")
    lines.append("Co-located capacity: per period the largest scale of that period's rates one replica holds at every "
                 f"member's P99 (periods whose mixes lie within {BUCKET_TOLERANCE:.0%} share one simulation at their "
                 "component-wise largest mix, a conservative share); every chosen shared Deployment was then "
                 "simulated at each period's own rates per replica.")
    for m in names:
        vals = ", ".join("miss" if p is None else f"{p:.0f}" for p in period_p99[m])
        lines.append(f"{m} P99 per period (ms, target {by_name[m].p99_ms:g}): {vals}.")
    try:
        pkg_version = version("gpufleet")
    except PackageNotFoundError:
        pkg_version = "unknown"
    closest = max(deployments, key=lambda d: d.predicted.p99_ms / by_name[d.model].p99_ms)
    total_qps = float(sum(peaks[m].max() for m in names))
    solver = SolverReport(solver="HiGHS: one day MILP per model alone (planner.day), one set-cover MILP over the "
                                 "periods per co-located set, a set-partitioning master over the sets",
                          status="optimal", mip_gap=gap, lp_relaxation_usd_per_hour=round(lp_day / HOURS_PER_DAY, 4),
                          lp_gap=round((usd_day - lp_day) / usd_day, 6) if usd_day > 0 else None, wall_s=round(wall, 4))
    lo = {p: min(per.get(p, 0) for per in inst) for p in used_pools}
    day = DayPlan(
        curve_source="; ".join(f"{m.model}: {m.curve.source}" for m in mix), step_s=mix[0].curve.step_s,
        period_s=max(period_s, mix[0].curve.step_s), span_hours=span_h, routing_weights={}, periods=day_periods,
        pools=[DayPool(instance_type=price[p].instance_type, gpu=price[p].gpu, capacity_type=price[p].capacity_type,
                       min_count=lo[p], max_count=held[p], mig_partition=price[p].partition) for p in used_pools],
        usd_per_day=round(usd_day, 2), usd_per_month=round(usd_h * HOURS_PER_MONTH, 2),
        replay_usd_per_day=round(usd_day, 2), comparisons=comparisons, reserved_thresholds=[], solver=solver,
        ramp=ramp, worst_period_p99_ms=None if any(p is None for m in names for p in period_p99[m])
        else max(p for m in names for p in period_p99[m]),
        holds_target=holds, p99_target_ms=min(m.p99_ms for m in mix), peak_held_usd_per_day=round(peak_held, 2),
        saving_vs_peak_held_usd_per_day=round(peak_held - usd_day, 2),
        saving_vs_peak_held=round(1 - usd_day / peak_held, 6) if peak_held > 0 else None)
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), gpufleet_version=pkg_version,
        request=PlanRequest(qps=total_qps, p99_ms=min(m.p99_ms for m in mix), model="+".join(names),
                            region=catalog.region, gpus=sorted({p.gpu for p in pools}),
                            capacity_types=list(req.capacity_types), routing=req.routing,
                            max_spot_share=req.max_spot_share, spot_survival=req.spot_survival, survival_p99_ms=None,
                            horizon_months=req.horizon_months,
                            overhead_ms=req.overhead_ms if req.overhead_ms is not None else max(overhead.values()),
                            overhead_source=(overhead_source(list(names), cals) if cals and req.overhead_ms is None
                                             else req.overhead_source), min_replicas=req.min_replicas,
                            max_instances_per_pool=req.max_instances_per_pool, environment=req.environment,
                            min_replicas_per_gpu=req.min_replicas_per_gpu, catalog_as_of=catalog.as_of, mig=req.mig,
                            calibration=None if req.calibration is None else str(req.calibration)),
        pools=pool_plans, deployments=deployments, predicted=closest.predicted,
        cost=Cost(usd_per_hour=round(usd_h, 4), usd_per_month=round(usd_h * HOURS_PER_MONTH, 2),
                  usd_per_million_inferences=round(usd_h / (total_qps * 3600.0) * 1e6, 6)),
        solver=solver, binding_constraint=Binding(name="the partition into shared Deployments over the day",
                                                  usd_per_hour_if_relaxed=None),
        runner_up=None, survival=None, sizing=[], autoscaling=spec, why=" ".join(lines), day=day,
        mix=MixPlan(models=[MixModel(model=m, qps=float(peaks[m].max()), p99_ms=by_name[m].p99_ms,
                                     period_p99_ms=period_p99[m],
                                     calibration=str(cals[m][0]) if m in cals else None) for m in names],
                    separate_usd_per_hour=round(separate / HOURS_PER_DAY, 4),
                    saving=round(1 - usd_day / separate, 6) if separate > 0 else 0.0,
                    partitions_evaluated=1, bundles_evaluated=simulated, gpu_sharing=sharing,
                    lp_bound_usd_per_hour=round(lp_day / HOURS_PER_DAY, 4)))


def pool_use(chosen, sets, solo_plans, T: int) -> list[dict[str, int]]:
    """Instances per pool in each period, over every chosen set's fleet (a single model's from its day plan)."""
    inst: list[dict[str, int]] = [dict() for _ in range(T)]
    for s in chosen:
        if len(s) == 1:
            for t, per in enumerate(solo_plans[s[0]].day.periods):
                for pool, n in per.instances.items():
                    inst[t][pool] = inst[t].get(pool, 0) + n
            continue
        for by_pool in sets[s].sol.counts.values():
            for pool, vals in by_pool.items():
                for t, n in enumerate(vals):
                    if n:
                        inst[t][pool] = inst[t].get(pool, 0) + n
    return inst


def over_limit(inst: list[dict[str, int]], pools, cap: int | None, starts: list[float]) -> str | None:
    """The first pool whose summed instances exceed its limit (the catalog's, or ``cap``) in some period, said in
    one line; None when every pool is within its limit."""
    for p in pools:
        limit = min([x for x in (p.max_instances, cap) if x is not None], default=None)
        if limit is None:
            continue
        for t, per in enumerate(inst):
            if per.get(p.name, 0) > limit:
                hh, mm = divmod(int(starts[t] // 60) % (24 * 60), 60)
                return f"{per[p.name]} instances of {p.name} at {hh:02d}:{mm:02d}, over its limit of {limit}"
    return None


def _summed(name: str, description: str, usd_day: float, per_model: dict[str, tuple[float | None, bool]],
            by_name) -> DayComparison:
    """An alternative made of one fleet per model, each replayed in its own day plan (planner.day): it holds where
    every model's does, and its worst P99 is that of the model closest to its own target (named; null when some
    model's replica was past saturation, as in a day plan's comparisons)."""
    figures = {m: p for m, (p, _) in per_model.items()}
    worst = None if any(p is None for p in figures.values()) else max(
        figures, key=lambda m: figures[m] / by_name[m].p99_ms)
    if worst is not None:
        description += (f"; worst-period P99 closest to its target: {worst}, {figures[worst]:.1f} of "
                        f"{by_name[worst].p99_ms:g} ms (each model replayed in its own day plan)")
    return DayComparison(name=name, description=description, usd_per_day=round(usd_day, 2),
                         usd_per_month=round(usd_day / HOURS_PER_DAY * HOURS_PER_MONTH, 2),
                         worst_period_p99_ms=None if worst is None else figures[worst],
                         holds_target=all(h for _, h in per_model.values()))


def _saving(other: float, plan: float) -> str:
    """What the plan saves against another way; it never costs more (the other way is one of its candidates)."""
    if plan <= other + 1e-9:
        return f"${other - plan:,.2f}/day saved, {(other - plan) / other:.1%}" if other > 0 else "nothing saved"
    return f"this plan costs ${plan - other:,.2f}/day more"
