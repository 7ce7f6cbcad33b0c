"""Which models share a Triton replica, and how many of each pool: one set-partitioning MILP over candidate sets.

The anchors are Nexus' squishy bin packing (Shen et al., SOSP 2019: models packed onto GPUs by each one's share of
a GPU's time at its latency target) and column generation (a master problem over candidate columns, new columns
priced in only where they can lower the cost). Here a *column* is a set of models S on one GPU type g, with the share
of each member's traffic one replica of it holds at every member's P99 (simulated, or, before it is simulated, an
upper bound on it). The master problem:

Variables, per set S, column c = (S, g), pool p of g, period t:
  ``z[S]``      binary: S is one of the fleet's Deployments (the partition does not change over the periods);
  ``n[c,p,t]``  integer instances of pool p serving column c in period t (reserved pools: one count for every
                period, as the day plan shares them);
  ``x[c,t]``    continuous: the fraction of each of S's models' traffic routed to g in period t;
  ``y[c,t]``    binary: column c has replicas in period t.

Constraints:
  partition     sum over S containing m of z[S] = 1, for every model m;
  routing       sum over g of x[(S,g),t] = z[S]; x <= y <= z[S];
  capacity      weighted routing: x[c,t] <= share[c,t] * replicas[c,t]; equal routing (one Service over the set's
                replicas): y[c,t] <= share[c,t] * (the set's replicas in t);
  floors        replicas[c,t] >= min_replicas_per_gpu * y[c,t]; the set's replicas >= min_replicas * z[S];
  spot share    at most max_spot_share of each column's replicas on spot (each Deployment keeps its own floor);
  pool limits   sum over columns of n[c,p,t] <= the pool's limit (a pool is one node group, whoever it serves);
  survival      when any one spot pool is lost, the column's other replicas hold x at the survival share (weighted),
                or the set's remaining replicas hold every type's equal share (equal).
Objective: sum of n[c,p,t] x price x the period's weight (weights sum to 1; reserved counts pay every period).

A point plan is one period of weight 1; a day x mix plan is the same problem with more periods. The per-pool
structure is :func:`planner.optimize._add_period`'s, per column instead of per model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from planner.catalog import Pool
from planner.optimize import Infeasible, Routing

RESERVED = ("reserved-1yr", "reserved-3yr")  # counts shared by every period (bought for the horizon)
MIP_REL_GAP = 1e-6
# Between fleets of equal cost, the one with fewer models sharing a replica: less interference to be wrong about,
# fewer models an HPA scales together. $/h per model added to a set: below any price difference (prices have four
# decimals), above the MIP gap's slack on fleets of a few $/h.
TIE_BREAK_USD = 1e-5
TOL = 1e-9


@dataclass
class Column:
    """A set of models on one GPU type. ``share[t]``: the fraction of each member's period-t traffic one replica is
    sized for (the HPA target); ``survival[t]``: the fraction it may carry while a spot pool is lost. ``exact``:
    the shares were simulated; otherwise they are upper bounds (the planner simulates a column before relying on
    it)."""

    models: tuple[str, ...]
    gpu: str
    share: tuple[float, ...]
    survival: tuple[float, ...]
    exact: bool = True
    data: dict = field(default_factory=dict, repr=False)  # whatever the caller keeps with it (configs, P99s)

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        return self.models, self.gpu


@dataclass(frozen=True)
class SetCoverProblem:
    models: tuple[str, ...]
    columns: tuple[Column, ...]
    pools: tuple[Pool, ...]
    weights: tuple[float, ...] = (1.0,)  # each period's share of the time
    routing: Routing = "weighted"
    max_spot_share: float = 1.0
    spot_survival: bool = False
    min_replicas: int = 1  # of each set, summed over its GPU types
    min_replicas_per_gpu: int = 1  # of each column in use
    max_instances_per_pool: int | None = None

    @property
    def periods(self) -> int:
        return len(self.weights)

    def pool_limit(self, p: Pool) -> int | None:
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


def _useful_pools(problem: SetCoverProblem) -> tuple[Pool, ...]:
    """Drop a pool another pool dominates (same GPU, GPUs per instance and capacity type, no dearer, no limit on
    either): no optimum needs it. With pool limits in play every pool may be needed, so none is dropped."""
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
    :func:`planner.optimize.solve` does, the problem is solved again within the proven one where that is looser."""
    first = _solve(problem, relax, time_limit_s, incumbent, mip_rel_gap)
    if incumbent is not None or relax:
        return first
    again = _solve(problem, relax, time_limit_s, first.usd_per_hour, mip_rel_gap)
    return again if again.usd_per_hour <= first.usd_per_hour + TOL else first


def _solve(problem: SetCoverProblem, relax: bool, time_limit_s: float, incumbent: float | None,
           mip_rel_gap: float = MIP_REL_GAP) -> SetCoverSolution:
    pools = _useful_pools(problem)
    T = problem.periods
    sets = sorted({c.models for c in problem.columns})
    si = {s: i for i, s in enumerate(sets)}
    cols = [c for c in problem.columns if all(v > 0 for v in c.share)]
    mine = [[p for p in pools if p.gpu == c.gpu] for c in cols]

    # Variable layout: z[S] | per column: per pool n (reserved: one; else one per period) | x[c,t] | y[c,t]
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

    z = [var(f"z{s}", TIE_BREAK_USD * (len(s) - 1), 1.0, True) for s in sets]
    n_ix: list[list[list[int]]] = []  # column -> pool -> period -> variable
    for c, ps in zip(cols, mine):
        per_pool = []
        for p in ps:
            bound = _instance_bound(problem, c, p, incumbent)
            if p.capacity_type in RESERVED:
                j = var(f"n{c.key}{p.name}", p.usd_per_hour, bound, True)
                per_pool.append([j] * T)
            else:
                per_pool.append([var(f"n{c.key}{p.name}{t}", p.usd_per_hour * w, bound, True)
                                 for t, w in enumerate(problem.weights)])
        n_ix.append(per_pool)
    x = [[var(f"x{c.key}{t}", 0.0, 1.0, False) for t in range(T)] for c in cols]
    y = [[var(f"y{c.key}{t}", 0.0, 1.0, True) for t in range(T)] for c in cols]

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

    def plus(coef: dict[int, float], j: int, v: float) -> None:
        coef[j] = coef.get(j, 0.0) + v

    for m in problem.models:
        add({z[si[s]]: 1.0 for s in sets if m in s}, 1.0, 1.0)
    by_set: dict[tuple[str, ...], list[int]] = {}
    for k, c in enumerate(cols):
        by_set.setdefault(c.models, []).append(k)
    for s in sets:
        ks = by_set.get(s, [])
        if not ks:
            add({z[si[s]]: 1.0}, upper=0.0)  # no GPU type holds the set at all
            continue
        for t in range(T):
            coef = {z[si[s]]: -1.0}
            for k in ks:
                coef[x[k][t]] = 1.0
            add(coef, 0.0, 0.0)
            if problem.min_replicas > 1:
                coef = {z[si[s]]: -float(problem.min_replicas)}
                for k in ks:
                    for p, js in zip(mine[k], n_ix[k]):
                        plus(coef, js[t], float(p.gpus_per_instance))
                add(coef, lower=0.0)
    for k, c in enumerate(cols):
        s = si[c.models]
        for t in range(T):
            reps = {}
            for p, js in zip(mine[k], n_ix[k]):
                plus(reps, js[t], float(p.gpus_per_instance))
            big = sum(ub[j] * v for j, v in reps.items()) or 1.0
            add({x[k][t]: 1.0, y[k][t]: -1.0}, upper=0.0)
            add({y[k][t]: 1.0, z[s]: -1.0}, upper=0.0)
            add({**reps, y[k][t]: -big}, upper=0.0)
            if problem.min_replicas_per_gpu > 1:
                add({**reps, y[k][t]: -float(problem.min_replicas_per_gpu)}, lower=0.0)
            share = c.share[t]
            set_reps: dict[int, float] = {}
            for k2 in by_set[c.models]:
                for p, js in zip(mine[k2], n_ix[k2]):
                    plus(set_reps, js[t], float(p.gpus_per_instance))
            if problem.routing == "weighted":
                add({x[k][t]: 1.0, **{j: -share * v for j, v in reps.items()}}, upper=0.0)
            else:
                add({y[k][t]: 1.0, **{j: -share * v for j, v in set_reps.items()}}, upper=0.0)
            if problem.max_spot_share < 1.0:
                sp = problem.max_spot_share
                coef = {}
                for p, js in zip(mine[k], n_ix[k]):
                    plus(coef, js[t], (1.0 - sp if p.is_spot else -sp) * p.gpus_per_instance)
                add(coef, upper=0.0)
            if problem.spot_survival:
                surv = c.survival[t]
                for k2 in by_set[c.models]:
                    for lp, ljs in zip(mine[k2], n_ix[k2]):
                        if not lp.is_spot:
                            continue
                        if problem.routing == "weighted":
                            if k2 != k:
                                continue
                            coef = {x[k][t]: 1.0, **{j: -surv * v for j, v in reps.items()}}
                            plus(coef, ljs[t], surv * lp.gpus_per_instance)
                        else:
                            coef = {y[k][t]: 1.0, **{j: -surv * v for j, v in set_reps.items()}}
                            plus(coef, ljs[t], surv * lp.gpus_per_instance)
                        add(coef, upper=0.0)
    for p in pools:
        limit = problem.pool_limit(p)
        if limit is None:
            continue
        for t in range(T):
            coef = {}
            for k, c in enumerate(cols):
                for q, js in zip(mine[k], n_ix[k]):
                    if q is p:
                        plus(coef, js[t], 1.0)
            if coef:
                add(coef, upper=float(limit))

    n_var = len(names)
    a = csr_array((rows_v, (rows_i, rows_j)), shape=(len(lo), n_var))
    integrality = np.zeros(n_var) if relax else np.array(integ)
    t0 = time.perf_counter()
    res = milp(np.array(cost), constraints=LinearConstraint(a, lo, hi), bounds=Bounds(np.zeros(n_var), np.array(ub)),
               integrality=integrality, options={"time_limit": time_limit_s, "mip_rel_gap": mip_rel_gap})
    wall = time.perf_counter() - t0
    if res.x is None:
        raise Infeasible(res.message)
    v = res.x
    chosen = [s for s in sets if v[z[si[s]]] > 0.5] if not relax else [s for s in sets if v[z[si[s]]] > TOL]
    counts, traffic = {}, {}
    for k, c in enumerate(cols):
        by_pool = {}
        for p, js in zip(mine[k], n_ix[k]):
            vals = [v[j] if relax else int(round(v[j])) for j in js]
            if any(vals):
                by_pool[p.name] = vals
        if by_pool:
            counts[c.key] = by_pool
            traffic[c.key] = [float(v[x[k][t]]) for t in range(T)]
    usd = float(np.array(cost) @ v - sum(cost[j] * v[j] for j in z)) if relax else \
        _cost(problem, pools, cols, mine, counts)  # the tie-break is no cost
    gap = 0.0 if relax else float(getattr(res, "mip_gap", 0.0) or 0.0)
    bound = usd if relax else float(getattr(res, "mip_dual_bound", usd) or usd)
    status = "optimal" if res.status == 0 else res.message
    return SetCoverSolution(chosen, counts, traffic, usd, status, gap, bound, wall, relax)


def _cost(problem: SetCoverProblem, pools, cols, mine, counts) -> float:
    """$/h of integer counts, averaged over the periods (reserved counts pay in full)."""
    price = {p.name: p for p in pools}
    usd = 0.0
    for by_pool in counts.values():
        for name, vals in by_pool.items():
            p = price[name]
            if p.capacity_type in RESERVED:
                usd += p.usd_per_hour * vals[0]
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
        need = 4 * math.ceil(1.0 / (least * p.gpus_per_instance))
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
    res = milp(c, constraints=LinearConstraint(a, np.ones(len(models)), np.ones(len(models))),
               bounds=Bounds(np.zeros(len(sets)), np.ones(len(sets))), integrality=np.ones(len(sets)),
               options={"mip_rel_gap": MIP_REL_GAP})
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
