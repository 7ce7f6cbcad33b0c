"""Device time of one batch, as a sampled distribution built from a latency profile.

Each batch size gets a quantile table: ``table[i]`` is the service time (seconds) at probability level
``(i + 0.5) / GRID``. A simulation draws a uniform index into it, which keeps draws reproducible across calls
(common random numbers) and costs one list lookup per batch.

From a profile, the quantile function is piecewise linear through the published points (p50, p90 when given,
p99) with two end points, because no profile publishes its minimum or maximum:

* ``Q(0) = p50 - 0.25 * (p99 - p50)`` (clamped at 0), a short left tail, as GPU kernels rarely run faster
  than their median;
* ``Q(1) = p99 + 0.5 * (p99 - p50)``, a bounded right tail beyond p99.

``spread`` scales every deviation from p50 and ``scale`` every time; ``planner fit`` calibrates both from stress
runs (a server adds per-batch work the bare profile does not see, and its tail is rarely the profile's). Batch sizes
between measured ones interpolate linearly in batch size, which matches the affine latency-versus-batch
shape of GPU inference; batch sizes below the smallest measured one take its figures.
"""
from __future__ import annotations

import numpy as np

from gpufleet.contracts.profile import LatencyProfile

GRID = 2048
LEFT_TAIL = 0.25
RIGHT_TAIL = 0.5


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
        sizes = np.array(profile.batch_sizes, dtype=float)
        levels = (np.arange(GRID) + 0.5) / GRID
        knots_per_size = []
        for bl in profile.batches:
            tail = bl.p99_ms - bl.p50_ms
            us = [0.0, 0.5] + ([0.9] if bl.p90_ms is not None else []) + [0.99, 1.0]
            qs = ([max(0.0, bl.p50_ms - LEFT_TAIL * tail), bl.p50_ms]
                  + ([bl.p90_ms] if bl.p90_ms is not None else []) + [bl.p99_ms, bl.p99_ms + RIGHT_TAIL * tail])
            q = np.interp(levels, us, qs)
            q = bl.p50_ms + spread * (q - bl.p50_ms)
            knots_per_size.append(scale * np.maximum(q, 0.0) / 1000.0)
        knots = np.array(knots_per_size)  # [n_sizes, GRID], seconds
        tables: list[np.ndarray] = [np.zeros(GRID)]
        for b in range(1, int(sizes[-1]) + 1):
            j = int(np.searchsorted(sizes, b))  # first measured size >= b
            if j == 0 or sizes[j] == b:
                tables.append(knots[j].copy())
            else:
                w = (b - sizes[j - 1]) / (sizes[j] - sizes[j - 1])
                tables.append((1 - w) * knots[j - 1] + w * knots[j])
        return cls(tables)

    @classmethod
    def from_quantile_function(cls, qf, max_batch_size: int, grid: int = GRID) -> "ServiceTime":
        """Tables from ``qf(batch_size, levels) -> seconds``; for closed-form checks and synthetic profiles."""
        levels = (np.arange(grid) + 0.5) / grid
        return cls([np.zeros(grid)] + [np.asarray(qf(b, levels), dtype=float) for b in range(1, max_batch_size + 1)])
