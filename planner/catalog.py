"""The instance catalog: GPU instance types with their prices, and the pools the optimizer may buy.

``read_catalog`` is the catalog file's only reader. A *pool* is one (instance type, capacity type) pair:
on-demand, spot, or a reserved term. Reserved pools are priced per hour of use over the planning horizon, so a
commitment longer than the horizon carries its unused months and is chosen only where it still pays.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.contracts import first_error, write_atomic
from planner.errors import PlannerInputError

CapacityType = Literal["on-demand", "spot", "reserved-1yr", "reserved-3yr"]
CAPACITY_TYPES: tuple[CapacityType, ...] = ("on-demand", "spot", "reserved-1yr", "reserved-3yr")
TERM_MONTHS = {"reserved-1yr": 12, "reserved-3yr": 36}
HOURS_PER_MONTH = 730.0  # AWS's billing convention (8,760 h / 12)


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_hour: float = Field(gt=0)
    source: str


class SpotPrice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_hour_by_az: dict[str, float] = Field(default_factory=dict)
    usd_per_hour_range: tuple[float, float] | None = None
    interruption_band: Literal["<5%", "5-10%", "10-15%", "15-20%", ">20%"] | None = None
    source: str

    @property
    def planning_price(self) -> float:
        """The highest known price: a node group diversified over AZs may land in the dearest one."""
        known = list(self.usd_per_hour_by_az.values()) + list(self.usd_per_hour_range or ())
        if not known:
            raise PlannerInputError(f"spot entry from {self.source} has no price")
        return max(known)


class InstanceType(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_type: str
    family: str
    vcpu: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    gpu: str
    gpu_count: int = Field(ge=1)
    gpu_memory_gib: float = Field(gt=0)
    on_demand: Price
    spot: SpotPrice | None = None
    reserved: dict[Literal["1yr", "3yr"], Price] = Field(default_factory=dict)
    max_instances: int | None = Field(default=None, ge=0)
    note: str | None = None


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    region: str
    currency: Literal["USD"]
    as_of: str
    notes: list[str] = Field(default_factory=list)
    sources: dict[str, dict[str, str]]
    instances: list[InstanceType] = Field(min_length=1)

    def gpus(self) -> set[str]:
        return {i.gpu for i in self.instances}


@dataclass(frozen=True)
class Pool:
    """One thing the optimizer can buy a count of."""

    instance_type: str
    gpu: str
    capacity_type: CapacityType
    gpus_per_instance: int
    usd_per_hour: float  # effective, per instance, per hour of use over the horizon
    max_instances: int | None

    @property
    def name(self) -> str:
        return f"{self.instance_type}/{self.capacity_type}"

    @property
    def is_spot(self) -> bool:
        return self.capacity_type == "spot"


DEFAULT_CATALOG = "catalog-us-east-1.json"


def read_catalog(path: Path | str | None = None) -> Catalog:
    """Read a catalog file, or the embedded us-east-1 default; one-line :class:`PlannerInputError` on defects."""
    if path is None:
        text = resources.files("planner.data").joinpath(DEFAULT_CATALOG).read_text()
        origin = f"embedded {DEFAULT_CATALOG}"
    else:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PlannerInputError(f"{path}: cannot read catalog: {exc.strerror}") from None
    try:
        return Catalog.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise PlannerInputError(f"{origin}: not JSON: {exc.msg} at line {exc.lineno}") from None
    except ValidationError as exc:
        raise PlannerInputError(first_error(origin, exc)) from None


def write_catalog(catalog: Catalog, path: Path | str) -> None:
    """Write atomically: recommend never reads a half-written catalog."""
    write_atomic(path, catalog.model_dump_json(indent=2, exclude_none=False) + "\n")


def reserved_price_over_horizon(usd_per_hour: float, term_months: int, horizon_months: float) -> float:
    """Cost per hour of use of a commitment bought for ``horizon_months`` of service.

    A term must be paid in full, so a 3-year term used for 12 months costs three times its hourly rate per used
    hour; terms are renewed whole when the horizon is longer than one term.
    """
    paid_months = math.ceil(horizon_months / term_months - 1e-9) * term_months
    return usd_per_hour * paid_months / horizon_months


def pools_for(catalog: Catalog, gpus: set[str], horizon_months: float,
              allow: set[CapacityType] | None = None) -> list[Pool]:
    """Every pool in the catalog whose GPU type is in ``gpus`` and whose capacity type is allowed."""
    allow = allow or set(CAPACITY_TYPES)
    pools: list[Pool] = []
    for it in catalog.instances:
        if it.gpu not in gpus:
            continue
        prices: list[tuple[CapacityType, float]] = [("on-demand", it.on_demand.usd_per_hour)]
        if it.spot is not None:
            prices.append(("spot", it.spot.planning_price))
        for term, price in it.reserved.items():
            ctype: CapacityType = f"reserved-{term}"  # type: ignore[assignment]
            prices.append((ctype, reserved_price_over_horizon(price.usd_per_hour, TERM_MONTHS[ctype], horizon_months)))
        for ctype, usd in prices:
            if ctype in allow:
                pools.append(Pool(it.instance_type, it.gpu, ctype, it.gpu_count, usd, it.max_instances))
    return pools
