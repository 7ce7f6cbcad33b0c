"""Issue 26, item 4 (proof): the day MILP's cost against enumeration on small random days that carry everything
that makes the day problem hard: a spot share rounded per period, reserved pools held all day (1- and 3-year),
multi-GPU instances, capped pools, replica floors and 2-6 periods. tests/test_day.py's cases are 1-2 GPU types with
one-GPU instances and 2-4 periods; these widen them. The MILP may stop at its stated gap: its cost must lie within
that gap of the optimum, and its LP bound (where reported) below the optimum.
"""
from __future__ import annotations

import random

import pytest

from planner.catalog import Pool
from planner.day import solve_day
from planner.optimize import Infeasible, Problem
from tests.day_enumeration import against_enumeration, random_case

CASES_PER_SEED = 8


def random_day(rng: random.Random):
    """A seeded catalog of 2-4 pools over one or two GPU types (equal routing across two: the brute force's periods
    are independent only then), and 2-6 periods."""
    gpus = ["A", "B"][: rng.randint(1, 2)]
    pools = []
    for g in gpus:
        per = rng.choice([1, 1, 2])
        od = round(rng.uniform(0.5, 2.0), 3) * per
        pools.append(Pool(f"{g}.x", g, "on-demand", per, od, rng.choice([None, None, 6])))
        pools.append(Pool(f"{g}.x", g, rng.choice(["reserved-1yr", "reserved-3yr"]), per,
                          round(od * rng.uniform(0.4, 0.9), 3), None))
        if len(pools) < 4 and rng.random() < 0.7:
            pools.append(Pool(f"{g}.x", g, "spot", per, round(od * rng.uniform(0.25, 0.6), 3), None))
    pools = pools[:4]
    return random_case(rng, pools, gpus, capacity=(150, 500), spot_shares=[0.5, 0.7, 0.34], periods=(2, 6),
                       demand=(50, 1000))


@pytest.mark.parametrize("seed", range(3))
def test_day_milp_is_within_its_gap_of_enumeration_with_spot_share_and_reserved_pools(seed):
    rng = random.Random(1000 + seed)
    compared = 0
    for case, got, expected in against_enumeration(random_day(rng) for _ in range(CASES_PER_SEED)):
        case = (*case, got)
        assert expected - 1e-9 <= got.usd <= expected * (1 + got.mip_gap) + 1e-9, case
        if got.lp_bound is not None:
            assert got.lp_bound <= expected + 1e-9, case
        compared += 1
    assert compared >= CASES_PER_SEED // 2


@pytest.mark.parametrize("seed", range(3))
def test_one_in_use_mark_per_gpu_type_changes_no_weighted_day_optimum(seed):
    # The brute force cannot enumerate weighted routing over several GPU types (one weight ties the periods), so the
    # day MILP with one in-use mark per GPU type is checked against the same MILP with a mark per type and period.
    rng = random.Random(2000 + seed)
    compared = 0
    for _ in range(CASES_PER_SEED):
        problem, demand, hours = random_day(rng)
        gpus = sorted(problem.capacity)
        if len(gpus) < 2:
            continue
        problem = Problem(problem.pools, problem.capacity, 1.0, routing="weighted",
                          max_spot_share=problem.max_spot_share, min_replicas=problem.min_replicas_per_gpu,
                          min_replicas_per_gpu=problem.min_replicas_per_gpu)
        try:
            per_period = solve_day(problem, demand, hours, link_in_use=False)
        except Infeasible:
            continue
        linked = solve_day(problem, demand, hours)
        tolerance = max(linked.mip_gap, per_period.mip_gap) * per_period.usd + 1e-9
        assert linked.usd == pytest.approx(per_period.usd, abs=tolerance), (problem, demand, hours)
        compared += 1
    assert compared >= 2
