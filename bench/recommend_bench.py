"""Benchmark for `planner recommend` (run by hand: python bench/recommend_bench.py). Not a test.

Prints, at QPS 100, 1k, 10k and 100k (P99 <= 100 ms, embedded data, default constraints):
  * wall time of the whole `planner recommend` process;
  * the plan's cost against the cheapest single-GPU-type all-on-demand fleet at the same P99;
  * the plan's cost against a Karpenter-like greedy (cheapest $ per unit of capacity first, spot first);
  * the solver's MIP gap and the LP-relaxation gap;
and, on small random catalogs, how often the MILP's cost equals brute force.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner.bruteforce import brute_force, feasible  # noqa: E402
from planner.capacity import CapacitySearch, ReplicaModel  # noqa: E402
from planner.catalog import pools_for, read_catalog  # noqa: E402
from planner.optimize import Infeasible, Problem, solve  # noqa: E402
from planner.profiles import load_profiles  # noqa: E402
from planner.pipeline import DEFAULT_OVERHEAD_MS, RecommendRequest  # noqa: E402
from planner.recommend import recommend  # noqa: E402

QPS = (100, 1_000, 10_000, 100_000, 1_000_000)  # the last row shows the integrality gap shrinking
P99_MS = 100.0


def process_wall_s(qps: float) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", "recommend", "--qps", str(qps), "--p99-ms", str(P99_MS),
                    "--format", "json"], check=True, capture_output=True)
    return time.perf_counter() - t0


def single_type_on_demand(qps: float) -> tuple[float, str]:
    best = (math.inf, "")
    for gpu in sorted(read_catalog().gpus()):
        try:
            plan = recommend(RecommendRequest(qps=qps, p99_ms=P99_MS, gpus=[gpu], capacity_types=["on-demand"],
                                              spot_survival=False))
        except Exception:
            continue
        types = {p.instance_type for p in plan.pools}
        best = min(best, (plan.cost.usd_per_hour, f"{gpu} ({', '.join(sorted(types))})"))
    return best


def greedy(problem: Problem) -> float:
    """Karpenter-like: cheapest $/capacity first with spot preferred, up to the spot share; then the cheapest
    non-spot pool; then non-spot instances are added until the fleet is feasible (survival, floors)."""
    def per_capacity(p):
        return p.usd_per_hour / (problem.capacity[p.gpu] * p.gpus_per_instance)
    counts = {p.name: 0 for p in problem.pools}
    spot = sorted((p for p in problem.pools if p.is_spot), key=per_capacity)
    rest = sorted((p for p in problem.pools if not p.is_spot), key=per_capacity)
    order = spot[:1] + rest[:1]
    total_reps = lambda: sum(p.gpus_per_instance * counts[p.name] for p in problem.pools)  # noqa: E731
    held = 0.0
    for p in order:
        while held < problem.qps:
            if p.is_spot:
                spot_reps = sum(q.gpus_per_instance * counts[q.name] for q in spot) + p.gpus_per_instance
                if spot_reps > problem.max_spot_share * (total_reps() + p.gpus_per_instance):
                    break
            counts[p.name] += 1
            held += problem.capacity[p.gpu] * p.gpus_per_instance
    pools = problem.pools
    vec = lambda: tuple(counts[p.name] for p in pools)  # noqa: E731
    while not feasible(problem, vec()):
        counts[rest[0].name] += 1
    return sum(p.usd_per_hour * counts[p.name] for p in pools)


def default_problem(qps: float) -> Problem:
    req = RecommendRequest(qps=qps, p99_ms=P99_MS)
    profiles = load_profiles()
    caps = {}
    for gpu in sorted(read_catalog().gpus()):
        cap = CapacitySearch(ReplicaModel.from_profile(profiles[("resnet50", gpu)])).best(P99_MS - DEFAULT_OVERHEAD_MS)
        if cap:
            caps[gpu] = cap.max_rate
    pools = tuple(pools_for(read_catalog(), set(caps), req.horizon_months))
    return Problem(pools, caps, qps, "weighted", req.max_spot_share, req.spot_survival, dict(caps), 1)


def brute_force_agreement(n_cases: int = 60, seed: int = 2026) -> tuple[int, int, float]:
    from tests.test_optimize import small_cases  # the same generator the tests use
    equal = total = 0
    worst = 0.0
    for problem in small_cases(n_cases, seed):
        try:
            expected = brute_force(problem)[0]
        except Infeasible:
            continue
        got = solve(problem).usd_per_hour
        total += 1
        equal += abs(got - expected) <= 1e-9 * max(1.0, expected)
        worst = max(worst, abs(got - expected) / expected)
    return equal, total, worst


def main() -> None:
    print(f"planner recommend at P99 <= {P99_MS:g} ms, embedded us-east-1 catalog and ResNet-50 profiles")
    header = f"{'QPS':>8} {'wall s':>7} {'plan $/h':>10} {'1-type OD $/h':>14} {'ratio':>6} {'greedy $/h':>11} {'ratio':>6} {'MIP gap':>8} {'LP gap':>8}"
    print(header)
    for qps in QPS:
        wall = process_wall_s(qps)
        plan = recommend(RecommendRequest(qps=qps, p99_ms=P99_MS))
        od, _ = single_type_on_demand(qps)
        g = greedy(default_problem(qps))
        usd = plan.cost.usd_per_hour
        print(f"{qps:>8,} {wall:>7.2f} {usd:>10.2f} {od:>14.2f} {usd / od:>6.2f} {g:>11.2f} {usd / g:>6.2f} "
              f"{plan.solver.mip_gap:>8.2%} {plan.solver.lp_gap:>8.2%}")
    equal, total, worst = brute_force_agreement()
    print(f"small random catalogs: MILP cost equals brute force in {equal}/{total} feasible cases "
          f"(worst relative difference {worst:.1e})")


if __name__ == "__main__":
    main()
