"""Fleet sizing, one way for every caller: ``recommend`` sizes the plan with it, ``report`` re-solves the plan's
fleet at other rates and spot shares with it, so a report's cost at the plan's QPS is the plan's.

The pieces: the replica model of each GPU type (the profile, with the calibration applied to the GPU it was fitted
on); the best Triton config and the rate one replica holds at the P99 budget; the rate a replica may carry while a
spot pool is lost; and the MILP :class:`~planner.optimize.Problem` over the catalog's pools at those rates.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from gpufleet.contracts.autoscaling import AutoscalingSpec
from gpufleet.contracts.calibration import Calibration
from gpufleet.contracts.catalog import Catalog, CapacityType
from gpufleet.contracts.plan import CapacityRange, SizingRecord
from gpufleet.contracts.profile import LatencyProfile
from gpufleet.contracts.triton import BatchingConfig
from planner.capacity import Capacity, CapacitySearch, ReplicaModel, queue_bound
from planner.catalog import Pool, pools_for
from planner.mig import slice_pools, slices
from planner.optimize import Problem, Routing
from planner.uncertainty import CalibratedModel


# Every plan (point, day, mix) is verified by simulating the fleet it would buy, and a Deployment whose simulated P99
# misses its target has its capacity scaled by TIGHTEN and the MILP solved again, at most MAX_ROUNDS times.
VERIFY_REQUESTS = 40_000
VERIFY_SEED = 7
TIGHTEN = 0.97
MAX_ROUNDS = 5

def calibrated_model(profile: LatencyProfile, calibration: Calibration | None,
                     confidence: float | None = None) -> CalibratedModel | None:
    """The calibration applied to the GPU it was fitted on; ``None`` for every other GPU (the bare profile)."""
    if calibration is not None and calibration.gpu == profile.gpu:
        return CalibratedModel.from_calibration(profile, calibration, confidence)
    return None


def replica_model(profile: LatencyProfile, calibration: Calibration | None) -> ReplicaModel:
    """The simulator's model of one replica; the calibration's server costs apply to the GPU it was fitted on."""
    model = calibrated_model(profile, calibration)
    return model.replica() if model is not None else ReplicaModel.from_profile(profile)


def survival_rate(search: CapacitySearch, cap: Capacity, p99_ms: float, survival_p99_ms: float | None,
                  overhead_ms: float, spot_survival: bool) -> float:
    """The rate one replica may carry while a spot pool is lost: at the degraded bound, with the deployed config,
    its queue bound included (written for the normal target: a request that waits past its timeout is turned away
    however loose the degraded bound)."""
    if not spot_survival or survival_p99_ms is None or survival_p99_ms <= p99_ms:
        return cap.max_rate
    budget_s = (survival_p99_ms - overhead_ms) / 1000.0
    deployed = queue_bound(search.model, cap.config, (p99_ms - overhead_ms) / 1000.0)
    return search.max_rate(cap.config, budget_s, floor=cap.max_rate, bound=deployed) or cap.max_rate


@dataclass(frozen=True)
class GpuSizing:
    """What the optimizer needs of one GPU type: its config, the rate one replica is sized for (the HPA target when
    lag-aware), the rate it holds at the target, and the rate it may carry while a spot pool is lost."""

    gpu: str
    config: BatchingConfig
    max_rate: float
    sizing_rate: float
    survival_rate: float
    interval: CapacityRange | None = None

    def tightened(self, factor: float, spec: AutoscalingSpec) -> "GpuSizing":
        """Capacity scaled by ``factor`` (a deployment whose verification P99 missed the target)."""
        limit = self.max_rate * factor
        return GpuSizing(self.gpu, self.config, limit, spec.sizing_rate(limit),
                         max(self.survival_rate * factor, limit), self.interval)

    def record(self) -> SizingRecord:
        return SizingRecord(gpu=self.gpu, triton=self.config, max_rate_per_replica=self.max_rate,
                            sizing_rate_per_replica=self.sizing_rate, survival_rate_per_replica=self.survival_rate,
                            capacity_interval=self.interval)

    @classmethod
    def from_record(cls, r: SizingRecord) -> "GpuSizing":
        return cls(r.gpu, r.triton, r.max_rate_per_replica, r.sizing_rate_per_replica, r.survival_rate_per_replica,
                   r.capacity_interval)


@dataclass(frozen=True)
class FleetConstraints:
    """The request's constraints that shape the fleet, apart from the rate."""

    routing: Routing
    max_spot_share: float
    spot_survival: bool
    min_replicas: int
    max_instances_per_pool: int | None
    horizon_months: float
    capacity_types: tuple[CapacityType, ...]
    min_replicas_per_gpu: int = 1
    mig: bool = False  # MIG slices of MIG-capable GPUs are capacity too (planner.mig)


def size_gpu(search: CapacitySearch, cap: Capacity, spec: AutoscalingSpec, p99_ms: float,
             survival_p99_ms: float | None, overhead_ms: float, spot_survival: bool,
             calibrated: CalibratedModel | None = None) -> GpuSizing:
    """Sizing for one GPU type; with a calibration, capacity is the safe end of its interval at the confidence."""
    interval = None
    if calibrated is not None:
        ci = calibrated.capacity(cap.config, p99_ms, overhead_ms, nominal=cap.max_rate)
        interval = CapacityRange(nominal=round(ci.nominal, 3), low=round(ci.low, 3), high=round(ci.high, 3),
                                 confidence=ci.confidence)
        cap = Capacity(cap.gpu, cap.config, ci.planned, cap.budget_ms, cap.evaluated)
    return GpuSizing(cap.gpu, cap.config, cap.max_rate, spec.sizing_rate(cap.max_rate),
                     survival_rate(search, cap, p99_ms, survival_p99_ms, overhead_ms, spot_survival), interval)


def fleet_pools(catalog: Catalog, gpus: set[str], c: FleetConstraints) -> tuple[Pool, ...]:
    """The catalog's pools of these GPU types; with ``c.mig``, slice types among them take the pools of their
    whole GPU, partitioned."""
    wholes = {s.gpu for s in slices() if s.gpu_type in gpus} if c.mig else set()
    base = pools_for(catalog, set(gpus) | wholes, c.horizon_months, set(c.capacity_types))
    return tuple([p for p in base if p.gpu in gpus] + ([p for p in slice_pools(base) if p.gpu in gpus] if c.mig
                                                         else []))


def fleet_problem(pools: tuple[Pool, ...], sizing: dict[str, GpuSizing], qps: float, c: FleetConstraints,
                  **override) -> Problem:
    """The MILP over ``pools`` at the sized rates; ``override`` replaces a constraint (max_spot_share,
    spot_survival) for what-ifs."""
    usable = tuple(p for p in pools if p.gpu in sizing)
    return Problem(usable, {g: s.sizing_rate for g, s in sizing.items()}, qps,
                   override.get("routing", c.routing), override.get("max_spot_share", c.max_spot_share),
                   override.get("spot_survival", c.spot_survival),
                   {g: s.survival_rate for g, s in sizing.items()}, c.min_replicas, c.max_instances_per_pool,
                   min_replicas_per_gpu=c.min_replicas_per_gpu)


def constraints_of(request) -> FleetConstraints:
    """The fleet constraints of a request, read by field name: the one being planned
    (:class:`planner.pipeline.RecommendRequest`) or the one a plan records (:class:`gpufleet.contracts.plan.PlanRequest`,
    which the report re-solves with), the same fields either way."""
    values = {f.name: getattr(request, f.name) for f in fields(FleetConstraints)}
    return FleetConstraints(**values | {"capacity_types": tuple(values["capacity_types"])})
