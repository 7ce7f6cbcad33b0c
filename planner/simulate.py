"""Discrete-event simulation of one Triton replica: the dynamic batcher in front of model instances on one GPU.

This is the reference latency model. It follows Triton's dynamic batch scheduler:

* requests wait in one FIFO queue; a batch is formed only when a model instance is free;
* with a free instance, the oldest request starts a pending batch, which is sent at once if enough requests
  are queued to reach the *trigger* size (the smallest preferred batch size, or ``max_batch_size`` when none
  is set), else when the oldest request has waited ``max_queue_delay_microseconds``, else when the trigger
  size arrives; with a delay of zero it is sent at once with whatever is queued;
* a batch sent on the trigger takes the largest preferred size that the queue fills (at most
  ``max_batch_size``); a batch sent on the delay takes everything queued, up to ``max_batch_size``.

Model instances on one GPU share it: while ``n`` batches execute together, each progresses at
``speedup[n] / n`` of its solo speed (processor sharing). ``speedup[n] = n`` gives independent servers;
``speedup[n] = 1`` gives no gain from concurrency.
"""
from __future__ import annotations

import os
import time
from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gpufleet.contracts.triton import BatchingConfig
from planner.service import ServiceTime

WARMUP_FRACTION = 0.05
P99 = 0.99
# A give-up counts only requests above the bound by this relative margin, so that the rounding of a latency (an
# arrival subtracted from a completion time) or of the quantile's interpolation cannot turn a give-up into a run
# whose P99 would in fact have met the bound: giving up decides exactly as the full run's P99 would.
GIVE_UP_MARGIN = 1e-6
# A process runs the one-model loops as Python until it has spent this long (CPU) in them, then loads the compiled
# kernels (planner/simkernels.py) and runs those: loading numba and the kernels costs 0.5-1 s of CPU on the 2-core
# development machine (1.0 s measured beside other work), more than all the simulations of a point or a day plan
# (0.4 s), and pays for itself within a second of a mix's. Spending about what the load costs before paying it is
# at most about twice the better choice, whichever it was (the ski-rental rule). The answers are the same either
# way, to the bit (tests/test_simulate_kernels.py).
INTERPRETED_BUDGET_S = 0.6


@dataclass(frozen=True)
class SimResult:
    latency_s: np.ndarray  # per request after warm-up, queueing plus service, seconds
    queue_s: np.ndarray  # per request after warm-up, arrival to its batch's start, seconds
    mean_batch_size: float
    busy_fraction: float  # share of time the GPU had at least one batch executing
    # Quantiles already read (ms by level): a plan reads a run's P99 several times (to pick the worse way of sharing
    # a GPU, to check it, to write it), each a partition of tens of thousands of samples.
    _read: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def quantile_ms(self, q: float) -> float:
        if q not in self._read:
            self._read[q] = float(np.quantile(self.latency_s, q)) * 1000.0
        return self._read[q]

    def quantiles_ms(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles at once (one partition of the samples), each the same as :meth:`quantile_ms`'s."""
        todo = [q for q in qs if q not in self._read]
        if todo:
            self._read.update(zip(todo, (float(v) * 1000.0 for v in np.quantile(self.latency_s, todo))))
        return [self._read[q] for q in qs]


def simulate(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
             speedup: Sequence[float] | None = None, warmup_fraction: float = WARMUP_FRACTION) -> SimResult:
    """Simulate one replica serving ``arrivals_s`` (sorted, seconds); ``draws`` are uniforms, one per batch.

    ``speedup[n]`` is the aggregate throughput of ``n`` concurrent batches relative to one (index 0 unused);
    by default instances gain nothing from running together.
    """
    if cfg.effective_max_batch > service.max_batch_size:
        raise ValueError(f"max_batch_size {cfg.effective_max_batch} exceeds the profile's {service.max_batch_size}")
    if cfg.instance_count == 1:
        return _simulate_one_instance(arrivals_s, cfg, service, draws, warmup_fraction)
    return _simulate_shared(arrivals_s, cfg, service, draws, speedup, warmup_fraction)


def _batching_rule(cfg: BatchingConfig) -> tuple[list[int], int, int, float]:
    big_b = cfg.effective_max_batch
    preferred = sorted(cfg.preferred_batch_sizes) if cfg.dynamic_batching else []
    trigger = preferred[0] if preferred else big_b
    return preferred, trigger, big_b, cfg.effective_delay_us * 1e-6


def _simulate_one_instance(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                           warmup_fraction: float, give_up_above_s: float | None = None,
                           picks: np.ndarray | None = None) -> SimResult | None:
    """One model instance: batches run one after another, so each starts when the instance is free and the batcher
    sends it (the same rule as :func:`_simulate_shared`, without the processor sharing it needs for several).
    The loop is :func:`planner.simkernels.one_instance`.

    With ``give_up_above_s``, returns None as soon as P99 after warm-up is sure to exceed it (see
    :func:`p99_exceeds`)."""
    kernels = _kernels_when_worth_it()
    if kernels is None:
        with _interpreted():
            return _one_instance_interpreted(arrivals_s, cfg, service, draws, warmup_fraction, give_up_above_s,
                                             np.asarray(picks).tolist() if picks is not None else None)
    arrivals = _floats(arrivals_s)
    n_req = len(arrivals)
    preferred, trigger, big_b, delay = _batching_rule(cfg)
    # Past the last arrival, sentinels that never arrive: a pending batch's trigger request is then never in time,
    # and a count of the queue stops at the end without a bound of its own.
    a = np.concatenate((arrivals, np.full(max(trigger, big_b), np.inf)))
    # Each batch's index into its service table, int(u * grid) as ServiceTime.draw takes it: one grid for every
    # batch size (ServiceTime builds them so), so computed for all draws at once (the same product and truncation).
    tables = service.tables
    grid = len(tables[1])
    if any(len(t) != grid for t in tables[1:]):
        raise ValueError("service tables of different lengths")
    pick = np.ascontiguousarray(picks if picks is not None else table_indices(draws[:n_req], grid), dtype=np.int64)
    give_up = give_up_above_s is not None
    first = must_exceed = 0
    bound = 0.0
    if give_up:
        # Requests after warm-up that arrived before ``done - bound`` finish above the bound; once more than
        # ``n - floor((n - 1) q)`` of them do, the lower order statistic of the quantile is above it.
        first = int(n_req * warmup_fraction)
        kept = n_req - first
        must_exceed = kept - int((kept - 1) * P99) + 1  # one more than needed: safe against the index rounding
        bound = give_up_above_s * (1.0 + GIVE_UP_MARGIN)
    batches, sizes, started, done, busy, end = kernels.one_instance(
        a, n_req, _ints(preferred), trigger, big_b, delay, service.array, pick, give_up, first, must_exceed, bound)
    if batches < 0:
        return None
    return _result(arrivals_s, sizes, started, done, busy, end, warmup_fraction)


_interpreted_s = 0.0  # time this process has spent in the Python loops
_loaded = None  # planner.simkernels, once imported


def _kernels():
    """The compiled loops, imported on first use, never at import (numba's import and the kernels' load cost about
    0.5-1 s of CPU, which a process that simulates nothing or little should not pay)."""
    global _loaded
    if _loaded is None:
        from planner import simkernels
        _loaded = simkernels
    return _loaded


def load_kernels() -> None:
    """Load the compiled loops now (0.5-1 s of CPU; compiling them, when the cache in ``__pycache__`` is missing or
    stale, takes seconds): the simulations after it run compiled. For a process that knows it will simulate a lot,
    and for tests of the compiled path."""
    _kernels()


def _kernels_when_worth_it():
    """The compiled loops once this process has spent :data:`INTERPRETED_BUDGET_S` in the Python ones (or loaded
    them already); None before."""
    if _loaded is None and _interpreted_s < INTERPRETED_BUDGET_S:
        return None
    return _kernels()


@contextmanager
def _interpreted():
    global _interpreted_s
    start = time.process_time()
    try:
        yield
    finally:
        _interpreted_s += time.process_time() - start


def _load_before_fork() -> None:
    """A forked worker (planner.colocate.SharedPool) inherits the parent's compiled kernels; loading them in each worker
    instead would cost every worker the load, every time a pool starts (workers are started to simulate a lot)."""
    load_kernels()


# Only forks that return to Python call this (multiprocessing's, not subprocess's fork-exec).
os.register_at_fork(before=_load_before_fork)


def _floats(x) -> np.ndarray:
    """``x`` as the kernels take it: float64, C-contiguous, writable (numba types a read-only array apart)."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    return arr if arr.flags.writeable else arr.copy()


def _ints(x) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.int64).reshape(-1)
    return arr if arr.flags.writeable else arr.copy()


def table_indices(draws: np.ndarray, grid: int) -> np.ndarray:
    """Each draw's index into a service table of ``grid`` entries: ``int(u * grid)``, as ServiceTime.draw takes it
    (the same product and truncation, for all draws at once)."""
    return (np.asarray(draws, dtype=np.float64) * grid).astype(np.int64)


def _result(arrivals_s: np.ndarray, sizes: np.ndarray, started: np.ndarray, done: np.ndarray, busy: float,
            end: float, warmup_fraction: float) -> SimResult:
    n_req = len(arrivals_s)
    latency = np.repeat(np.asarray(done, dtype=np.float64), sizes) - arrivals_s
    queued_for = np.repeat(np.asarray(started, dtype=np.float64), sizes) - arrivals_s
    first = int(n_req * warmup_fraction)
    span = end - arrivals_s[0] if n_req else 0.0
    return SimResult(latency_s=latency[first:], queue_s=queued_for[first:], mean_batch_size=n_req / max(len(sizes), 1),
                     busy_fraction=busy / span if span > 0 else 0.0)


def _simulate_shared(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                     speedup: Sequence[float] | None, warmup_fraction: float) -> SimResult:
    """Any number of instances sharing the GPU (processor sharing at ``speedup[n] / n`` each); the loop is
    :func:`planner.simkernels.shared`."""
    k = cfg.instance_count
    speed = list(speedup) if speedup is not None else [0.0] + [1.0] * k
    if len(speed) <= k:
        raise ValueError(f"speedup needs entries up to {k} concurrent batches")
    kernels = _kernels_when_worth_it()
    if kernels is None:
        with _interpreted():
            return _shared_interpreted(arrivals_s, cfg, service, draws, speedup, warmup_fraction)
    preferred, trigger, big_b, delay = _batching_rule(cfg)
    sizes, started, done, busy, end = kernels.shared(
        _floats(arrivals_s), _ints(preferred), trigger, big_b, delay, k, _floats(speed), _floats(draws),
        service.array, service.lengths)
    return _result(arrivals_s, sizes, started, done, busy, end, warmup_fraction)


def _one_instance_interpreted(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                           warmup_fraction: float, give_up_above_s: float | None = None,
                           picks: list[int] | None = None) -> SimResult | None:
    """:func:`_simulate_one_instance` as the Python loop it was (36e3756), for a process that simulates little."""
    n_req = len(arrivals_s)
    preferred, trigger, big_b, delay = _batching_rule(cfg)
    tables = service._lists
    inf = float("inf")
    # Past the last arrival, sentinels that never arrive: a pending batch's trigger request is then never in time,
    # and a count of the queue stops at the end without a bound of its own.
    a = arrivals_s.tolist() + [inf] * max(trigger, big_b)
    # Each batch's index into its service table, int(u * grid) as ServiceTime.draw takes it: one grid for every
    # batch size (ServiceTime builds them so), so computed for all draws at once (the same product and truncation).
    grid = len(tables[1])
    if any(len(t) != grid for t in tables[1:]):
        raise ValueError("service tables of different lengths")
    pick = picks if picks is not None else table_indices(draws[:n_req], grid).tolist()
    head = 0
    free_at = 0.0
    busy = 0.0
    sizes: list[int] = []
    done: list[float] = []
    started: list[float] = []
    add_size, add_done, add_start, count = sizes.append, done.append, started.append, bisect_right
    batch = 0
    give_up = give_up_above_s is not None
    if give_up:
        # Requests after warm-up that arrived before ``done - bound`` finish above the bound; once more than
        # ``n - floor((n - 1) q)`` of them do, the lower order statistic of the quantile is above it.
        first = int(n_req * warmup_fraction)
        kept = n_req - first
        must_exceed = kept - int((kept - 1) * P99) + 1  # one more than needed: safe against the index rounding
        bound = give_up_above_s * (1.0 + GIVE_UP_MARGIN)
        above = 0
    while head < n_req:
        # Sent when the trigger size has arrived or the oldest has waited out the delay, once the instance is free.
        t = a[head] + delay
        if a[head + trigger - 1] < t:
            t = a[head + trigger - 1]
        if t < free_at:
            t = free_at
        if big_b == 1:
            m = 1
        else:
            m = count(a, t, head, head + big_b) - head
            if preferred and m >= trigger:
                m = max(p for p in preferred if p <= m)
        s = tables[m][pick[batch]]
        batch += 1
        busy += s
        free_at = t + s
        add_start(t)
        add_done(free_at)
        add_size(m)
        if give_up and free_at - bound >= a[head]:  # the batch's oldest request is above the bound: count them
            lo = head if head > first else first
            if lo < head + m:
                above += count(a, free_at - bound, lo, head + m) - lo
                if above >= must_exceed:
                    return None
        head += m
    return _result(arrivals_s, sizes, started, done, busy, free_at, warmup_fraction)



def _shared_interpreted(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                     speedup: Sequence[float] | None, warmup_fraction: float) -> SimResult:
    """:func:`_simulate_shared` as the Python loop it was (36e3756), for a process that simulates little."""
    k = cfg.instance_count
    speed = list(speedup) if speedup is not None else [0.0] + [1.0] * k
    if len(speed) <= k:
        raise ValueError(f"speedup needs entries up to {k} concurrent batches")
    a = arrivals_s.tolist()
    n_req = len(a)
    preferred, trigger, big_b, delay = _batching_rule(cfg)
    u = draws.tolist()
    inf = float("inf")

    head = 0
    t = 0.0
    busy = 0.0
    inflight: list[list[float]] = []  # [remaining solo work, slot]
    sizes: list[int] = []
    done: list[float] = []
    started: list[float] = []
    while head < n_req or inflight:
        n_fl = len(inflight)
        if n_fl:
            rate = speed[n_fl] / n_fl
            j_next = min(range(n_fl), key=lambda j: inflight[j][0]) if n_fl > 1 else 0
            t_complete = t + inflight[j_next][0] / rate
        else:
            t_complete = inf
        if n_fl < k and head < n_req:
            last = head + trigger - 1
            t_trigger = a[last] if last < n_req else inf
            t_dispatch = min(t_trigger, a[head] + delay)
            if t_dispatch < t:
                t_dispatch = t
        else:
            t_dispatch = inf

        t_next = t_dispatch if t_dispatch <= t_complete else t_complete
        if n_fl:
            progressed = (t_next - t) * rate
            for f in inflight:
                f[0] -= progressed
            busy += t_next - t
        t = t_next
        if t_dispatch <= t_complete:
            queued = bisect_right(a, t, head) - head
            m = queued if queued < big_b else big_b
            if preferred and m >= trigger:
                m = max(p for p in preferred if p <= m)
            inflight.append([service.draw(m, u[len(sizes)]), float(len(sizes))])
            sizes.append(m)
            started.append(t)
            done.append(0.0)
            head += m
        else:
            finished = inflight.pop(j_next)
            done[int(finished[1])] = t

    return _result(arrivals_s, sizes, started, done, busy, t, warmup_fraction)



@dataclass(frozen=True)
class Workload:
    """Common random numbers for a replica: unit-rate Poisson arrivals and per-batch uniforms.

    Scaling the unit-rate arrival times by ``1 / rate`` gives every rate the same sample path, so latency is a
    smooth, repeatable function of the rate and a bisection on it is well posed.
    """

    unit_arrivals: np.ndarray
    draws: np.ndarray
    # Table indices per table length, computed once for every rate a search tries.
    _picks: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def picks(self, grid: int) -> np.ndarray:
        if grid not in self._picks:
            self._picks[grid] = table_indices(self.draws, grid)
        return self._picks[grid]

    @classmethod
    def poisson(cls, n_requests: int, seed: int = 0) -> "Workload":
        rng = np.random.default_rng(seed)
        return cls(np.cumsum(rng.exponential(1.0, n_requests)), rng.random(n_requests))

    def run(self, rate: float, cfg: BatchingConfig, service: ServiceTime,
            speedup: Sequence[float] | None = None) -> SimResult:
        if cfg.instance_count == 1 and cfg.effective_max_batch <= service.max_batch_size:  # as simulate() would
            return _simulate_one_instance(self.unit_arrivals / rate, cfg, service, self.draws, WARMUP_FRACTION,
                                          picks=self.picks(len(service.tables[1])))
        return simulate(self.unit_arrivals / rate, cfg, service, self.draws, speedup)

    def p99_exceeds(self, rate: float, cfg: BatchingConfig, service: ServiceTime, bound_s: float,
                    speedup: Sequence[float] | None = None) -> bool:
        """Whether ``run(rate, ...)``'s P99 (``quantile_ms(0.99) / 1000``) is above ``bound_s``: the same answer,
        sooner. A single-instance run stops once enough requests after warm-up have finished above the bound
        that the quantile's lower order statistic is above it (a search's failing probes stop early)."""
        return self.run_within(rate, cfg, service, bound_s, speedup) is None

    def run_within(self, rate: float, cfg: BatchingConfig, service: ServiceTime, bound_s: float,
                   speedup: Sequence[float] | None = None) -> SimResult | None:
        """``run(rate, ...)`` when its P99 is within ``bound_s``; None when it is above (:meth:`p99_exceeds`'s
        answer, with the run for a caller that judges more of it)."""
        if cfg.instance_count == 1 and cfg.effective_max_batch <= service.max_batch_size:
            res = _simulate_one_instance(self.unit_arrivals / rate, cfg, service, self.draws, WARMUP_FRACTION,
                                         give_up_above_s=bound_s, picks=self.picks(len(service.tables[1])))
            if res is None:
                return None
        else:
            res = self.run(rate, cfg, service, speedup)
        return None if res.quantile_ms(P99) / 1000.0 > bound_s else res


def simulate_colocated(arrivals_s: Sequence[np.ndarray], cfgs: Sequence[BatchingConfig],
                       services: Sequence[ServiceTime], draws: Sequence[np.ndarray],
                       speedup: Sequence[float] | None = None,
                       warmup_fraction: float = WARMUP_FRACTION, turns: bool = False,
                       give_up_above_s: Sequence[float] | None = None) -> list[SimResult] | None:
    """Several models on one GPU, as one Triton server runs them: each model has its own queue, batcher
    (``cfgs[i]``) and model instances. A batch is formed when one of its model's instances is free, as Triton's
    batcher forms it. On the GPU, either every batch in flight, of any model, shares it by processor sharing at
    ``speedup[n] / n`` of its solo speed while ``n`` run together (``speedup`` measured, or 1: no gain), or, with
    ``turns``, batches hold the GPU one at a time in the order they were sent (a small model's batch waits out a
    large one's). One :class:`SimResult` per model; ``busy_fraction`` is the GPU's, the same in each.

    With ``give_up_above_s`` (one bound per model), the run stops and returns None as soon as some model's P99
    after warm-up is certain to exceed its bound: enough of its requests already finished above it that the
    quantile's lower order statistic is above it, whatever the rest do. A search for the largest rate that holds
    learns the same as from a full run, sooner."""
    for cfg, service in zip(cfgs, services):
        if cfg.effective_max_batch > service.max_batch_size:
            raise ValueError(f"max_batch_size {cfg.effective_max_batch} exceeds the profile's {service.max_batch_size}")
    most = sum(c.instance_count for c in cfgs)
    speed = list(speedup) if speedup is not None else [0.0] + [1.0] * most
    if len(speed) <= most:
        raise ValueError(f"speedup needs entries up to {most} concurrent batches")
    if not cfgs:
        return []
    kernels = _kernels()
    arrivals = [_floats(x) for x in arrivals_s]
    uniforms = [_floats(d) for d in draws]
    rules = [_batching_rule(c) for c in cfgs]
    lengths = [len(x) for x in arrivals]
    firsts = [int(n * warmup_fraction) for n in lengths]
    # P99 (linear between order statistics, as numpy's) exceeds a bound once the order statistic below its position
    # does: once this many post-warm-up requests finished above the bound.
    fatal = [n - f - int(0.99 * (n - f - 1)) if n > f else float("inf") for n, f in zip(lengths, firsts)]
    tables, table_lengths = _stacked(tuple(services))
    bounds = give_up_above_s
    status, n_batches, sizes, started, done, busy, end = kernels.colocated(
        _concat(arrivals), _offsets(lengths), _concat(uniforms), _offsets([len(d) for d in uniforms]), tables,
        table_lengths, _ints([p for r in rules for p in r[0]]), _offsets([len(r[0]) for r in rules]),
        _ints([r[1] for r in rules]), _ints([r[2] for r in rules]), _floats([r[3] for r in rules]),
        _ints([c.instance_count for c in cfgs]), _floats(speed), bool(turns), bounds is not None,
        _floats(bounds if bounds is not None else [0.0] * len(cfgs)), _ints(firsts), _floats(fatal))
    if status < 0:
        return None
    out = []
    base = 0
    for i, n in enumerate(lengths):
        nb = n_batches[i]
        out.append(_result(arrivals_s[i], sizes[base:base + nb], started[base:base + nb], done[base:base + nb],
                           busy, end, warmup_fraction))
        base += n
    return out


# The stacked tables of the last few sets of services: a search simulates one set hundreds of times, and stacking
# copies half a megabyte per model. Keyed by the services themselves (held, so that an id is not reused meanwhile).
_STACKED: dict[tuple[int, ...], tuple[tuple[ServiceTime, ...], np.ndarray, np.ndarray]] = {}
STACKED_KEPT = 16


def _stacked(services: tuple[ServiceTime, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every model's service tables in one array, padded to the longest (a draw indexes a row within its length),
    and the lengths of their rows."""
    key = tuple(id(s) for s in services)
    hit = _STACKED.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], services)):
        return hit[1], hit[2]
    rows = max(s.array.shape[0] for s in services)
    width = max(s.array.shape[1] for s in services)
    tables = np.zeros((len(services), rows, width))
    table_lengths = np.zeros((len(services), rows), dtype=np.int64)
    for i, s in enumerate(services):
        tables[i, :s.array.shape[0], :s.array.shape[1]] = s.array
        table_lengths[i, :len(s.lengths)] = s.lengths
    if len(_STACKED) >= STACKED_KEPT:
        del _STACKED[next(iter(_STACKED))]  # the oldest
    _STACKED[key] = (services, tables, table_lengths)
    return tables, table_lengths


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _offsets(lengths: list[int]) -> np.ndarray:
    return _ints(np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))))
