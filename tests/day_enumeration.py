"""The day MILP beside enumeration, for the tests that compare them (tests/test_day.py, tests/test_proof_day.py):
one loop, so each test states only its own property of the pair."""
from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

import pytest

from planner.bruteforce import brute_force_day
from planner.catalog import Pool
from planner.day import DaySolution, solve_day
from planner.optimize import Infeasible, Problem

Case = tuple[Problem, list[float], list[float]]


def against_enumeration(cases: Iterable[Case]) -> Iterator[tuple[Case, DaySolution, float]]:
    """Each feasible case with the day MILP's answer and the enumerated optimum; an infeasible case must be
    infeasible to both (checked here) and is not yielded."""
    for problem, demand, hours in cases:
        try:
            expected = brute_force_day(problem, demand, hours)
        except Infeasible:
            with pytest.raises(Infeasible):
                solve_day(problem, demand, hours)
            continue
        yield (problem, demand, hours), solve_day(problem, demand, hours), expected


def random_case(rng: random.Random, pools: Sequence[Pool], gpus: Sequence[str], *, capacity: tuple[float, float],
                spot_shares: Sequence[float], periods: tuple[int, int], demand: tuple[float, float]) -> Case:
    """A seeded day over ``pools``: each GPU type's capacity, the routing (equal across two types: the brute force's
    periods are independent only then), the spot share and replica floors, and the periods' demand and lengths."""
    capacities = {g: rng.uniform(*capacity) for g in gpus}
    routing = "equal" if len(gpus) > 1 else rng.choice(["weighted", "equal"])
    problem = Problem(tuple(pools), capacities, 1.0, routing=routing, max_spot_share=rng.choice(spot_shares),
                      min_replicas=rng.choice([1, 2]), min_replicas_per_gpu=rng.choice([1, 2]))
    n = rng.randint(*periods)
    return (problem, [round(rng.uniform(*demand), 1) for _ in range(n)],
            [rng.choice([1.0, 2.0, 6.0]) for _ in range(n)])
