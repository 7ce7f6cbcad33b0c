"""The plan: what to buy, how to configure Triton, and how to scale. ``infra/`` provisions from it.

This module is the plan file's schema (``Plan``, version 1) and its only reader (:func:`read_plan`). The JSON
Schema is generated from ``Plan`` into ``docs/schemas/plan.v1.schema.json``. Rates are requests per second,
latencies milliseconds end to end (queue + device + the fixed overhead), money US dollars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.contracts import read_json, validate, write_atomic
from planner.errors import PlannerInputError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRequest(_Strict):
    """The question the plan answers, with every knob that shaped it."""

    qps: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    model: str
    region: str
    gpus: list[str]
    capacity_types: list[str]
    routing: Literal["weighted", "equal"]
    max_spot_share: float = Field(ge=0, le=1)
    spot_survival: bool
    survival_p99_ms: float | None
    horizon_months: float = Field(gt=0)
    overhead_ms: float = Field(ge=0)
    overhead_source: str
    min_replicas: int = Field(ge=1)
    max_instances_per_pool: int | None
    catalog_as_of: str
    calibration: str | None = Field(default=None, description="the `planner fit` calibration applied, if any")


class PoolPlan(_Strict):
    """Instances to buy from one pool; one Triton replica runs per GPU."""

    instance_type: str
    gpu: str
    capacity_type: Literal["on-demand", "spot", "reserved-1yr", "reserved-3yr"]
    count: int = Field(ge=0)
    gpus_per_instance: int = Field(ge=1)
    replicas: int = Field(ge=0)
    usd_per_hour_per_instance: float = Field(ge=0)
    usd_per_hour: float = Field(ge=0)


class TritonConfig(_Strict):
    """The ``config.pbtxt`` settings the plan was simulated with."""

    max_batch_size: int = Field(ge=1)
    preferred_batch_sizes: list[int]
    max_queue_delay_microseconds: int = Field(ge=0)
    instance_count: int = Field(ge=1)
    instance_kind: Literal["KIND_GPU"] = "KIND_GPU"


class LatencyPrediction(_Strict):
    """Simulated end-to-end latency at the planned rate."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    utilization: float = Field(ge=0, le=1, description="share of time the GPU is executing a batch")
    mean_batch_size: float | None = None


class Autoscaling(_Strict):
    """HPA settings for one Deployment: scale out when the per-replica request rate passes the target."""

    metric: str
    target_rate_per_replica: float = Field(gt=0)
    max_rate_per_replica: float = Field(gt=0, description="the rate at which simulated P99 reaches the target")
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    basis: str
    scale_up_lag_s: float | None = Field(default=None, description="GPU node start-up lag the target allows for")
    ramp_per_min: float | None = Field(default=None, description="traffic growth per minute the target absorbs")


class Deployment(_Strict):
    """One Triton Deployment per GPU type; its replicas share its routed traffic equally."""

    gpu: str
    model: str
    replicas: int = Field(ge=1)
    routing_weight: float = Field(ge=0, le=1)
    rate_per_replica: float = Field(ge=0)
    triton: TritonConfig
    predicted: LatencyPrediction
    autoscaling: Autoscaling
    profile_origin: str


class Cost(_Strict):
    usd_per_hour: float
    usd_per_month: float
    usd_per_million_inferences: float


class SolverReport(_Strict):
    solver: str
    status: str
    mip_gap: float
    lp_relaxation_usd_per_hour: float | None
    lp_gap: float | None = Field(description="(integer cost - LP bound) / integer cost")
    wall_s: float


class Binding(_Strict):
    name: str
    usd_per_hour_if_relaxed: float | None


class Alternative(_Strict):
    pools: list[str]
    usd_per_hour: float


class SurvivalCheck(_Strict):
    """Losing the largest spot pool (:mod:`planner.survival`): simulated P99 on what remains until replacements
    serve, and after they do; and whether the optimizer's survival constraint holds for this plan."""

    lost_pool: str
    replicas_lost: int
    p99_ms_after_loss: float | None = Field(description="steady-state P99 on the remaining replicas; null when none "
                                                        "of that GPU type remain")
    bound_ms: float
    holds: bool = Field(description="P99 through the cold-start window stays within bound_ms")
    cold_start_s: float | None = Field(default=None, description="loss to replacement replicas serving")
    window_simulated_s: float | None = Field(default=None, description="how much of the window was simulated")
    p99_ms_cold_start: float | None = Field(default=None, description="requests arriving in the window; null when "
                                                                       "no replica of that GPU type remains")
    p99_ms_after_replacement: float | None = Field(default=None, description="the minute after replacements serve")
    constraint_holds: bool | None = Field(default=None, description="the planner's survival inequality on this "
                                                                    "plan: remaining capacity at the bound >= traffic")


class Plan(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    gpufleet_version: str
    request: PlanRequest
    pools: list[PoolPlan]
    deployments: list[Deployment]
    predicted: LatencyPrediction
    cost: Cost
    solver: SolverReport
    binding_constraint: Binding
    runner_up: Alternative | None
    survival: SurvivalCheck | None
    why: str

    @property
    def replicas(self) -> int:
        return sum(d.replicas for d in self.deployments)


def read_plan(path: Path | str) -> Plan:
    """Read and validate a plan file; one-line :class:`PlannerInputError` naming the field on any defect."""
    return validate(Plan, read_json(path, "plan", PlannerInputError), path, PlannerInputError)


def write_plan(plan: Plan, path: Path | str) -> None:
    """Write atomically, so a stack never reads a half-written plan."""
    write_atomic(path, plan.model_dump_json(indent=2) + "\n")
