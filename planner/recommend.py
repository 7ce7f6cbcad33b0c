"""``recommend``: from a QPS and P99 target to a priced, simulated plan. The planner's public entry point.

Steps: per GPU type, find the Triton config with the most per-replica capacity at the device budget
(target minus fixed overhead) by simulation; size the fleet with the MILP; then simulate the chosen fleet at
its planned rates on fresh random numbers. If a deployment's simulated P99 misses the target there, its
capacity is tightened and the fleet re-solved, so the reported P99 is always a simulated one. The stages are
:mod:`planner.pipeline`'s, shared with the day and mix plans; this module runs them at one rate.
"""
from __future__ import annotations

from gpufleet.contracts.plan import Plan
from planner.errors import PlannerInputError
from planner.optimize import Infeasible, solve_with_bound
from planner.pipeline import (MAX_ROUNDS, TIGHTEN, VERIFY_REQUESTS, VERIFY_SEED, RecommendRequest, finish, prepare,
                              verify_at, why_no_fleet)
from planner.simulate import Workload
from planner.sizing import fleet_problem


def recommend(req: RecommendRequest) -> Plan:
    """Answer "Q req/s at P99 <= T ms: what do I buy, and how do I configure Triton?" as a :class:`Plan`."""
    sized = prepare(req)
    sizing, spec = sized.sizing, sized.spec
    verify = Workload.poisson(VERIFY_REQUESTS, seed=VERIFY_SEED)
    for _ in range(MAX_ROUNDS):
        problem = fleet_problem(sized.pools, sizing, req.qps, sized.constraints)
        try:
            sol = solve_with_bound(problem)
        except Infeasible:
            raise PlannerInputError(why_no_fleet(problem)) from None
        traffic, reps, results, missed = verify_at(sized, problem, sol, verify, req)
        if not missed:
            break
        for g in missed:
            sizing[g] = sizing[g].tightened(TIGHTEN, spec)
    else:
        raise PlannerInputError(f"infeasible: simulation could not confirm P99 <= {req.p99_ms:g} ms for "
                                f"{', '.join(missed)} after {MAX_ROUNDS} rounds")
    return finish(req, sized, problem, sol, traffic, reps, results, verify)
