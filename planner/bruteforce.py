"""Exhaustive reference for the optimizer: every fleet up to each pool's bound, checked constraint by constraint.

It shares nothing with the MILP but the :class:`~planner.optimize.Problem` it reads, so agreement between
the two checks the formulation. Exponential in the number of pools: for small catalogs only.
"""
from __future__ import annotations

import itertools

from planner.optimize import Infeasible, Problem

TOL = 1e-9


def feasible(problem: Problem, counts: tuple[int, ...]) -> bool:
    pools = problem.pools
    reps = [p.gpus_per_instance * n for p, n in zip(pools, counts)]
    total = sum(reps)
    if total < problem.min_replicas:
        return False
    spot = sum(r for p, r in zip(pools, reps) if p.is_spot)
    if spot > problem.max_spot_share * total + TOL:
        return False
    q = problem.qps
    per_gpu = {g: sum(r for p, r in zip(pools, reps) if p.gpu == g) for g in problem.gpus()}
    lost_pools = [i for i, p in enumerate(pools) if p.is_spot] if problem.spot_survival else []
    if problem.routing == "weighted":
        return sum(problem.holdable(counts).values()) >= q * (1 - TOL)
    used = [g for g, n_g in per_gpu.items() if n_g > 0]
    if any(problem.capacity[g] * total < q * (1 - TOL) for g in used):
        return False
    for i in lost_pools:
        if any(problem.surv_cap(g) * (total - reps[i]) < q * (1 - TOL) for g in used):
            return False
    return True


def brute_force(problem: Problem) -> tuple[float, dict[str, int]]:
    """The cheapest feasible fleet's $/h and counts; raises :class:`Infeasible` if none exists."""
    ranges = [range(problem.upper_bound(p) + 1) for p in problem.pools]
    best: tuple[float, tuple[int, ...]] | None = None
    for counts in itertools.product(*ranges):
        cost = sum(p.usd_per_hour * n for p, n in zip(problem.pools, counts))
        if best is not None and cost >= best[0]:
            continue
        if feasible(problem, counts):
            best = (cost, counts)
    if best is None:
        raise Infeasible("no fleet within the pool bounds")
    return best[0], {p.name: n for p, n in zip(problem.pools, best[1])}
