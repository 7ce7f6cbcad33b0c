"""The latency profile: per-batch-size latency of one model on one GPU type.

This module is the profile format's only reader and its schema (``LatencyProfile``). Producers (``serving
profile``, ``serving import``, the embedded reference data) write it; ``planner`` reads it with
:func:`read_profile`. The JSON Schema is generated from ``LatencyProfile`` into
``docs/schemas/latency-profile.v1.schema.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from gpufleet.contracts.io import read_contract_json, validate, write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.errors import ContractError

SCHEMA_VERSION = 1


class ProfileError(ContractError):
    """A profile file that cannot be read; the message names the file and the field."""


class BatchLatency(Strict):
    """Latency of one inference call at one batch size, in milliseconds of wall time on the device."""

    batch_size: int = Field(ge=1)
    mean_ms: float = Field(gt=0)
    p50_ms: float = Field(gt=0)
    p90_ms: float | None = Field(default=None, gt=0)
    p99_ms: float = Field(gt=0)
    throughput_per_s: float | None = Field(default=None, gt=0, description="inferences (images) per second")

    @model_validator(mode="after")
    def _quantiles_ordered(self) -> "BatchLatency":
        upper = [q for q in (self.p50_ms, self.p90_ms, self.p99_ms) if q is not None]
        if upper != sorted(upper):
            raise ValueError("quantiles must be non-decreasing: p50_ms <= p90_ms <= p99_ms")
        return self


class Origin(Strict):
    """Where the numbers come from: a measurement (with its device) or a derivation from published figures."""

    kind: Literal["measured", "derived"]
    date: str
    derivation: str | None = None
    sources: list[str] = Field(default_factory=list)
    device: dict[str, str | int | float] | None = None
    warmup_iterations: int | None = Field(default=None, ge=0)
    iterations: int | None = Field(default=None, ge=1)
    tool: str | None = None

    @model_validator(mode="after")
    def _derived_says_how(self) -> "Origin":
        if self.kind == "derived" and not self.derivation:
            raise ValueError("a derived profile must say how it was derived (origin.derivation)")
        return self


class LatencyProfile(Strict):
    """Latency per batch size for one model, precision and backend on one GPU type.

    ``concurrency_speedup`` maps a number of model instances executing at once on the GPU to the aggregate
    throughput relative to one instance (measured; ``{"2": 1.35}`` means two concurrent batches finish in
    2 / 1.35 of the solo time). Absent means unmeasured, and the planner then considers one instance only.
    """

    schema_version: Literal[1]
    model: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    precision: Literal["fp32", "fp16", "bf16", "int8", "fp8"]
    backend: Literal["tensorrt", "onnxruntime", "pytorch", "triton"]
    origin: Origin
    batches: list[BatchLatency] = Field(min_length=1)
    concurrency_speedup: dict[int, float] | None = None
    corun_speedup: dict[str, float] | None = Field(
        default=None, description="measured on this device with another model running at once (serving profile "
        "--corun): other model -> aggregate throughput of one batch of each in flight together, relative to one "
        "at a time (1: they only take turns; 2: they do not interfere)")

    @model_validator(mode="after")
    def _batches_sorted_unique(self) -> "LatencyProfile":
        sizes = [b.batch_size for b in self.batches]
        if sizes != sorted(set(sizes)):
            raise ValueError("batches must have strictly increasing batch_size")
        if self.concurrency_speedup:
            for n, s in self.concurrency_speedup.items():
                if n < 1 or not 0 < s <= n:
                    raise ValueError(f"concurrency_speedup[{n}]={s}: need n >= 1 and 0 < speedup <= n")
        for other, s in (self.corun_speedup or {}).items():
            if not 0 < s <= 2:
                raise ValueError(f"corun_speedup[{other}]={s}: two batches at once run between 0 and 2 times as fast")
        return self

    @property
    def batch_sizes(self) -> list[int]:
        return [b.batch_size for b in self.batches]

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.gpu)


# How a profile's published quantiles become a distribution of service times (see service_quantiles_s).
LEFT_TAIL = 0.25
RIGHT_TAIL = 0.5


def service_quantiles_s(profile: LatencyProfile, grid: int, spread: float = 1.0) -> np.ndarray:
    """The profile read as a distribution: ``table[b, i]`` is the service time (seconds) of a batch of ``b`` at
    probability level ``(i + 0.5) / grid``, for ``b`` in 1..the largest measured size (row 0 is zeros).

    The quantile function is piecewise linear through the published points (p50, p90 when given, p99) with two end
    points, because no profile publishes its minimum or maximum:

    * ``Q(0) = p50 - 0.25 * (p99 - p50)`` (clamped at 0), a short left tail, as GPU kernels rarely run faster
      than their median;
    * ``Q(1) = p99 + 0.5 * (p99 - p50)``, a bounded right tail beyond p99.

    ``spread`` scales every deviation from p50. Batch sizes between measured ones interpolate
    linearly in batch size (the affine latency-versus-batch shape of GPU inference); sizes below the smallest
    measured one take its figures. The planner simulates with this table and ``serving``'s stand-in model sleeps
    from it, so both read a profile the same way.
    """
    sizes = np.array(profile.batch_sizes, dtype=float)
    levels = (np.arange(grid) + 0.5) / grid
    knots_per_size = []
    for bl in profile.batches:
        tail = bl.p99_ms - bl.p50_ms
        us = [0.0, 0.5] + ([0.9] if bl.p90_ms is not None else []) + [0.99, 1.0]
        qs = ([max(0.0, bl.p50_ms - LEFT_TAIL * tail), bl.p50_ms]
              + ([bl.p90_ms] if bl.p90_ms is not None else []) + [bl.p99_ms, bl.p99_ms + RIGHT_TAIL * tail])
        q = np.interp(levels, us, qs)
        q = bl.p50_ms + spread * (q - bl.p50_ms)
        knots_per_size.append(np.maximum(q, 0.0) / 1000.0)
    knots = np.array(knots_per_size)  # [n_sizes, grid], seconds
    table = np.zeros((int(sizes[-1]) + 1, grid))
    for b in range(1, int(sizes[-1]) + 1):
        j = int(np.searchsorted(sizes, b))  # first measured size >= b
        if j == 0 or sizes[j] == b:
            table[b] = knots[j]
        else:
            w = (b - sizes[j - 1]) / (sizes[j] - sizes[j - 1])
            table[b] = (1 - w) * knots[j - 1] + w * knots[j]
    return table


def parse_profile(data: object, origin: str = "<profile>") -> LatencyProfile:
    return validate(LatencyProfile, data, origin, ProfileError)


def read_profile(path: Path | str) -> LatencyProfile:
    """Read and validate one profile JSON; raise :class:`ProfileError` with one line on any defect."""
    return parse_profile(read_contract_json(LatencyProfile, path, "profile", ProfileError), str(path))


def write_profile(profile: LatencyProfile, path: Path | str) -> None:
    """Write atomically: a reader never sees a half-written profile."""
    write_atomic(path, profile.model_dump_json(indent=2, exclude_none=True) + "\n")
