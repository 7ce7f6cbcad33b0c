"""Several models, one fleet: which models share a Triton replica, on which GPUs, at each model's own P99.

A *bundle* is a set of models served together by one Triton server per GPU (each model with its own dynamic batcher
and instances, every batch sharing the GPU: :func:`planner.simulate.simulate_colocated`). A replica of a bundle
carries a fixed share of each of its models' traffic; :func:`bundle_share` finds the largest share one replica holds
with every model's simulated P99 within its target. The fleet is one Deployment per bundle and GPU type: a partition
of the models into bundles chosen by one set-partitioning MILP over candidate bundles (:mod:`planner.setcover`), with
every constraint a point plan has (spot share and survival, replica floors, pool limits, routing). :func:`plan_mix`
enters each candidate at an upper bound on its share and simulates it only where an optimum uses it; the same with
singletons only is one fleet per model, the baseline. The old enumeration of partitions is the tests' reference
(:mod:`planner.mixbrute`).

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
from functools import lru_cache

import numpy as np

from gpufleet.contracts.autoscaling import DEFAULT_RAMP_PER_MIN, DEFAULT_SCALE_UP_LAG_S, AutoscalingSpec
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import CapacitySearch, ReplicaModel
from planner.sizing import MAX_ROUNDS, TIGHTEN, VERIFY_REQUESTS, VERIFY_SEED, GpuSizing
from planner.catalog import Pool
from planner.optimize import Infeasible
from planner.setcover import Column, SetCoverProblem, choose_partition, merge, solve_set_cover
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
    share: float  # of each model's traffic one replica carries at every target
    p99_ms: tuple[float, ...]  # simulated, end to end, at that share
    max_rates: tuple[float, ...] = ()  # each model's req/s one replica holds at its target (``share`` x its rate)


@dataclass(frozen=True)
class Part:
    """One set of co-located models and its fleet: a Deployment per GPU type it uses."""

    models: tuple[str, ...]
    bundles: list[Bundle]  # one per GPU type used; ``share``: the most of each model's traffic a replica holds
    counts: dict[str, int]  # pool -> instances
    usd_per_hour: float
    replicas: dict[str, int]  # GPU type -> replicas
    p99_ms: dict[str, tuple[float, ...]]  # GPU type -> each model's P99 simulated at the fleet's own share per replica
    # GPU type -> (what its replicas hold, what the set's hold): each model's traffic is routed in that proportion
    weights: dict[str, tuple[float, float]] = field(default_factory=dict)
    # GPU type -> each model's simulation at that share (unmeasured co-runs: the way with the higher P99)
    results: dict[str, list[SimResult]] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class MixPlan:
    parts: list[Part]
    usd_per_hour: float
    separate_usd_per_hour: float
    bundles_evaluated: int  # model sets x GPU types whose share was simulated
    candidates: int  # model sets x GPU types in the set-cover MILP (simulated or bounded)
    separate: list[Part] = field(default_factory=list)
    lp_bound: float | None = None  # the LP relaxation over every candidate, the not fully searched at upper bounds
    mip_gap: float = 0.0
    status: str = "optimal"
    wall_s: float = field(default=0.0, compare=False)  # in the MILPs
    milps: int = 0  # set-cover MILPs solved (lazy simulation and verification rounds)
    pruned: int = 0  # sets x GPU types dropped as dearer than their members apart, whatever their share
    # (models, GPU type) -> the candidate as the MILP last saw it (simulated, or at its bound)
    columns: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def saving(self) -> float:
        return 1.0 - self.usd_per_hour / self.separate_usd_per_hour if self.separate_usd_per_hour else 0.0


def simulate_runs(bundle_models: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
          share: float, speedup, turns: bool = False, give_up: bool = False, *, seed: int = SEED,
          requests: int = SHARE_REQUESTS) -> list[SimResult] | None:
    """Each model's simulated latencies on one replica carrying ``share`` of every model's traffic; with
    ``give_up``, None as soon as some model's P99 is sure to exceed its budget. ``seed`` and ``requests`` (the
    busiest model's): the share search's by default; a verification passes its own (fresh numbers)."""
    rates = [d.qps * share for d in bundle_models]
    span = max(requests / max(rates), MIN_MODEL_REQUESTS / min(rates))
    rng = np.random.default_rng(seed)
    arrivals, draws = [], []
    for r in rates:
        n = max(int(r * span), 1)
        unit = unit_workload(n, int(rng.integers(1 << 30)))
        arrivals.append(unit.unit_arrivals / r)
        draws.append(unit.draws)
    results = simulate_colocated(arrivals, cfgs, [m.service for m in models], draws, speedup, turns=turns,
                                 give_up_above_s=[d.budget_s for d in bundle_models] if give_up else None)
    return results


@lru_cache(maxsize=64)
def unit_workload(n: int, seed: int) -> Workload:
    """:meth:`Workload.poisson`, remembered: a bisection on the share draws the same unit-rate arrivals at every step
    (each model's request count, its rate times the span, does not depend on the share), so each step reuses them.
    The arrays are read-only: a run that would change them raises."""
    unit = Workload.poisson(n, seed=seed)
    unit.unit_arrivals.setflags(write=False)
    unit.draws.setflags(write=False)
    return unit


def p99_within(latency_s: np.ndarray, bound_s: float) -> bool:
    """Whether ``np.quantile(latency_s, 0.99) <= bound_s``, the same answer, mostly by counting: numpy's P99 lies
    between the order statistics at and after position 0.99 (n - 1) (linear interpolation), so the count of samples
    above the bound settles it unless it falls between them (the position's floor taken one either side, against
    its rounding); then the quantile decides."""
    n = len(latency_s)
    k = math.floor(0.99 * (n - 1))
    above = int(np.count_nonzero(latency_s > bound_s))
    if above <= n - k - 3:  # every order statistic from k - 1 up to k + 2 is within the bound
        return True
    if above >= n - k + 1:  # the order statistic k - 1 is above it
        return False
    return float(np.quantile(latency_s, 0.99)) <= bound_s


def simulate_p99(bundle_models: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
              share: float, speedup, turns: bool = False, give_up: bool = False) -> list[float] | None:
    """Each model's P99 (s, queue + device) on one replica carrying ``share`` of every model's traffic; with
    ``give_up``, None as soon as some model's P99 is sure to exceed its budget."""
    results = simulate_runs(bundle_models, models, cfgs, share, speedup, turns, give_up)
    if results is None:
        return None
    return [float(np.quantile(res.latency_s, 0.99)) for res in results]


def bundle_share(demands: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
                 speedup=None, turns: bool = False, at_most: float | None = None,
                 ways: tuple[tuple[object, bool], ...] | None = None) -> tuple[float, list[float]]:
    """The largest share of each model's traffic one co-located replica holds with every P99 within its budget,
    by bisection (P99 rises with the share) up to ``at_most``; 0 when none does. Also the P99s (s) at it, each
    model's worst over the ``ways`` the GPU is shared ((speedup, turns) pairs; by default the one given)."""
    lo, _, best = share_bracket(demands, models, cfgs, speedup, turns, at_most, ways)
    return lo, best


def _share_runs(demands, models, cfgs, ways, share: float) -> tuple[bool, list[list[SimResult]]]:
    """Whether one replica at ``share`` of every model's traffic holds every budget, every way the GPU may be
    shared, and each way's runs when it does. A way that fails settles it: the others are not run."""
    runs = []
    for speed, one_at_a_time in ways:
        way = simulate_runs(demands, models, cfgs, share, speed, one_at_a_time, give_up=True)
        if way is None or not all(p99_within(r.latency_s, d.budget_s) for r, d in zip(way, demands)):
            return False, []
        runs.append(way)
    return True, runs


def _worst_p99(runs: list[list[SimResult]]) -> list[float]:
    """Each model's P99 (s), the worst over the ways its runs were simulated."""
    return [max(float(np.quantile(way[i].latency_s, 0.99)) for way in runs) for i in range(len(runs[0]))]


def _share_holds(demands, models, cfgs, ways, share: float) -> tuple[bool, list[float]]:
    """:func:`_share_runs`, with the worst P99s (s) when it holds."""
    ok, runs = _share_runs(demands, models, cfgs, ways, share)
    return ok, _worst_p99(runs) if ok else []


def share_bracket(demands: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
                  speedup=None, turns: bool = False, at_most: float | None = None,
                  ways: tuple[tuple[object, bool], ...] | None = None, at_least: float = 0.0,
                  top_known_to_fail: bool = False) -> tuple[float, float, list[float]]:
    """(lo, hi, P99s at lo): a share that holds (``at_least`` when none is found above it, 0 when none at all)
    and the least share found failing (the upper end when none failed), by bisection in [``at_least``, top];
    top is the GPU-time bound (the shares' device loads sum to at most 1), or ``at_most`` below it."""
    ways = ways or ((speedup, turns),)
    top = 1.0 / sum(d.qps / m.saturation_rate(c) for d, m, c in zip(demands, models, cfgs))
    if at_most is not None:
        top = min(top, at_most)
    lo, hi = at_least, top
    best: list[list[SimResult]] = []
    if at_most is not None and not top_known_to_fail:  # a known upper end may hold already: one run settles it
        ok, runs = _share_runs(demands, models, cfgs, ways, top)
        if ok:
            return top, top, _worst_p99(runs)
    for _ in range(SHARE_STEPS):
        mid = (lo + hi) / 2
        ok, runs = _share_runs(demands, models, cfgs, ways, mid)
        if ok:
            lo, best = mid, runs
        else:
            hi = mid
    return lo, hi, _worst_p99(best) if best else []


def share_step(job) -> tuple[bool, float, list[float]]:
    """One step of :func:`search_share`'s bracket, for a search done a step at a time: whether one replica holds
    ``share`` (the way(s) :func:`search_share` tries) and the P99s (s) when it does. ``job``: (demands, replica
    models, configs, co-run speed, share)."""
    ds, rms, cfgs, speed, share = job
    ways = ((speed, False),) if speed is not None else UNMEASURED_WAYS
    ok, p99 = _share_holds(ds, rms, cfgs, ways, share)
    return ok, share, p99


def solo_capacity(job: tuple[ModelDemand, ReplicaModel]):
    d, model = job
    return CapacitySearch(model).best(d.budget_s * 1000.0)


def search_share(job) -> tuple[float, list[float]]:
    """One model set's share on one GPU type: at the measured co-run speed, or, unmeasured, the least of taking
    turns and sharing with no gain (a small model's batch waits out a large one's; a large batch runs slower while
    small ones run)."""
    ds, rms, cfgs, speed, at_most, at_least = job
    ways = ((speed, False),) if speed is not None else UNMEASURED_WAYS
    return share_bracket(ds, rms, cfgs, ways=ways, at_most=at_most, at_least=at_least)


_SHARED: dict = {}  # what a SharedPool's workers inherit when they are forked


def _run_shared(fn, job):
    return fn(_SHARED, job)


class SharedPool:
    """Worker processes forked once for a whole plan, each inheriting ``shared`` (the replica models: megabytes of
    service tables), so that a job names what it needs by key and pickles in bytes. A mix over a day maps hundreds of
    small batches of simulations (each a few milliseconds since they run compiled); a pool started per batch cost
    more in forks than the batch took. ``map(fn, jobs)`` returns ``[fn(shared, job)
    ...]`` in order, in this process when there is one worker or one job. Use it as a context manager: the workers
    end with it."""

    def __init__(self, shared: dict, workers: int | None):
        self.shared = shared
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "SharedPool":
        global _SHARED
        if self.workers > 1:
            if _SHARED:
                raise RuntimeError("one SharedPool at a time: its workers inherit the module's shared state")
            _SHARED = self.shared  # the workers are forked at the first map, and inherit it
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
        return self

    def __exit__(self, *exc) -> None:
        global _SHARED
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            _SHARED = {}

    def map(self, fn, jobs: list) -> list:
        if self._pool is None or len(jobs) < 2:
            return [fn(self.shared, j) for j in jobs]
        return list(self._pool.map(_run_shared, [fn] * len(jobs), jobs))


def capacity_of(shared: dict, job):
    """A model's best config and capacity alone on a GPU type (``job``: its demand, its replica model's key in a
    :class:`SharedPool`'s ``shared["replica"]``)."""
    demand, key = job
    return solo_capacity((demand, shared["replica"][key]))


def _step_of(shared: dict, job):
    """:func:`share_step` with the replica models named by key."""
    ds, keys, cfgs, speed, share = job
    return share_step((ds, [shared["replica"][k] for k in keys], cfgs, speed, share))


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


def least_per_replica(pools: list[Pool], max_spot_share: float) -> float:
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


def column_bound(demands: list[ModelDemand], models: list[ReplicaModel], cfgs: list[BatchingConfig],
                 solo_max_rates: list[float], shared_speed=None) -> float:
    """An upper bound on the share of each member's traffic one co-located replica holds at every target, without
    simulating: the GPU's time (the shares' device loads sum to at most 1: :func:`bundle_share`'s own bracket) and
    each member alone with its config (a model sharing the GPU is never faster than alone on it). Where the co-run
    was not measured (``shared_speed`` None: batches take turns, or share the GPU at no gain), also each member on
    what the others leave of the GPU: while they run it waits, so at best it is a replica slowed to the fraction
    of time they leave, and its rate at its target is at most its rate alone times that fraction (a server that
    stops now and then has the longer tail of the two)."""
    loads = [d.qps / m.saturation_rate(c) for d, m, c in zip(demands, models, cfgs)]
    bound = min([1.0 / sum(loads)] + [r / d.qps for r, d in zip(solo_max_rates, demands)])
    if shared_speed is None and len(demands) > 1:
        for i, (r, d) in enumerate(zip(solo_max_rates, demands)):
            others = sum(loads) - loads[i]
            bound = min(bound, r / (d.qps + r * others))
    return bound


def verify_runs(ds, rms, cfgs, routed: tuple[float, float, int], speed):
    """Each model's simulation at ``share`` of its traffic per replica, for the plan: a single model as the point
    plan verifies it (:data:`planner.sizing.VERIFY_REQUESTS` on fresh random numbers, at the same rate), a set
    co-located on fresh numbers too (the busiest model's VERIFY_REQUESTS; both ways where the co-run was not
    measured: per model the way with the higher P99)."""
    holds, total, reps = routed
    if len(ds) == 1:
        verify = Workload.poisson(VERIFY_REQUESTS, seed=VERIFY_SEED)
        return [verify.run(ds[0].qps * holds / total / reps, cfgs[0], rms[0].service, rms[0].speedup)]
    share = holds / total / reps
    # Fresh numbers, as a point plan is verified: the share was bisected on the search's sample, which it passes by
    # construction.
    fresh = {"seed": VERIFY_SEED, "requests": VERIFY_REQUESTS}
    sim = simulate_runs(ds, rms, cfgs, share, speed, **fresh)
    if speed is None:
        turns = simulate_runs(ds, rms, cfgs, share, None, turns=True, **fresh)
        sim = [max(a, b, key=lambda r: r.quantile_ms(0.99)) for a, b in zip(sim, turns)]
    return sim


def plan_mix(demands: list[ModelDemand], profiles: dict, pools: tuple[Pool, ...], *, max_spot_share: float = 0.7,
             min_replicas_per_gpu: int = 2, speedup=None, spec: AutoscalingSpec | None = None,
             workers: int | None = None, routing: str = "weighted", spot_survival: bool = False,
             min_replicas: int = 1, max_instances_per_pool: int | None = None,
             solo: dict | None = None, replicas: dict | None = None, max_set_size: int | None = None,
             simulate_all: bool = False, verify: bool = True) -> MixPlan:
    """The cheapest partition of the models into co-located sets and its fleet, by one set-partitioning MILP
    (:mod:`planner.setcover`) over every candidate set x GPU type; and one Deployment per model, for comparison.

    ``profiles``: (model, GPU) -> latency profile. ``replicas``: (model, GPU) -> the replica model to simulate
    (default the profile's; a calibration's server costs go here). ``solo``: (model, GPU) ->
    :class:`planner.sizing.GpuSizing` of the model alone (default: its best config at its target, sized at the HPA
    target of ``spec``, by default a point plan's lag-aware one); a calibrated one carries its safe-end capacity,
    and sets with that model scale their share by the same safety.

    Exactness. Candidates are every set of up to ``max_set_size`` models (default all) on every GPU type profiled
    for all of them, less those whose cheapest conceivable fleet (at :func:`column_bound`) costs no less than their
    members' own fleets (dominated: splitting the set never costs more, so the optimum does not need it). A
    candidate enters the MILP at its upper bound and is simulated only when an optimum uses it (lazy column
    evaluation), one step of its share search at a time (the search's upper end, then each halving: the
    candidate's upper bound falls to the least share found failing), so that a candidate the optimum drops
    is not searched further; the MILP is re-solved until its optimum uses fully searched candidates only. Every
    other candidate being optimistic, that optimum is the optimum over all candidates at their searched shares:
    exact, within the MIP gap and the bisection's resolution of each share (1/32 of its bracket); each share the
    same as a whole search (:func:`search_share`) finds. ``simulate_all`` searches every candidate up front
    instead (the reference the tests compare with). The LP relaxation over every candidate, the others at their
    upper bounds (a partly searched one at the least share found failing), is a lower bound on any fleet of these
    candidates.

    Then each Deployment is simulated at the share it is routed (``verify``); one whose P99 misses has its share
    tightened by :data:`planner.sizing.TIGHTEN` and the MILP is solved again, as a point plan does."""
    spec = spec or AutoscalingSpec(scale_up_lag_s=DEFAULT_SCALE_UP_LAG_S, ramp_per_min=DEFAULT_RAMP_PER_MIN)
    by_name = {d.model: d for d in demands}
    names_all = tuple(sorted(by_name))
    gpus = sorted({p.gpu for p in pools})
    replica = {(d.model, g): (replicas or {}).get((d.model, g)) or ReplicaModel.from_profile(profiles[(d.model, g)])
               for d in demands for g in gpus if (d.model, g) in profiles}
    # One pool of workers for the whole search, forked once with the replica models (jobs name them by key).
    with SharedPool({"replica": replica}, workers) as pool:
        if solo is None:
            keys = sorted(replica)
            found = pool.map(capacity_of, [(by_name[k[0]], k) for k in keys])
            solo = {k: GpuSizing(k[1], cap.config, cap.max_rate, spec.sizing_rate(cap.max_rate), cap.max_rate)
                    for k, cap in zip(keys, found) if cap is not None}
        solo = {k: z for k, z in solo.items() if z.sizing_rate > 0}
        # A calibrated model's capacity is its interval's safe end: sets with it hold that fraction of their share.
        safety = {k: (z.max_rate / z.interval.nominal if z.interval is not None and z.interval.nominal > 0 else 1.0)
                  for k, z in solo.items()}

        def single(m: str, g: str) -> Column:
            z = solo[(m, g)]
            d = by_name[m]
            return Column((m,), g, (z.sizing_rate / d.qps,), (z.survival_rate / d.qps,), True,
                          {"configs": (z.config,), "max_rates": (z.max_rate,), "sizing_rates": (z.sizing_rate,),
                           "survival_rates": (z.survival_rate,), "speed": None})

        columns: dict[tuple, Column] = {(c.models, c.gpu): c for c in (single(m, g) for m, g in sorted(solo))}

        def problem(models: tuple[str, ...], cols) -> SetCoverProblem:
            return SetCoverProblem(models, tuple(cols), pools, routing=routing, max_spot_share=max_spot_share,
                                   spot_survival=spot_survival, min_replicas=min_replicas,
                                   min_replicas_per_gpu=min_replicas_per_gpu,
                                   max_instances_per_pool=max_instances_per_pool)

        milps, walls = [0], [0.0]

        def solve(prob, **kw):
            milps[0] += 1
            out = solve_set_cover(prob, **kw)
            walls[0] += out.wall_s
            return out

        separate_sol = {}
        for m in names_all:
            mine = [c for c in columns.values() if c.models == (m,)]
            try:
                separate_sol[m] = solve(problem((m,), mine))
            except Infeasible:
                raise Infeasible(f"no fleet holds {m}'s P99 target") from None
        separate_usd = {m: s.usd_per_hour for m, s in separate_sol.items()}
        # Any fleet of the set costs at least its GPU time at the cheapest per-replica price, and one that uses a type
        # at least that type's replica floor.
        cheapest = {g: least_per_replica([p for p in pools if p.gpu == g], max_spot_share) for g in gpus}
        headroom = spec.sizing_rate(1.0)
        pruned = 0
        largest = min(max_set_size or len(names_all), len(names_all))
        for n in range(2, largest + 1):
            for names in itertools.combinations(names_all, n):
                apart_usd = sum(separate_usd[m] for m in names)
                ds = [by_name[m] for m in names]
                for g in gpus:
                    if not all((m, g) in solo for m in names):
                        continue
                    rms = [replica[(m, g)] for m in names]
                    cfgs = [solo[(m, g)].config for m in names]
                    speed = speedup or corun_speed(names, g, sum(c.instance_count for c in cfgs), profiles)
                    bound = column_bound(ds, rms, cfgs, [solo[(m, g)].max_rate / safety[(m, g)] for m in names], speed)
                    safe = min(safety[(m, g)] for m in names)
                    least = max(cheapest[g] / (bound * safe * headroom), min_replicas_per_gpu * cheapest[g],
                                min_replicas * cheapest[g])
                    if least >= apart_usd - 1e-9:
                        pruned += 1
                        continue
                    columns[(names, g)] = Column(names, g, (bound * safe * headroom,), (bound * safe,), False,
                                                 {"configs": tuple(cfgs), "bound": bound, "safety": safe,
                                                  "speed": speed, "lo": 0.0, "hi": bound})
        candidates = len(columns)
        simulated = 0

        def settle(c: Column, lo: float, hi: float, p99) -> None:
            """Record what simulation found of a candidate: ``lo`` holds (its P99s ``p99``), ``hi`` fails."""
            safe = c.data["safety"]
            if p99:
                c.data["lo"] = lo
                c.data["max_rates"] = tuple(lo * safe * by_name[m].qps for m in c.models)
                c.data["sizing_rates"] = tuple(spec.sizing_rate(r) for r in c.data["max_rates"])
                c.data["survival_rates"] = c.data["max_rates"]
                c.data["p99_ms"] = tuple(p * 1000.0 + by_name[m].overhead_ms for p, m in zip(p99, c.models))
            c.data["hi"] = min(c.data["hi"], hi)
            c.share, c.survival = (c.data["hi"] * safe * headroom,), (c.data["hi"] * safe,)
            c.exact = c.data["lo"] >= c.data["hi"] * (1 - 1e-12)

        def evaluate(keys: list[tuple], full: bool = False) -> set[tuple]:
            """The next step of these candidates' share searches (all of them with ``full``): the same bracket as
            :func:`search_share` (the upper end first, then SHARE_STEPS halvings: 1/32 of the bracket), run a step at
            a time so that a candidate an optimum stops using once its upper end falls is not bisected further. A
            candidate's share is the largest found to hold once its search is done (as the partition search took it);
            until then it enters at the least share found failing, an upper bound. Returns the candidates whose
            upper end moved (or that were dropped): a MILP that saw the others saw them as they still are."""
            nonlocal simulated
            keys = list(keys)
            moved = set()
            while keys:
                jobs = []
                for k in keys:
                    c = columns[k]
                    st = c.data.setdefault("search", {"lo": 0.0, "hi": _bracket_top(c, by_name, replica), "steps": 0,
                                                      "best": []})
                    share = st["hi"] if st["steps"] == 0 else (st["lo"] + st["hi"]) / 2
                    jobs.append(([by_name[m] for m in c.models], [(m, c.gpu) for m in c.models],
                                 list(c.data["configs"]), c.data["speed"], share))
                found = pool.map(_step_of, jobs)
                more = []
                for k, (ok, share, p99) in zip(keys, found):
                    c = columns[k]
                    st = c.data["search"]
                    if st["steps"] == 0:
                        simulated += 1
                    top = st["steps"] == 0
                    st["steps"] += 1
                    if ok:
                        st["lo"], st["best"] = share, p99
                        if top:  # the upper end holds: nothing above it to find
                            st["steps"] = SHARE_STEPS + 1
                    elif not top:
                        st["hi"] = share
                    before = c.data["hi"]
                    if st["steps"] > SHARE_STEPS:
                        settle(c, st["lo"], st["lo"], st["best"])
                        if c.data["lo"] <= 0:
                            del columns[k]
                    else:
                        settle(c, st["lo"], st["hi"], st["best"] if ok else [])
                        if full:
                            more.append(k)
                    if k not in columns or c.data["hi"] != before:
                        moved.add(k)
                keys = more
            return moved

        def needs_of(sol, keys) -> dict[tuple, float]:
            """The share of each member's traffic (at its target, in simulation's units) that each used candidate's
            replicas carry in ``sol``, and while a spot pool is lost; those above what is known to hold."""
            out = {}
            by_pool = {p.name: p for p in pools}
            for k in keys:
                c = columns[k]
                if c.data.get("lo") is None:
                    continue  # a single model: its capacity search is exact
                mates = [j for j in sol.used() if j[0] == k[0]]
                reps = {j: _replicas(sol, j, pools) for j in mates}
                lost = {j: max([by_pool[p].gpus_per_instance * v[0] for p, v in sol.counts[j].items()
                                if by_pool[p].is_spot and v[0] > 0], default=0) for j in mates}
                if routing == "equal":
                    per = 1.0 / sum(reps.values())
                    surv = 1.0 / max(sum(reps.values()) - max(lost.values()), 1e-9)
                else:
                    per = sol.traffic[k][0] / reps[k]
                    surv = sol.traffic[k][0] / max(reps[k] - lost[k], 1e-9)
                need = per / headroom
                if spot_survival:
                    need = max(need, surv)
                need /= c.data["safety"]
                if need > c.data["lo"] * (1 + 1e-12) or not c.exact:  # not exact: its search is not done
                    out[k] = need
            return out

        if simulate_all:
            evaluate([k for k, c in columns.items() if not c.exact], full=True)
        incumbent = None
        if max_instances_per_pool is None and not any(p.max_instances is not None for p in pools):
            incumbent = sum(separate_usd.values())  # one Deployment per model is a feasible fleet

        coupled = incumbent is None  # a pool limit is shared by every set's fleet: only the joint MILP holds it
        set_sol: dict[tuple[str, ...], object] = {(m,): separate_sol[m] for m in names_all}  # a set's own optimum

        def set_columns(names: tuple[str, ...]) -> list[Column]:
            return [c for c in columns.values() if c.models == names]

        def optimistic(names: tuple[str, ...]) -> float:
            """A lower bound on any fleet of the set, without a MILP: GPU time at the cheapest per-replica price on
            the best type for it, and the replica floors."""
            cols = _optimistic_columns(set_columns(names), columns)
            if not cols:
                return math.inf
            per = min(cheapest[c.gpu] / c.share[0] for c in cols)
            return max(per, max(min_replicas_per_gpu, min_replicas) * min(cheapest[c.gpu] for c in cols))

        def set_cost(names: tuple[str, ...]) -> float:
            if names in set_sol:
                return set_sol[names].usd_per_hour if set_sol[names] is not None else math.inf
            return optimistic(names)

        masters: dict[tuple, list] = {}

        def optimum():
            if coupled:  # lazy column evaluation on the joint MILP
                sol = None
                while True:
                    if sol is None:  # re-solved only when a candidate's upper end moved: else the same optimum
                        sol = solve(problem(names_all, columns.values()), incumbent=incumbent)
                    needs = needs_of(sol, sol.used())
                    if not needs:
                        return sol
                    if evaluate(sorted(needs)):
                        sol = None
            # Decomposed: the master picks sets by their costs; a set's cost is a lower bound until its own MILP uses
            # simulated columns only. The master's optimum over exact costs and lower bounds is then the optimum.
            while True:
                costs = {n: set_cost(n) for n in {c.models for c in columns.values()}}
                finite = tuple(sorted((n, v) for n, v in costs.items() if v < math.inf))
                if finite not in masters:  # the same costs: the same master optimum
                    masters[finite] = choose_partition(names_all, dict(finite))[0]
                chosen = masters[finite]
                lazy, changed = [], False
                for n in chosen:
                    if n not in set_sol:
                        try:
                            set_sol[n] = solve(problem(n, _optimistic_columns(set_columns(n), columns)),
                                               incumbent=sum(separate_usd[m] for m in n))
                        except Infeasible:
                            set_sol[n] = None
                        changed = True
                        continue
                    lazy.append(needs_of(set_sol[n], set_sol[n].used()))
                needs = {k: v for d in lazy for k, v in d.items()}
                if needs:
                    # a set's MILP is solved again only where a candidate's upper end moved: else its optimum stands
                    for n in {k[0] for k in evaluate(sorted(needs))}:
                        set_sol.pop(n, None)
                    changed = True
                if not changed:
                    return merge([set_sol[n] for n in chosen])

        rounds = 0
        while True:
            sol = optimum()
            if not verify:
                checked = {}
                break
            checked = _check(sol, columns, by_name, replica, routing, spot_survival, pools)
            missed = [k for k, (_, _, runs) in checked.items()
                      if any(r.quantile_ms(0.99) + by_name[m].overhead_ms > by_name[m].p99_ms
                             for r, m in zip(runs, k[0]))]
            if not missed:
                break
            rounds += 1
            if rounds >= MAX_ROUNDS:
                raise Infeasible("simulation could not confirm every model's P99 for "
                                 f"{', '.join(shared_key(k) for k in missed)} after {MAX_ROUNDS} rounds")
            for k in missed:
                set_sol.pop(k[0], None)
                c = columns[k]
                if len(k[0]) > 1:  # what held in the search missed here: the share known to hold is now below it
                    c.data["lo"] *= TIGHTEN
                    c.data["hi"] = c.data["lo"]
                c.data["max_rates"] = tuple(r * TIGHTEN for r in c.data["max_rates"])
                c.data["sizing_rates"] = tuple(spec.sizing_rate(r) for r in c.data["max_rates"])
                at_target = c.data["max_rates"][0] / by_name[k[0][0]].qps
                c.share = (c.data["sizing_rates"][0] / by_name[k[0][0]].qps,)
                c.survival = (max(c.survival[0] * TIGHTEN, at_target),) if len(k[0]) == 1 else (at_target,)
                c.data["survival_rates"] = tuple(max(r * TIGHTEN, t) for r, t in zip(c.data["survival_rates"],
                                                                                      c.data["max_rates"]))
        try:
            lp = solve(problem(names_all, columns.values()), relax=True, incumbent=incumbent).usd_per_hour
        except Infeasible:
            lp = None
        parts = [_part(s, sol, columns, pools, checked, by_name) for s in sol.sets]
        separate = [_part((m,), separate_sol[m], columns, pools, {}, by_name) for m in names_all]
        return MixPlan(parts, sol.usd_per_hour, sum(separate_usd.values()), simulated, candidates, separate, lp,
                       sol.mip_gap, sol.status, walls[0], milps[0], pruned, dict(columns))


def _bracket_top(c: Column, by_name: dict, replica: dict) -> float:
    """The upper end of a candidate's share search (:func:`share_bracket`'s top): its GPU-time bound, or its
    column bound below it."""
    models = [replica[(m, c.gpu)] for m in c.models]
    top = 1.0 / sum(by_name[m].qps / rm.saturation_rate(cfg) for m, rm, cfg in zip(c.models, models, c.data["configs"]))
    return min(top, c.data["bound"])


def _bound_share(c: Column, columns: dict) -> float:
    """An unsimulated column's share bound, tightened by every simulated subset of it on the same GPU type: a model
    sharing the GPU with more models is never faster (a physical bound; the simulations draw their own random
    numbers, so it holds up to their sampling)."""
    bound = c.data["hi"]
    for k, other in columns.items():
        if k[1] == c.gpu and len(k[0]) > 1 and set(k[0]) < set(c.models):
            bound = min(bound, other.data["hi"])
    return bound


def _optimistic_columns(cols: list[Column], columns: dict) -> list[Column]:
    """The set's columns for its own MILP: simulated ones as they are, the others at their tightest bound."""
    out = []
    for c in cols:
        if len(c.models) == 1:
            out.append(c)
            continue
        b = _bound_share(c, columns) * c.data["safety"]
        head = c.share[0] / c.survival[0]
        out.append(Column(c.models, c.gpu, (b * head,), (b,), False, c.data))
    return out


PARALLEL_AT_LEAST = 6  # jobs below this run in this process: forking and joining workers costs more than it saves


def shared_key(key: tuple) -> str:
    return f"{'+'.join(key[0])}@{key[1]}"


def _holds(sol, key_list, columns, routing: str, spot_survival: bool, pools) -> dict:
    """What each column of one set holds as deployed, in its first model's req/s: weighted routes split a set's
    traffic in proportion to it (as :func:`planner.recommend` routes a point plan: the sizing rate times the
    replicas, less a lost spot pool's with survival); equal routing in proportion to replicas."""
    by_name = {p.name: p for p in pools}
    holds = {}
    for k in key_list:
        c = columns[k]
        reps = _replicas(sol, k, pools)
        if routing == "equal":
            holds[k] = float(reps)
            continue
        most = c.data["sizing_rates"][0] * reps
        if spot_survival:
            for p, v in sol.counts[k].items():
                if by_name[p].is_spot and v[0] > 0:
                    most = min(most, c.data["survival_rates"][0] * (reps - by_name[p].gpus_per_instance * v[0]))
        holds[k] = max(most, 0.0)
    return holds


def _replicas(sol, k, pools) -> int:
    by_name = {p.name: p for p in pools}
    return sum(by_name[p].gpus_per_instance * v[0] for p, v in sol.counts[k].items())


def _check(sol, columns, by_name, replica, routing, spot_survival, pools) -> dict:
    """Simulate every Deployment of ``sol`` at the share it is routed: column -> (weight, replicas, runs)."""
    out = {}
    for s in sol.sets:
        keys = [k for k in sol.used() if k[0] == s]
        holds = _holds(sol, keys, columns, routing, spot_survival, pools)
        total = sum(holds.values())
        for k in keys:
            c = columns[k]
            reps = _replicas(sol, k, pools)
            ds = [by_name[m] for m in s]
            rms = [replica[(m, k[1])] for m in s]
            runs = verify_runs(ds, rms, list(c.data["configs"]), (holds[k], total, reps), c.data["speed"])
            out[k] = ((holds[k], total), reps, runs)
    return out


def _part(names: tuple[str, ...], sol, columns, pools, checked: dict, by_name) -> Part:
    """The set's fleet: its Deployments (one per GPU type) with each model's simulation at its routed share."""
    keys = [k for k in sol.used() if k[0] == names]
    price = {p.name: p for p in pools}
    counts: dict[str, int] = {}
    usd = 0.0
    for k in keys:
        for p, v in sol.counts[k].items():
            if v[0]:
                counts[p] = counts.get(p, 0) + v[0]
                usd += price[p].usd_per_hour * v[0]
    bundles, reps, p99, weights, results = [], {}, {}, {}, {}
    for k in sorted(keys, key=lambda k: k[1]):
        c, g = columns[k], k[1]
        bundles.append(Bundle(names, g, tuple(c.data["configs"]), c.data["max_rates"][0] / by_name[names[0]].qps,
                              tuple(c.data.get("p99_ms", ())), tuple(c.data["max_rates"])))
        if k in checked:
            w, n, runs = checked[k]
            weights[g], reps[g], results[g] = w, n, runs  # weights: (what the column holds, the set's total)
            p99[g] = tuple(round(r.quantile_ms(0.99) + by_name[m].overhead_ms, 3) for r, m in zip(runs, names))
        else:
            reps[g] = _replicas(sol, k, pools)
    return Part(names, bundles, counts, usd, reps, p99, weights, results)
