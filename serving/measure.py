"""Measure a latency profile: time a backend at each batch size and summarise it in the profile format."""
from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Callable

import numpy as np

from serving.backends import Backend
from serving.errors import ServingInputError
from gpufleet.contracts.profile import SCHEMA_VERSION, BatchLatency, LatencyProfile, Origin

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def summarise(batch_size: int, times_ms: np.ndarray) -> BatchLatency:
    """Mean, P50, P90 and P99 of per-call times, and images per second at the mean.

    Quantiles use the "higher" rule: the observed sample at or above the interpolated position, never a value
    interpolated below it (P99 of 100 calls is the slowest one), the conservative reading for a latency bound.
    """
    t = np.asarray(times_ms, dtype=float)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ServingInputError(f"batch {batch_size}: timings must be positive and finite")
    p50, p90, p99 = (float(np.quantile(t, q, method="higher")) for q in (0.5, 0.9, 0.99))
    mean = float(t.mean())
    return BatchLatency(batch_size=batch_size, mean_ms=mean, p50_ms=p50, p90_ms=p90, p99_ms=p99,
                        throughput_per_s=batch_size * 1000.0 / mean)


def measure_profile(backend: Backend, *, model: str, gpu: str, batch_sizes=DEFAULT_BATCH_SIZES, warmup: int = 20,
                    iterations: int = 200, tool: str = "gpufleet serving profile",
                    on_batch: Callable[[BatchLatency], None] | None = None) -> LatencyProfile:
    """Time ``backend`` at each batch size and return the profile.

    ``gpu`` is the GPU type the profile stands for in the planner's catalog; the device that actually ran it is in
    ``origin.device``. A profile measured on a CPU is labelled so there and is for exercising the pipeline only.
    """
    if warmup < 0 or iterations < 1:
        raise ServingInputError("need warmup >= 0 and iterations >= 1")
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise ServingInputError("batch sizes must be positive integers")
    batches = []
    for bs in sizes:
        row = summarise(bs, backend.time_batches(bs, warmup, iterations))
        batches.append(row)
        if on_batch:
            on_batch(row)
    device = backend.device_info()
    return LatencyProfile(
        schema_version=SCHEMA_VERSION, model=model, gpu=gpu, precision=backend.precision, backend=backend.name,
        origin=Origin(kind="measured", date=_dt.date.today().isoformat(), device=device, warmup_iterations=warmup,
                      iterations=iterations, tool=tool,
                      derivation=None if device.get("kind") == "gpu" else
                      f"measured on a CPU ({device.get('name')}), labelled {gpu} for pipeline testing only"),
        batches=batches)


def measure_concurrency(make_backend: Callable[[], Backend], instances: int, batch_size: int = 1,
                        iterations: int = 50, warmup: int = 5) -> dict[int, float]:
    """Aggregate throughput of ``n`` model instances running at once, relative to one, for n = 2..instances.

    Each instance is its own backend (session, engine context) driven by its own thread, as Triton drives the
    instances of an instance group; all start together and the wall time to finish ``iterations`` calls each is
    compared with one instance doing the same. This is the profile's ``concurrency_speedup``.
    """
    if instances < 2:
        return {}
    pool = [make_backend() for _ in range(instances)]
    for b in pool:
        b.time_batches(batch_size, warmup, 1)

    def wall(n: int) -> float:
        start = threading.Barrier(n + 1)
        threads = [threading.Thread(target=lambda b=b: (start.wait(), b.time_batches(batch_size, 0, iterations)))
                   for b in pool[:n]]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    solo = wall(1)
    return {n: round(min(n * solo / wall(n), float(n)), 3) for n in range(2, instances + 1)}


def measure_corun(mine: Backend, other: Backend, batch_size: int = 1, iterations: int = 50,
                  warmup: int = 5) -> float:
    """Aggregate throughput of two models' batches in flight together on one device, relative to one at a time.

    Each model runs ``iterations`` calls alone, then both run them at once from their own threads (as one Triton
    server drives two models' instances): the speedup is the solo walls' sum over the joint wall, at most 2. This is
    the profile's ``corun_speedup`` for the other model; the planner's co-location simulation reads it."""
    for b in (mine, other):
        b.time_batches(batch_size, warmup, 1)

    def wall(pool: list[Backend]) -> float:
        start = threading.Barrier(len(pool) + 1)
        threads = [threading.Thread(target=lambda b=b: (start.wait(), b.time_batches(batch_size, 0, iterations)))
                   for b in pool]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    apart = wall([mine]) + wall([other])
    return round(min(apart / wall([mine, other]), 2.0), 3)
