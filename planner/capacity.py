"""Per-replica capacity: the highest Poisson arrival rate one replica holds at a P99 latency budget.

For each GPU type the search runs over Triton batcher configs. A cheap analytic estimate ranks every candidate;
the discrete-event simulation (:mod:`planner.simulate`) then bisects the rate for the best few, and the best
simulated config wins. Because the fleet's cost does not depend on the Triton config, only on how many replicas
it needs, the config that maximizes per-replica capacity is optimal for every fleet on that GPU type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.service import NO_SERVER_COST, ServerCost, ServiceTime
from gpufleet.contracts.triton import BatchingConfig
from planner.simulate import SimResult, Workload
from gpufleet.contracts.profile import LatencyProfile

QUEUE_DELAYS_US = (0, 100, 500, 1000, 2000, 5000, 10000)
SEARCH_REQUESTS = 10_000
BISECTION_STEPS = 9  # resolves the rate to 1/512 of the saturation throughput, well inside TIE_TOLERANCE
TIE_TOLERANCE = 0.01
# A heavy-traffic tail for the batch queue: P99 wait ~ ln(100)/2 mean service times per unit of rho/(1-rho),
# the M/D/1 tail being about half the M/M/1 one. Used only to rank candidates before simulation.
TAIL_FACTOR = math.log(100.0) / 2.0
# The most of a replica's requests that the queue bound the plan writes (queue_bound) may turn away at any rate up to
# its capacity. The error share the serving teams watch is under 0.1% (issue 28); a refusal is an error to the
# client, so the planner's own share stays within it. (loadtests verify tolerates 1% not served per step, its
# MAX_UNSERVED_SHARE: that is the P99 arithmetic, more than 1% lost and the 99th percentile is lost too.)
REFUSED_SHARE_MAX = 0.001


@dataclass(frozen=True)
class ReplicaModel:
    """Everything the simulator needs for one GPU type: the service tables and instance concurrency."""

    gpu: str
    profile: LatencyProfile
    service: ServiceTime
    speedup: tuple[float, ...]  # index n: aggregate throughput of n concurrent batches; index 0 unused

    @classmethod
    def from_profile(cls, profile: LatencyProfile, cost: ServerCost = NO_SERVER_COST) -> "ReplicaModel":
        measured = profile.concurrency_speedup or {}
        top = max(measured, default=1)
        speed = [0.0, 1.0]
        for n in range(2, top + 1):
            speed.append(measured.get(n, speed[-1]))
        return cls(profile.gpu, profile, ServiceTime.from_profile(profile, cost), tuple(speed))

    @property
    def max_instances(self) -> int:
        return len(self.speedup) - 1

    def candidate_configs(self) -> list[BatchingConfig]:
        """Max batch sizes the profile measured, the usual queue delays, and the instance counts it measured."""
        return [BatchingConfig(max_batch_size=b, max_queue_delay_microseconds=d, preferred_batch_sizes=(), instance_count=k)
                for b in self.profile.batch_sizes for d in QUEUE_DELAYS_US
                for k in range(1, self.max_instances + 1)]

    def saturation_rate(self, cfg: BatchingConfig) -> float:
        """Requests/s with every instance running full batches back to back."""
        return cfg.max_batch_size * self.speedup[cfg.instance_count] / self.service.mean(cfg.max_batch_size)

    def estimate_rate(self, cfg: BatchingConfig, budget_s: float) -> float:
        """Analytic capacity estimate for ranking; 0 where the config cannot meet the budget even lightly loaded."""
        k = cfg.instance_count
        stretch = k / self.speedup[k]
        delay = cfg.max_queue_delay_microseconds * 1e-6
        full = self.service.quantile(cfg.max_batch_size, 0.99) * stretch
        if delay + self.service.quantile(1, 0.99) > budget_s:
            return 0.0
        slack = budget_s - full - delay
        if slack <= 0:
            return 0.0
        mean_full = self.service.mean(cfg.max_batch_size) * stretch
        rho = slack / (slack + TAIL_FACTOR * mean_full)
        return rho * self.saturation_rate(cfg)


def refused_wait_s(res: SimResult) -> float:
    """The queue wait that :data:`REFUSED_SHARE_MAX` of ``res``'s requests exceed, read from its tail.

    Triton refuses a request still queued when its timeout passes (:func:`queue_bound`: a request that finds the
    depth bound queued would outwait the timeout too), so the written bound refuses at most that share when this
    wait is within the timeout. Read directly, the 99.9th percentile of a search's 10,000 requests rests on its ten
    longest waits: a capacity judged on it moved by up to 5% either way as a profile's cost grew smoothly. Waits
    in a queue have an exponential tail (Kingman; Cramer-Lundberg), where quantiles are linear in log(1/p): the
    99.9th percentile lies as far past the 99th as the 99th past the 90th, which rest on the 95 and 950 longest.
    Where the tail falls faster (light load: no wait longer than a batch) this overstates the wait: safe.
    Measured on a profile of tests/test_fit.py (8/2000us, item cost 0.6-1.0 ms): capacity falls monotonically with
    the cost, and the share refused at it, on a 200,000-request path, is 0.07-0.21%."""
    p90, p99 = np.quantile(res.queue_s, (0.9, 0.99))
    decades = math.log10(0.01 / REFUSED_SHARE_MAX)  # past P99: one
    return float(p99 + decades * (p99 - p90))


def queue_bound(model: ReplicaModel, cfg: BatchingConfig, budget_s: float) -> BatchingConfig:
    """``cfg`` with Triton's queue policy set so that a request that can no longer meet ``budget_s`` is turned away.

    Triton's rules (triton-inference-server/core 84868f1, the same as r24.10 = server 2.51.0 in these files;
    src/scheduler_utils.cc ``PolicyQueue::Enqueue`` and ``ApplyPolicy``): a request that finds ``max_queue_size``
    queued (arrived, not yet taken into a batch) is refused at once; one still queued ``default_timeout_microseconds``
    after it arrived is refused when the batcher next forms a batch. A *round* is a full batch under ``k``-way
    instance sharing.

    * Wait (``default_timeout_microseconds``), the overload guard: the budget less the request's own round at its
      P99 device time. In overload every batch is full and every admitted request has waited up to the timeout, so
      the admitted P99 stays within the budget. Triton's bundled server stalls its batcher for up to 500 ms when
      every arrival is refused at a full queue (its default wait, with no enqueue to wake it): measured, the depth
      bound alone let the admitted P99 reach 2.3 times the target at 3 times capacity, the wait bound held it within.
    * Depth (``max_queue_size``), an early answer a client can retry elsewhere: only a request the wait bound would
      refuse anyway. A request that finds ``Q`` queued waits for the ``Q // B // k`` rounds ahead of it (``B`` the
      max batch size: a queue that long is taken in full batches) at least, each no shorter than the fastest full
      batch; the bound is the shortest queue that surely outwaits the timeout, at least one full batch per instance
      (Triton reads 0 as unbounded). (Until issue 27 it was the deepest queue whose P99 rounds fit the budget, one
      less than meant: at normal load it turned away requests that would have met the target.)

    Neither bound refuses at normal load only when the plan's rate leaves the timeout room: the capacity search
    (:meth:`CapacitySearch.holds`) judges what this bound refuses in its simulations and holds it within
    :data:`REFUSED_SHARE_MAX`.

    Not modelled: with a queue policy Triton turns off prefetching, and its batcher then forms a batch only once it
    sees an instance waiting for one; an instance's completion wakes it (``Payload::Execute`` calls back) before the
    instance has registered as waiting (``BackendThread`` reaches ``RateLimiter::DequeuePayload`` after
    ``PayloadRelease``), and an arrival wakes it only when an instance already waits (``Enqueue``:
    ``PayloadSlotAvailable``), so a missed completion leaves the queue until the next arrival, or 500 ms. Measured
    on the stand-in (issue 27): 2-7% of requests timed out at 5-90 req/s at a 100 ms target (about one wake-up in
    five missed), where this simulation refuses none to 0.5%; at 300 ms none.
    """
    big_b, k = cfg.effective_max_batch, cfg.instance_count
    stretch = k / model.speedup[k]
    round_s = model.service.quantile(big_b, 0.99) * stretch
    fastest_s = float(model.service.tables[big_b].min()) * stretch
    wait_s = max(budget_s - round_s, 1e-6)
    depth = (int(wait_s // fastest_s) + 1) * k * big_b
    return cfg.with_queue_bound(depth, max(int(wait_s * 1e6), 1))


@dataclass(frozen=True)
class Capacity:
    """The best config for one GPU type at one P99 budget, and the rate it holds."""

    gpu: str
    config: BatchingConfig
    max_rate: float  # req/s per replica with simulated P99 <= budget and refusals within REFUSED_SHARE_MAX
    budget_ms: float
    evaluated: tuple[tuple[BatchingConfig, float], ...] = field(default=(), compare=False)


class CapacitySearch:
    """Finds per-replica capacity by simulation; one instance per GPU type, reused across budgets."""

    def __init__(self, model: ReplicaModel, workload: Workload | None = None):
        self.model = model
        self.workload = workload or Workload.poisson(SEARCH_REQUESTS, seed=1)

    def simulate(self, rate: float, cfg: BatchingConfig) -> SimResult:
        return self.workload.run(rate, cfg, self.model.service, self.model.speedup)

    def p99_s(self, rate: float, cfg: BatchingConfig) -> float:
        return self.simulate(rate, cfg).quantile_ms(0.99) / 1000.0

    def holds(self, rate: float, cfg: BatchingConfig, budget_s: float, bound: BatchingConfig | None = None,
              refusals: bool = True) -> bool:
        """``p99_s(rate, cfg) <= budget_s`` (decided without finishing a run that is sure to miss), and the queue
        bound the plan writes for ``cfg`` at this budget (:func:`queue_bound`) turns away at most
        :data:`REFUSED_SHARE_MAX` of the requests (:func:`refused_wait_s` within its timeout): a refusal breaks the
        promise as surely as a late answer. ``refusals=False`` judges the P99 alone: the latency limit, what open-loop
        steps against a server without a queue bound measure."""
        res = self.workload.run_within(rate, cfg, self.model.service, budget_s, self.model.speedup)
        if res is None:
            return False
        if not refusals:
            return True
        bound = bound or queue_bound(self.model, cfg, budget_s)
        return refused_wait_s(res) * 1e6 <= bound.queue_timeout_microseconds

    def max_rate(self, cfg: BatchingConfig, budget_s: float, floor: float = 0.0,
                 bound: BatchingConfig | None = None, refusals: bool = True) -> float:
        """Largest rate that :meth:`holds` (simulated P99 <= budget, and the written queue bound refuses at most
        :data:`REFUSED_SHARE_MAX`), to 1/512 of saturation; 0 if the config cannot beat ``floor``. ``bound``: the
        queue bound the replica runs, where it is not the one this budget would write (a degraded budget while a
        spot pool is lost runs the normal target's). ``refusals=False``: the latency limit alone (:meth:`holds`).

        Saturation throughput bounds the rate from above, and ``floor`` (the best rate found so far) from below:
        a config that misses the budget at ``floor`` costs one simulation to discard.
        """
        hi = self.model.saturation_rate(cfg)
        if hi <= floor or self.light_load_p99_s(cfg) > budget_s:
            return 0.0
        bound = bound or queue_bound(self.model, cfg, budget_s)
        if floor > 0 and not self.holds(floor, cfg, budget_s, bound, refusals):
            return 0.0
        lo = floor
        step_floor = hi / 2 ** BISECTION_STEPS
        while hi - lo > step_floor:
            mid = 0.5 * (lo + hi)
            if self.holds(mid, cfg, budget_s, bound, refusals):
                lo = mid
            else:
                hi = mid
        return lo

    def light_load_p99_s(self, cfg: BatchingConfig) -> float:
        """P99 as the rate tends to zero: each request waits out the queue delay alone, then runs as batch 1.

        With a queue delay, latency is worst when traffic is thin, so a config must meet the budget here too.
        """
        return cfg.max_queue_delay_microseconds * 1e-6 + self.model.service.quantile(1, 0.99)

    def best(self, budget_ms: float, exhaustive: bool = False) -> Capacity | None:
        """The config with the highest simulated capacity at ``budget_ms`` (device P99, overhead excluded).

        Stage one simulates every max batch size with no queue delay, best analytic estimate first, so that a
        good floor prunes the rest. Stage two tries the queue delays on the winning batch size (every candidate
        when ``exhaustive``). A config replaces the incumbent only if it holds ``TIE_TOLERANCE`` more rate:
        shorter delays and smaller batches give lower latency when traffic runs below plan.
        """
        budget_s = budget_ms / 1000.0
        candidates = self.model.candidate_configs()
        if exhaustive:
            stages = [candidates]
        else:
            stages = [[c for c in candidates if c.max_queue_delay_microseconds == 0], None]
        best: tuple[BatchingConfig, float] | None = None
        evaluated: list[tuple[BatchingConfig, float]] = []
        for stage in stages:
            if stage is None:
                if best is None:
                    break
                stage = [c for c in candidates if c.max_batch_size == best[0].max_batch_size
                         and c.instance_count == best[0].instance_count and c.max_queue_delay_microseconds > 0]
            stage = sorted(stage, key=lambda c: (-self.model.estimate_rate(c, budget_s), c))
            for cfg in stage:
                floor = best[1] * (1 + TIE_TOLERANCE) if best else 0.0
                rate = self.max_rate(cfg, budget_s, floor)
                evaluated.append((cfg, rate))
                if rate > 0 and (best is None or rate > floor):
                    best = (cfg, rate)
        if best is None:
            return None
        return Capacity(self.model.gpu, best[0], best[1], budget_ms, tuple(evaluated))

    def lowest_p99_ms(self) -> float:
        """The lowest device P99 this GPU reaches at all: batch 1, no delay, negligible load."""
        return self.light_load_p99_s(BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0)) * 1000.0
