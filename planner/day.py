"""Plan over a day, not a point: ``planner recommend --qps-curve``.

Traffic from cameras follows the day. The fleet is chosen for the whole curve at once: reserved instances are held
every hour (and paid every hour), on-demand and spot instances only in the planning periods that need them, by one
mixed-integer program whose periods share the reserved counts (:func:`solve_day`). Each period must hold the curve's
peak inside it at the replicas' sizing rate (the HPA target), under the same constraints as a point plan (one
builder, :func:`planner.setcover.solve_milp`, makes both). Under weighted routing the traffic share of each GPU
type is one weight for the whole day, as infra deploys fixed route weights.

The plan is then replayed through the HPA it configures (:func:`replay`): the metric's delay, the HPA's tolerance,
sync period and scale-down stabilization, and the node scale-up lag, with each replica's latency from the batcher
simulation at its current rate. A period whose replayed P99 misses the target tightens that GPU type's sizing and
the day is solved again, so the headroom is sized by the replay, not assumed.

Compared, at the same P99 target: (a) the peak's fleet all day on on-demand, (b) the peak's fleet on reserved terms,
(c) today's point plan at the curve's mean, held all day (its replayed P99 says what it would do at the peak).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.demand import DemandCurve, read_demand_curve
from gpufleet.contracts.plan import (Binding, Cost, DayComparison, DayPeriod, DayPlan, DayPool, Plan, RampCheck,
                                     ReservedThreshold, SolverReport)
from planner.catalog import HOURS_PER_MONTH, Pool
from planner.errors import PlannerInputError
from planner.optimize import (POINT_MODEL, Infeasible, Problem, Solution, binding_constraint, replicas_by_gpu,
                              set_cover_problem, solve)
from planner.pipeline import (MAX_ROUNDS, TIGHTEN, VERIFY_REQUESTS, VERIFY_SEED, RecommendRequest, Sized,
                              describe_pools, finish, pool_plan, prepare, verify_at, why_no_fleet)
from planner.setcover import SetCoverProblem, solve_milp, useful_pools
from planner.simulate import Workload
from planner.sizing import GpuSizing, fleet_problem
from planner.survival import mixture_quantile

DEFAULT_PERIOD_S = 3600.0  # the fleet changes at most hourly: the plan reads per hour, and node churn stays low
MIN_SPAN_S = 3600.0
HOURS_PER_DAY = 24.0
# Kubernetes' HPA: --horizontal-pod-autoscaler-downscale-stabilization default (EKS does not change it).
SCALE_DOWN_STABILIZATION_S = 300.0
# The replay's latency table: per-replica rates from LATENCY_GRID_LOW to LATENCY_GRID_HIGH of saturation, each
# simulated once; a step's rate is rounded up to the next grid point (the safe side). Past the top, the replica's
# queue grows without bound and its requests count as missing the target.
LATENCY_GRID_POINTS = 40
LATENCY_GRID_LOW = 0.02
LATENCY_GRID_HIGH = 0.98
LATENCY_GRID_REQUESTS = 8_000
REPLAY_QUANTILE = 0.99
MIXTURE_TIE_MARGIN = 1e-9  # see _mixture_p99
DAY_SOLVER_TIME_LIMIT_S = 30.0
# The day MILP stops within 0.01% of its proven bound (cents on a day of hundreds of dollars; the plan reports the
# gap): its periods repeat the point problem's near-symmetric choices between GPU types and pools, and closing the
# last hundredth of a percent took HiGHS seconds more.
DAY_MIP_REL_GAP = 1e-4
BOUND_DOUBLINGS = 4
WEIGHT_EPS = 1e-9
PEAK_POINT = "point plan at the peak"


def read_day_curve(path: Path | str, step_min: float | None = None) -> DemandCurve:
    """The demand contract's one reader with a day plan's rules: the planner's input error, at least
    :data:`MIN_SPAN_S` of curve, the step from ``--curve-step-min`` where the file has no times."""
    return read_demand_curve(path, step_min, error=PlannerInputError, min_span_s=MIN_SPAN_S,
                             step_option="--curve-step-min")


# --------------------------------------------------------------------------------------------------------------
# The commitment decision: one MILP over every period, reserved counts shared.

@dataclass(frozen=True)
class DaySolution:
    counts: list[dict[str, int]]  # per period: pool name -> instances held (reserved ones in every period)
    traffic: list[dict[str, float]]  # per period: GPU type -> req/s
    weights: dict[str, float]  # GPU type -> share of traffic (weighted routing; else the peak period's shares)
    usd: float  # over the whole curve
    status: str
    mip_gap: float
    lp_bound: float | None
    wall_s: float


def _is_reserved(p: Pool) -> bool:
    return p.capacity_type.startswith("reserved")


def _day_problem(problem: Problem, demand: list[float], hours: list[float], link_in_use: bool) -> SetCoverProblem:
    """The day as the one fleet MILP's problem: periods weighted by their hours, reserved counts one number held
    (and paid) over every hour, under weighted routing one route weight per GPU type all day, as infra deploys fixed
    route weights, and its one in-use mark over the busy periods; pools dominated within a GPU type and role dropped
    (:func:`planner.setcover.useful_pools`, ``whole-fraction``)."""
    return set_cover_problem(problem, demand=tuple(demand), weights=tuple(hours), horizon=float(sum(hours)),
                             share_reserved=True, one_route=problem.routing == "weighted", link_in_use=link_in_use,
                             prune="whole-fraction")


def solve_day(problem: Problem, demand: list[float], hours: list[float], *, relax: bool = False,
              time_limit_s: float = DAY_SOLVER_TIME_LIMIT_S, link_in_use: bool = True) -> DaySolution:
    """Least cost over the periods: reserved pools' counts are one number held in every period, the others one per
    period. ``problem`` carries the pools, per-replica rates and constraints (its ``qps`` is not read).
    ``link_in_use=False`` leaves out the one in-use mark per GPU type (the check that it changes no optimum)."""
    full = problem
    problem = replace(problem, pools=useful_pools(_day_problem(problem, demand, hours, link_in_use)))
    pools = problem.pools
    # Instance bounds, per period: an optimum spends no more in a period on one elastic pool than the cheapest
    # feasible one-pool fleet at that period's rate costs, nor holds more of a reserved pool than that at the peak;
    # plus a replica floor's worth (reserved instances of another type can leave a type short of its floor). Doubled
    # and re-solved while a count sits on its bound, so the bound never decides the answer.
    extra = [math.ceil(max(problem.min_replicas, problem.min_replicas_per_gpu) / p.gpus_per_instance)
             if problem.pool_limit(p) is None else 0 for p in pools]
    # One cheapest one-pool fleet per rate (Problem.upper_bound would find it again for every pool).
    rates = {q: replace(problem, qps=q) for q in {*demand, max(demand)}}
    incumbents = {q: at.incumbent_cost() for q, at in rates.items()}
    peak = max(demand)

    def bound(p: Pool, q: float) -> int:
        q = peak if _is_reserved(p) else q
        return rates[q].upper_bound(p, incumbents[q])

    ub = np.array([[bound(p, q) + e for p, e in zip(pools, extra)] for q in demand], dtype=float)
    for _ in range(BOUND_DOUBLINGS):
        sol = _solve_day(problem, demand, hours, relax, time_limit_s, ub, link_in_use)
        at_bound = [j for j, p in enumerate(pools) if problem.pool_limit(p) is None
                    and any(c[p.name] >= ub[t, j] - 0.5 for t, c in enumerate(sol.counts))]
        if relax or not at_bound:
            break
        ub[:, at_bound] *= 2
    names = [p.name for p in full.pools]
    return replace(sol, counts=[{n: c.get(n, 0) for n in names} for c in sol.counts])


def _solve_day(problem: Problem, demand, hours, relax, time_limit_s, ub, link_in_use) -> DaySolution:
    """One solve of the day's MILP within the instance bounds ``ub`` (period x pool of ``problem.pools``)."""
    pools = problem.pools
    gpus = problem.gpus()
    col = {p.name: j for j, p in enumerate(pools)}
    r = solve_milp(replace(_day_problem(problem, demand, hours, link_in_use), prune="none"), relax=relax,
                   time_limit_s=time_limit_s, mip_rel_gap=DAY_MIP_REL_GAP, bound=lambda c, p, t: ub[t, col[p.name]])
    total_hours = float(sum(hours))
    held = {name: vals for by_pool in r.counts.values() for name, vals in by_pool.items()}
    counts = [{p.name: held[p.name][t] for p in pools} for t in range(len(demand))]
    traffic = [{g: r.traffic[(POINT_MODEL,), g][t] for g in gpus} for t in range(len(demand))]
    peak = int(np.argmax(demand))
    if r.route is not None:
        weights = {g: r.route[(POINT_MODEL,), g] for g in gpus}
    else:
        weights = {g: traffic[peak][g] / demand[peak] if demand[peak] > 0 else 0.0 for g in gpus}
    # HiGHS leaves shares of 1e-15 on types it does not use: those are no route.
    weights = {g: (w if w > WEIGHT_EPS else 0.0) for g, w in weights.items()}
    total = sum(weights.values()) or 1.0
    weights = {g: w / total for g, w in weights.items()}
    usd = r.objective if relax else sum(
        (p.usd_per_hour * counts[0][p.name] * total_hours) if _is_reserved(p) else
        sum(p.usd_per_hour * counts[t][p.name] * hours[t] for t in range(len(demand)))
        for p in pools)
    return DaySolution(counts, traffic, weights, usd, r.status, r.mip_gap, None, r.wall_s)


# --------------------------------------------------------------------------------------------------------------
# The ramp: the HPA replayed against the curve.

@dataclass(frozen=True)
class LatencyTable:
    """Per-replica latency samples (ms, end to end) at a grid of per-replica rates, for one GPU type's config."""

    rates: np.ndarray
    samples: list[np.ndarray]

    @classmethod
    def build(cls, sized: Sized, gpu: str, overhead_ms: float) -> "LatencyTable":
        search = sized.searches[gpu]
        cfg = sized.caps[gpu].config
        saturation = search.model.saturation_rate(cfg)
        rates = np.linspace(LATENCY_GRID_LOW, LATENCY_GRID_HIGH, LATENCY_GRID_POINTS) * saturation
        work = Workload.poisson(LATENCY_GRID_REQUESTS, seed=VERIFY_SEED)
        samples = [work.run(r, cfg, search.model.service, search.model.speedup).latency_s * 1000.0 + overhead_ms
                   for r in rates]
        return cls(rates, samples)

    @cached_property
    def sorted_samples(self) -> list[np.ndarray]:
        """Each grid point's samples in increasing order, sorted once for every P99 the replays read from them."""
        return [np.sort(s) for s in self.samples]


class LatencyTables(dict):
    """GPU type -> :class:`LatencyTable`, each built when first read (only the types a fleet uses are simulated)."""

    def __init__(self, sized: Sized, overhead_ms: float):
        super().__init__()
        self.sized, self.overhead_ms = sized, overhead_ms

    def __missing__(self, gpu: str) -> LatencyTable:
        table = self[gpu] = LatencyTable.build(self.sized, gpu, self.overhead_ms)
        return table


@dataclass(frozen=True)
class Replay:
    times: np.ndarray  # s, every HPA sync
    rate: dict[str, np.ndarray]  # GPU type -> req/s
    serving: dict[str, np.ndarray]  # replicas serving
    billed: dict[str, np.ndarray]  # replicas serving or starting (their nodes are paid for)
    grid: dict[str, np.ndarray]  # latency-table index per step

    def p99_ms(self, tables: dict[str, LatencyTable], start_s: float, end_s: float) -> float | None:
        """P99 over the requests in [start, end): the traffic-weighted mixture of each step's latency; None when
        more than 1% of them met an overloaded replica."""
        sel = (self.times >= start_s) & (self.times < end_s)
        # Each sum adds its terms one by one in time order, GPU type after GPU type (cumulative sums and bincount
        # add sequentially), so every figure is the same float a loop over the steps gives.
        steps, over, weights = [], [], {}
        for g, rate in self.rate.items():
            table = tables[g]
            ks, rs = self.grid[g][sel], rate[sel]
            steps.append(rs)
            past = ks >= len(table.rates)
            over.append(rs[past])
            ks, rs = ks[~past], rs[~past]
            if len(ks):
                sums = np.bincount(ks, weights=rs)
                for k in np.flatnonzero(np.bincount(ks)):
                    weights[(g, int(k))] = float(sums[k])
        total = _sequential_sum(steps)
        if total <= 0:
            return 0.0
        if _sequential_sum(over) > 0.01 * total:
            return None
        keys = sorted(weights)
        return _mixture_p99([tables[g] for g, _ in keys], [k for _, k in keys], [weights[x] for x in keys])


def _sequential_sum(parts: list[np.ndarray]) -> float:
    """0.0 plus every term in order, one addition at a time (not numpy's pairwise sum)."""
    terms = np.concatenate(parts) if parts else np.zeros(0)
    return float(np.add.accumulate(terms)[-1]) if len(terms) else 0.0


def _mixture_p99(tables: list[LatencyTable], grid: list[int], weights: list[float]) -> float:
    """:func:`planner.survival.mixture_quantile` at 0.99 of the tables' samples, from their sorted copies.

    Merging the presorted runs orders the latencies as sorting the raw samples does, up to the order within runs of
    equal latencies (a replica at light load repeats its service-time table's values). That order changes only the
    rounding of the cumulative weights, and only where a run mixes weights: where none does, the sums are the same
    floats. Where one does, they differ by at most the length times the unit roundoff (under 1e-10 here), so when
    the cumulative weight is more than ``MIXTURE_TIE_MARGIN`` from the quantile level at both ends of the answer's run
    of equal values, both orders give the same answer; otherwise the raw samples go through ``mixture_quantile``."""
    parts = [(t, k, w) for t, k, w in zip(tables, grid, weights) if len(t.samples[k]) and w > 0]
    if not parts:
        return math.nan
    lat = np.concatenate([t.sorted_samples[k] for t, k, _ in parts])
    order = np.argsort(lat, kind="stable")  # runs already sorted: a merge
    lat = lat[order]
    wt = np.concatenate([np.full(len(t.samples[k]), w / len(t.samples[k])) for t, k, w in parts])
    ordered = wt[order]
    cdf = np.cumsum(ordered) / wt.sum()
    at = int(np.searchsorted(cdf, REPLAY_QUANTILE))
    if bool(np.all((lat[1:] != lat[:-1]) | (ordered[1:] == ordered[:-1]))):
        # Every run of equal latencies carries equal weights: any order within it sums the same terms in turn.
        return float(lat[min(at, len(lat) - 1)])
    if at < len(lat):
        first = int(np.searchsorted(lat, lat[at], side="left"))
        last = int(np.searchsorted(lat, lat[at], side="right")) - 1
        if ((first == 0 or cdf[first - 1] < REPLAY_QUANTILE - MIXTURE_TIE_MARGIN)
                and cdf[last] >= REPLAY_QUANTILE + MIXTURE_TIE_MARGIN):
            return float(lat[at])
    return mixture_quantile([t.samples[k] for t, k, _ in parts], [w for _, _, w in parts], REPLAY_QUANTILE)


def replay(curve: DemandCurve, weights: dict[str, float], sizing: dict[str, GpuSizing], spec: AutoscalingSpec,
           start_replicas: dict[str, int], bounds: dict[str, tuple[int, int]], tables: dict[str, LatencyTable]) -> Replay:
    """The HPA of each GPU type's Deployment against the curve, one sync period at a time: it sees the per-replica
    rate ``metric_delay_s`` late, acts only beyond its tolerance, scales down no lower than its highest
    recommendation over the stabilization window, and a replica it adds serves ``scale_up_lag_s`` later."""
    dt = spec.hpa_sync_s
    times = np.arange(0.0, curve.span_s, dt)
    delay = int(round(spec.metric_delay_s / dt))
    window = int(round(SCALE_DOWN_STABILIZATION_S / dt))
    lag = spec.scale_up_lag_s
    out_rate, out_serving, out_billed, out_grid = {}, {}, {}, {}
    for g, w in weights.items():
        if w <= 0:
            continue
        rate = curve.rate_at(times) * w
        target = sizing[g].sizing_rate
        low, high = bounds[g]
        if low == high and start_replicas[g] == low:  # pinned: the HPA can neither add nor remove a replica
            serving = np.full(len(times), float(low))
            per = rate / low if low > 0 else np.full(len(times), np.inf)
            grid = np.searchsorted(tables[g].rates, per, side="left")
            out_rate[g], out_serving[g], out_billed[g], out_grid[g] = rate, serving, serving.copy(), grid
            continue
        serving = np.zeros(len(times))
        billed = np.zeros(len(times))
        ready = start_replicas[g]
        pending: list[tuple[float, int]] = []  # (serves from, count)
        recommendations: list[int] = []
        desired = ready
        for i, t in enumerate(times):
            ready += sum(n for at, n in pending if at <= t)
            pending = [(at, n) for at, n in pending if at > t]
            seen = i - delay
            if seen >= 0 and serving[seen] > 0:
                metric = rate[seen] / serving[seen]
                ratio = metric / target
                recommend = math.ceil(serving[seen] * ratio - 1e-9) if abs(ratio - 1.0) > spec.tolerance else desired
            else:
                recommend = desired
            recommendations.append(min(max(recommend, low), high))
            desired = max(recommendations[-window:])  # scale-up at once; scale-down to the window's highest
            starting = sum(n for _, n in pending)
            if desired > ready + starting:
                pending.append((t + lag, desired - ready - starting))
            elif desired < ready + starting:
                cut = ready + starting - desired
                while cut and pending:  # not-yet-ready pods go first
                    at, n = pending.pop()
                    take = min(n, cut)
                    cut -= take
                    if n > take:
                        pending.append((at, n - take))
                ready -= cut
            serving[i] = ready
            billed[i] = ready + sum(n for _, n in pending)
        per = np.where(serving > 0, rate / np.maximum(serving, 1), np.inf)
        grid = np.searchsorted(tables[g].rates, per, side="left")  # past the top (or no replica): len(rates)
        out_rate[g], out_serving[g], out_billed[g], out_grid[g] = rate, serving, billed, grid
    return Replay(times, out_rate, out_serving, out_billed, out_grid)


# --------------------------------------------------------------------------------------------------------------
# The day plan.

def _point_cost(sized: Sized, sizing: dict[str, GpuSizing], qps: float, allow) -> tuple[float, dict[str, int],
                                                                                           Problem] | None:
    pools = tuple(p for p in sized.pools if allow(p))
    if not pools:
        return None
    problem = fleet_problem(pools, sizing, qps, sized.constraints)
    try:
        sol = solve(problem)
    except Infeasible:
        return None
    return sol.usd_per_hour, sol.counts, problem


def recommend_day(req: RecommendRequest, curve: DemandCurve, period_s: float = DEFAULT_PERIOD_S) -> Plan:
    """The day plan: reserved baseline, autoscaled peaks, replayed through the HPA (see the module's doc)."""
    peak = float(curve.qps.max())
    req.qps = peak
    # The ramp the HPA targets absorb: the curve's own steepest rise where it is steeper than the request's (or the
    # calibration's, or the default) ramp. A curve sampled coarsely hides faster bursts inside its rows.
    lag_s = req.scale_up_lag_s if req.scale_up_lag_s is not None else DEFAULT_SCALE_UP_LAG_S
    ramp, ramp_at = curve.fastest_ramp(AutoscalingSpec(scale_up_lag_s=lag_s, ramp_per_min=0.0).reaction_s)
    if req.ramp_per_min is not None:
        req.ramp_per_min = max(req.ramp_per_min, ramp)
    elif req.calibration is None:
        req.ramp_per_min = max(DEFAULT_RAMP_PER_MIN, ramp)
    sized = prepare(req)
    if sized.spec.ramp_per_min is not None and sized.spec.ramp_per_min < ramp:  # the calibration's ramp is gentler
        req.ramp_per_min = ramp
        sized = prepare(req)
    spec = sized.spec
    periods = curve.periods(max(period_s, curve.step_s))
    demand = [p[2] for p in periods]
    hours = [p[1] for p in periods]
    sizing = dict(sized.sizing)
    verify = Workload.poisson(VERIFY_REQUESTS, seed=VERIFY_SEED)
    tables = LatencyTables(sized, req.overhead_ms)
    for _ in range(MAX_ROUNDS):
        problem = fleet_problem(sized.pools, sizing, peak, sized.constraints)
        try:
            day = solve_day(problem, demand, hours)
        except Infeasible:
            raise PlannerInputError(why_no_fleet(problem).replace("at this QPS", "at the curve's peak")) from None
        top = int(np.argmax(demand))
        peak_usd = sum(p.usd_per_hour * day.counts[top][p.name] for p in problem.pools)
        peak_sol = Solution(day.counts[top], day.traffic[top], peak_usd, day.status, day.mip_gap, peak_usd, day.wall_s)
        sized_now = replace(sized, sizing=sizing)
        traffic, reps, results, missed = verify_at(sized_now, problem, peak_sol, verify, req)
        per_period_reps = [replicas_by_gpu(problem.pools, c) for c in day.counts]
        floors = {g: min(r.get(g, 0) for r in per_period_reps) for g in day.weights if day.weights[g] > 0}
        highs = {g: max(r.get(g, 0) for r in per_period_reps) for g in floors}
        bounds = {g: hpa_bounds(floors[g], highs[g]) for g in floors}
        played = replay(curve, day.weights, sizing, spec, {g: max(per_period_reps[0].get(g, 0), bounds[g][0])
                                                           for g in floors}, bounds, tables)
        period_p99 = [played.p99_ms(tables, s, s + h * 3600.0) for s, h, _, _ in periods]
        failing = set(missed)
        through_ramp = played.p99_ms(tables, ramp_at, ramp_at + spec.reaction_s)
        if through_ramp is None or through_ramp > req.p99_ms:
            failing |= set(floors)
        for (s, h, _, _), p99 in zip(periods, period_p99):
            if p99 is None or p99 > req.p99_ms:
                for g in floors:
                    g_p99 = Replay(played.times, {g: played.rate[g]}, {g: played.serving[g]}, {g: played.billed[g]},
                                   {g: played.grid[g]}).p99_ms(tables, s, s + h * 3600.0)
                    if g_p99 is None or g_p99 > req.p99_ms:
                        failing.add(g)
        if not failing:
            break
        for g in failing:
            sizing[g] = sizing[g].tightened(TIGHTEN, spec)
    else:
        raise PlannerInputError(f"infeasible: the HPA replay could not hold P99 <= {req.p99_ms:g} ms through the "
                                f"curve after {MAX_ROUNDS} rounds (GPU types {', '.join(sorted(failing))})")
    try:
        lp = solve_day(problem, demand, hours, relax=True).usd
    except Infeasible:
        lp = None
    sized = replace(sized, sizing=sizing)
    plan = finish(req, sized, problem, peak_sol, traffic, reps, results, verify)
    return _with_day(plan, req, sized, curve, periods, problem, day, lp, played, tables, period_p99, ramp, ramp_at)


def _with_day(plan: Plan, req: RecommendRequest, sized: Sized, curve: DemandCurve, periods, problem: Problem,
              day: DaySolution, lp: float | None, played: Replay, tables, period_p99, ramp: float,
              ramp_at: float) -> Plan:
    pools = problem.pools
    days = curve.days
    usd_day = day.usd / days
    out_periods = []
    replay_usd = 0.0
    for t, ((start, h, q, mean), counts) in enumerate(zip(periods, day.counts)):
        by_cap: dict[str, int] = {}
        for p in pools:
            n = counts[p.name] * p.gpus_per_instance
            if n:
                cap = "reserved" if _is_reserved(p) else p.capacity_type
                by_cap[cap] = by_cap.get(cap, 0) + n
        usd = sum(p.usd_per_hour * counts[p.name] * h for p in pools)
        sel = (played.times >= start) & (played.times < start + h * 3600.0)
        serving = sum(float(played.serving[g][sel].mean()) for g in played.serving) if sel.any() else 0.0
        # The replay's replica-hours beyond the plan's, at the period's price per elastic replica (else on-demand's).
        billed_h = sum(float(played.billed[g][sel].sum()) for g in played.billed) * played_dt(played) / 3600.0
        planned_h = sum(by_cap.values()) * h
        elastic_reps = sum(counts[p.name] * p.gpus_per_instance for p in pools if not _is_reserved(p))
        elastic_usd = sum(p.usd_per_hour * counts[p.name] for p in pools if not _is_reserved(p))
        if elastic_reps:
            per_rep = elastic_usd / elastic_reps
        else:
            per_rep = min((p.usd_per_hour / p.gpus_per_instance for p in pools if p.capacity_type == "on-demand"),
                          default=0.0)
        replay_usd += usd + (billed_h - planned_h) * per_rep
        p99 = period_p99[t]
        out_periods.append(DayPeriod(start_s=start, hours=h, qps=round(q, 3), mean_qps=round(mean, 3),
                                     instances={k: v for k, v in counts.items() if v},
                                     replicas=by_cap, usd=round(usd, 4),
                                     p99_ms=None if p99 is None else round(p99, 3),
                                     replicas_serving=round(serving, 2),
                                     holds_target=p99 is not None and p99 <= req.p99_ms))
    day_pools = []
    for p in pools:
        ns = [c[p.name] for c in day.counts]
        if max(ns) > 0:
            day_pools.append(DayPool(instance_type=p.instance_type, gpu=p.gpu, capacity_type=p.capacity_type,
                                     min_count=min(ns), max_count=max(ns), mig_partition=p.partition))
    comparisons = _comparisons(req, sized, curve, periods, tables)
    thresholds = _reserved_thresholds(pools, curve, day)
    reaction = sized.spec.reaction_s
    ramp_p99 = played.p99_ms(tables, ramp_at, ramp_at + reaction)
    worst = [p for p in period_p99]
    worst_p99 = None if any(p is None for p in worst) else max(worst)
    holds = worst_p99 is not None and worst_p99 <= req.p99_ms
    gap_lp = (day.usd - lp) / day.usd if lp is not None and day.usd > 0 else None
    held = next((c.usd_per_day for c in comparisons if c.name == PEAK_POINT), None)
    saving = None if held is None else held - round(usd_day, 2)
    day_plan = DayPlan(
        curve_source=curve.source, step_s=curve.step_s, period_s=periods[0][1] * 3600.0 if len(periods) > 1 else
        curve.span_s, span_hours=round(curve.span_s / 3600.0, 4),
        routing_weights={g: round(w, 6) for g, w in day.weights.items() if w > 0},
        periods=out_periods, pools=day_pools, usd_per_day=round(usd_day, 2),
        usd_per_month=round(usd_day * HOURS_PER_MONTH / HOURS_PER_DAY, 2),
        replay_usd_per_day=round(replay_usd / days, 2), comparisons=comparisons, reserved_thresholds=thresholds,
        solver=SolverReport(solver="HiGHS (highspy), one MILP over every period", status=day.status,
                            mip_gap=day.mip_gap, lp_relaxation_usd_per_hour=None if lp is None else
                            round(lp / (days * HOURS_PER_DAY), 4), lp_gap=None if gap_lp is None else round(gap_lp, 6),
                            wall_s=round(day.wall_s, 4)),
        ramp=RampCheck(fastest_ramp_per_min=round(ramp, 5), at_s=ramp_at,
                       p99_ms=None if ramp_p99 is None else round(ramp_p99, 3),
                       holds=ramp_p99 is not None and ramp_p99 <= req.p99_ms),
        worst_period_p99_ms=None if worst_p99 is None else round(worst_p99, 3), holds_target=holds,
        p99_target_ms=req.p99_ms, peak_held_usd_per_day=held,
        saving_vs_peak_held_usd_per_day=None if saving is None else round(saving, 2),
        saving_vs_peak_held=None if saving is None or not held else round(saving / held, 4))
    requests_per_day = float(curve.qps.mean()) * 86_400.0
    cost = Cost(usd_per_hour=round(usd_day / HOURS_PER_DAY, 4), usd_per_month=day_plan.usd_per_month,
                usd_per_million_inferences=round(usd_day / requests_per_day * 1e6, 6))
    reserved = [f"{c[p.name]} x {p.instance_type} {p.capacity_type}" for p in pools for c in day.counts[:1]
                if _is_reserved(p) and c[p.name] > 0]
    cheapest = min((c for c in comparisons if c.holds_target), key=lambda c: c.usd_per_day, default=None)
    # The binding constraint of the point problem at the peak, against that problem's own optimum (the day plan's
    # peak hour is not it): one day MILP per relaxed family would say the same over the day at several times the
    # cost of the whole plan.
    point_opt = solve(problem)
    binding, binding_saving = binding_constraint(problem, point_opt)
    peak_t = int(np.argmax([p[2] for p in periods]))
    peak_usd_h = sum(p.usd_per_hour * day.counts[peak_t][p.name] for p in pools)
    # The point plan's opening sentences (its fleet, binding constraint and runner-up) are about the point problem at
    # the peak, whose optimum is not the day plan's peak hour (that one holds reserved instances bought for the whole
    # day): replaced by the day's own.
    point_why = " ".join(s for s in _SENTENCE.split(plan.why) if not s.startswith(_POINT_SENTENCES))
    opening = (f"Peak hour's fleet of this day plan: "
               f"{', '.join(describe_pools(pools, day.counts[peak_t])) or 'none'} at ${peak_usd_h:,.2f}/h, reserved "
               f"instances paid all day. Binding at the peak alone (the point plan at the peak): {binding}")
    opening += (f" (relaxing it would save ${binding_saving:,.2f}/h there)." if binding_saving > 0 else ".")
    at_peak_held = next((c for c in comparisons if c.name == PEAK_POINT), None)
    if at_peak_held is not None:
        opening += (f" The point plan at the peak ({', '.join(at_peak_held.pools)}) at "
                    f"${at_peak_held.usd_per_day / HOURS_PER_DAY:,.2f}/h, held all day: "
                    f"${at_peak_held.usd_per_day:,.2f}/day; {_difference(at_peak_held.usd_per_day, usd_day)}.")
    why = (f" Day plan over {curve.source} ({curve.span_s / 3600:g} h, peak {curve.qps.max():,.0f} req/s, mean "
           f"{curve.qps.mean():,.0f}): ${usd_day:,.2f}/day; reserved all day: {', '.join(reserved) or 'none'}; "
           f"on-demand and spot added per hour as the curve rises (the plan's pools are the peak hour's fleet). "
           f"HPA targets allow for a {100 * (sized.spec.ramp_per_min or 0.0):.2f}%/min rise (the curve's fastest: "
           f"{100 * ramp:.2f}%/min); replayed P99 worst hour "
           f"{'overloaded' if worst_p99 is None else f'{worst_p99:.1f} ms'}.")
    if cheapest is not None and cheapest is not at_peak_held:
        why += (f" The cheapest other way that holds the target, {cheapest.name}: ${cheapest.usd_per_day:,.2f}/day, "
                f"{_difference(cheapest.usd_per_day, usd_day)}.")
    data = plan.model_dump()
    # A day plan has no point runner-up (the point problem's second fleet is no alternative to a day); its binding
    # constraint is the point plan at the peak's, named so, measured against that plan.
    data.update(day=day_plan.model_dump(), cost=cost.model_dump(), why=opening + " " + point_why + why,
                runner_up=None, binding_constraint=Binding(
                    name=f"{binding} (at the peak alone)", usd_per_hour_if_relaxed=round(
                        point_opt.usd_per_hour - binding_saving, 4) if binding_saving > 0 else None).model_dump())
    # Pools the day uses only off the peak are listed too, with no instances at the peak: infra makes their node
    # groups from these facts and sizes them from ``day.pools``.
    at_peak = {(x["instance_type"], x["capacity_type"]) for x in data["pools"]}
    for p in pools:
        if (p.instance_type, p.capacity_type) not in at_peak and any(c[p.name] for c in day.counts):
            data["pools"].append(pool_plan(p, 0, sized.catalog).model_dump())
    per_period_reps = [replicas_by_gpu(pools, c) for c in day.counts]
    for d in data["deployments"]:
        low, high = hpa_bounds(min(r.get(d["gpu"], 0) for r in per_period_reps),
                               max(r.get(d["gpu"], 0) for r in per_period_reps))
        d["autoscaling"].update(min_replicas=low, max_replicas=high)
    return Plan.model_validate(data)


_SENTENCE = re.compile(r"(?<=\.) (?=[A-Z])")
_POINT_SENTENCES = ("Cheapest fleet:", "Binding:", "Runner-up:")


def _difference(other: float, plan: float) -> str:
    """The plan against another way costing ``other``, in words and as a share of ``other`` (as the saving against
    the peak held all day is): never a negative amount."""
    d = other - plan
    pct = f" ({abs(d) / other:.1%})" if other > 0 else ""
    return f"this plan costs ${abs(d):,.2f}/day{pct} {'less' if d >= 0 else 'more'}"


def hpa_bounds(floor: int, peak: int) -> tuple[int, int]:
    """The HPA's min and max replicas for a GPU type of a day plan: the day's fewest, and room above the peak for
    what the plan did not foresee (as a point plan's, twice the planned replicas)."""
    return max(floor, 1), max(2 * peak, peak + 1)


def played_dt(played: Replay) -> float:
    return float(played.times[1] - played.times[0]) if len(played.times) > 1 else 0.0


def _comparisons(req: RecommendRequest, sized: Sized, curve: DemandCurve, periods, tables) -> list[DayComparison]:
    peak = float(curve.qps.max())
    mean = float(curve.qps.mean())
    out = []
    cases = [
        ("peak on-demand", "the peak's fleet held all day on on-demand instances", peak,
         lambda p: p.capacity_type == "on-demand"),
        ("peak reserved", "the peak's fleet held all day on reserved terms", peak, _is_reserved),
        (PEAK_POINT, "the point plan at the curve's peak rate (any capacity type), held all day", peak,
         lambda p: True),
        ("point plan at the mean", "today's single-point plan at the curve's mean rate, held all day", mean,
         lambda p: True),
    ]
    for name, text, qps, allow in cases:
        found = _point_cost(sized, sized.sizing, qps, allow)
        if found is None:
            continue
        usd_h, counts, problem = found
        reps = replicas_by_gpu(problem.pools, counts)
        # Held as bought: the replay with the HPA pinned at the fleet's size.
        weights = _static_weights(problem, counts)
        fixed = {g: (n, n) for g, n in reps.items() if n > 0}
        spec = sized.spec
        played = replay(curve, weights, sized.sizing, spec, {g: n for g, (n, _) in fixed.items()}, fixed, tables)
        p99s = [played.p99_ms(tables, s, s + h * 3600.0) for s, h, _, _ in periods]
        worst = None if any(p is None for p in p99s) else max(p99s)
        # Held to the day plan's own two checks: the replay, and every period's peak at the replicas' sizing rate
        # (what the day MILP asks of each period). The replay alone sees only the curve as given; the sizing rate
        # is what keeps room for the ramp and the bursts inside a row that the curve does not show.
        sized_for = _holds_rate(replace(problem, qps=peak), counts)
        out.append(DayComparison(name=name, description=text, pools=describe_pools(problem.pools, counts),
                                 usd_per_day=round(usd_h * HOURS_PER_DAY, 2),
                                 usd_per_month=round(usd_h * HOURS_PER_MONTH, 2),
                                 worst_period_p99_ms=None if worst is None else round(worst, 3),
                                 holds_peak_at_sizing_rate=sized_for,
                                 holds_target=sized_for and worst is not None and worst <= req.p99_ms))
    return out


def _holds_rate(problem: Problem, counts: dict[str, int]) -> bool:
    """Whether a fleet held as bought carries ``problem.qps`` under the constraints a period of the day MILP puts on
    its rate (:func:`planner.setcover.solve_milp`): every replica at most at its sizing rate, and with spot survival
    what remains after losing any one spot pool at the survival rate."""
    q = problem.qps * (1 - 1e-9)
    n = tuple(counts.get(p.name, 0) for p in problem.pools)
    reps = replicas_by_gpu(problem.pools, counts)
    used = [g for g, r in reps.items() if r > 0]
    if problem.routing == "weighted":
        return sum(problem.holdable(n)[g] for g in used) >= q
    total = sum(reps.values())
    if any(q > problem.capacity[g] * total for g in used):
        return False
    if problem.spot_survival:
        for p, k in zip(problem.pools, n):
            if p.is_spot and k > 0 and any(q > problem.surv_cap(g) * (total - p.gpus_per_instance * k) for g in used):
                return False
    return True


def _static_weights(problem: Problem, counts: dict[str, int]) -> dict[str, float]:
    reps = replicas_by_gpu(problem.pools, counts)
    if problem.routing == "equal":
        total = sum(reps.values())
        return {g: n / total for g, n in reps.items() if n > 0}
    holdable = problem.holdable(tuple(counts[p.name] for p in problem.pools))
    total = sum(v for g, v in holdable.items() if reps.get(g, 0) > 0)
    return {g: holdable[g] / total for g in holdable if reps.get(g, 0) > 0}


def _reserved_thresholds(pools: tuple[Pool, ...], curve: DemandCurve, day: DaySolution) -> list[ReservedThreshold]:
    """Per reserved pool: the busy hours a day at which it costs what on-demand would, and the curve level held
    that long."""
    on_demand = {p.instance_type: p.usd_per_hour for p in pools if p.capacity_type == "on-demand"}
    ordered = np.sort(curve.qps)[::-1]
    out = []
    for p in pools:
        if not _is_reserved(p) or p.instance_type not in on_demand or day.weights.get(p.gpu, 0.0) <= 0:
            continue
        hours = HOURS_PER_DAY * p.usd_per_hour / on_demand[p.instance_type]
        level = None
        if hours < HOURS_PER_DAY:  # else it never pays over the horizon: dearer per hour than on-demand
            rows = max(int(math.ceil(hours * 3600.0 * curve.days / curve.step_s)), 1)
            level = float(ordered[min(rows, len(ordered)) - 1])
        out.append(ReservedThreshold(pool=p.name, usd_per_hour=round(p.usd_per_hour, 4),
                                     on_demand_usd_per_hour=round(on_demand[p.instance_type], 4),
                                     break_even_hours_per_day=round(min(hours, HOURS_PER_DAY), 2),
                                     demand_at_break_even_qps=None if level is None else round(level, 3),
                                     bought=day.counts[0][p.name]))
    return out
