"""Several models, one fleet: which models share a Triton replica, on which GPUs, at each model's own P99.

A *bundle* is a set of models served together by one Triton server per GPU (each model with its own dynamic batcher
and instances, every batch sharing the GPU: :func:`planner.simulate.simulate_colocated`). A replica of a bundle
carries a fixed share of each of its models' traffic; :func:`bundle_share` finds the largest share one replica holds
with every model's simulated P99 within its target. The fleet is one Deployment per bundle and GPU type: a partition
of the models into bundles, each sized by the point MILP (:func:`planner.optimize.solve`) in units of the bundle's
traffic, with every constraint a point plan has (spot share, production floor of replicas per GPU type).
:func:`plan_mix` enumerates the partitions (15 for four models) and keeps the cheapest; the same with singletons only
is one fleet per model, the baseline.

Interference between co-located models: processor sharing at the speed ``serving profile --corun`` measured for
them on that GPU type (the profile's ``corun_speedup``). Where it was not measured, every model must hold its target
both ways a GPU may be shared: batches taking turns in the order they were sent (a small model's batch waits out a
large one's: what the local two-model run on Triton's stand-in measured, where processor sharing understated the
small model's P99 three-fold) and processor sharing with no gain (a large batch runs slower while small ones run).
Each model keeps the Triton config that is best for it alone on that GPU.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import CapacitySearch, ReplicaModel
from planner.catalog import Pool
from planner.optimize import Infeasible, Problem, Solution, solve_with_bound
from planner.simulate import SimResult, Workload, simulate_colocated

SHARE_REQUESTS = 6_000  # requests of the busiest model per co-located simulation
MIN_MODEL_REQUESTS = 2_000  # the lightest model's requests, so its P99 rests on 20 in the tail
SHARE_STEPS = 5  # bisection steps on the share: 1/32 of the bracket (the saturation bound)
SEED = 11
# How a GPU may share itself between models whose co-run was not measured: batches taking turns in the order they
# were sent, and processor sharing with no gain. Turns first: it fails more often, and a failing way ends a trial.
UNMEASURED_WAYS = ((None, True), (None, False))


@dataclass(frozen=True)
class ModelDemand:
    model: str
    qps: float
    p99_ms: float
    overhead_ms: float = 2.0

    @property
    def budget_s(self) -> float:
        return (self.p99_ms - self.overhead_ms) / 1000.0


@dataclass(frozen=True)
class Bundle:
    models: tuple[str, ...]
    gpu: str
    configs: tuple[BatchingConfig, ...]
    share: float  # of each model's traffic one replica carries
    p99_ms: tuple[float, ...]  # simulated, end to end, at that share


@dataclass(frozen=True)
class Part:
    """One set of co-located models and its fleet: a Deployment per GPU type it uses."""

    models: tuple[str, ...]
    bundles: list[Bundle]  # one per GPU type used
    counts: dict[str, int]  # pool -> instances
    usd_per_hour: float
    replicas: dict[str, int]  # GPU type -> replicas
    p99_ms: dict[str, tuple[float, ...]]  # GPU type -> each model's P99 simulated at the fleet's own share per replica
    solution: Solution | None = field(default=None, compare=False, repr=False)
    # GPU type -> each model's simulation at that share (unmeasured co-runs: the way with the higher P99)
    results: dict[str, list[SimResult]] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class MixPlan:
    parts: list[Part]
    usd_per_hour: float
    separate_usd_per_hour: float
    bundles_evaluated: int
    partitions: int
    separate: list[Part] = field(default_factory=list)
    runner_up: tuple[tuple[tuple[str, ...], ...], float] | None = None  # the next cheapest partition and its $/h
    lp_bound: float | None = None  # the least, over every partition, of its sets' LP relaxations summed

    @property
    def saving(self) -> float:
        return 1.0 - self.usd_per_hour / self.separate_usd_per_hour if self.separate_usd_per_hour else 0.0


def _runs(bundle_models: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
          share: float, speedup, turns: bool = False, give_up: bool = False) -> list[SimResult] | None:
    """Each model's simulated latencies on one replica carrying ``share`` of every model's traffic; with
    ``give_up``, None as soon as some model's P99 is sure to exceed its budget."""
    rates = [d.qps * share for d in bundle_models]
    span = max(SHARE_REQUESTS / max(rates), MIN_MODEL_REQUESTS / min(rates))
    rng = np.random.default_rng(SEED)
    arrivals, draws = [], []
    for r in rates:
        n = max(int(r * span), 1)
        unit = Workload.poisson(n, seed=int(rng.integers(1 << 30)))
        arrivals.append(unit.unit_arrivals / r)
        draws.append(unit.draws)
    results = simulate_colocated(arrivals, cfgs, [m.service for m in models], draws, speedup, turns=turns,
                                 give_up_above_s=[d.budget_s for d in bundle_models] if give_up else None)
    return results


def _simulate(bundle_models: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
              share: float, speedup, turns: bool = False, give_up: bool = False) -> list[float] | None:
    """Each model's P99 (s, queue + device) on one replica carrying ``share`` of every model's traffic; with
    ``give_up``, None as soon as some model's P99 is sure to exceed its budget."""
    results = _runs(bundle_models, models, cfgs, share, speedup, turns, give_up)
    if results is None:
        return None
    return [float(np.quantile(res.latency_s, 0.99)) for res in results]


def bundle_share(demands: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
                 speedup=None, turns: bool = False, at_most: float | None = None,
                 ways: tuple[tuple[object, bool], ...] | None = None) -> tuple[float, list[float]]:
    """The largest share of each model's traffic one co-located replica holds with every P99 within its budget,
    by bisection (P99 rises with the share) up to ``at_most``; 0 when none does. Also the P99s (s) at it, each
    model's worst over the ``ways`` the GPU is shared ((speedup, turns) pairs; by default the one given)."""
    ways = ways or ((speedup, turns),)
    # No replica serves more than the GPU's time allows: the shares' device loads sum to at most 1.
    top = 1.0 / sum(d.qps / m.saturation_rate(c) for d, m, c in zip(demands, models, cfgs))
    if at_most is not None:
        top = min(top, at_most)

    def holds(share: float) -> tuple[bool, list[float]]:
        worst = [0.0] * len(demands)
        for speed, one_at_a_time in ways:  # a way that fails settles it: the others are not run
            p99 = _simulate(demands, models, cfgs, share, speed, one_at_a_time, give_up=True)
            if p99 is None or any(p > d.budget_s for p, d in zip(p99, demands)):
                return False, []
            worst = [max(a, b) for a, b in zip(worst, p99)]
        return True, worst

    lo, hi = 0.0, top
    best: list[float] = []
    if at_most is not None:  # a known upper end may hold already: one run settles it
        ok, p99 = holds(top)
        if ok:
            return top, p99
    for _ in range(SHARE_STEPS):
        mid = (lo + hi) / 2
        ok, p99 = holds(mid)
        if ok:
            lo, best = mid, p99
        else:
            hi = mid
    return lo, best


def _solo(job: tuple[ModelDemand, ReplicaModel]):
    d, model = job
    return CapacitySearch(model).best(d.budget_s * 1000.0)


def _search(job) -> tuple[float, list[float]]:
    """One model set's share on one GPU type: at the measured co-run speed, or, unmeasured, the least of taking
    turns and sharing with no gain (a small model's batch waits out a large one's; a large batch runs slower while
    small ones run)."""
    ds, rms, cfgs, speed = job
    if speed is not None:
        return bundle_share(ds, rms, cfgs, speed)
    return bundle_share(ds, rms, cfgs, ways=UNMEASURED_WAYS)


_FORKED: tuple = ()  # (fn, jobs) as the forked workers inherit them: jobs carry megabytes of service tables


def _run_forked(i: int):
    fn, jobs = _FORKED
    return fn(jobs[i])


def _map(fn, jobs: list, workers: int | None) -> list:
    """``fn`` over ``jobs`` in order, on up to ``workers`` processes (default: every core). The jobs are
    independent simulations, so processes scale them with the cores a planner machine has; forked workers inherit
    the jobs rather than receive them pickled."""
    global _FORKED
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        return [fn(j) for j in jobs]
    _FORKED = (fn, jobs)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run_forked, range(len(jobs))))
    finally:
        _FORKED = ()


def corun_speed(names: tuple[str, ...], gpu: str, most: int, profiles: dict) -> list[float] | None:
    """The GPU's aggregate speed with ``n`` batches of these models in flight, from what ``serving profile --corun``
    measured for every pair of them on this GPU type (the least, for any ``n`` >= 2); None when a pair was not
    measured (the planner then lets their batches take turns)."""
    pairs = []
    for a, b in itertools.combinations(names, 2):
        found = [v for x, y in ((a, b), (b, a)) for v in [((profiles[(x, gpu)].corun_speedup or {}).get(y))]
                 if v is not None]
        if not found:
            return None
        pairs.append(min(found))
    together = min(pairs) if pairs else 1.0
    return [0.0, 1.0] + [together] * max(most - 1, 1)


def _least_per_replica(pools: list[Pool], max_spot_share: float) -> float:
    """The least a replica of this GPU type costs per hour on average in any fleet: spot at most
    ``max_spot_share`` of the type's replicas, the rest at the cheapest other capacity type."""
    per = [p.usd_per_hour / p.gpus_per_instance for p in pools]
    spot = min((v for v, p in zip(per, pools) if p.is_spot), default=math.inf)
    other = min((v for v, p in zip(per, pools) if not p.is_spot), default=math.inf)
    if spot >= other:
        return other
    if other == math.inf:  # spot only: the share cannot be kept, but a replica still costs no less than spot
        return spot
    return max_spot_share * spot + (1.0 - max_spot_share) * other


def _partitions(items: list[str]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


def plan_mix(demands: list[ModelDemand], profiles: dict, pools: tuple[Pool, ...], *, max_spot_share: float = 0.7,
             min_replicas_per_gpu: int = 2, speedup=None, spec: AutoscalingSpec | None = None,
             workers: int | None = None) -> MixPlan:
    """The cheapest partition of the models into co-located bundles, each on its cheapest fleet; and the fleet
    of one Deployment per model, for comparison. ``profiles``: (model, GPU) -> latency profile. Replicas are sized
    at the HPA target (``spec``, by default a point plan's lag-aware one), as a point plan sizes them. The
    simulations run on ``workers`` processes (default: every core)."""
    spec = spec or AutoscalingSpec(scale_up_lag_s=DEFAULT_SCALE_UP_LAG_S, ramp_per_min=DEFAULT_RAMP_PER_MIN)
    headroom = spec.sizing_rate(1.0)  # the HPA target over the capacity: linear in the capacity
    by_name = {d.model: d for d in demands}
    gpus = sorted({p.gpu for p in pools})
    replica = {(d.model, g): ReplicaModel.from_profile(profiles[(d.model, g)]) for d in demands for g in gpus
               if (d.model, g) in profiles}
    keys = sorted(replica)
    solo = {k: cap for k, cap in zip(keys, _map(_solo, [(by_name[k[0]], replica[k]) for k in keys], workers))
            if cap is not None}
    bundles: dict[tuple[tuple[str, ...], str], Bundle] = {}
    for (m, g), cap in solo.items():
        bundles[((m,), g)] = Bundle((m,), g, (cap.config,), cap.max_rate / by_name[m].qps, (by_name[m].p99_ms,))
    speeds: dict[tuple[tuple[str, ...], str], list[float] | None] = {}
    sized: dict[tuple[str, ...], tuple[Problem, object] | None] = {}

    def size(names: tuple[str, ...]):
        """The set's cheapest fleet (problem, solution), or None when no GPU type holds it."""
        if names not in sized:
            usable = {g: b for (n, g), b in bundles.items() if n == names}
            mine = tuple(p for p in pools if p.gpu in usable)
            sized[names] = None
            if mine:
                problem = Problem(mine, {g: b.share * headroom for g, b in usable.items()}, 1.0,
                                  max_spot_share=max_spot_share, min_replicas_per_gpu=min_replicas_per_gpu)
                try:
                    sized[names] = (problem, solve_with_bound(problem))
                except Infeasible:
                    pass
        return sized[names]

    def part(names: tuple[str, ...]) -> Part:
        """The set's fleet, each model's P99 verified at the share of its traffic one replica of it carries."""
        problem, sol = sized[names]
        used = sorted({p.gpu for p in problem.pools if sol.counts[p.name] > 0})
        reps = {g: sum(p.gpus_per_instance * sol.counts[p.name] for p in problem.pools if p.gpu == g) for g in used}
        ds = [by_name[m] for m in names]
        p99, runs = {}, {}
        for g in used:
            share = max(sol.traffic.get(g, 0.0), 1e-9) / reps[g]
            speed = speeds.get((names, g), speedup)
            rms, cfgs = [replica[(m, g)] for m in names], list(bundles[(names, g)].configs)
            sim = _runs(ds, rms, cfgs, share, speed)
            if speed is None and len(names) > 1:  # unmeasured: the worse of the two ways, per model
                turns = _runs(ds, rms, cfgs, share, None, turns=True)
                sim = [max(a, b, key=lambda r: r.quantile_ms(0.99)) for a, b in zip(sim, turns)]
            runs[g] = sim
            p99[g] = tuple(round(r.quantile_ms(0.99) + d.overhead_ms, 3) for r, d in zip(sim, ds))
        return Part(names, [bundles[(names, g)] for g in used], {k: v for k, v in sol.counts.items() if v},
                    sol.usd_per_hour, reps, p99, sol, runs)

    cheapest = {g: _least_per_replica([p for p in pools if p.gpu == g], max_spot_share) for g in gpus}
    separate_usd = {m: size((m,))[1].usd_per_hour if size((m,)) else None for m in by_name}
    jobs, job_keys, job_cost = [], [], []
    for n in range(2, len(demands) + 1):
        for names in itertools.combinations(sorted(by_name), n):
            if any(separate_usd[m] is None for m in names):
                continue
            apart_usd = sum(separate_usd[m] for m in names)
            ds = [by_name[m] for m in names]
            on = [g for g in gpus if all((m, g) in solo for m in names)]
            # A set of models is worth simulating together only where its cheapest conceivable fleet undercuts its
            # members' own fleets: otherwise any partition using it costs no less with it split, so dropping it is
            # exact. Any fleet of these models costs at least the GPU time of the best type at its saturation
            # bound, and one that uses type g at least g's replica floor: a type that cannot undercut is skipped.
            tops = {g: 1.0 / sum(d.qps / replica[(m, g)].saturation_rate(solo[(m, g)].config)
                                 for m, d in zip(names, ds)) for g in on}
            time_bound = min((cheapest[g] / (tops[g] * headroom) for g in on), default=math.inf)
            for g in on:
                if max(time_bound, min_replicas_per_gpu * cheapest[g]) >= apart_usd - 1e-9:
                    continue
                cfgs = [solo[(m, g)].config for m in names]
                speed = speedup or corun_speed(names, g, sum(c.instance_count for c in cfgs), profiles)
                speeds[(names, g)] = speed
                jobs.append((ds, [replica[(m, g)] for m in names], cfgs, speed))
                job_keys.append((names, g))
                job_cost.append(len(names) / tops[g])  # smaller shares batch less: more events per request
    # The longest searches start first, so the workers finish together.
    order = sorted(range(len(jobs)), key=lambda j: -job_cost[j])
    found = dict(zip(order, _map(_search, [jobs[j] for j in order], workers)))
    for j, ((names, g), job) in enumerate(zip(job_keys, jobs)):
        share, p99 = found[j]
        if share > 0:
            bundles[(names, g)] = Bundle(names, g, tuple(job[2]), share,
                                         tuple(p * 1000.0 + d.overhead_ms for p, d in zip(p99, job[0])))
    costed, partitions, relaxed = [], 0, []
    for partition in _partitions(sorted(by_name)):
        partitions += 1
        sets = tuple(sorted(tuple(sorted(p)) for p in partition))
        fleets = [size(n) for n in sets]
        if all(f is not None for f in fleets):
            costed.append((sum(f[1].usd_per_hour for f in fleets), sets))
            bounds = [f[1].lp_bound for f in fleets]
            relaxed.append(None if None in bounds else sum(bounds))
    if not costed or any(v is None for v in separate_usd.values()):
        raise Infeasible("no fleet holds every model's P99 target")
    costed.sort()
    (best_usd, best), second = costed[0], (costed[1] if len(costed) > 1 else None)
    separate = [part((m,)) for m in sorted(by_name)]
    return MixPlan([part(n) for n in best], best_usd, sum(p.usd_per_hour for p in separate), len(bundles),
                   partitions, separate, None if second is None else (second[1], second[0]),
                   None if None in relaxed else min(relaxed))
