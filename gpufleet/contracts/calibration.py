"""The calibration: what ``planner fit`` learned from stress runs, and what ``planner recommend --calibration`` uses.

This module is the calibration file's schema (``Calibration``, version 2, published as
``docs/schemas/calibration.v2.schema.json``) and its only reader (:func:`read_calibration`).

The latency model it calibrates: a request's end-to-end latency is ``overhead_ms`` (network transfer, HTTP/gRPC
handling, pre/post-processing: paid once per request outside the batcher, whatever the load) plus its wait in
Triton's queue plus its batch's service time. A batch of ``b`` takes the profile's device time, with its deviations
from the median scaled by ``spread``, plus ``batch_overhead_ms + item_overhead_ms * b`` that the server adds while
it holds the model instance (see :mod:`planner.service`). Each parameter says whether the steps identified it, and
its interval from a bootstrap over the steps; the thresholds plan on the interval's safe side.
"""
from __future__ import annotations

import math

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.io import read_contract_json, validate, write_atomic
from gpufleet.errors import ContractError
from gpufleet.contracts.model import Strict
from gpufleet.contracts.triton import BatchingConfig

SCHEMA_VERSION = 2
PARAMETER_NAMES = ("overhead_ms", "batch_overhead_ms", "item_overhead_ms", "spread")
MAX_RUN_NOISE = 0.5  # a run's P99 level spread this wide (Uncertainty.run_noise) says its runs measure nothing


def run_noise_error(run_noise_pct: float) -> str | None:
    """Why ``--run-noise-pct`` (percent) cannot be used, or None: the one check both stages' options make."""
    if math.isfinite(run_noise_pct) and 0 <= run_noise_pct < MAX_RUN_NOISE * 100:
        return None
    return f"--run-noise-pct {run_noise_pct:g}: must lie in [0, {MAX_RUN_NOISE * 100:g})"


def capacity_spread(nominal: float, low: float, high: float) -> float:
    """How far capacity's interval reaches from its estimate, as a fraction of it:
    ``max(nominal - low, high - nominal) / nominal``. An interval is "within ±X%" when this is at most X/100, i.e.
    both ends lie within X% of the estimate. The farther end is judged, not the half-width ``(high - low) / 2 /
    nominal``: capacity's interval is lopsided (the draws' capacities are bounded above by saturation), and the half
    width would let the low end, the side a plan sizes on, sit twice the bound away. Infinite when the estimate is
    0 (nothing to be sure of)."""
    if nominal <= 0:
        return float("inf")
    return max(nominal - low, high - nominal, 0.0) / nominal


class StepFit(Strict):
    """One stress step: what was measured and what the calibrated model predicts for it."""

    source: str
    step: str
    config: BatchingConfig
    offered_rate: float = Field(gt=0)
    requests: int = Field(ge=1)
    measured_ms: dict[Literal["p50", "p90", "p99"], float]
    predicted_ms: dict[Literal["p50", "p90", "p99"], float]
    p99_error: float = Field(description="(predicted - measured) / measured")
    measured_mean_batch: float | None
    predicted_mean_batch: float


class Excluded(Strict):
    source: str
    step: str
    reason: str


class FitReport(Strict):
    method: str
    residuals: str
    initial: dict[str, float]
    cost: float
    evaluations: int
    median_abs_p99_error: float
    worst_abs_p99_error: float
    excluded: list[Excluded] = Field(default_factory=list)


class Parameter(Strict):
    """One fitted parameter: its estimate, its interval, and whether the steps could tell it apart at all."""

    value: float
    low: float = Field(description="lower end of the interval at the calibration's confidence (bootstrap)")
    high: float
    identified: bool = Field(description="false: the steps given cannot separate it from the others; it was held "
                                         "at `value` (its neutral value) and the note says why")
    at_bound: bool = Field(description="the estimate sits on a bound of its range: the data pull it past what the "
                                       "model allows, and the fit is suspect")
    note: str = ""


class Parameters(Strict):
    overhead_ms: Parameter = Field(description="per request, outside the batcher (network, HTTP, pre/post)")
    batch_overhead_ms: Parameter = Field(description="per batch, while the model instance is held")
    item_overhead_ms: Parameter = Field(description="per request in a batch, while the model instance is held")
    spread: Parameter = Field(description="scale of the device time's deviations from its median (the tail)")

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, n).value for n in PARAMETER_NAMES)


class Uncertainty(Strict):
    """How sure the calibration is: parameter draws from resampling the steps, used to carry it to capacity."""

    method: str
    confidence: float = Field(gt=0.5, lt=1, description="intervals are central at this level; the thresholds "
                                                           "take the lower end of capacity's one-sided interval")
    resamples: int = Field(ge=0)
    draws: list[list[float]] = Field(description=f"one row per resample: {', '.join(PARAMETER_NAMES)}")
    run_noise: float = Field(
        0.0, ge=0, lt=MAX_RUN_NOISE, description="relative standard deviation of the P99 level error the fitted runs share (one "
        "run's spread over the square root of the runs fitted), an error every step of one "
        "run shares and resampling its steps cannot see: each draw reads the target as if its run measured P99 off "
        "by a log-normal factor of this spread (planner.uncertainty). 0 in files written before it was recorded")


class Threshold(Strict):
    """For one measured config: the rate a replica holds at the P99 target and the HPA target for it."""

    config: BatchingConfig
    p99_ms: float = Field(gt=0)
    max_rate_per_replica: float = Field(ge=0, description="the planned capacity: the lower end of its interval "
                                                          "at the calibration's confidence")
    nominal_max_rate_per_replica: float = Field(ge=0, description="capacity at the parameters' estimates")
    max_rate_interval: tuple[float, float] = Field(description="central interval of capacity at the confidence")
    latency_max_rate: float | None = Field(
        default=None, ge=0, description="the latency limit at the parameters' estimates: the rate where the "
        "simulated P99 reaches the target with no queue bound turning requests away, what open-loop steps against "
        "the config measure. The planned capacity is the lesser of this and the rate at which the queue bound the "
        "plan writes refuses more than 0.1% (planner.capacity.REFUSED_SHARE_MAX). Absent in files written before "
        "it was recorded")
    latency_max_rate_interval: tuple[float, float] | None = Field(
        default=None, description="central interval of the latency limit at the confidence")
    hpa_target_rate_per_replica: float = Field(ge=0)
    predicted_queue_us_at_target: float | None = Field(
        description="mean Triton queue time per request at the HPA target (nv_inference_queue_duration_us / "
                    "nv_inference_request_success): the alternative HPA metric")


class Calibration(Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
    created_at: str
    model: str
    gpu: str
    profile_origin: str
    parameters: Parameters
    uncertainty: Uncertainty
    warnings: list[str] = Field(default_factory=list, description="parameters at a bound or not identified, "
                                "steps flagged as host-bound: read before trusting the thresholds")
    sources: list[str]
    fit: FitReport
    steps: list[StepFit]
    scaling: AutoscalingSpec = Field(description="the HPA metric chain and the lag and ramp the thresholds "
                                                  "allow for")
    thresholds: list[Threshold]


    @property
    def overhead_ms(self) -> float:
        return self.parameters.overhead_ms.value

    def describe_parameters(self) -> str:
        """One line: each parameter with its interval, or why it was held."""
        parts = []
        for name in PARAMETER_NAMES:
            p = getattr(self.parameters, name)
            unit = "" if name == "spread" else " ms"
            text = f"{name} {p.value:.3f}{unit}"
            text += f" [{p.low:.3f}, {p.high:.3f}]" if p.identified else " (held: not identified)"
            parts.append(text + (" AT BOUND" if p.at_bound else ""))
        return ", ".join(parts) + f" ({self.uncertainty.confidence:.0%} intervals)"


def read_calibration(path: Path | str) -> Calibration:
    """Read and validate a calibration; one-line :class:`gpufleet.errors.ContractError` naming the field on any defect."""
    data = read_contract_json(Calibration, path, "calibration")
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise ContractError(f"{path}: calibration schema {version} was written by an older gpufleet; this one reads "
                            f"schema {SCHEMA_VERSION} (per-batch and per-item server costs, intervals): run planner "
                            "fit again on its stress results")
    return validate(Calibration, data, path)


def write_calibration(calibration: Calibration, path: Path | str) -> None:
    write_atomic(path, calibration.model_dump_json(indent=2) + "\n")
