"""The fleet optimizer: how many instances of each pool to buy, as a mixed-integer program solved by HiGHS.

Decision variables: ``n[p]``, instances bought from pool ``p`` (instance type x capacity type), and ``x[g]``,
the requests/s routed to GPU type ``g``. One Triton replica runs per GPU, so pool ``p`` adds
``gpus[p] * n[p]`` replicas of its GPU type.

Load balancing is modelled as ``infra/`` deploys it:

* ``weighted``: one Deployment per GPU type behind a weighted route; weights are fixed at ``x[g] / Q``.
  Replicas of one type share that type's traffic equally: ``x[g] <= cap[g] * replicas[g]``.
* ``equal``: one Service over every replica, each getting ``Q / N``. Every GPU type in use must hold that
  rate: ``Q * y[g] <= cap[g] * N`` with ``y[g]`` = 1 when the type has replicas.

Spot share: at most ``max_spot_share`` of each GPU type's replicas run on spot, so every type that uses spot keeps
its own on-demand or reserved floor (a fleet-wide share would let one type run spot-only while its weighted share of
traffic depends on it). The fleet's share is then at most the same.

Replica floors: at least ``min_replicas`` in the fleet, and at least ``min_replicas_per_gpu`` of every GPU type
the fleet uses (``y[g]`` = 1), so that no type's share of traffic rests on one replica.

Spot survival: when any one spot pool is lost, what remains must still hold the traffic at ``cap_survival``
(the per-replica rate at the degraded P99 bound) until replacements start. Under ``weighted`` routing the
weights do not move, so the lost pool's GPU type must carry its share on its other pools; under ``equal``,
the remaining replicas split ``Q``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from planner.catalog import Pool

Routing = Literal["weighted", "equal"]


@dataclass(frozen=True)
class Problem:
    """A fully specified fleet-sizing problem; :func:`solve` and the brute-force reference read the same one."""

    pools: tuple[Pool, ...]
    capacity: dict[str, float]  # per-replica req/s at the P99 target, per GPU type
    qps: float
    routing: Routing = "weighted"
    max_spot_share: float = 1.0  # of each GPU type's replicas
    spot_survival: bool = False
    survival_capacity: dict[str, float] | None = None  # per-replica req/s at the degraded bound
    min_replicas: int = 1
    max_instances_per_pool: int | None = None
    respect_pool_limits: bool = True
    min_replicas_per_gpu: int = 1  # of every GPU type in use

    def gpus(self) -> list[str]:
        return sorted({p.gpu for p in self.pools})

    def surv_cap(self, gpu: str) -> float:
        return (self.survival_capacity or self.capacity)[gpu]

    def holdable(self, counts: tuple[int, ...]) -> dict[str, float]:
        """Under weighted routing, the most traffic each GPU type can take with these instance counts: its
        replicas at the target, and, with spot survival, what its other pools hold at the degraded bound when
        any one of its spot pools is lost."""
        out = {}
        for g in self.gpus():
            reps = sum(p.gpus_per_instance * n for p, n in zip(self.pools, counts) if p.gpu == g)
            most = self.capacity[g] * reps
            if self.spot_survival:
                for p, n in zip(self.pools, counts):
                    if p.gpu == g and p.is_spot and n > 0:
                        most = min(most, self.surv_cap(g) * (reps - p.gpus_per_instance * n))
            out[g] = max(most, 0.0)
        return out

    def pool_limit(self, p: Pool) -> int | None:
        """The most instances of ``p`` the constraints allow (None: no limit)."""
        if not self.respect_pool_limits:
            return None
        limits = [x for x in (p.max_instances, self.max_instances_per_pool) if x is not None]
        return min(limits) if limits else None

    def incumbent_cost(self) -> float | None:
        """$/h of a fleet feasible by construction: one pool's instances, enough for the rate and the replica floor;
        from a non-spot pool (then the spot share and survival hold trivially) or, where spot is unrestricted and
        survival not asked, a spot pool. The cheapest such; None when no single pool can carry the load."""
        best = None
        for p in self.pools:
            if p.is_spot and (self.max_spot_share < 1.0 or self.spot_survival):
                continue
            per_replica = min(self.capacity[p.gpu], self.surv_cap(p.gpu)) if self.spot_survival else \
                self.capacity[p.gpu]
            if per_replica <= 0:
                continue
            n = max(math.ceil(self.qps / (per_replica * p.gpus_per_instance) * (1 + 1e-12)),
                    math.ceil(max(self.min_replicas, self.min_replicas_per_gpu) / p.gpus_per_instance), 1)
            limit = self.pool_limit(p)
            if limit is not None and n > limit:
                continue
            cost = n * p.usd_per_hour
            best = cost if best is None else min(best, cost)
        return best

    def upper_bound(self, p: Pool, incumbent: float | None = None) -> int:
        """Instances of one pool an optimal fleet can hold. With the cost of any feasible fleet known, an optimum
        spends no more than that on one pool (prices are non-negative), so ``floor(incumbent / price)`` provably
        contains it. Without one (no single pool carries the load), a generous heuristic that :func:`solve` then
        replaces by the bound from the fleet it finds."""
        limit = self.pool_limit(p)
        if incumbent is None:
            incumbent = self.incumbent_cost()
        if incumbent is not None and p.usd_per_hour > 0:
            need = math.floor(incumbent / p.usd_per_hour * (1 + 1e-9))
        else:
            need = 4 * math.ceil(self.qps / (self.capacity[p.gpu] * p.gpus_per_instance))
            need += math.ceil(max(self.min_replicas, self.min_replicas_per_gpu) / p.gpus_per_instance)
        return need if limit is None else min(need, limit)


@dataclass(frozen=True)
class Solution:
    counts: dict[str, int]  # pool name -> instances
    traffic: dict[str, float]  # GPU type -> req/s
    usd_per_hour: float
    status: str
    mip_gap: float
    dual_bound: float
    wall_s: float
    lp_bound: float | None = None
    excluded: tuple[frozenset[str], ...] = field(default=(), repr=False)

    def support(self) -> frozenset[str]:
        return frozenset(k for k, v in self.counts.items() if v > 0)


def replicas_by_gpu(pools: tuple[Pool, ...], counts: dict[str, int]) -> dict[str, int]:
    """Replicas (GPUs, or MIG slices for a slice pool) per GPU type of ``pools`` holding ``counts`` instances (pool
    name -> instances). A pool absent from ``counts`` holds none, as a plan records a period's instances."""
    out: dict[str, int] = {}
    for p in pools:
        out[p.gpu] = out.get(p.gpu, 0) + p.gpus_per_instance * counts.get(p.name, 0)
    return out


class Infeasible(Exception):
    """No fleet satisfies the constraints."""


def solve(problem: Problem, *, relax: bool = False, exclude: tuple[frozenset[str], ...] = (),
          time_limit_s: float = 20.0) -> Solution:
    """Minimize $/h. ``relax`` drops integrality (the LP bound); ``exclude`` forbids fleets with these pool sets.

    Instance counts are bounded by what an optimum can buy (:meth:`Problem.upper_bound`). Where no fleet was known
    in advance, the first solution's cost gives that bound, and the problem is solved again within it when the
    heuristic bound was tighter anywhere, so the optimum is never cut off."""
    incumbent = problem.incumbent_cost()
    first = _solve(problem, relax, exclude, time_limit_s, incumbent)
    if incumbent is not None or relax:
        return first
    proven = [problem.upper_bound(p, first.usd_per_hour) for p in problem.pools]
    heuristic = [problem.upper_bound(p, None) for p in problem.pools]
    if all(b <= h for b, h in zip(proven, heuristic)):
        return first
    return _solve(problem, relax, exclude, time_limit_s, first.usd_per_hour)


def _solve(problem: Problem, relax: bool, exclude: tuple[frozenset[str], ...], time_limit_s: float,
           incumbent: float | None) -> Solution:
    pools = problem.pools
    gpus = problem.gpus()
    n_p, n_g = len(pools), len(gpus)
    use_support = bool(exclude)
    # Variable layout: n[0:P] | x[P:P+G] | y[P+G:P+2G] | u[P+2G:2P+2G] when supports are excluded.
    ix_x, ix_y, ix_u = n_p, n_p + n_g, n_p + 2 * n_g
    n_var = ix_u + (n_p if use_support else 0)
    gi = {g: i for i, g in enumerate(gpus)}
    ub_n = np.array([problem.upper_bound(p, incumbent) for p in pools], dtype=float)

    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def add(coef: dict[int, float], lower: float = -np.inf, upper: float = np.inf) -> None:
        row = np.zeros(n_var)
        for j, c in coef.items():
            row[j] += c
        rows.append(row)
        lo.append(lower)
        hi.append(upper)

    add_period_constraints(add, problem, problem.qps, list(range(n_p)), ix_x, ix_y, ub_n)
    if use_support:
        for j in range(n_p):
            add({j: 1.0, ix_u + j: -max(ub_n[j], 1.0)}, upper=0.0)  # n > 0 => u = 1
            add({j: 1.0, ix_u + j: -1.0}, lower=0.0)  # u = 1 => n >= 1
        names = [p.name for p in pools]
        for support in exclude:
            coef = {ix_u + j: (-1.0 if names[j] in support else 1.0) for j in range(n_p)}
            add(coef, lower=1.0 - len(support))

    cost = np.zeros(n_var)
    cost[:n_p] = [p.usd_per_hour for p in pools]
    lower = np.zeros(n_var)
    upper = np.concatenate([ub_n, np.full(n_g, problem.qps), np.ones(n_g), np.ones(n_var - ix_u)])
    integrality = np.zeros(n_var)
    if not relax:
        integrality[:n_p] = 1
        integrality[ix_y:] = 1
    t0 = time.perf_counter()
    res = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi), bounds=Bounds(lower, upper),
               integrality=integrality, options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6})
    wall = time.perf_counter() - t0
    if res.x is None:
        raise Infeasible(res.message)
    x = res.x
    counts = {p.name: int(round(x[j])) if not relax else float(x[j]) for j, p in enumerate(pools)}
    traffic = {g: float(x[ix_x + gi[g]]) for g in gpus}
    usd = float(cost @ x) if relax else sum(p.usd_per_hour * counts[p.name] for p in pools)
    gap = float(getattr(res, "mip_gap", 0.0) or 0.0)
    bound = float(getattr(res, "mip_dual_bound", usd) or usd) if not relax else usd
    status = "optimal" if res.status == 0 else res.message
    return Solution(counts, traffic, usd, status, gap, bound, wall, excluded=exclude)


def add_period_constraints(add, problem: Problem, q: float, col: list[int], ix_x: int, ix_y: int, ub_n) -> None:
    """The constraints of one period at rate ``q``: pool ``j``'s instance count is column ``col[j]``; the period's
    traffic per GPU type starts at column ``ix_x``, its in-use marks at ``ix_y``. :func:`_solve` adds one period,
    the day plan (:mod:`planner.day`) one per period, with the reserved pools' columns shared between them."""
    pools = problem.pools
    n_p = len(pools)
    gpus = problem.gpus()
    n_g = len(gpus)
    gi = {g: i for i, g in enumerate(gpus)}
    replicas = {col[j]: float(p.gpus_per_instance) for j, p in enumerate(pools)}
    # Traffic is all routed.
    add({ix_x + i: 1.0 for i in range(n_g)}, q, q)
    for g in gpus:
        members = [col[j] for j, p in enumerate(pools) if p.gpu == g]
        # y[g] marks a GPU type in use; x[g] only flows where replicas exist.
        big = sum(ub_n[j] * replicas[col[j]] for j, p in enumerate(pools) if p.gpu == g) or 1.0
        add({**{c: replicas[c] for c in members}, ix_y + gi[g]: -big}, upper=0.0)
        add({ix_x + gi[g]: 1.0, ix_y + gi[g]: -q}, upper=0.0)
        if problem.min_replicas_per_gpu > 1:
            add({**{c: replicas[c] for c in members}, ix_y + gi[g]: -float(problem.min_replicas_per_gpu)}, lower=0.0)
        if problem.routing == "weighted":
            add({ix_x + gi[g]: 1.0, **{c: -problem.capacity[g] * replicas[c] for c in members}}, upper=0.0)
        else:
            add({ix_y + gi[g]: q, **{col[j]: -problem.capacity[g] * replicas[col[j]] for j in range(n_p)}}, upper=0.0)
    if problem.max_spot_share < 1.0:
        s = problem.max_spot_share
        for g in gpus:
            add({col[j]: (1.0 - s if p.is_spot else -s) * replicas[col[j]] for j, p in enumerate(pools) if p.gpu == g},
                upper=0.0)
    add({col[j]: replicas[col[j]] for j in range(n_p)}, lower=float(problem.min_replicas))
    if problem.spot_survival:
        for lost, lp in enumerate(pools):
            if not lp.is_spot:
                continue
            if problem.routing == "weighted":
                g = lp.gpu
                coef = {ix_x + gi[g]: 1.0}
                for j, p in enumerate(pools):
                    if p.gpu == g and j != lost:
                        coef[col[j]] = -problem.surv_cap(g) * replicas[col[j]]
                add(coef, upper=0.0)
            else:
                for g in gpus:
                    coef = {ix_y + gi[g]: q}
                    for j in range(n_p):
                        if j != lost:
                            coef[col[j]] = coef.get(col[j], 0.0) - problem.surv_cap(g) * replicas[col[j]]
                    add(coef, upper=0.0)


def solve_with_bound(problem: Problem) -> Solution:
    """The integer optimum, annotated with its LP-relaxation bound."""
    best = solve(problem)
    try:
        lp = solve(problem, relax=True).usd_per_hour
    except Infeasible:
        lp = None
    return replace(best, lp_bound=lp)


RELAXATIONS: dict[str, dict] = {
    "max spot share": {"max_spot_share": 1.0},
    "spot survival": {"spot_survival": False},
    "pool instance limits": {"respect_pool_limits": False},
    "minimum replicas": {"min_replicas": 1},
    "replicas per GPU type": {"min_replicas_per_gpu": 1},
}


def binding_constraint(problem: Problem, optimum: Solution) -> tuple[str, float]:
    """Which constraint family costs the most: re-solve with each relaxed; returns (name, $/h it costs).

    When relaxing none of them lowers the cost, the P99 capacity itself (replicas needed at the target) binds.
    """
    best_name, best_saving = "P99 capacity at the requested QPS", 0.0
    for name, change in RELAXATIONS.items():
        relaxed = replace(problem, **change)
        if relaxed == problem:
            continue
        try:
            saving = optimum.usd_per_hour - solve(relaxed).usd_per_hour
        except Infeasible:
            continue
        if saving > best_saving + 1e-9:
            best_name, best_saving = name, saving
    return best_name, best_saving


def runner_up(problem: Problem, optimum: Solution) -> Solution | None:
    """The cheapest fleet that buys a different set of pools than the optimum."""
    try:
        return solve(problem, exclude=(optimum.support(),))
    except Infeasible:
        return None
