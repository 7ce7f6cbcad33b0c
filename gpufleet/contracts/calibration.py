"""The calibration: what ``planner fit`` learned from stress runs, and what ``planner recommend --calibration`` uses.

This module is the calibration file's schema (``Calibration``, version 1, published as
``docs/schemas/calibration.v1.schema.json``) and its only reader (:func:`read_calibration`).

The latency model it calibrates: a request's end-to-end latency is ``overhead_ms`` (network transfer, HTTP/gRPC
handling, pre/post-processing: paid once per request, whatever the load) plus its wait in Triton's queue plus its
batch's device time, where the device time of a batch is the profile's, scaled by ``service_scale`` and with its
deviations from the median scaled by ``spread`` (see :mod:`planner.service`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.io import read_model, write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.contracts.triton import BatchingConfig

SCHEMA_VERSION = 1


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


class Threshold(Strict):
    """For one measured config: the rate a replica holds at the P99 target and the HPA target for it."""

    config: BatchingConfig
    p99_ms: float = Field(gt=0)
    max_rate_per_replica: float = Field(ge=0)
    hpa_target_rate_per_replica: float = Field(ge=0)
    predicted_queue_us_at_target: float | None = Field(
        description="mean Triton queue time per request at the HPA target (nv_inference_queue_duration_us / "
                    "nv_inference_request_success): the alternative HPA metric")


class Calibration(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    model: str
    gpu: str
    profile_origin: str
    overhead_ms: float = Field(ge=0)
    spread: float = Field(ge=0)
    service_scale: float = Field(gt=0)
    sources: list[str]
    fit: FitReport
    steps: list[StepFit]
    scaling: AutoscalingSpec = Field(description="the HPA metric chain and the lag and ramp the thresholds "
                                                  "allow for")
    thresholds: list[Threshold]


def read_calibration(path: Path | str) -> Calibration:
    """Read and validate a calibration; one-line :class:`gpufleet.errors.ContractError` naming the field on any defect."""
    return read_model(Calibration, path, "calibration")


def write_calibration(calibration: Calibration, path: Path | str) -> None:
    write_atomic(path, calibration.model_dump_json(indent=2) + "\n")
