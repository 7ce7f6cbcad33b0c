"""Device time of one batch, as a sampled distribution built from a latency profile.

Each batch size gets a quantile table: ``table[i]`` is the service time (seconds) at probability level
``(i + 0.5) / GRID``. A simulation draws a uniform index into it, which keeps draws reproducible across calls
(common random numbers) and costs one list lookup per batch.

From a profile, the tables are :func:`gpufleet.contracts.profile.service_quantiles_s`: the profile's published
quantiles read as a distribution, the one reading the stand-in model (``serving``) sleeps from too. A serving
replica adds its own work to the device's (:class:`ServerCost`), which ``planner fit`` calibrates from stress runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gpufleet.contracts.profile import LatencyProfile, service_quantiles_s

GRID = 2048


@dataclass(frozen=True)
class ServerCost:
    """What a serving replica adds to the profile's device time of a batch of ``b``, while it holds the instance.

    ``batch_ms + item_ms * b`` is added to every draw: ``batch_ms`` is paid once per batch (the backend's call,
    scheduling, launching), ``item_ms`` once per request in it (copying its tensors in and out, building its
    response). ``spread`` scales the device time's deviations from its median (the tail). Both costs occupy the
    model instance, so they decide capacity; what a request pays outside the batcher (network, HTTP handling) is
    the calibration's ``overhead_ms`` and does not.

    A single multiplicative scale cannot stand in for these: a per-batch cost folded into a scale inflates the
    per-item cost at the large batches where capacity is decided.
    """

    batch_ms: float = 0.0
    item_ms: float = 0.0
    spread: float = 1.0

    def added_s(self, b: int) -> float:
        return (self.batch_ms + self.item_ms * b) / 1000.0


NO_SERVER_COST = ServerCost()


class ServiceTime:
    """Per-batch-size service-time tables for one profile, batch sizes 1..max measured."""

    def __init__(self, tables: list[np.ndarray]):
        # tables[b] for b >= 1; tables[0] is unused so that a batch size indexes directly.
        self.tables = tables
        self._lists = [t.tolist() for t in tables]

    @cached_property
    def array(self) -> np.ndarray:
        """The tables as one array for the compiled simulators: row ``b`` is ``tables[b]``, padded with zeros to the
        longest (``lengths[b]`` says how many entries are its own)."""
        out = np.zeros((len(self.tables), max((len(t) for t in self.tables), default=0)))
        for b, t in enumerate(self.tables):
            out[b, :len(t)] = t
        return out

    @cached_property
    def lengths(self) -> np.ndarray:
        """How many entries each table row has: a draw ``u`` takes entry ``int(u * lengths[b])`` of row ``b``."""
        return np.array([len(t) for t in self.tables], dtype=np.int64)

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
    def from_profile(cls, profile: LatencyProfile, cost: ServerCost = NO_SERVER_COST) -> "ServiceTime":
        table = service_quantiles_s(profile, GRID, cost.spread)
        for b in range(1, len(table)):
            # A negative cost (a profile slower than the server) may not make a batch take less than nothing.
            table[b] = np.maximum(table[b] + cost.added_s(b), 1e-6)
        return cls(list(table))

    @classmethod
    def from_quantile_function(cls, qf, max_batch_size: int, grid: int = GRID) -> "ServiceTime":
        """Tables from ``qf(batch_size, levels) -> seconds``; for closed-form checks and synthetic profiles."""
        levels = (np.arange(grid) + 0.5) / grid
        return cls([np.zeros(grid)] + [np.asarray(qf(b, levels), dtype=float) for b in range(1, max_batch_size + 1)])
