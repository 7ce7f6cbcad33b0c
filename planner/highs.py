"""The one call into the HiGHS solver: ``min c.x  s.t.  lo <= A x <= hi,  lb <= x <= ub``, some x integer.

Through ``highspy``, HiGHS's own Python interface, rather than ``scipy.optimize.milp``: importing
``scipy.optimize`` (its whole package, linalg, sparse, fft and special with it) took 0.36 s of a point plan's 1.6 s,
``highspy`` 0.1 s. The model is passed as ``scipy.optimize.milp`` passes it (scipy 1.17.1,
``scipy/optimize/_milp.py`` and ``_highspy/_highs_wrapper.py``, read at that version): the constraint matrix column
by column with sorted row indices and duplicates summed, every column's integrality, and the options
``log_to_console`` off, ``time_limit`` and ``mip_rel_gap``; a solution is read under the same conditions (an LP only
when optimal; a MIP also at a time, iteration or solution limit when it found a feasible point). scipy 1.17.1
bundles HiGHS 1.12.0 and the ``highspy`` pinned in pyproject is 1.12, so the solver and its answers are the ones
the planner had through scipy.
"""
from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

# HiGHS model status -> (status as scipy.optimize.milp numbers it: 0 optimal, 1 a limit, 2 infeasible, 3 unbounded,
# 4 other; the message's start), as scipy/optimize/_linprog_highs.py maps them.
_STATUS = {
    highspy.HighsModelStatus.kOptimal: (0, "Optimization terminated successfully. "),
    highspy.HighsModelStatus.kTimeLimit: (1, "Time limit reached. "),
    highspy.HighsModelStatus.kIterationLimit: (1, "Iteration limit reached. "),
    highspy.HighsModelStatus.kInfeasible: (2, "The problem is infeasible. "),
    highspy.HighsModelStatus.kModelError: (2, ""),
    highspy.HighsModelStatus.kUnbounded: (3, "The problem is unbounded. "),
    highspy.HighsModelStatus.kUnboundedOrInfeasible: (4, "The problem is unbounded or infeasible. "),
}
_FEASIBLE_AT_A_LIMIT = (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kIterationLimit,
                        highspy.HighsModelStatus.kSolutionLimit)


@dataclass(frozen=True)
class Result:
    x: np.ndarray | None  # None: no solution to read
    status: int  # 0 optimal, 1 stopped at a limit, 2 infeasible, 3 unbounded, 4 other
    message: str
    mip_gap: float | None = None
    mip_dual_bound: float | None = None


def solve(c: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          lb: np.ndarray, ub: np.ndarray, integral: np.ndarray, *, time_limit_s: float | None = None,
          mip_rel_gap: float | None = None) -> Result:
    """Solve the problem whose constraint matrix has ``values`` at (``rows``, ``cols``) (coordinates; a repeated
    one sums); ``integral`` is 1 for an integer variable, 0 for a continuous one (all 0: an LP)."""
    n, m = len(c), len(lo)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    order = np.lexsort((rows, cols))  # column by column, rows ascending within a column
    rows, cols, values = rows[order], cols[order], values[order]
    if len(rows):
        first = np.r_[True, (np.diff(cols) != 0) | (np.diff(rows) != 0)]
        starts = np.flatnonzero(first)
        values = np.add.reduceat(values, starts)
        rows, cols = rows[starts], cols[starts]
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, m
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.asarray(lb, dtype=np.float64)
    lp.col_upper_ = np.asarray(ub, dtype=np.float64)
    lp.row_lower_ = np.asarray(lo, dtype=np.float64)
    lp.row_upper_ = np.asarray(hi, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, m
    lp.a_matrix_.start_ = np.searchsorted(cols, np.arange(n + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows.astype(np.int32)
    lp.a_matrix_.value_ = values
    integral = np.asarray(integral)
    is_mip = bool(integral.sum() > 0)
    lp.integrality_ = [highspy.HighsVarType(int(i)) for i in integral]
    h = highspy.Highs()
    h.setOptionValue("log_to_console", False)
    # HiGHS 1.12 runs the feasibility-jump heuristic at every MIP's root before branching. The planner's MIPs are
    # small (tens of columns, at most a few hundred rows): the 73 of a 4-model point mix took 0.83 s with it and 0.31 s
    # without, the same objective every time (bench/highs_bench.py, 2026-12-03). Where several answers cost the same,
    # which one comes back can differ from scipy.optimize.milp's (it leaves the option on): 9 of the 73 here.
    h.setOptionValue("mip_heuristic_run_feasibility_jump", False)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    if mip_rel_gap is not None:
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    h.passModel(lp)
    h.run()
    model_status = h.getModelStatus()
    info = h.getInfo()
    number, text = _STATUS.get(model_status, (4, ""))
    message = f"{text}(HiGHS Status {int(model_status)}: {h.modelStatusToString(model_status)})"
    failed = (model_status != highspy.HighsModelStatus.kOptimal if not is_mip else
              model_status not in (highspy.HighsModelStatus.kOptimal, *_FEASIBLE_AT_A_LIMIT)
              or (model_status in _FEASIBLE_AT_A_LIMIT and info.objective_function_value == highspy.kHighsInf))
    if failed:
        return Result(None, number, message)
    x = np.array(h.getSolution().col_value)
    return Result(x, number, message, info.mip_gap if is_mip else None, info.mip_dual_bound if is_mip else None)
