"""The stress result: one JSON file per run, the file ``planner fit`` reads.

This module is its only reader (:func:`read_stress_result`) and its schema (``StressResult``, published as
``docs/schemas/stress-result.v1.schema.json``). Latencies are counted from each request's *scheduled* send time in
open-loop runs (so a stalled server shows up in full), and from the actual send in closed-loop runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gpufleet.contracts.io import read_model, write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.contracts.triton import BatchingConfig

SCHEMA_VERSION = 1
# A step whose host CPU was busy this share of the time on average (Triton's nv_cpu_utilization: every core and every
# process on the machine, 0-1; see loadtests.triton_metrics) is host-saturated. At 0.9 a 2-core host has a fifth of a
# core idle on average, so the bursts of Triton's HTTP, batcher and backend threads (and a load generator sharing the
# host) queue for a CPU. The repository's validation run found such contention by hand (docs/validation/README.md:
# two capacity runs disturbed by CPU-heavy work beside the server). The gauge is the whole host's, so a saturated step
# is flagged (loadtests show, planner fit's warnings), not left out: Triton's own execution time decides that.
HOST_CPU_SATURATED = 0.9
# A step with fewer successful requests gives no usable P99 (its 99th percentile rests on one or two requests):
# `planner fit` leaves such steps out, and `loadtests calibrate` sizes its measurements to hold more.
MIN_REQUESTS_FOR_P99 = 200


class LatencySummary(Strict):
    """Milliseconds over successful requests; null when the step had none."""

    p50: float | None = Field(ge=0)
    p90: float | None = Field(ge=0)
    p95: float | None = Field(ge=0)
    p99: float | None = Field(ge=0)
    p999: float | None = Field(ge=0)
    mean: float | None = Field(ge=0)
    max: float | None = Field(ge=0)


class ServerFigures(Strict):
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
    utilization_samples: int = Field(default=0, ge=0, description="samples of the utilization gauges taken during "
                                     "the step (about one a second); 0 in results written before they were sampled")
    cpu_utilization_mean: float | None = Field(default=None, ge=0, le=1, description="nv_cpu_utilization over the "
                                               "step: the whole host's CPU busy share, all cores, every process")
    cpu_utilization_max: float | None = Field(default=None, ge=0, le=1)
    gpu_utilization_mean: float | None = Field(default=None, ge=0, le=1, description="nv_gpu_utilization over the "
                                               "step, the busiest GPU's; null without a GPU")
    gpu_utilization_max: float | None = Field(default=None, ge=0, le=1)

    @property
    def host_cpu_saturated(self) -> bool:
        """The host's CPU was saturated over the step (:data:`HOST_CPU_SATURATED`); False when not sampled."""
        return self.cpu_utilization_mean is not None and self.cpu_utilization_mean >= HOST_CPU_SATURATED


class StepResult(Strict):
    index: int = Field(ge=0)
    name: str
    warmup: bool = Field(description="a warm-up step: run, recorded, and to be ignored by readers")
    start_s: float = Field(ge=0, description="seconds from the run's start")
    duration_s: float = Field(gt=0)
    offered_rate: float | None = Field(gt=0, description="scheduled requests/s (open loop); null in closed loop")
    concurrency: int | None = Field(default=None, description="users (closed loop)")
    achieved_rate: float = Field(ge=0, description="successful requests/s over the step")
    sent: int = Field(ge=0)
    ok: int = Field(ge=0)
    errors: int = Field(ge=0, description="failed requests, rejections not included")
    rejected: int = Field(default=0, ge=0, description="requests the server turned away at once because its queue "
                          "was at max_queue_size (circuit breaking): load shed by design, not failures")
    error_kinds: dict[str, int] = Field(default_factory=dict)
    late_sends: int = Field(ge=0, description="sends that left later than late_threshold_ms after their schedule")
    dropped: int = Field(ge=0, description="scheduled sends never made: the in-flight cap was reached")
    lag_p99_ms: float | None = Field(ge=0, description="P99 of (actual send - scheduled send)")
    latency_ms: LatencySummary
    server: ServerFigures | None = Field(description="null when /metrics was not scraped or not reachable")


class Target(Strict):
    host: str
    protocol: Literal["http", "grpc"]
    model: str
    model_version: str
    input_name: str
    input_shape: list[int]
    datatype: str
    request_batch: int = Field(ge=1)
    metrics_url: str | None
    triton: BatchingConfig | None = Field(default=None, description="the batching and instances Triton loaded (GET "
                                          "/v2/models/<m>/config at the start of the run); null when the server does "
                                          "not publish the model configuration")


class StressResult(Strict):
    schema_version: Literal[1]
    tool: dict[str, str]
    mode: Literal["open-loop", "closed-loop"]
    arrival: Literal["poisson", "constant"] | None
    schedule_kind: Literal["steps", "ramp", "replay", "closed-loop", "stable", "production"] = Field(
        description="how the load was shaped; production: windows of live traffic read from Prometheus (planner fit "
                    "--prometheus), nobody's schedule")
    seed: int | None
    started_at: str = Field(description="ISO 8601, UTC")
    start_epoch_s: float = Field(description="Unix time of the schedule's zero")
    late_threshold_ms: float
    workers: int = Field(ge=1)
    users: int = Field(ge=1)
    target: Target
    steps: list[StepResult]
    stopped: dict[str, str | int | float | None] = Field(description="reason (completed, p99-bound, error-share, "
                                                                     "stable, interrupted; loadtests calibrate: "
                                                                     "width, budget) and the step it stopped at")
    locust_files: dict[str, str] = Field(default_factory=dict, description="Locust's own CSVs and JSON, beside this")

    def reported_steps(self) -> list[StepResult]:
        """The steps a reader should use: every one but the warm-up."""
        return [s for s in self.steps if not s.warmup]


def read_stress_result(path: Path | str) -> StressResult:
    """Read and validate one stress result; :class:`gpufleet.errors.ContractError` with one line on any defect."""
    return read_model(StressResult, path, "stress result")


def write_stress_result(result: StressResult, path: Path | str) -> None:
    """Write atomically: a reader never sees a half-written result."""
    write_atomic(path, result.model_dump_json(indent=2) + "\n")
