"""Exhaustive reference for the mix planner: every partition of the models into sets (Bell numbers: 15 for four
models, 4,140 for eight), each set's fleet sized by the point MILP (:func:`planner.optimize.solve`) at its candidates'
shares, the cheapest sum kept. This is how ``planner recommend --mix`` planned before the set-partitioning MILP
(:mod:`planner.setcover`); it shares nothing with that MILP but the candidates' shares, so agreement checks the
formulation, its decomposition and the lazy evaluation of candidates. For small mixes only.
"""
from __future__ import annotations

from planner.catalog import Pool
from planner.optimize import Infeasible, Problem, solve


def partitions(items: list[str]):
    """Every partition of ``items`` into non-empty sets, each once."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


def cheapest_partition(models: list[str], columns: dict, pools: tuple[Pool, ...], *, routing: str = "weighted",
                       max_spot_share: float = 1.0, spot_survival: bool = False, min_replicas: int = 1,
                       min_replicas_per_gpu: int = 1) -> tuple[float, tuple[tuple[str, ...], ...]]:
    """The cheapest partition's $/h and sets. ``columns``: (set, GPU type) -> a column with ``share`` (the fraction
    of each member's traffic one replica is sized for) and ``survival`` (what it may carry while a spot pool is
    lost); each set is one point problem at rate 1 in those units."""
    cost: dict[tuple[str, ...], float | None] = {}

    def size(names: tuple[str, ...]) -> float | None:
        if names not in cost:
            mine = {g: c for (n, g), c in columns.items() if n == names}
            usable = tuple(p for p in pools if p.gpu in mine)
            cost[names] = None
            if usable:
                problem = Problem(usable, {g: c.share[0] for g, c in mine.items()}, 1.0, routing, max_spot_share,
                                  spot_survival, {g: c.survival[0] for g, c in mine.items()}, min_replicas,
                                  min_replicas_per_gpu=min_replicas_per_gpu)
                try:
                    cost[names] = solve(problem).usd_per_hour
                except Infeasible:
                    pass
        return cost[names]

    best = None
    for part in partitions(sorted(models)):
        sets = tuple(sorted(tuple(sorted(p)) for p in part))
        costs = [size(s) for s in sets]
        if None in costs:
            continue
        total = sum(costs)
        if best is None or total < best[0] - 1e-9:
            best = (total, sets)
    if best is None:
        raise Infeasible("no partition has a fleet for every set")
    return best
