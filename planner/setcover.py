"""The fleet MILP, the one builder every plan solves: which models share a Triton replica, and how many of each pool.

The anchors are Nexus' squishy bin packing (Shen et al., SOSP 2019: models packed onto GPUs by each one's share of
a GPU's time at its latency target) and column generation (a master problem over candidate columns, new columns
priced in only where they can lower the cost). Here a *column* is a set of models S on one GPU type g, with the
traffic one replica of it holds at every member's P99 (simulated, or, before it is simulated, an upper bound on it),
in the unit of the periods' ``demand``: a fraction of each member's traffic where the demand is 1 (a mix), requests/s
where it is the rate (a point or a day plan: one model, one singleton column per GPU type). The problem:

Variables, per set S, column c = (S, g), pool p of g, period t:
  ``z[S]``      binary: S is one of the fleet's Deployments (the partition does not change over the periods); a
                constant 1 where the partition is forced (every model in exactly one candidate set);
  ``n[c,p,t]``  integer instances of pool p serving column c in period t (reserved pools: one count for every
                period, as the day plan shares them);
  ``x[c,t]``    continuous: S's traffic routed to g in period t, in the demand's unit;
  ``y[c,t]``    binary: column c has replicas in period t;
  ``w[c]``      (``one_route``) continuous: c's share of S's traffic in every period, as infra's fixed route weights;
  ``l[c]``      (``one_route`` and ``link_in_use``) binary: one in-use mark for c over the periods with traffic;
  ``u[p]``      (``exclude``) binary: pool p is bought in some period, to forbid given sets of pools.

Constraints, per period t at demand d[t]:
  partition     sum over S containing m of z[S] = 1, for every model m;
  routing       sum over g of x[(S,g),t] = d[t] z[S]; x <= d[t] y; y <= z[S]; with ``one_route`` x = d[t] w[c]
                and sum over g of w[(S,g)] = z[S];
  capacity      weighted routing: x[c,t] <= share[c,t] * replicas[c,t]; equal routing (one Service over the set's
                replicas): d[t] y[c,t] <= share[c,t] * (the set's replicas in t);
  floors        replicas[c,t] >= min_replicas_per_gpu * y[c,t]; the set's replicas >= min_replicas * z[S];
  spot share    at most max_spot_share of each column's replicas on spot (each Deployment keeps its own floor);
  survival      when any one spot pool is lost, the column's other replicas hold x at the survival rate (weighted),
                or the set's remaining replicas hold every type's equal share (equal);
  pool limits   sum over columns of n[c,p,t] <= the pool's limit (a pool is one node group, whoever it serves; a
                pool that serves one column is limited by its instance bound).
Objective: sum of n[c,p,t] x price x the period's weight (reserved counts pay ``horizon`` times their price).

One builder (:func:`solve_milp`), three callers: :func:`planner.optimize.solve` (a point: one period of weight 1,
demand the rate), :func:`planner.day.solve_day` (a day: periods weighted by their hours, reserved counts shared,
one route weight per GPU type), and :func:`solve_set_cover` (a mix, a mix over a day).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np

from gpufleet.contracts.plan import Routing
from planner import highs
from planner.catalog import Pool

RESERVED = ("reserved-1yr", "reserved-3yr")  # counts shared by every period (bought for the horizon)
MIP_REL_GAP = 1e-6
# Between fleets of equal cost, the one with fewer models sharing a replica: less interference to be wrong about,
# fewer models an HPA scales together. $/h per model added to a set: below any price difference (prices have four
# decimals), above the MIP gap's slack on fleets of a few $/h.
TIE_BREAK_USD = 1e-5
TOL = 1e-9


class Infeasible(Exception):
    """No fleet satisfies the constraints."""


@dataclass
class Column:
    """A set of models on one GPU type. ``share[t]``: the traffic one replica is sized for in period t (the HPA
    target), in the unit of the problem's ``demand`` (a fraction of each member's traffic where the demand is 1);
    ``survival[t]``: what it may carry while a spot pool is lost. ``exact``: the shares were simulated; otherwise they
    are upper bounds (the planner simulates a column before relying on it)."""

    models: tuple[str, ...]
    gpu: str
    share: tuple[float, ...]
    survival: tuple[float, ...]
    exact: bool = True
    data: dict = field(default_factory=dict, repr=False)  # whatever the caller keeps with it (configs, P99s)

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        return self.models, self.gpu


Prune = Literal["none", "same-shape", "whole-fraction"]


@dataclass(frozen=True)
class SetCoverProblem:
    models: tuple[str, ...]
    columns: tuple[Column, ...]
    pools: tuple[Pool, ...]
    weights: tuple[float, ...] = (1.0,)  # each period's weight in the objective (a share of the time, or its hours)
    routing: Routing = "weighted"
    max_spot_share: float = 1.0
    spot_survival: bool = False
    min_replicas: int = 1  # of each set, summed over its GPU types
    min_replicas_per_gpu: int = 1  # of each column in use
    max_instances_per_pool: int | None = None
    respect_pool_limits: bool = True
    demand: tuple[float, ...] | None = None  # each period's traffic in the columns' unit (None: 1 in every period)
    horizon: float = 1.0  # a reserved count's price multiplier: the weights' sum (it pays in every period)
    share_reserved: bool = True  # reserved pools hold one count for every period
    one_route: bool = False  # one routing share per column for every period (weighted routing's fixed weights)
    link_in_use: bool = True  # with one_route: one in-use mark per column over the periods with traffic
    prune: Prune = "same-shape"  # which dominated pools are dropped before building (:func:`useful_pools`)

    @property
    def periods(self) -> int:
        return len(self.weights)

    def rate(self, t: int) -> float:
        return 1.0 if self.demand is None else self.demand[t]

    def pool_limit(self, p: Pool) -> int | None:
        if not self.respect_pool_limits:
            return None
        limits = [x for x in (p.max_instances, self.max_instances_per_pool) if x is not None]
        return min(limits) if limits else None


@dataclass
class SetCoverSolution:
    sets: list[tuple[str, ...]]
    counts: dict[tuple[tuple[str, ...], str], dict[str, list[int]]]  # column key -> pool -> instances per period
    traffic: dict[tuple[tuple[str, ...], str], list[float]]  # column key -> fraction of the set's traffic per period
    usd_per_hour: float
    status: str
    mip_gap: float
    dual_bound: float
    wall_s: float
    relaxed: bool = False

    def used(self) -> list[tuple[tuple[str, ...], str]]:
        return [k for k, by_pool in self.counts.items() if any(sum(v) > 0 for v in by_pool.values())]


@dataclass(frozen=True)
class MilpResult:
    """What :func:`solve_milp` found, every variable of every column: the callers shape it into their plans'
    solutions. Counts are integers unless relaxed; ``traffic`` is in the demand's unit."""

    pools: tuple[Pool, ...]  # the pools built (after pruning)
    sets: list[tuple[str, ...]]  # the chosen ones (relaxed: any with a positive z)
    counts: dict[tuple[tuple[str, ...], str], dict[str, list]]  # column key -> pool -> per period, every pool of g
    traffic: dict[tuple[tuple[str, ...], str], list[float]]  # column key -> per period
    route: dict[tuple[tuple[str, ...], str], float] | None  # one_route: column key -> share of its set's traffic
    objective: float  # the objective at the solution, its tie-break included
    tie_break: float  # the part of the objective that is the tie-break between sets, no cost
    status: str
    mip_gap: float
    dual_bound: float | None  # HiGHS' proven bound, where it gave one
    wall_s: float
    relaxed: bool


def _role(p: Pool) -> str:
    """Reserved instances are held in every period; on-demand and spot are bought per period, and spot counts
    against the spot share and survival. Pools of one role and GPU type differ in the MILP only by price and
    replicas per instance."""
    return "reserved" if p.capacity_type in RESERVED else p.capacity_type


def useful_pools(problem: SetCoverProblem) -> tuple[Pool, ...]:
    """The pools the MILP is built over, by ``problem.prune``:

    * ``same-shape``: drop a pool another pool dominates (same GPU, GPUs per instance and capacity type, no dearer,
      no limit on either): no optimum needs it. With pool limits in play every pool may be needed, so none is dropped.
    * ``whole-fraction``: pool ``p`` is never needed beside an uncapped pool ``q`` of the same GPU type and role
      (:func:`_role`) whose instances hold a whole fraction of ``p``'s replicas for less: ``p``'s instances, each
      swapped for ``m = replicas(p) / replicas(q)`` of ``q``'s, change no constraint (the same replicas of the same
      type and role) and cost less. So a reserved-3yr pool dearer over the horizon than the same instance's 1-year
      term goes, and so does a 4-GPU instance dearer than four 1-GPU ones. Except spot pools under spot survival,
      where two pools split the loss of one, and capped pools, whose counts are limited.
    * ``none``: every pool."""
    if problem.prune == "none":
        return problem.pools
    if problem.prune == "whole-fraction":
        def dominates(q: Pool, p: Pool) -> bool:
            if q is p or (q.gpu, _role(q)) != (p.gpu, _role(p)) or problem.pool_limit(q) is not None \
                    or p.gpus_per_instance % q.gpus_per_instance:
                return False
            cost = q.usd_per_hour * (p.gpus_per_instance // q.gpus_per_instance)
            return (cost, q.gpus_per_instance, q.name) < (p.usd_per_hour, p.gpus_per_instance, p.name)

        return tuple(p for p in problem.pools
                     if problem.pool_limit(p) is not None or (p.is_spot and problem.spot_survival)
                     or not any(dominates(q, p) for q in problem.pools))
    if problem.max_instances_per_pool is not None or any(p.max_instances is not None for p in problem.pools):
        return problem.pools
    best: dict[tuple, Pool] = {}
    for p in problem.pools:
        k = (p.gpu, p.gpus_per_instance, p.capacity_type, p.partition)
        if k not in best or (p.usd_per_hour, p.name) < (best[k].usd_per_hour, best[k].name):
            best[k] = p
    keep = set(id(p) for p in best.values())
    return tuple(p for p in problem.pools if id(p) in keep)


def solve_set_cover(problem: SetCoverProblem, *, relax: bool = False, time_limit_s: float = 30.0,
                    incumbent: float | None = None, mip_rel_gap: float = MIP_REL_GAP) -> SetCoverSolution:
    """The cheapest partition and fleet. ``incumbent``: the cost of a fleet known feasible (e.g. one Deployment
    per model); it bounds every pool's instances (an optimum spends no more on one pool than the whole fleet
    costs), so the bound cuts off nothing. Without it a generous heuristic bound is used and, as
    :func:`planner.optimize.solve` does, the problem is solved again within the proven one where that is looser.
    A column that holds no traffic in some period is left out."""
    problem = replace(problem, columns=tuple(c for c in problem.columns if all(v > 0 for v in c.share)))
    first = _solve(problem, relax, time_limit_s, incumbent, mip_rel_gap)
    if incumbent is not None or relax:
        return first
    again = _solve(problem, relax, time_limit_s, first.usd_per_hour, mip_rel_gap)
    return again if again.usd_per_hour <= first.usd_per_hour + TOL else first


def _solve(problem: SetCoverProblem, relax: bool, time_limit_s: float, incumbent: float | None,
           mip_rel_gap: float = MIP_REL_GAP) -> SetCoverSolution:
    r = solve_milp(problem, relax=relax, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap,
                   bound=lambda c, p, t: _instance_bound(problem, c, p, incumbent))
    counts = {k: {name: vals for name, vals in by_pool.items() if any(vals)} for k, by_pool in r.counts.items()}
    counts = {k: by_pool for k, by_pool in counts.items() if by_pool}
    traffic = {k: r.traffic[k] for k in counts}
    usd = r.objective - r.tie_break if relax else _cost(problem, r.pools, counts)
    gap = 0.0 if relax else r.mip_gap
    bound = usd if relax else float(r.dual_bound or usd)
    return SetCoverSolution(r.sets, counts, traffic, usd, r.status, gap, bound, r.wall_s, relax)


def solve_milp(problem: SetCoverProblem, *, relax: bool = False, exclude: tuple[frozenset[str], ...] = (),
               bound: Callable[[Column, Pool, int], float], time_limit_s: float = 30.0,
               mip_rel_gap: float = MIP_REL_GAP) -> MilpResult:
    """Build the MILP of the module's doc and solve it with HiGHS. ``bound(column, pool, t)``: the most instances
    of ``pool`` column ``column`` may hold in period ``t`` (a shared reserved count takes period 0's), also the
    big-M of the in-use marks: the caller's proof that the bound cuts off no optimum. ``relax`` drops integrality
    (the LP bound); ``exclude`` forbids fleets that buy exactly one of these sets of pool names.

    Variables are laid out z | shared (reserved) counts | per period: the other counts, pool by pool, then x, then
    y | w | l | u, and the rows period by period, so that one period of singleton columns is the point problem as
    :mod:`planner.optimize` always built it, row for row."""
    pools = useful_pools(problem)
    T = problem.periods
    cols = list(problem.columns)
    sets = sorted({c.models for c in cols})
    si = {s: i for i, s in enumerate(sets)}
    by_set: dict[tuple[str, ...], list[int]] = {}
    for k, c in enumerate(cols):
        by_set.setdefault(c.models, []).append(k)
    # Where every model is in exactly one candidate set, the partition is forced: z is 1, not a variable.
    fixed = all(sum(m in s for s in sets) == 1 for m in problem.models) and \
        all(set(s) <= set(problem.models) for s in sets)
    if fixed and any(m not in {x for s in sets for x in s} for m in problem.models):
        raise Infeasible("a model is in no candidate set")
    mine = [[(i, p) for i, p in enumerate(pools) if p.gpu == c.gpu] for c in cols]
    users = {i: [k for k, c in enumerate(cols) if c.gpu == p.gpu] for i, p in enumerate(pools)}

    names: list[str] = []
    cost: list[float] = []
    ub: list[float] = []
    integ: list[int] = []

    def var(name: str, c: float, upper: float, integer: bool) -> int:
        names.append(name)
        cost.append(c)
        ub.append(upper)
        integ.append(1 if integer else 0)
        return len(names) - 1

    z = {} if fixed else {s: var(f"z{s}", TIE_BREAK_USD * (len(s) - 1), 1.0, True) for s in sets}
    shared = [problem.share_reserved and p.capacity_type in RESERVED for p in pools]
    n: dict[tuple[int, int], list[int]] = {}  # (column, pool) -> per period variable
    big_n: dict[tuple[int, int], list[float]] = {}  # (column, pool) -> per period bound
    for i, p in enumerate(pools):
        for k in users[i]:
            big_n[k, i] = [bound(cols[k], p, t) for t in range(T)]
            if shared[i]:
                j = var(f"n{cols[k].key}{p.name}", p.usd_per_hour * problem.horizon, big_n[k, i][0], True)
                n[k, i] = [j] * T
            else:
                n[k, i] = [-1] * T
    x = [[-1] * T for _ in cols]
    y = [[-1] * T for _ in cols]
    for t, wt in enumerate(problem.weights):
        for i, p in enumerate(pools):
            if not shared[i]:
                for k in users[i]:
                    n[k, i][t] = var(f"n{cols[k].key}{p.name}{t}", p.usd_per_hour * wt, big_n[k, i][t], True)
        for k, c in enumerate(cols):
            x[k][t] = var(f"x{c.key}{t}", 0.0, problem.rate(t), False)
        for k, c in enumerate(cols):
            y[k][t] = var(f"y{c.key}{t}", 0.0, 1.0, True)
    w = [var(f"w{c.key}", 0.0, 1.0, False) for c in cols] if problem.one_route else []
    # One in-use mark per column over the busy periods. Exact where every set's floor min_replicas is no more than a
    # column's, min_replicas_per_gpu: the marks differ between busy periods only where a column with no traffic
    # holds idle replicas in some periods, which only the set's floor could want; every routed column already holds
    # min_replicas_per_gpu >= min_replicas replicas, so dropping the idle ones keeps every constraint and costs no
    # more. (Without it, HiGHS branched on the marks period by period and spent most of a 20,000 req/s day proving
    # what it had found: 4.4 s of MILP against 1.5 s.)
    linked = problem.one_route and problem.routing == "weighted" and problem.link_in_use and \
        problem.min_replicas <= problem.min_replicas_per_gpu
    link = [var(f"l{c.key}", 0.0, 1.0, True) for c in cols] if linked else []
    u = [var(f"u{p.name}", 0.0, 1.0, True) for p in pools] if exclude else []

    rows_i: list[int] = []
    rows_j: list[int] = []
    rows_v: list[float] = []
    lo: list[float] = []
    hi: list[float] = []

    def add(coef: dict[int, float], lower: float = -np.inf, upper: float = np.inf) -> None:
        r = len(lo)
        for j, v in coef.items():
            if v != 0.0:
                rows_i.append(r)
                rows_j.append(j)
                rows_v.append(v)
        lo.append(lower)
        hi.append(upper)

    if not fixed:
        for m in problem.models:
            add({z[s]: 1.0 for s in sets if m in s}, 1.0, 1.0)
    weighted = problem.routing == "weighted"
    for t in range(T):
        d = problem.rate(t)
        reps = [{n[k, i][t]: float(p.gpus_per_instance) for i, p in mine[k]} for k in range(len(cols))]
        set_reps = {s: {j: v for k in by_set[s] for j, v in reps[k].items()} for s in sets}
        for s in sets:
            coef = {x[k][t]: 1.0 for k in by_set[s]}
            if fixed:
                add(coef, d, d)
            else:
                add({z[s]: -d, **coef}, 0.0, 0.0)
        for k, c in enumerate(cols):
            big = sum(big_n[k, i][t] * float(p.gpus_per_instance) for i, p in mine[k]) or 1.0
            add({**reps[k], y[k][t]: -big}, upper=0.0)
            add({x[k][t]: 1.0, y[k][t]: -d}, upper=0.0)
            if not fixed:
                add({y[k][t]: 1.0, z[c.models]: -1.0}, upper=0.0)
            if problem.min_replicas_per_gpu > 1:
                add({**reps[k], y[k][t]: -float(problem.min_replicas_per_gpu)}, lower=0.0)
            share = c.share[t]
            if weighted:
                add({x[k][t]: 1.0, **{j: -share * v for j, v in reps[k].items()}}, upper=0.0)
            else:
                add({y[k][t]: d, **{j: -share * v for j, v in set_reps[c.models].items()}}, upper=0.0)
        if problem.max_spot_share < 1.0:
            sp = problem.max_spot_share
            for k in range(len(cols)):
                add({n[k, i][t]: (1.0 - sp if p.is_spot else -sp) * p.gpus_per_instance for i, p in mine[k]},
                    upper=0.0)
        for s in sets:
            # A forced set always carries its floor; a chosen one where the floor is above the one replica that
            # carrying traffic already implies.
            if fixed:
                add(set_reps[s], lower=float(problem.min_replicas))
            elif problem.min_replicas > 1:
                add({z[s]: -float(problem.min_replicas), **set_reps[s]}, lower=0.0)
        if problem.spot_survival:
            for i, lp in enumerate(pools):
                if not lp.is_spot:
                    continue
                for k2 in users[i]:
                    lost = n[k2, i][t]
                    if weighted:
                        surv = cols[k2].survival[t]
                        add({x[k2][t]: 1.0, **{j: -surv * v for j, v in reps[k2].items() if j != lost}},
                            upper=0.0)
                    else:
                        for k in by_set[cols[k2].models]:
                            surv = cols[k].survival[t]
                            add({y[k][t]: d, **{j: -surv * v for j, v in set_reps[cols[k].models].items()
                                                if j != lost}}, upper=0.0)
        if problem.one_route:
            for k in range(len(cols)):
                add({x[k][t]: 1.0, w[k]: -d}, 0.0, 0.0)
    if problem.one_route:
        for s in sets:
            coef = {w[k]: 1.0 for k in by_set[s]}
            if fixed:
                add(coef, 1.0, 1.0)
            else:
                add({z[s]: -1.0, **coef}, 0.0, 0.0)
    for k in range(len(link)):
        for t in range(T):
            if problem.rate(t) > 0:
                add({y[k][t]: 1.0, link[k]: -1.0}, 0.0, 0.0)
    if exclude:
        for i, p in enumerate(pools):
            held = sorted({j for k in users[i] for j in n[k, i]})
            for j in held:
                big = max(ub[j], 1.0)
                add({j: 1.0, u[i]: -big}, upper=0.0)  # n > 0 => u = 1
            if held:
                add({**{j: 1.0 for j in held}, u[i]: -1.0}, lower=0.0)  # u = 1 => some n >= 1
        for support in exclude:
            add({u[i]: (-1.0 if p.name in support else 1.0) for i, p in enumerate(pools)},
                lower=1.0 - len(support))
    for i, p in enumerate(pools):
        limit = problem.pool_limit(p)
        if limit is None or len(users[i]) < 2:
            continue  # a pool that serves one column is held to its limit by its instance bound
        for t in range(T):
            add({n[k, i][t]: 1.0 for k in users[i]}, upper=float(limit))

    n_var = len(names)
    c_vec = np.array(cost)
    integrality = np.zeros(n_var) if relax else np.array(integ)
    t0 = time.perf_counter()
    res = highs.solve(c_vec, rows_i, rows_j, rows_v, np.array(lo, dtype=float), np.array(hi, dtype=float),
                      np.zeros(n_var), np.array(ub, dtype=float), integrality, time_limit_s=time_limit_s,
                      mip_rel_gap=mip_rel_gap)
    wall = time.perf_counter() - t0
    if res.x is None:
        raise Infeasible(res.message)
    v = res.x
    if fixed:
        chosen = list(sets)
    else:
        chosen = [s for s in sets if (v[z[s]] > TOL if relax else v[z[s]] > 0.5)]
    counts, traffic = {}, {}
    for k, c in enumerate(cols):
        counts[c.key] = {p.name: [float(v[j]) if relax else int(round(v[j])) for j in n[k, i]] for i, p in mine[k]}
        traffic[c.key] = [float(v[x[k][t]]) for t in range(T)]
    route = {c.key: float(v[w[k]]) for k, c in enumerate(cols)} if problem.one_route else None
    objective = float(c_vec @ v)
    tie = float(sum(cost[j] * v[j] for j in z.values()))
    gap = float(res.mip_gap or 0.0)
    dual = res.mip_dual_bound
    status = "optimal" if res.status == 0 else res.message
    return MilpResult(pools, chosen, counts, traffic, route, objective, tie, status, gap,
                      None if dual is None else float(dual), wall, relax)


def _cost(problem: SetCoverProblem, pools, counts) -> float:
    """$/h of integer counts, averaged over the periods (reserved counts pay in full)."""
    price = {p.name: p for p in pools}
    usd = 0.0
    for by_pool in counts.values():
        for name, vals in by_pool.items():
            p = price[name]
            if p.capacity_type in RESERVED:
                usd += p.usd_per_hour * problem.horizon * vals[0]
            else:
                usd += sum(p.usd_per_hour * w * n for w, n in zip(problem.weights, vals))
    return usd


def _instance_bound(problem: SetCoverProblem, c: Column, p: Pool, incumbent: float | None) -> float:
    """Instances of ``p`` one column of an optimum can hold: with a feasible fleet's cost known, no more than that
    cost buys (prices are non-negative); else a generous heuristic the caller re-solves past."""
    limit = problem.pool_limit(p)
    if incumbent is not None and p.usd_per_hour > 0:
        need = math.floor(incumbent / p.usd_per_hour * (1 + 1e-9))
    else:
        least = min(c.share) if problem.spot_survival is False else min(min(c.share), min(c.survival))
        peak = max(problem.rate(t) for t in range(problem.periods))
        need = 4 * math.ceil(peak / (least * p.gpus_per_instance))
        need += math.ceil(max(problem.min_replicas, problem.min_replicas_per_gpu) / p.gpus_per_instance)
    return float(need if limit is None else min(need, limit))


def choose_partition(models: tuple[str, ...], costs: dict[tuple[str, ...], float]) -> tuple[list[tuple[str, ...]], float]:
    """The master problem when the sets' fleets share no constraint (no pool limit couples them): binary z[S],
    each model in exactly one chosen set, minimizing the sets' own optimal costs summed. The joint MILP
    (:func:`solve_set_cover`) then decomposes into it and one small MILP per set, with the same optimum."""
    sets = sorted(costs)
    a = np.zeros((len(models), len(sets)))
    for j, s in enumerate(sets):
        for i, m in enumerate(models):
            a[i, j] = 1.0 if m in s else 0.0
    c = np.array([costs[s] + TIE_BREAK_USD * (len(s) - 1) for s in sets])
    rows, cols = np.nonzero(a)
    res = highs.solve(c, rows, cols, a[rows, cols], np.ones(len(models)), np.ones(len(models)), np.zeros(len(sets)),
                      np.ones(len(sets)), np.ones(len(sets)), mip_rel_gap=MIP_REL_GAP)
    if res.x is None:
        raise Infeasible(res.message)
    chosen = [s for s, v in zip(sets, res.x) if v > 0.5]
    return chosen, float(sum(costs[s] for s in chosen))


def merge(solutions: list[SetCoverSolution]) -> SetCoverSolution:
    """One solution of the joint problem from the sets' own (their fleets are disjoint)."""
    counts, traffic = {}, {}
    for s in solutions:
        counts.update(s.counts)
        traffic.update(s.traffic)
    return SetCoverSolution([m for s in solutions for m in s.sets], counts, traffic,
                            sum(s.usd_per_hour for s in solutions),
                            "; ".join(sorted({s.status for s in solutions})), max(s.mip_gap for s in solutions),
                            sum(s.dual_bound for s in solutions), sum(s.wall_s for s in solutions))
