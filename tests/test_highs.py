"""planner/highs.py says it passes HiGHS the model as scipy.optimize.milp does, with the same HiGHS, so the planner's
answers did not change when it stopped importing scipy.optimize: checked against scipy.optimize.milp itself on
seeded random problems (mixed-integer and LP, feasible and infeasible, duplicate coordinates). An LP's answer is
scipy's to the bit; a MIP's is as good (the same status and objective, every constraint met), since planner/highs.py
skips HiGHS's feasibility-jump heuristic, which can change which of several equally cheap answers comes back."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from planner import highs


def problem(seed: int, integer: bool):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(3, 12)), int(rng.integers(2, 10))
    nnz = int(rng.integers(n, n * m))
    rows, cols = rng.integers(0, m, nnz), rng.integers(0, n, nnz)  # repeats: they sum
    values = np.round(rng.uniform(-3, 5, nnz), 2)
    lo = np.where(rng.random(m) < 0.3, -np.inf, np.round(rng.uniform(-5, 5, m), 1))
    hi = np.where(rng.random(m) < 0.3, np.inf, lo + np.round(rng.uniform(0, 20, m), 1))
    c = np.round(rng.uniform(-1, 3, n), 3)
    ub = np.round(rng.uniform(1, 10, n), 0)
    integral = (rng.random(n) < 0.6).astype(float) if integer else np.zeros(n)
    return c, rows, cols, values, lo, hi, np.zeros(n), ub, integral


def met(x, a, lo, hi, lb, ub, integral, tol=1e-7) -> bool:
    ax = a @ x
    whole = np.abs(x - np.round(x)) <= tol
    return bool(np.all(ax >= lo - tol) and np.all(ax <= hi + tol) and np.all(x >= lb - tol) and np.all(x <= ub + tol)
                and np.all(whole[integral > 0]))


@pytest.mark.parametrize("integer", [True, False], ids=["milp", "lp"])
def test_highs_answers_as_scipy_milp(integer):
    solved = infeasible = 0
    for seed in range(60):
        c, rows, cols, values, lo, hi, lb, ub, integral = problem(seed, integer)
        a = coo_array((values, (rows, cols)), shape=(len(lo), len(c))).tocsr()
        ref = milp(c, constraints=LinearConstraint(a, lo, hi), bounds=Bounds(lb, ub), integrality=integral,
                   options={"time_limit": 30.0, "mip_rel_gap": 1e-6})
        got = highs.solve(c, rows, cols, values, lo, hi, lb, ub, integral, time_limit_s=30.0, mip_rel_gap=1e-6)
        assert got.status == ref.status, seed
        assert (got.x is None) == (ref.x is None), seed
        if ref.x is not None:
            if integer:
                assert got.x @ c == pytest.approx(ref.x @ c, rel=1e-9, abs=1e-9), seed
                assert met(got.x, a, lo, hi, lb, ub, integral), seed
                assert got.mip_gap <= 1e-6, seed
            else:
                assert np.array_equal(got.x, ref.x), seed
                assert got.mip_gap is None
            solved += 1
        else:
            infeasible += 1
    assert solved and infeasible  # both kinds were compared
