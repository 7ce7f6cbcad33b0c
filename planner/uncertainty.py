"""A calibrated replica model and how sure it is: capacity with its interval, from the calibration's parameter draws.

``planner fit`` resamples the stress steps and keeps one parameter draw per resample
(:class:`gpufleet.contracts.calibration.Uncertainty`). Capacity at a P99 target is a bisection over simulations, too
costly to repeat per draw, so it is carried through its gradient: central differences of one standard deviation of
each parameter's draws (a secant over the range the draws span, not a tangent that the bisection's resolution would
swamp). Each draw's capacity is approximated as the estimate plus the gradient times the draw's offset, which ranks the
draws and gives the reported interval; the draws ranked at the one-sided quantile for the confidence are then
simulated exactly, and their median, never above the estimate, is the planned capacity.

Run-to-run noise: resampling the steps of one run cannot see an error that all of them share, and a run's P99 level
is such an error: on docs/validation/calibrate's stand-in, P99 at a fixed rate moved by several percent from one run
to the next, the same in every step of a run. A calibration that states it (``Uncertainty.run_noise``, the relative
standard deviation of a run's P99 level) has each draw read the target as if the run had measured P99 off by a
log-normal factor of that spread: capacity at ``target / exp(e)``, carried through capacity's derivative in the
target (the planned capacity simulated exactly, as for the parameters).
Where P99 rises steeply near the target this moves capacity little; where it is flat, a few percent of P99 is a
large share of the rate, which is where the steps of one run over-promised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import CapacitySearch, ReplicaModel, queue_bound
from planner.service import ServerCost

DEFAULT_CONFIDENCE = 0.9
EXACT_NEAR = 2  # draws either side of the quantile simulated exactly
# A run's P99 level moves from one run to the next, the same in all its steps (Uncertainty.run_noise): the relative
# standard deviation planner fit assumes for one run when the user states none. Measured on this project's own test
# bed, the 2-core VM where the load generator and a stand-in Triton share the cores (docs/validation/calibrate,
# 2026-12-04, `bench/calibrate_validation.py --repeat` of gen00, gen03-gen09): 31 steps of 90 s repeated at the same
# rate on a fresh server, minutes to hours after the first, read P99 0.919-1.366 times the first; the root mean
# square of the log ratios over sqrt 2 (two runs' difference has twice one run's variance) is 8.0%, 6.3% without
# gen06, whose steps sit at a cliff (batch 1 at saturation). A quieter host has less: measure yours the same way.
DEFAULT_RUN_NOISE = 0.08
NOISE_SEED = 20261204  # the run-noise factors are drawn from this seed: the same calibration gives the same capacity


@dataclass(frozen=True)
class CapacityInterval:
    planned: float  # the lower end of the one-sided interval at the confidence: what to size with
    nominal: float  # at the parameters' estimates
    low: float  # the central interval at the confidence
    high: float
    confidence: float


class CalibratedModel:
    """A profile with fitted parameters (``overhead_ms, batch_overhead_ms, item_overhead_ms, spread``) and their draws."""

    def __init__(self, profile: LatencyProfile, values: tuple[float, ...], draws: np.ndarray | None = None,
                 confidence: float = DEFAULT_CONFIDENCE, run_noise: float = 0.0):
        self.profile = profile
        self.values = np.asarray(values, dtype=float)
        self.draws = np.zeros((0, len(values))) if draws is None or len(draws) == 0 else np.asarray(draws, float)
        self.confidence = confidence
        self.run_noise = run_noise
        # Each draw's run-level P99 factor, as its log (normal: the spread is measured as log ratios); none without
        # draws or noise.
        self.noise = (np.random.default_rng(NOISE_SEED).normal(0.0, run_noise, len(self.draws)) if run_noise > 0
                      else None)

    @classmethod
    def from_calibration(cls, profile: LatencyProfile, cal: Calibration,
                         confidence: float | None = None) -> "CalibratedModel":
        return cls(profile, cal.parameters.values(), np.array(cal.uncertainty.draws),
                   cal.uncertainty.confidence if confidence is None else confidence, cal.uncertainty.run_noise)

    @staticmethod
    def cost(values) -> ServerCost:
        return ServerCost(batch_ms=float(values[1]), item_ms=float(values[2]), spread=max(float(values[3]), 0.0))

    def replica(self, values=None) -> ReplicaModel:
        return ReplicaModel.from_profile(self.profile, self.cost(self.values if values is None else values))

    def max_rate(self, values, cfg: BatchingConfig, p99_ms: float, overhead_ms: float,
                 refusals: bool = True, plan_p99_ms: float | None = None) -> float:
        """Capacity at ``values``; the overhead enters as its offset from the estimate, on top of ``overhead_ms``
        (the plan's, which a user may have set apart from the calibration). ``refusals=False``: the latency limit
        alone (:meth:`planner.capacity.CapacitySearch.holds`). ``plan_p99_ms``: the target the plan writes its queue
        bound for, where ``p99_ms`` is that target as a run with P99 noise reads it (the plan's bound does not move
        with the noise; the server's latency does)."""
        def budget(target_ms: float) -> float:
            return (target_ms - overhead_ms - (values[0] - self.values[0])) / 1000.0

        budget_s = budget(p99_ms)
        if budget_s <= 0:
            return 0.0
        search = CapacitySearch(self.replica(values))
        bound = None
        if refusals and plan_p99_ms is not None and budget(plan_p99_ms) > 0:
            bound = queue_bound(search.model, cfg, budget(plan_p99_ms))
        return search.max_rate(cfg, budget_s, bound=bound, refusals=refusals)

    def capacity(self, cfg: BatchingConfig, p99_ms: float, overhead_ms: float,
                 nominal: float | None = None, refusals: bool = True) -> CapacityInterval:
        """Capacity and its interval; ``refusals=False`` for the latency limit alone, where P99 crosses the target
        with no queue bound turning requests away (what open-loop steps measure)."""
        c = self.confidence
        if nominal is None:
            nominal = self.max_rate(self.values, cfg, p99_ms, overhead_ms, refusals)
        offsets = self.draws - self.values
        spread = offsets.std(axis=0) if len(offsets) else np.zeros(len(self.values))
        # No spread in the draws: the steps gave the resampling nothing to vary (one step), so the interval's width is
        # unknown, and the run noise alone would pass it off as known.
        if nominal <= 0 or not np.any(spread > 0):
            return CapacityInterval(nominal, nominal, nominal, nominal, c)
        grad = np.zeros(len(self.values))
        for j in np.flatnonzero(spread > 0):
            h = np.zeros(len(self.values))
            h[j] = spread[j]
            up = self.max_rate(self.values + h, cfg, p99_ms, overhead_ms, refusals)
            down = self.max_rate(self.values - h, cfg, p99_ms, overhead_ms, refusals)
            grad[j] = (up - down) / (2 * spread[j])
        rates = nominal + offsets @ grad
        targets = np.full(len(self.draws), p99_ms)
        if self.noise is not None:
            # A run that read P99 low by a factor exp(e) holds the target where the fit's P99 reaches target / exp(e).
            targets = p99_ms * np.exp(-self.noise)
            up_ms, down_ms = p99_ms * math.exp(self.run_noise), p99_ms * math.exp(-self.run_noise)
            up = self.max_rate(self.values, cfg, up_ms, overhead_ms, refusals, p99_ms)
            down = self.max_rate(self.values, cfg, down_ms, overhead_ms, refusals, p99_ms)
            rates = rates + (up - down) / (up_ms - down_ms) * (targets - p99_ms)
        rates = np.maximum(rates, 0.0)
        order = np.argsort(rates)

        def exact_at(q: float) -> float:
            """The median of the draws ranked around quantile ``q``, each simulated: capacity is not linear far from
            the estimate (a queue bound caps it on one side, saturation on the other), so the gradient only ranks."""
            at = int(round(q * (len(rates) - 1)))
            near = order[max(at - EXACT_NEAR, 0):at + EXACT_NEAR + 1]
            return float(np.median([self.max_rate(self.draws[i], cfg, float(targets[i]), overhead_ms, refusals,
                                                  p99_ms if self.noise is not None else None) for i in near]))

        planned = min(nominal, exact_at(1 - c))
        # The ends are read off the ranking itself: simulating the draws ranked there gave ends that crossed the
        # estimate where capacity is not monotone in the draws (docs/validation/calibrate, gen02's refit), so only the
        # planned capacity, which a plan sizes with, is simulated.
        low, high = (float(np.quantile(rates, q)) for q in ((1 - c) / 2, (1 + c) / 2))
        return CapacityInterval(planned, nominal, min(low, planned), max(high, nominal), c)
