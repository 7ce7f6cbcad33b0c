"""The fleet optimizer: how many instances of each pool to buy, as a mixed-integer program solved by HiGHS.

The program is the one fleet MILP (:func:`planner.setcover.solve_milp`) with one model, one period and one singleton
column per GPU type (:func:`set_cover_problem`); what follows is what it says for a point.

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
from dataclasses import dataclass, field, replace

from gpufleet.contracts.plan import Routing  # noqa: F401 (re-exported: the planner's name for it)
from planner.catalog import Pool
# Infeasible is re-exported: the planner's name for it.
from planner.setcover import MIP_REL_GAP, Column, Infeasible, SetCoverProblem, solve_milp  # noqa: F401


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


POINT_MODEL = "model"  # the one model of a point or day plan, as the set-cover MILP names it


def set_cover_problem(problem: Problem, demand: tuple[float, ...] = (), weights: tuple[float, ...] = (1.0,),
                      **options) -> SetCoverProblem:
    """This fleet problem as the one MILP builder's (:mod:`planner.setcover`): one model, one singleton column per
    GPU type holding its per-replica rates (req/s, so the demand is the rate: ``problem.qps`` unless ``demand`` gives
    one per period), the same pools and constraints. ``options``: the builder's layout and extras (the day plan's
    shared reserved counts, one route per GPU type, pruning)."""
    periods = len(weights)
    return SetCoverProblem(
        models=(POINT_MODEL,),
        columns=tuple(Column((POINT_MODEL,), g, (problem.capacity[g],) * periods, (problem.surv_cap(g),) * periods)
                      for g in problem.gpus()),
        pools=problem.pools, weights=weights, routing=problem.routing, max_spot_share=problem.max_spot_share,
        spot_survival=problem.spot_survival, min_replicas=problem.min_replicas,
        min_replicas_per_gpu=problem.min_replicas_per_gpu, max_instances_per_pool=problem.max_instances_per_pool,
        respect_pool_limits=problem.respect_pool_limits, demand=tuple(demand) or (problem.qps,) * periods,
        **{"share_reserved": False, "prune": "none", **options})


def _solve(problem: Problem, relax: bool, exclude: tuple[frozenset[str], ...], time_limit_s: float,
           incumbent: float | None) -> Solution:
    """One period of weight 1 at ``problem.qps``, every pool, each pool's instances bounded by
    :meth:`Problem.upper_bound`."""
    ub = {p.name: float(problem.upper_bound(p, incumbent)) for p in problem.pools}
    r = solve_milp(set_cover_problem(problem), relax=relax, exclude=exclude, time_limit_s=time_limit_s,
                   mip_rel_gap=MIP_REL_GAP, bound=lambda c, p, t: ub[p.name])
    held = {name: vals[0] for by_pool in r.counts.values() for name, vals in by_pool.items()}
    counts = {p.name: held[p.name] for p in problem.pools}
    traffic = {g: r.traffic[(POINT_MODEL,), g][0] for g in problem.gpus()}
    usd = r.objective if relax else sum(p.usd_per_hour * counts[p.name] for p in problem.pools)
    bound = usd if relax else float(r.dual_bound or usd)
    return Solution(counts, traffic, usd, r.status, r.mip_gap, bound, r.wall_s, excluded=exclude)


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
