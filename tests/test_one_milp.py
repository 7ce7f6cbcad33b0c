"""One fleet MILP (planner.setcover.solve_milp) under every plan: a point plan is a set cover with one model, one
period and one singleton column per GPU type, and what the builder offers one caller it offers every caller."""
import random

import pytest

from planner.bruteforce import brute_force
from planner.optimize import Infeasible, set_cover_problem
from planner.setcover import solve_milp, solve_set_cover
from tests.test_optimize import random_problem, small_cases


@pytest.mark.parametrize("seed", range(2))
def test_a_point_solved_as_a_set_cover_costs_what_brute_force_finds(seed):
    compared = 0
    for problem in small_cases(15, 100 + seed):
        try:
            expected = brute_force(problem)[0]
        except Infeasible:
            with pytest.raises(Infeasible):
                solve_set_cover(set_cover_problem(problem))
            continue
        got = solve_set_cover(set_cover_problem(problem))
        assert got.usd_per_hour == pytest.approx(expected, rel=1e-6, abs=1e-6), problem
        compared += 1
    assert compared > 0


def test_an_excluded_fleet_is_never_the_answer_over_several_periods():
    rng = random.Random(7)
    checked = 0
    while checked < 10:
        problem = random_problem(rng)
        sc = set_cover_problem(problem, demand=(problem.qps, problem.qps / 3), weights=(0.5, 0.5))
        bound = lambda c, p, t: 200.0  # noqa: E731 (generous: these fleets hold a few dozen instances)
        try:
            first = solve_milp(sc, bound=bound)
        except Infeasible:
            continue
        support = frozenset(name for by_pool in first.counts.values() for name, v in by_pool.items() if any(v))
        try:
            second = solve_milp(sc, bound=bound, exclude=(support,))
        except Infeasible:
            continue
        other = frozenset(name for by_pool in second.counts.values() for name, v in by_pool.items() if any(v))
        assert other != support
        assert second.objective >= first.objective - 1e-6 * max(first.objective, 1.0)
        checked += 1
