"""Spot survival: lose the plan's largest spot pool and simulate the fleet through the cold start and after it.

At ``t = 0`` the pool's instances are reclaimed. Routing does not move (weighted routes keep their weights; an
equal-share Service spreads over what is left), so the remaining replicas of that GPU type carry its traffic until
replacement nodes serve, ``cold_start_s`` later (the GPU node start-up lag). Each replica is simulated in time:
its planned rate before the loss, the raised rate through the window, the planned rate again once replacements
serve, with its queue carried across. P99 is reported over requests that arrive in the window and over the
``after_s`` that follow (which still pay for any backlog the window built).

The planner's survival constraint says the same thing in steady state: the remaining replicas must hold the
traffic at the rate where the (degraded) P99 bound is met. ``constraint_holds`` is that inequality evaluated on the
plan, so the check and the optimizer can be compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpufleet.contracts.triton import BatchingConfig
from planner.simulate import simulate

MAX_REQUESTS_PER_PHASE = 120_000
LEAD_IN_S = 5.0


@dataclass(frozen=True)
class ReplicaLoss:
    """One replica's latencies (seconds) for requests arriving in the window and after it."""

    window: np.ndarray
    after: np.ndarray
    window_simulated_s: float


def replica_through_loss(cfg: BatchingConfig, service, speedup, rate_before: float, rate_during: float,
                         rate_after: float, cold_start_s: float, after_s: float, seed: int) -> ReplicaLoss:
    """Simulate one replica from steady state through the loss window and back.

    A window longer than ``MAX_REQUESTS_PER_PHASE`` arrivals is simulated for that many only: below saturation the
    queue settles within seconds, so the shorter window gives the same P99; above it the backlog keeps growing,
    and the shortened window understates P99, which still fails the bound (the report gives the simulated length).
    """
    rng = np.random.default_rng(seed)
    window_s = min(cold_start_s, MAX_REQUESTS_PER_PHASE / rate_during)
    after_s = min(after_s, MAX_REQUESTS_PER_PHASE / rate_after)
    phases = [(rate_before, LEAD_IN_S), (rate_during, window_s), (rate_after, after_s)]
    arrivals, start = [], 0.0
    for rate, span in phases:
        n = max(int(rate * span), 1)
        t = start + np.cumsum(rng.exponential(1.0 / rate, n))
        arrivals.append(t[t < start + span])
        start += span
    a = np.concatenate(arrivals)
    res = simulate(a, cfg, service, rng.random(len(a)), speedup, warmup_fraction=0.0)
    lead, win = len(arrivals[0]), len(arrivals[1])
    return ReplicaLoss(res.latency_s[lead:lead + win], res.latency_s[lead + win:], window_s)


def mixture_quantile(samples: list[np.ndarray], weights: list[float], q: float) -> float:
    """Quantile of a traffic-weighted mixture of latency samples."""
    parts = [(s, w) for s, w in zip(samples, weights) if len(s) and w > 0]
    if not parts:
        return math.nan
    lat = np.concatenate([s for s, _ in parts])
    wt = np.concatenate([np.full(len(s), w / len(s)) for s, w in parts])
    order = np.argsort(lat)
    cdf = np.cumsum(wt[order]) / wt.sum()
    return float(lat[order][min(np.searchsorted(cdf, q), len(lat) - 1)])
