"""Device time of one batch, as a sampled distribution built from a latency profile.

Each batch size gets a quantile table: ``table[i]`` is the service time (seconds) at probability level
``(i + 0.5) / GRID``. A simulation draws a uniform index into it, which keeps draws reproducible across calls
(common random numbers) and costs one list lookup per batch.

From a profile, the tables are :func:`gpufleet.contracts.profile.service_quantiles_s`: the profile's published
quantiles read as a distribution, the one reading the stand-in model (``serving``) sleeps from too. ``spread`` scales
every deviation from p50 and ``scale`` every time; ``planner fit`` calibrates both from stress runs (a server adds
per-batch work the bare profile does not see, and its tail is rarely the profile's).
"""
from __future__ import annotations

import numpy as np

from gpufleet.contracts.profile import LatencyProfile, service_quantiles_s

GRID = 2048


class ServiceTime:
    """Per-batch-size service-time tables for one profile, batch sizes 1..max measured."""

    def __init__(self, tables: list[np.ndarray]):
        # tables[b] for b >= 1; tables[0] is unused so that a batch size indexes directly.
        self.tables = tables
        self._lists = [t.tolist() for t in tables]

    @property
    def max_batch_size(self) -> int:
        return len(self.tables) - 1

    def mean(self, b: int) -> float:
        return float(self.tables[b].mean())

    def quantile(self, b: int, q: float) -> float:
        return float(np.quantile(self.tables[b], q))

    @property
    def grid(self) -> int:
        return len(self.tables[0])

    def draw(self, b: int, u: float) -> float:
        """Service time of a batch of ``b`` at probability level ``u`` in [0, 1)."""
        return self._lists[b][int(u * len(self._lists[b]))]

    @classmethod
    def from_profile(cls, profile: LatencyProfile, spread: float = 1.0, scale: float = 1.0) -> "ServiceTime":
        table = service_quantiles_s(profile, GRID, spread, scale)
        return cls(list(table))

    @classmethod
    def from_quantile_function(cls, qf, max_batch_size: int, grid: int = GRID) -> "ServiceTime":
        """Tables from ``qf(batch_size, levels) -> seconds``; for closed-form checks and synthetic profiles."""
        levels = (np.arange(grid) + 0.5) / grid
        return cls([np.zeros(grid)] + [np.asarray(qf(b, levels), dtype=float) for b in range(1, max_batch_size + 1)])
