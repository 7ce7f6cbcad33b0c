"""The stress result: one JSON file per run, the file ``planner fit`` reads.

This module is its only reader (:func:`read_stress_result`) and its schema (``StressResult``, published as
``docs/schemas/stress-result.v1.schema.json``). Latencies are counted from each request's *scheduled* send time in
open-loop runs (so a stalled server shows up in full), and from the actual send in closed-loop runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.contracts import read_json, validate, write_atomic
from loadtests.errors import LoadTestInputError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencySummary(_Strict):
    """Milliseconds over successful requests; null when the step had none."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p999: float | None
    mean: float | None
    max: float | None


class ServerFigures(_Strict):
    """Triton's ``/metrics`` counters, differenced over the step (see :mod:`loadtests.triton_metrics`)."""

    seconds: float
    request_success: float
    request_failure: float
    inference_count: float
    execution_count: float
    mean_batch_size: float | None
    queue_us_per_request: float | None
    compute_input_us_per_request: float | None
    compute_infer_us_per_request: float | None
    compute_output_us_per_request: float | None
    request_us_per_request: float | None


class StepResult(_Strict):
    index: int = Field(ge=0)
    name: str
    warmup: bool = Field(description="a warm-up step: run, recorded, and to be ignored by readers")
    start_s: float = Field(ge=0, description="seconds from the run's start")
    duration_s: float = Field(gt=0)
    offered_rate: float | None = Field(description="scheduled requests/s (open loop); null in closed loop")
    concurrency: int | None = Field(default=None, description="users (closed loop)")
    achieved_rate: float = Field(ge=0, description="successful requests/s over the step")
    sent: int = Field(ge=0)
    ok: int = Field(ge=0)
    errors: int = Field(ge=0)
    error_kinds: dict[str, int] = Field(default_factory=dict)
    late_sends: int = Field(ge=0, description="sends that left later than late_threshold_ms after their schedule")
    dropped: int = Field(ge=0, description="scheduled sends never made: the in-flight cap was reached")
    lag_p99_ms: float | None = Field(description="P99 of (actual send - scheduled send)")
    latency_ms: LatencySummary
    server: ServerFigures | None = Field(description="null when /metrics was not scraped or not reachable")


class TritonBatching(_Strict):
    """The served model's batching and instance settings, read from Triton (``GET /v2/models/<m>/config``) at the
    start of the run: what ``planner fit`` simulates the run with."""

    max_batch_size: int = Field(ge=0)
    max_queue_delay_us: int = Field(ge=0, description="0 also when dynamic batching is off")
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    dynamic_batching: bool
    instance_count: int = Field(ge=1, description="model instances in all instance groups")
    instance_kind: str


class Target(_Strict):
    host: str
    protocol: Literal["http", "grpc"]
    model: str
    model_version: str
    input_name: str
    input_shape: list[int]
    datatype: str
    request_batch: int = Field(ge=1)
    metrics_url: str | None
    triton: TritonBatching | None = Field(default=None, description="null when the server does not publish the "
                                                                   "model configuration")


class StressResult(_Strict):
    schema_version: Literal[1]
    tool: dict[str, str]
    mode: Literal["open-loop", "closed-loop"]
    arrival: Literal["poisson", "constant"] | None
    schedule_kind: Literal["steps", "ramp", "replay", "closed-loop"]
    seed: int | None
    started_at: str = Field(description="ISO 8601, UTC")
    start_epoch_s: float = Field(description="Unix time of the schedule's zero")
    late_threshold_ms: float
    workers: int = Field(ge=1)
    users: int = Field(ge=1)
    target: Target
    steps: list[StepResult]
    stopped: dict[str, str | int | float | None] = Field(description="reason (completed, p99-bound, error-share, "
                                                                     "interrupted) and the step it stopped at")
    locust_files: dict[str, str] = Field(default_factory=dict, description="Locust's own CSVs and JSON, beside this")

    def reported_steps(self) -> list[StepResult]:
        """The steps a reader should use: every one but the warm-up."""
        return [s for s in self.steps if not s.warmup]


def read_stress_result(path: Path | str) -> StressResult:
    """Read and validate one stress result; :class:`LoadTestInputError` with one line on any defect."""
    return validate(StressResult, read_json(path, "stress result", LoadTestInputError), path, LoadTestInputError)


def write_stress_result(result: StressResult, path: Path | str) -> None:
    """Write atomically: a reader never sees a half-written result."""
    write_atomic(path, result.model_dump_json(indent=2) + "\n")
