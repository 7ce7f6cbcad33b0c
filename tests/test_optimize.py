"""The MILP against exhaustive search, and the pricing rules it is fed."""
import math
import random

import pytest
from dataclasses import replace

from planner.bruteforce import brute_force, search_bounds
from planner.catalog import Pool, reserved_price_over_horizon
from planner.optimize import Infeasible, Problem, binding_constraint, replicas_by_gpu, runner_up, solve

SEARCH_LIMIT = 200_000  # fleets brute force may enumerate per case


def random_problem(rng: random.Random) -> Problem:
    gpus = ["A", "B", "C"][: rng.randint(1, 3)]
    pools = []
    for g in gpus:
        for size in range(rng.randint(1, 2)):
            per = rng.choice([1, 1, 4])
            od = round(rng.uniform(0.4, 3.0) * per, 4)
            pools.append(Pool(f"{g}{size}.x{per}", g, "on-demand", per, od, None))
            if rng.random() < 0.7:
                pools.append(Pool(f"{g}{size}.x{per}", g, "spot", per, round(od * rng.uniform(0.25, 0.6), 4), None))
            if rng.random() < 0.5:
                pools.append(Pool(f"{g}{size}.x{per}", g, "reserved-1yr", per, round(od * 0.73, 4),
                                  rng.choice([None, 1, 2])))
    capacity = {g: rng.uniform(300, 3000) for g in gpus}
    return Problem(tuple(pools), capacity, rng.uniform(50, 9000),
                   routing=rng.choice(["weighted", "equal"]),
                   max_spot_share=rng.choice([1.0, 0.7, 0.5, 0.0]),
                   spot_survival=rng.random() < 0.5,
                   survival_capacity={g: c * rng.uniform(1.0, 1.4) for g, c in capacity.items()},
                   min_replicas=rng.choice([1, 2, 3]),
                   max_instances_per_pool=rng.choice([None, None, 3]),
                   min_replicas_per_gpu=rng.choice([1, 1, 2, 3]))


def small_cases(n_cases: int, seed: int):
    rng = random.Random(seed)
    made = 0
    while made < n_cases:
        problem = random_problem(rng)
        bounds = search_bounds(problem)
        if bounds is not None and math.prod(b + 1 for b in bounds) <= SEARCH_LIMIT:
            made += 1
            yield problem


@pytest.mark.parametrize("seed", range(4))
def test_milp_cost_equals_brute_force_on_small_random_catalogs(seed):
    compared = 0
    for problem in small_cases(25, seed):
        try:
            expected = brute_force(problem)[0]
        except Infeasible:
            with pytest.raises(Infeasible):
                solve(problem)
            continue
        got = solve(problem)
        assert got.usd_per_hour == pytest.approx(expected, rel=1e-9, abs=1e-9), problem
        compared += 1
    assert compared >= 10  # most random cases must be feasible, or this test checks little


def pool(name, gpu, ctype, usd, per=1, limit=None):
    return Pool(name, gpu, ctype, per, usd, limit)


def test_spot_share_cap_forces_on_demand_floor():
    pools = (pool("g.x", "T4", "on-demand", 1.0), pool("g.x", "T4", "spot", 0.3))
    problem = Problem(pools, {"T4": 100.0}, qps=1000, max_spot_share=0.5)
    sol = solve(problem)
    assert sol.counts == {"g.x/on-demand": 5, "g.x/spot": 5}
    assert binding_constraint(problem, sol)[0] == "max spot share"


def test_the_spot_share_holds_for_each_gpu_type_not_only_the_fleet():
    # Fleet-wide, one cheap on-demand A replica would "cover" a spot-only B carrying almost all traffic; losing B's
    # spot capacity then loses B's whole weighted share. Each GPU type keeps its own on-demand floor.
    pools = (pool("a.x", "A", "on-demand", 1.0), pool("a.x", "A", "spot", 0.3),
             pool("b.x", "B", "on-demand", 10.0), pool("b.x", "B", "spot", 0.5))
    problem = Problem(pools, {"A": 100.0, "B": 1000.0}, qps=1000, max_spot_share=0.5)
    sol = solve(problem)
    for g in ("A", "B"):
        spot = sum(n for name, n in sol.counts.items() if name.startswith(g.lower()) and name.endswith("/spot"))
        total = sum(n for name, n in sol.counts.items() if name.startswith(g.lower()))
        assert spot <= 0.5 * total, (g, sol.counts)
    assert sol.usd_per_hour == pytest.approx(brute_force(problem)[0])
    assert sol.usd_per_hour == pytest.approx(6.5)  # five A on-demand + five A spot
    assert all(problem.upper_bound(p) >= sol.counts[p.name] for p in pools)


def test_survival_keeps_traffic_when_the_spot_pool_is_lost():
    pools = (pool("g.x", "T4", "on-demand", 1.0), pool("g.x", "T4", "spot", 0.3))
    problem = Problem(pools, {"T4": 100.0}, qps=1000, spot_survival=True, survival_capacity={"T4": 125.0})
    sol = solve(problem)
    # Without the spot pool the on-demand replicas must hold 1,000 req/s at 125 req/s each.
    assert sol.counts["g.x/on-demand"] == 8
    assert sol.counts["g.x/spot"] == 2


def test_reserved_term_chosen_only_where_it_pays_over_the_horizon():
    od, r3 = 1.0, 0.48
    short = reserved_price_over_horizon(r3, 36, horizon_months=12)
    long = reserved_price_over_horizon(r3, 36, horizon_months=36)
    assert short == pytest.approx(1.44) and long == pytest.approx(0.48)
    for price, expect in ((short, "g.x/on-demand"), (long, "g.x/reserved-3yr")):
        pools = (pool("g.x", "T4", "on-demand", od), pool("g.x", "T4", "reserved-3yr", price))
        sol = solve(Problem(pools, {"T4": 100.0}, qps=250))
        assert {k for k, v in sol.counts.items() if v} == {expect}


def test_equal_routing_makes_the_slow_type_set_the_per_replica_rate():
    pools = (pool("fast", "L4", "on-demand", 1.0), pool("slow", "T4", "on-demand", 0.4))
    weighted = solve(Problem(pools, {"L4": 1000.0, "T4": 300.0}, qps=2600, routing="weighted"))
    equal = solve(Problem(pools, {"L4": 1000.0, "T4": 300.0}, qps=2600, routing="equal"))
    assert equal.usd_per_hour >= weighted.usd_per_hour
    reps = sum(equal.counts.values())
    if equal.counts["slow/on-demand"]:
        assert 2600 / reps <= 300.0 + 1e-9


def test_pool_limits_are_respected_and_infeasible_when_too_tight():
    pools = (pool("g.x", "T4", "on-demand", 1.0, limit=3),)
    assert solve(Problem(pools, {"T4": 100.0}, qps=250)).counts["g.x/on-demand"] == 3
    with pytest.raises(Infeasible):
        solve(Problem(pools, {"T4": 100.0}, qps=350))


def test_runner_up_buys_a_different_set_of_pools():
    pools = (pool("a", "T4", "on-demand", 1.0), pool("b", "T4", "on-demand", 1.1))
    problem = Problem(pools, {"T4": 100.0}, qps=250)
    best = solve(problem)
    second = runner_up(problem, best)
    assert second is not None and second.support() != best.support()
    assert second.usd_per_hour >= best.usd_per_hour


def test_without_a_one_pool_fleet_the_first_solution_bounds_the_second_solve():
    """All-spot, survival required: no single pool is feasible, so the bound comes from the first solution."""
    pools = (pool("a.x", "A", "spot", 0.1), pool("b.x", "A", "spot", 0.12))
    problem = Problem(pools, {"A": 100.0}, qps=1000, max_spot_share=1.0, spot_survival=True)
    assert problem.incumbent_cost() is None
    sol = solve(problem)
    reps = sol.counts["a.x/spot"] + sol.counts["b.x/spot"]
    # losing either pool leaves >= 10 replicas
    assert min(sol.counts.values()) >= 10 and reps >= 20


def test_every_gpu_type_in_use_keeps_its_replica_floor():
    """A production fleet: the big type's one replica would carry most traffic alone; it gets two, or is not used."""
    pools = (pool("a.x", "A", "on-demand", 1.0), pool("b.x", "B", "on-demand", 0.3))
    problem = Problem(pools, {"A": 200.0, "B": 60.0}, qps=250)
    one = solve(problem)
    assert one.counts == {"a.x/on-demand": 1, "b.x/on-demand": 1}  # the floor is what changes the answer below
    floored = replace(problem, min_replicas_per_gpu=2)
    sol = solve(floored)
    for g in ("a", "b"):
        n = sum(c for name, c in sol.counts.items() if name.startswith(g))
        assert n == 0 or n >= 2, sol.counts
    assert sol.usd_per_hour == pytest.approx(brute_force(floored)[0])
    assert sol.counts == {"a.x/on-demand": 0, "b.x/on-demand": 5}
    assert binding_constraint(floored, sol)[0] == "replicas per GPU type"


def test_replicas_by_gpu_reads_a_pool_left_out_of_the_counts_as_holding_none():
    """Counts as a plan records a period's instances (pools without any left out) give the same replicas per GPU
    type as the full counts; the point planner's copy raised KeyError on them, the day planner's read them as 0."""
    pools = (pool("g5.12xlarge", "A10G", "on-demand", 5.67, per=4), pool("g4dn.xlarge", "T4", "spot", 0.21),
             pool("g4dn.xlarge", "T4", "on-demand", 0.53))
    full = dict(zip((p.name for p in pools), (2, 3, 0)))
    sparse = {name: n for name, n in full.items() if n}
    assert replicas_by_gpu(pools, sparse) == replicas_by_gpu(pools, full) == {"A10G": 8, "T4": 3}
