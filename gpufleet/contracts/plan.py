"""The plan: what to buy, how to configure Triton, and how to scale. ``infra/`` provisions from it.

This module is the plan file's schema (``Plan``, version 2) and its only reader (:func:`read_plan`). The JSON
Schema is generated from ``Plan`` into ``docs/schemas/plan.v2.schema.json``. Rates are requests per second,
latencies milliseconds end to end (queue + device + the fixed overhead), money US dollars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.catalog import CapacityType
from gpufleet.contracts.io import read_contract_json, validate, write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.contracts.triton import BatchingConfig
from gpufleet.errors import ContractError

SCHEMA_VERSION = 2
# How traffic is split over GPU types as deployed: in proportion to what each type holds, or equal shares per replica.
Routing = Literal["weighted", "equal"]
# production: at least PRODUCTION_MIN_REPLICAS_PER_GPU (planner.pipeline) replicas of every GPU type that serves.
Environment = Literal["production", "development"]


class PlanRequest(Strict):
    """The question the plan answers, with every knob that shaped it."""

    qps: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    model: str
    region: str
    gpus: list[str]
    capacity_types: list[str]
    routing: Routing
    max_spot_share: float = Field(ge=0, le=1, description="Largest share of each GPU type's replicas on spot.")
    spot_survival: bool
    survival_p99_ms: float | None
    horizon_months: float = Field(gt=0)
    overhead_ms: float = Field(ge=0)
    overhead_source: str
    min_replicas: int = Field(ge=1)
    environment: Environment = Field(
        default="development", description="production: at least min_replicas_per_gpu replicas of every GPU type "
                                           "that serves, and lag-aware HPA targets unless the request set others")
    min_replicas_per_gpu: int = Field(default=1, ge=1, description="fewest replicas of any GPU type in use")
    max_instances_per_pool: int | None
    catalog_as_of: str
    calibration: str | None = Field(default=None, description="the `planner fit` calibration applied, if any")
    mig: bool = Field(default=False, description="MIG slices of MIG-capable GPUs were capacity (planner --mig)")


class PoolPlan(Strict):
    """Instances to buy from one pool; one Triton replica runs per GPU. Carries every instance fact ``infra`` needs,
    so the stack is built from the plan alone (never from a catalog that may differ from the one planned with)."""

    instance_type: str = Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    gpu: str
    capacity_type: CapacityType
    count: int = Field(ge=0)
    gpus_per_instance: int = Field(ge=1)
    architecture: Literal["x86_64", "arm64"] = Field(description="selects the EKS NVIDIA AMI")
    vcpu: int = Field(ge=1)
    spot_instance_types: list[str] = Field(
        default_factory=list, description="spot pools only: this type and the catalog's other types with the same GPU "
        "and GPU count and architecture, fewest vCPUs first; the node group draws on all of them (more spot pools)")
    replicas: int = Field(ge=0)
    usd_per_hour_per_instance: float = Field(ge=0)
    usd_per_hour: float = Field(ge=0)
    mig_partition: str | None = Field(default=None, description="MIG: the mig-parted configuration every GPU of "
                                      "these instances runs (e.g. all-1g.5gb); gpus_per_instance and replicas then "
                                      "count slices. None: whole GPUs")
    mig_slices_per_gpu: int | None = Field(default=None, ge=2, description="MIG: slices of that profile per GPU")

    @property
    def mig_profile(self) -> str | None:
        """The MIG profile (e.g. 1g.5gb) of a partitioned pool; its Kubernetes resource is nvidia.com/mig-<it>."""
        return self.mig_partition.removeprefix("all-") if self.mig_partition else None


class LatencyPrediction(Strict):
    """Simulated end-to-end latency at the planned rate. A shared Deployment of a mix over a day (``planner
    recommend --mix`` with curves): the simulation of its busiest period (the period its ``rate_per_replica`` is
    from), on the check's own random numbers; every period's P99 is in ``mix.models[].period_p99_ms``."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    utilization: float = Field(ge=0, le=1, description="share of time the GPU is executing a batch; a shared "
                               "Deployment: every member's rate over its saturation rate with its config, summed "
                               "(the same figure for each member)")
    mean_batch_size: float | None = None


class Autoscaling(Strict):
    """HPA thresholds for one Deployment: scale out when the per-replica rate of the plan's HPA metric (the
    plan's ``autoscaling`` spec) passes the target."""

    target_rate_per_replica: float = Field(gt=0)
    max_rate_per_replica: float = Field(gt=0, description="the most a replica holds: simulated P99 within the "
                                        "target, and the queue bound its Triton config writes refusing at most "
                                        "refused_share_max of the requests (with a calibration, the safe end of "
                                        "its interval)")
    refused_share_max: float | None = Field(
        default=None, ge=0, lt=1, description="the share of requests the config's queue bound (max_queue_size, "
        "default_timeout_microseconds) may turn away at any rate up to max_rate_per_replica: part of the capacity "
        "promise. Absent in plans written before it was recorded")
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    basis: str


class Deployment(Strict):
    """One Triton Deployment per GPU type; its replicas share its routed traffic equally."""

    gpu: str
    model: str
    replicas: int = Field(ge=1)
    routing_weight: float = Field(ge=0, le=1)
    rate_per_replica: float = Field(ge=0)
    triton: BatchingConfig
    predicted: LatencyPrediction
    autoscaling: Autoscaling
    profile_origin: str
    shared: str | None = Field(default=None, description="several models, one fleet: the shared Deployment this "
                               "model runs in (one Triton server per GPU serving every model that names it, each with "
                               "its own batcher and instances); its replicas, GPU and routing weight are the same in "
                               "each. None: the model's own Deployment")


class CapacityRange(Strict):
    """Per-replica capacity at the target as the calibration's uncertainty leaves it."""

    nominal: float = Field(ge=0, description="at the fitted parameters' estimates")
    low: float = Field(ge=0, description="central interval at the confidence")
    high: float = Field(ge=0)
    confidence: float = Field(gt=0.5, lt=1, description="max_rate is the lower end of the one-sided interval at "
                                                         "this level")


class SizingRecord(Strict):
    """The per-replica rates the optimizer sized one GPU type with (after verification tightened them): what
    ``planner report`` re-solves the fleet with, so its cost at the plan's rate is the plan's."""

    gpu: str
    triton: BatchingConfig
    max_rate_per_replica: float = Field(gt=0, description="simulated P99 meets the target here")
    sizing_rate_per_replica: float = Field(gt=0, description="the most a replica carries in the plan: the HPA "
                                                             "target when lag-aware, else max_rate")
    survival_rate_per_replica: float = Field(gt=0, description="the most a replica carries while a spot pool is "
                                                               "lost (at the survival bound)")
    capacity_interval: CapacityRange | None = Field(default=None, description="with a calibration for this GPU: "
                                                    "how sure max_rate is; max_rate is the interval's safe end")


class Cost(Strict):
    usd_per_hour: float
    usd_per_month: float
    usd_per_million_inferences: float


class SolverReport(Strict):
    solver: str
    status: str
    mip_gap: float
    lp_relaxation_usd_per_hour: float | None
    lp_gap: float | None = Field(description="(integer cost - LP bound) / integer cost")
    wall_s: float


class Binding(Strict):
    name: str
    usd_per_hour_if_relaxed: float | None


class Alternative(Strict):
    pools: list[str]
    usd_per_hour: float


class SurvivalCheck(Strict):
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


class DayPeriod(Strict):
    """One planning period of a day plan: the fleet the optimizer holds through it, and the P99 the HPA replay
    measured over it."""

    start_s: float = Field(ge=0, description="seconds from the curve's start")
    hours: float = Field(gt=0)
    qps: float = Field(ge=0, description="the curve's peak inside the period: what the fleet is sized for")
    mean_qps: float = Field(ge=0)
    instances: dict[str, int] = Field(description="pool (instance type/capacity type) -> instances held")
    replicas: dict[str, int] = Field(description="capacity type -> replicas held (reserved, on-demand, spot)")
    usd: float = Field(ge=0, description="what the period costs: reserved pools at their hourly rate, the rest as held")
    p99_ms: float | None = Field(description="replayed through the HPA: the P99 of the period's requests; null when a "
                                             "replica was past saturation (the queue grows without bound)")
    replicas_serving: float = Field(ge=0, description="mean replicas serving in the replay")
    holds_target: bool | None = Field(default=None, description="p99_ms within the plan's P99 target (DayPlan."
                                                                "p99_target_ms); null in plans written before it")


class DayPool(Strict):
    """A pool's size over the day: node-group minimum and maximum for infra."""

    instance_type: str
    gpu: str
    capacity_type: CapacityType
    min_count: int = Field(ge=0)
    max_count: int = Field(ge=0)
    mig_partition: str | None = Field(default=None, description="the MIG partition every GPU of the pool runs (as "
                                                                 "PoolPlan.mig_partition); null: whole GPUs")


class DayComparison(Strict):
    """What another way of buying the same day would cost."""

    name: str
    description: str
    pools: list[str] = Field(default_factory=list, description="the fleet held all day: 'count x instance type "
                                                               "capacity type' per pool")
    usd_per_day: float
    usd_per_month: float
    worst_period_p99_ms: float | None = Field(description="null: a replica past saturation in some period")
    holds_peak_at_sizing_rate: bool = Field(default=True, description="the fleet carries every period's peak with "
                                            "each replica at most at its sizing rate (the HPA target): the check the "
                                            "day plan's own periods meet")
    holds_target: bool = Field(description="both checks the day plan meets: holds_peak_at_sizing_rate, and the "
                                           "replayed P99 within the target in every period")


class ReservedThreshold(Strict):
    """Where a reserved instance pays: it must be busy at least ``break_even_hours_per_day`` (its effective price
    over on-demand's, times 24 h): the curve level held that many hours a day is ``demand_at_break_even_qps``."""

    pool: str
    usd_per_hour: float
    on_demand_usd_per_hour: float
    break_even_hours_per_day: float
    demand_at_break_even_qps: float | None = Field(description="null: the curve is above no level that long")
    bought: int = Field(ge=0)


class RampCheck(Strict):
    """The HPA replay at the curve's fastest rise."""

    fastest_ramp_per_min: float = Field(description="steepest growth of the curve over the HPA's reaction time, per "
                                                    "minute compounded")
    at_s: float = Field(description="where it starts, seconds from the curve's start")
    p99_ms: float | None = Field(description="P99 of the requests during the ramp's reaction window")
    holds: bool


class DayPlan(Strict):
    """A plan over a demand curve (``planner recommend --qps-curve``): reserved instances held all day, on-demand
    and spot added per period, chosen together for the least cost over the whole curve; replayed through the HPA.
    The plan's ``pools`` and ``deployments`` are the peak period's fleet; ``cost`` is the day's average per hour."""

    curve_source: str
    step_s: float = Field(gt=0, description="the curve's row interval")
    period_s: float = Field(gt=0, description="the planning period: the fleet changes at most this often")
    span_hours: float = Field(gt=0)
    routing_weights: dict[str, float] = Field(description="GPU type -> share of traffic, the same in every period "
                                                          "(weighted routing deploys fixed weights)")
    periods: list[DayPeriod]
    pools: list[DayPool]
    usd_per_day: float
    usd_per_month: float
    replay_usd_per_day: float = Field(description="the HPA replay's replica-hours at the periods' prices: what the "
                                                  "lag and the HPA's rounding cost beyond the plan")
    comparisons: list[DayComparison]
    reserved_thresholds: list[ReservedThreshold]
    solver: SolverReport
    ramp: RampCheck
    worst_period_p99_ms: float | None
    holds_target: bool = Field(description="every period's replayed P99 within the target")
    p99_target_ms: float | None = Field(default=None, description="the P99 target every period is held to")
    peak_held_usd_per_day: float | None = Field(
        default=None, description="the point plan at the curve's peak held all day (the comparison of that name)")
    saving_vs_peak_held_usd_per_day: float | None = Field(
        default=None, description="peak_held_usd_per_day less this plan's usd_per_day")
    saving_vs_peak_held: float | None = Field(default=None, description="that saving over peak_held_usd_per_day")


class MixModel(Strict):
    """One model of a mix: its own rate and target."""

    model: str
    qps: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    period_p99_ms: list[float | None] | None = Field(
        default=None, description="a mix over a day: the model's simulated P99 in each period (null: past "
                                  "saturation); qps is then its curve's peak")
    calibration: str | None = Field(
        default=None, description="the `planner fit` calibration this model was planned with (the mix file's "
                                  "calibration column, or --calibration), null for the profile alone")


class MixPlan(Strict):
    """Several models, one fleet (``planner recommend --mix``): which models share a Triton server, sized so every
    model meets its own P99. The plan's ``deployments`` hold one entry per model and GPU type; entries with the same
    ``shared`` name are one Deployment. The request's ``model``/``qps``/``p99_ms`` are the models joined by '+',
    the summed rate and the tightest target; ``predicted`` is the model closest to its target."""

    models: list[MixModel]
    separate_usd_per_hour: float = Field(ge=0, description="one Deployment per model, the same constraints")
    saving: float = Field(description="1 - cost / separate cost")
    partitions_evaluated: int = Field(ge=1, description="set-partitioning MILPs solved (the name predates the MILP: "
                                                       "plans made before it counted partitions enumerated)")
    bundles_evaluated: int = Field(ge=0, description="model sets x GPU types whose shared share was simulated")
    gpu_sharing: dict[str, str] = Field(description="shared Deployment -> how its models' batches share the GPU as "
                                                    "planned: a measured co-run speed, or unmeasured (held both ways)")
    lp_bound_usd_per_hour: float | None = Field(description="the LP relaxation of the set-partitioning "
                                                            "MILP over every candidate set: no fleet at these "
                                                            "per-replica shares costs less")


class Plan(Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
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
    sizing: list[SizingRecord] = Field(description="every GPU type considered, with the rates it was sized at")
    autoscaling: AutoscalingSpec = Field(description="the HPA metric every deployment scales on, how it is measured, "
                                                     "and the scale-up lag and ramp its targets allow for")
    why: str
    day: DayPlan | None = Field(default=None, description="present when planned over a demand curve")
    mix: MixPlan | None = Field(default=None, description="present when several models were planned together")

    @model_validator(mode="after")
    def _deployments_have_pools(self) -> "Plan":
        pooled = {p.gpu for p in self.pools if p.count > 0}
        missing = sorted({d.gpu for d in self.deployments} - pooled)
        if missing:
            raise ValueError(f"deployments on {missing} have no pool with instances")
        shared: dict[str, tuple[str, int, float]] = {}
        for d in self.deployments:
            if d.shared is not None and shared.setdefault(d.shared, (d.gpu, d.replicas, d.routing_weight)) != (
                    d.gpu, d.replicas, d.routing_weight):
                raise ValueError(f"shared deployment {d.shared!r}: its models disagree on GPU, replicas or weight")
            if d.triton.instance_kind != "KIND_GPU":
                raise ValueError(f"deployment {d.gpu}: a plan's Triton instances run on the GPU (KIND_GPU), "
                                 f"not {d.triton.instance_kind}")
        return self

    def units(self) -> list[list[Deployment]]:
        """The Deployments as they run: a shared one's models together (one Triton server each replica), any other
        alone; in plan order."""
        grouped: dict[str, list[Deployment]] = {}
        out: list[list[Deployment]] = []
        for d in self.deployments:
            if d.shared is None:
                out.append([d])
            elif d.shared in grouped:
                grouped[d.shared].append(d)
            else:
                grouped[d.shared] = [d]
                out.append(grouped[d.shared])
        return out

    @property
    def replicas(self) -> int:
        """GPU replicas: a shared Deployment's once, however many models it serves."""
        return sum(d.replicas for d in self.deployments if d.shared is None) + sum(
            {d.shared: d.replicas for d in self.deployments if d.shared is not None}.values())


def read_plan(path: Path | str) -> Plan:
    """Read and validate a plan file; one-line :class:`ContractError` naming the field on any defect."""
    data = read_contract_json(Plan, path, "plan")
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise ContractError(f"{path}: plan schema {version} was written by an older gpufleet; this one reads schema "
                            f"{SCHEMA_VERSION} (the plan now carries instance facts and the autoscaling spec): "
                            "re-run planner recommend")
    return validate(Plan, data, path)


def write_plan(plan: Plan, path: Path | str) -> None:
    """Write atomically, so a stack never reads a half-written plan."""
    write_atomic(path, plan.model_dump_json(indent=2) + "\n")
