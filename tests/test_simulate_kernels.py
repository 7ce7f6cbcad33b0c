"""The compiled simulators (planner/simkernels.py) compute what the Python loops they replace computed, to the last bit.

Two properties, on many seeded random cases (batchers with and without preferred sizes, delays zero and not, one to
three instances, one to four co-located models, speedups, turns, give-up bounds that fire and that do not):

* each compiled kernel returns the same arrays as the same kernel run as Python (``kernel.py_func``): numba compiled
  the arithmetic as written (no reordering, no fused multiply-add);
* the wrappers in planner/simulate.py (``_simulate_one_instance``, ``_simulate_shared``, ``simulate_colocated``) return
  what the pre-port Python loops return on the same inputs.

The reference loops below, from ``_batching_rule`` to ``simulate_colocated``, are planner/simulate.py as of commit
36e3756 (the last one before the port), verbatim: kept here to prove the port, not used by the planner.
"""
from __future__ import annotations

import os
import subprocess
import sys
from bisect import bisect_left, bisect_right
from heapq import heappop, heappush
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from gpufleet.contracts.triton import BatchingConfig
from planner import simkernels
from planner import simulate as new
from planner.service import ServiceTime
from planner.simulate import GIVE_UP_MARGIN, P99, WARMUP_FRACTION, SimResult

# ---------------------------------------------------------------------------------------------------------------------
# planner/simulate.py at 36e3756, verbatim (lines 62-213 and 260-406)
# ---------------------------------------------------------------------------------------------------------------------


def _batching_rule(cfg: BatchingConfig) -> tuple[list[int], int, int, float]:
    big_b = cfg.effective_max_batch
    preferred = sorted(cfg.preferred_batch_sizes) if cfg.dynamic_batching else []
    trigger = preferred[0] if preferred else big_b
    return preferred, trigger, big_b, cfg.effective_delay_us * 1e-6


def _simulate_one_instance(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                           warmup_fraction: float, give_up_above_s: float | None = None,
                           picks: list[int] | None = None) -> SimResult | None:
    """One model instance: batches run one after another, so each starts when the instance is free and the batcher
    sends it (the same rule as :func:`_simulate_shared`, without the processor sharing it needs for several).

    With ``give_up_above_s``, returns None as soon as P99 after warm-up is sure to exceed it (see
    :func:`p99_exceeds`)."""
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
    pick = picks if picks is not None else table_indices(draws[:n_req], grid)
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


def table_indices(draws: np.ndarray, grid: int) -> list[int]:
    """Each draw's index into a service table of ``grid`` entries: ``int(u * grid)``, as ServiceTime.draw takes it
    (the same product and truncation, for all draws at once)."""
    return (draws * grid).astype(np.int64).tolist()


def _result(arrivals_s: np.ndarray, sizes: list[int], started: list[float], done: list[float], busy: float,
            end: float, warmup_fraction: float) -> SimResult:
    n_req = len(arrivals_s)
    latency = np.repeat(np.array(done), sizes) - arrivals_s
    queued_for = np.repeat(np.array(started), sizes) - arrivals_s
    first = int(n_req * warmup_fraction)
    span = end - arrivals_s[0] if n_req else 0.0
    return SimResult(latency_s=latency[first:], queue_s=queued_for[first:], mean_batch_size=n_req / max(len(sizes), 1),
                     busy_fraction=busy / span if span > 0 else 0.0)


def _simulate_shared(arrivals_s: np.ndarray, cfg: BatchingConfig, service: ServiceTime, draws: np.ndarray,
                     speedup: Sequence[float] | None, warmup_fraction: float) -> SimResult:
    """Any number of instances sharing the GPU (processor sharing at ``speedup[n] / n`` each)."""
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
    models = len(cfgs)
    for cfg, service in zip(cfgs, services):
        if cfg.effective_max_batch > service.max_batch_size:
            raise ValueError(f"max_batch_size {cfg.effective_max_batch} exceeds the profile's {service.max_batch_size}")
    most = sum(c.instance_count for c in cfgs)
    speed = list(speedup) if speedup is not None else [0.0] + [1.0] * most
    if len(speed) <= most:
        raise ValueError(f"speedup needs entries up to {most} concurrent batches")
    a = [x.tolist() for x in arrivals_s]
    u = [d.tolist() for d in draws]
    rules = [_batching_rule(c) for c in cfgs]
    heads = [0] * models
    running = [0] * models  # batches in flight per model (at most its instance count)
    inf = float("inf")
    t = busy = 0.0
    # Batches in flight, keyed by when they finish: under processor sharing every batch progresses at the same rate,
    # so each finishes when the GPU's virtual work clock (solo seconds done per batch) reaches its start plus its
    # work; taking turns, they finish one after another in the order sent, known when sent.
    inflight: list[tuple[float, int, int, int]] = []  # (finish, sequence, model, batch index)
    clock = 0.0  # virtual work clock (processor sharing)
    gpu_free = 0.0  # when the last batch sent is done (turns)
    sent = 0
    sizes: list[list[int]] = [[] for _ in range(models)]
    started: list[list[float]] = [[] for _ in range(models)]
    done: list[list[float]] = [[] for _ in range(models)]
    starts: list[list[int]] = [[] for _ in range(models)]  # each batch's first request
    lengths = [len(x) for x in a]
    instances = [c.instance_count for c in cfgs]
    triggers = [r[1] for r in rules]
    delays = [r[3] for r in rules]
    undispatched = sum(lengths)
    firsts = [int(n * warmup_fraction) for n in lengths]
    # P99 (linear between order statistics, as numpy's) exceeds a bound once the order statistic below its position
    # does: once this many post-warm-up requests finished above the bound.
    fatal = [n - f - int(0.99 * (n - f - 1)) if n > f else inf for n, f in zip(lengths, firsts)]
    over = [0] * models

    # The loop below runs once per batch sent and once per batch done (hundreds of thousands per plan): names are
    # bound locally and the batcher's next send time is computed inline (as ``ready`` would), the arithmetic in the
    # same order, so that the result is the same to the last bit.
    draw = [s.draw for s in services]
    bounds = give_up_above_s
    order = range(models)

    def ready(i: int) -> float:
        """When model i's batcher would send its next batch, were the clock there (inf: no free instance or
        nothing queued)."""
        head = heads[i]
        if running[i] >= instances[i] or head >= lengths[i]:
            return inf
        arr = a[i]
        when = arr[head] + delays[i]
        last = head + triggers[i] - 1
        if last < lengths[i] and arr[last] < when:
            when = arr[last]
        return when

    ready_at = [ready(i) for i in order]
    while undispatched or inflight:
        n_fl = len(inflight)
        if not n_fl:
            t_complete = inf
        elif turns:
            t_complete = inflight[0][0]
        else:
            rate = speed[n_fl] / n_fl
            t_complete = t + (inflight[0][0] - clock) / rate
        t_dispatch = min(ready_at)
        if t_dispatch < t:
            t_dispatch = t
        dispatch = t_dispatch <= t_complete
        t_next = t_dispatch if dispatch else t_complete
        if n_fl:
            if not turns:
                clock += (t_next - t) * rate
            busy += t_next - t
        t = t_next
        if dispatch:
            i = 0
            while ready_at[i] > t:  # the first model whose batcher sends now
                i += 1
            preferred, trigger, big_b, delay = rules[i]
            arr = a[i]
            head = heads[i]
            n_i = lengths[i]
            queued = bisect_right(arr, t, head) - head
            m = queued if queued < big_b else big_b
            if preferred and m >= trigger:
                m = max(p for p in preferred if p <= m)
            size_i = sizes[i]
            batch = len(size_i)
            work = draw[i](m, u[i][batch])
            if turns:
                gpu_free = (gpu_free if gpu_free > t else t) + work
                heappush(inflight, (gpu_free, sent, i, batch))
            else:
                heappush(inflight, (clock + work, sent, i, batch))
            sent += 1
            size_i.append(m)
            started[i].append(t)
            done[i].append(0.0)
            starts[i].append(head)
            head += m
            heads[i] = head
            undispatched -= m
            r = running[i] + 1
            running[i] = r
            # ready(i), inline
            if r >= instances[i] or head >= n_i:
                ready_at[i] = inf
            else:
                when = arr[head] + delay
                last = head + trigger - 1
                if last < n_i and arr[last] < when:
                    when = arr[last]
                ready_at[i] = when
        else:
            _, _, i, batch = heappop(inflight)
            done[i][batch] = t
            running[i] -= 1
            ready_at[i] = ready(i)
            if bounds is not None:
                first = starts[i][batch]
                lo = first if first > firsts[i] else firsts[i]
                hi = first + sizes[i][batch]
                if hi > lo:
                    # this batch's requests that arrived before t - bound finished above it
                    over[i] += bisect_left(a[i], t - bounds[i], lo, hi) - lo
                    if over[i] >= fatal[i]:
                        return None
    return [_result(arrivals_s[i], sizes[i], started[i], done[i], busy, t, warmup_fraction) for i in range(models)]


# ---------------------------------------------------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------------------------------------------------

# The wrappers below run the compiled kernels: a process runs its first simulations of one model as Python.
new.load_kernels()

CASES = 40
N_REQUESTS = 1_500


def _service(rng) -> ServiceTime:
    """Affine-in-batch service tables; a coarse grid or none (few distinct times: ties between finishing batches) or
    the planner's."""
    base, per = rng.uniform(0.5e-3, 4e-3), rng.uniform(0.1e-3, 1.5e-3)
    spread = rng.uniform(0.0, 3e-3) if rng.random() < 0.7 else 0.0  # or deterministic: ties between instances
    grid = int(rng.choice([4, 64, 2048]))
    return ServiceTime.from_quantile_function(lambda b, u: base + per * b + spread * u ** 3, 16, grid)


def _config(rng, instances: int | None = None) -> BatchingConfig:
    big_b = int(rng.choice([1, 2, 4, 8, 16]))
    sizes = [s for s in (1, 2, 3, 4, 6, 8, 12, 16) if s <= big_b]
    preferred = tuple(sorted(rng.choice(sizes, int(rng.integers(1, min(3, len(sizes)) + 1)), replace=False).tolist())) \
        if rng.random() < 0.5 else ()
    return BatchingConfig(max_batch_size=big_b, preferred_batch_sizes=preferred,
                          max_queue_delay_microseconds=int(rng.choice([0, 0, 300, 2000, 10000])),
                          instance_count=instances if instances is not None else int(rng.integers(1, 4)),
                          dynamic_batching=bool(rng.random() < 0.9))


def _speedup(rng, most: int) -> list[float]:
    """Aggregate throughput of n concurrent batches: 1, then between n - 1 and n times solo (or no gain)."""
    if rng.random() < 0.2:
        return [0.0] + [1.0] * most
    return [0.0] + [float(n - rng.uniform(0.0, n - 1)) for n in range(1, most + 1)]


def _arrivals(rng, cfg: BatchingConfig, service: ServiceTime, n: int = N_REQUESTS) -> np.ndarray:
    """Poisson arrivals at 20-130% of the replica's solo capacity at its largest batch; sometimes on a coarse clock
    or in bursts of 8 (simultaneous arrivals: instances that start equal batches together and finish together)."""
    b = cfg.effective_max_batch
    rate = rng.uniform(0.2, 1.3) * cfg.instance_count * b / service.mean(b)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    clock = rng.random()
    if clock < 0.2:
        return np.repeat(np.cumsum(rng.exponential(8.0 / rate, n // 8 + 1)), 8)[:n]
    return np.round(times, 3) if clock < 0.5 else times


def _same(got: SimResult | None, want: SimResult | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return (np.array_equal(got.latency_s, want.latency_s) and np.array_equal(got.queue_s, want.queue_s)
            and got.mean_batch_size == want.mean_batch_size and got.busy_fraction == want.busy_fraction)


def _same_outputs(got: tuple, want: tuple) -> bool:
    return len(got) == len(want) and all(
        np.array_equal(g, w) if isinstance(g, np.ndarray) else g == w for g, w in zip(got, want))


def _bounds(p99_s: float) -> list[float]:
    """Give-up bounds that fire, that do not, and at the full run's P99 itself."""
    return [p99_s * 0.5, float(np.nextafter(p99_s, 0)), p99_s, float(np.nextafter(p99_s, 1)), p99_s * 2.0]


def _one_instance_inputs(rng, cfg: BatchingConfig, service: ServiceTime, arrivals: np.ndarray, draws: np.ndarray):
    preferred, trigger, big_b, delay = _batching_rule(cfg)
    a = np.concatenate((arrivals, np.full(max(trigger, big_b), np.inf)))
    pick = np.array(table_indices(draws, service.grid), dtype=np.int64)
    n = len(arrivals)
    first = int(n * 0.05)
    return (a, n, np.array(preferred, dtype=np.int64), trigger, big_b, delay, service.array, pick,
            bool(rng.random() < 0.5), first, int(rng.integers(1, n - first)), float(rng.uniform(0.0, 0.05)))


def _colocated_inputs(rng, cfgs, services, arrivals, draws, speedup, turns, bounds):
    rules = [_batching_rule(c) for c in cfgs]
    lengths = [len(a) for a in arrivals]
    firsts = [int(n * 0.05) for n in lengths]
    rows, width = max(s.array.shape[0] for s in services), max(s.array.shape[1] for s in services)
    tables = np.zeros((len(services), rows, width))
    table_lengths = np.zeros((len(services), rows), dtype=np.int64)
    for i, s in enumerate(services):
        tables[i, :s.array.shape[0], :s.array.shape[1]] = s.array
        table_lengths[i, :len(s.lengths)] = s.lengths
    ints = lambda xs: np.array(xs, dtype=np.int64)  # noqa: E731
    offsets = lambda ns: ints(np.concatenate(([0], np.cumsum(ns))))  # noqa: E731
    return (np.concatenate(arrivals), offsets(lengths), np.concatenate(draws), offsets([len(d) for d in draws]),
            tables, table_lengths, ints([p for r in rules for p in r[0]]), offsets([len(r[0]) for r in rules]),
            ints([r[1] for r in rules]), ints([r[2] for r in rules]), np.array([r[3] for r in rules]),
            ints([c.instance_count for c in cfgs]), np.array(speedup, dtype=float), turns, bounds is not None,
            np.array(bounds if bounds is not None else [0.0] * len(cfgs)), ints(firsts),
            np.array([n - f - int(0.99 * (n - f - 1)) for n, f in zip(lengths, firsts)], dtype=float))


def _colocated_case(rng):
    models = int(rng.integers(1, 5))
    services = [_service(rng) for _ in range(models)]
    cfgs = [_config(rng, int(rng.integers(1, 3))) for _ in range(models)]
    arrivals = [_arrivals(rng, c, s, N_REQUESTS // models) * models for c, s in zip(cfgs, services)]
    if models > 1 and rng.random() < 0.3:  # the same stream and draws twice: batches finishing at the same time
        services[1], cfgs[1], arrivals[1] = services[0], cfgs[0], arrivals[0]
    draws = [rng.random(len(a)) for a in arrivals]
    if models > 1 and rng.random() < 0.5:
        draws[-1] = draws[0][:len(arrivals[-1])] if len(draws[0]) >= len(arrivals[-1]) else draws[-1]
    speedup = _speedup(rng, sum(c.instance_count for c in cfgs))
    return cfgs, services, arrivals, draws, speedup, bool(rng.random() < 0.4)


# ---------------------------------------------------------------------------------------------------------------------
# The compiled kernels against themselves run as Python
# ---------------------------------------------------------------------------------------------------------------------


def test_one_instance_kernel_compiled_computes_as_its_python():
    rng = np.random.default_rng(101)
    for _ in range(CASES):
        service = _service(rng)
        cfg = _config(rng, 1)
        arrivals = _arrivals(rng, cfg, service, 600)
        args = _one_instance_inputs(rng, cfg, service, arrivals, rng.random(600))
        assert _same_outputs(simkernels.one_instance(*args), simkernels.one_instance.py_func(*args)), cfg


def test_shared_kernel_compiled_computes_as_its_python():
    rng = np.random.default_rng(102)
    for _ in range(CASES):
        service = _service(rng)
        cfg = _config(rng)
        arrivals = _arrivals(rng, cfg, service, 600)
        preferred, trigger, big_b, delay = _batching_rule(cfg)
        args = (arrivals, np.array(preferred, dtype=np.int64), trigger, big_b, delay, cfg.instance_count,
                np.array(_speedup(rng, cfg.instance_count)), rng.random(600), service.array, service.lengths)
        assert _same_outputs(simkernels.shared(*args), simkernels.shared.py_func(*args)), cfg


def test_colocated_kernel_compiled_computes_as_its_python():
    rng = np.random.default_rng(103)
    for _ in range(CASES):
        cfgs, services, arrivals, draws, speedup, turns = _colocated_case(rng)
        arrivals = [a[:400] for a in arrivals]
        bounds = [float(rng.uniform(0.0, 0.05)) for _ in cfgs] if rng.random() < 0.5 else None
        args = _colocated_inputs(rng, cfgs, services, arrivals, draws, speedup, turns, bounds)
        assert _same_outputs(simkernels.colocated(*args), simkernels.colocated.py_func(*args)), cfgs


# ---------------------------------------------------------------------------------------------------------------------
# The wrappers against the Python loops of 36e3756
# ---------------------------------------------------------------------------------------------------------------------


def test_one_instance_serves_as_the_python_loop():
    rng = np.random.default_rng(201)
    for _ in range(CASES):
        service, cfg = _service(rng), _config(rng, 1)
        arrivals, draws = _arrivals(rng, cfg, service), rng.random(N_REQUESTS)
        want = _simulate_one_instance(arrivals, cfg, service, draws, 0.05)
        assert _same(new._simulate_one_instance(arrivals, cfg, service, draws, 0.05), want), cfg


def test_one_instance_gives_up_as_the_python_loop():
    """At bounds on both sides of the full run's P99, the compiled run gives up (None) exactly when the old one did,
    and returns the same result when it does not."""
    rng = np.random.default_rng(202)
    for _ in range(CASES // 2):
        service, cfg = _service(rng), _config(rng, 1)
        arrivals, draws = _arrivals(rng, cfg, service), rng.random(N_REQUESTS)
        p99_s = _simulate_one_instance(arrivals, cfg, service, draws, 0.05).quantile_ms(P99) / 1000.0
        for bound in _bounds(p99_s):
            want = _simulate_one_instance(arrivals, cfg, service, draws, 0.05, give_up_above_s=bound)
            got = new._simulate_one_instance(arrivals, cfg, service, draws, 0.05, give_up_above_s=bound)
            assert _same(got, want), (cfg, bound)


def test_shared_serves_as_the_python_loop():
    rng = np.random.default_rng(203)
    for _ in range(CASES):
        service, cfg = _service(rng), _config(rng)
        arrivals, draws = _arrivals(rng, cfg, service), rng.random(N_REQUESTS)
        speedup = _speedup(rng, cfg.instance_count) if rng.random() < 0.8 else None
        want = _simulate_shared(arrivals, cfg, service, draws, speedup, 0.05)
        assert _same(new._simulate_shared(arrivals, cfg, service, draws, speedup, 0.05), want), cfg


def test_shared_breaks_ties_as_the_python_loop():
    """Bursts of simultaneous requests on a deterministic service: instances start equal batches together and finish
    together, and which is done first (the first of the smallest, as ``min`` takes it) decides every later time."""
    rng = np.random.default_rng(206)
    service = ServiceTime.from_quantile_function(lambda b, u: 0.001 + 0.0003 * b + 0.0 * u, 16, 4)
    for _ in range(CASES):
        cfg = BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=0, instance_count=int(rng.integers(2, 4)))
        arrivals = np.repeat(np.cumsum(rng.exponential(0.004, 300)), 8)
        draws, speedup = rng.random(len(arrivals)), _speedup(rng, cfg.instance_count)
        want = _simulate_shared(arrivals, cfg, service, draws, speedup, 0.05)
        assert _same(new._simulate_shared(arrivals, cfg, service, draws, speedup, 0.05), want), (cfg, speedup)


def test_colocated_serves_as_the_python_loop():
    rng = np.random.default_rng(204)
    for _ in range(CASES):
        cfgs, services, arrivals, draws, speedup, turns = _colocated_case(rng)
        want = simulate_colocated(arrivals, cfgs, services, draws, speedup, turns=turns)
        got = new.simulate_colocated(arrivals, cfgs, services, draws, speedup, turns=turns)
        assert len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want)), (cfgs, turns)


def test_colocated_gives_up_as_the_python_loop():
    """Per model bounds around each model's full-run P99: the compiled run gives up exactly when the old one did."""
    rng = np.random.default_rng(205)
    for _ in range(CASES // 2):
        cfgs, services, arrivals, draws, speedup, turns = _colocated_case(rng)
        full = simulate_colocated(arrivals, cfgs, services, draws, speedup, turns=turns)
        p99s = [r.quantile_ms(P99) / 1000.0 for r in full]
        for k in range(5):
            bounds = [_bounds(p)[int(rng.integers(0, 5)) if k else 2] for p in p99s]
            want = simulate_colocated(arrivals, cfgs, services, draws, speedup, turns=turns, give_up_above_s=bounds)
            got = new.simulate_colocated(arrivals, cfgs, services, draws, speedup, turns=turns,
                                         give_up_above_s=bounds)
            if want is None:
                assert got is None, (cfgs, bounds)
            else:
                assert got is not None and all(_same(g, w) for g, w in zip(got, want)), (cfgs, bounds)


def test_each_kernel_is_compiled_once_whatever_the_callers_pass():
    """Integer arrivals, read-only or strided arrays, integer speedups, draws longer than needed: the wrappers hand
    every kernel the same types, so none is compiled again for a new combination (seconds each)."""
    rng = np.random.default_rng(301)
    service = _service(rng)
    for instances in (1, 2):
        cfg = _config(rng, instances)
        arrivals = np.cumsum(rng.integers(1, 5, 300))  # int64
        readonly = np.cumsum(rng.exponential(0.01, 300))
        readonly.flags.writeable = False
        draws = rng.random(1200)[::2]  # strided
        for a in (arrivals, readonly):
            new.simulate(a, cfg, service, draws, [0, 1, 2, 3])
            new.simulate_colocated([a, a], [cfg, cfg], [service, service], [draws, draws], [0, 1, 2, 3, 4])
    for kernel in (simkernels.one_instance, simkernels.shared, simkernels.colocated):
        assert len(kernel.signatures) == 1, (kernel.py_func.__name__, kernel.signatures)


def test_a_process_answers_alike_before_and_after_it_loads_the_kernels(tmp_path):
    """A fresh process runs its first one-model simulations in Python, then the compiled kernels: the same answers.
    (A subprocess: which loops run depends on what the process did before.)"""
    script = tmp_path / "both.py"
    script.write_text("""
import numpy as np
from gpufleet.contracts.triton import BatchingConfig
from planner import simulate
from planner.service import ServiceTime

service = ServiceTime.from_quantile_function(lambda b, u: 0.002 + 0.0007 * b + 0.002 * u ** 3, 16)
rng = np.random.default_rng(7)
arrivals = np.cumsum(rng.exponential(1 / 900.0, 3000))
draws = rng.random(3000)
cfgs = [BatchingConfig(max_batch_size=16, max_queue_delay_microseconds=d, preferred_batch_sizes=p, instance_count=k)
        for d, p, k in [(0, (), 1), (2000, (4, 8), 1), (500, (), 2), (0, (8,), 3)]]

def runs():
    out = [simulate.simulate(arrivals, c, service, draws, [0.0, 1.0, 1.6, 1.9]) for c in cfgs]
    out.append(simulate._simulate_one_instance(arrivals, cfgs[1], service, draws, 0.05,
                                               give_up_above_s=out[1].quantile_ms(0.99) / 1000.0 * 0.9))
    return out

before = runs()
assert simulate._loaded is None, "the Python loops ran"
simulate.load_kernels()
after = runs()
assert after[-1] is None and before[-1] is None
for x, y in zip(before[:-1], after[:-1]):
    assert np.array_equal(x.latency_s, y.latency_s) and np.array_equal(x.queue_s, y.queue_s)
    assert x.mean_batch_size == y.mean_batch_size and x.busy_fraction == y.busy_fraction
print("same")
""")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=root,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr
