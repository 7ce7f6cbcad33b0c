"""Exhaustive reference for the optimizer: every fleet up to each pool's bound, checked constraint by constraint.

It shares nothing with the MILP but the :class:`~planner.optimize.Problem`'s data, so agreement between the two checks
the formulation; in particular it bounds its own search (by the cheapest feasible one-pool fleet it finds itself),
not with the optimizer's instance bound. Exponential in the number of pools: for small catalogs only.
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
    for g in problem.gpus():
        of_type = sum(r for p, r in zip(pools, reps) if p.gpu == g)
        if 0 < of_type < problem.min_replicas_per_gpu:
            return False
    for g in problem.gpus():
        spot = sum(r for p, r in zip(pools, reps) if p.is_spot and p.gpu == g)
        if spot > problem.max_spot_share * sum(r for p, r in zip(pools, reps) if p.gpu == g) + TOL:
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


ONE_POOL_SCAN = 10_000  # instances tried per pool when looking for a first feasible fleet


def _limit(problem: Problem, i: int) -> int | None:
    p = problem.pools[i]
    limits = [x for x in (p.max_instances, problem.max_instances_per_pool) if x is not None]
    return min(limits) if limits and problem.respect_pool_limits else None


def search_bounds(problem: Problem) -> list[int] | None:
    """Per pool, the most instances a fleet no dearer than the cheapest feasible one-pool fleet can hold; None when
    no one-pool fleet is feasible (then this reference cannot bound its search)."""
    k = len(problem.pools)
    cheapest = None
    for i, p in enumerate(problem.pools):
        top = _limit(problem, i)
        top = ONE_POOL_SCAN if top is None else top

        def alone(n: int) -> bool:
            return feasible(problem, tuple(n if j == i else 0 for j in range(k)))

        # One pool alone only gains by growing (the floors and the rate are met from some count on; its spot share and
        # a lost spot pool do not change with the count), so the fewest instances that hold are found by bisection.
        # Any feasible fleet's cost bounds the search soundly; the fewest only keeps the bounds tight.
        if top < 1 or not alone(top):
            continue
        low, high = 0, top  # alone(low) is false (or low = 0), alone(high) is true
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if alone(mid) else (mid, high)
        cost = high * p.usd_per_hour
        cheapest = cost if cheapest is None else min(cheapest, cost)
    if cheapest is None:
        return None
    bounds = []
    for i, p in enumerate(problem.pools):
        n = int(cheapest / p.usd_per_hour * (1 + 1e-9)) if p.usd_per_hour > 0 else ONE_POOL_SCAN
        top = _limit(problem, i)
        bounds.append(n if top is None else min(n, top))
    return bounds


def brute_force(problem: Problem) -> tuple[float, dict[str, int]]:
    """The cheapest feasible fleet's $/h and counts; raises :class:`Infeasible` if none exists."""
    bounds = search_bounds(problem)
    if bounds is None:
        raise ValueError("no feasible one-pool fleet: the brute force cannot bound this search")
    prices = [p.usd_per_hour for p in problem.pools]
    best: tuple[float, tuple[int, ...]] | None = None
    counts = [0] * len(bounds)

    def search(i: int, partial: float) -> None:
        # Every fleet in lexicographic order, as itertools.product would give them, but a branch whose pools chosen so
        # far already cost as much as the best fleet found is not entered: prices are non-negative, so nothing in it
        # could replace the best (only a strictly cheaper fleet does), and the answer is the same, to the counts.
        nonlocal best
        if i == len(bounds):
            if feasible(problem, tuple(counts)):
                best = (partial, tuple(counts))
            return
        for n in range(bounds[i] + 1):
            cost = partial + prices[i] * n
            if best is not None and cost >= best[0]:
                break
            counts[i] = n
            search(i + 1, cost)
        counts[i] = 0

    search(0, 0.0)
    if best is None:
        raise Infeasible("no fleet within the pool bounds")
    return best[0], {p.name: n for p, n in zip(problem.pools, best[1])}


def brute_force_day(problem: Problem, demand: list[float], hours: list[float]) -> float:
    """The day's least cost by enumeration: every reserved count held in all periods, and for each period on its
    own the cheapest feasible elastic counts beside it. Periods are independent only when no routing weight ties
    them, so this reference takes one GPU type, or equal routing."""
    if problem.routing == "weighted" and len(problem.gpus()) > 1:
        raise ValueError("weighted routing over several GPU types ties the periods by one weight; not enumerated")
    from dataclasses import replace
    peak = replace(problem, qps=max(demand))
    bounds = search_bounds(peak)
    if bounds is None:
        raise ValueError("no feasible one-pool fleet at the peak: the brute force cannot bound this search")
    extra = [-(-max(problem.min_replicas, problem.min_replicas_per_gpu) // p.gpus_per_instance) for p in problem.pools]
    bounds = [b + e if _limit(peak, i) is None else b for i, (b, e) in enumerate(zip(bounds, extra))]
    reserved = [i for i, p in enumerate(problem.pools) if p.capacity_type.startswith("reserved")]
    elastic = [i for i, p in enumerate(problem.pools) if i not in reserved]
    total_hours = sum(hours)
    best = None
    for held in itertools.product(*[range(bounds[i] + 1) for i in reserved]):
        cost = sum(problem.pools[i].usd_per_hour * n for i, n in zip(reserved, held)) * total_hours
        for q, h in zip(demand, hours):
            period = replace(problem, qps=q)
            cheapest = None
            for more in itertools.product(*[range(bounds[i] + 1) for i in elastic]):
                usd = sum(problem.pools[i].usd_per_hour * n for i, n in zip(elastic, more))
                if cheapest is not None and usd >= cheapest:
                    continue
                counts = [0] * len(problem.pools)
                for i, n in zip(reserved, held):
                    counts[i] = n
                for i, n in zip(elastic, more):
                    counts[i] = n
                if feasible(period, tuple(counts)):
                    cheapest = usd
            if cheapest is None:
                cost = None
                break
            cost += cheapest * h
        if cost is not None and (best is None or cost < best):
            best = cost
    if best is None:
        raise Infeasible("no day fleet within the pool bounds")
    return best
