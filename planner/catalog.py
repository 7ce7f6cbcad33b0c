"""The instance catalog: GPU instance types with their prices, and the pools the optimizer may buy.

``read_catalog`` is the catalog file's only reader. A *pool* is one (instance type, capacity type) pair:
on-demand, spot, or a reserved term. Reserved pools are priced per hour of use over the planning horizon, so a
commitment longer than the horizon carries its unused months and is chosen only where it still pays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gpufleet.contracts.catalog import CAPACITY_TYPES, Catalog, CapacityType  # noqa: F401 (re-exported for the planner)
from gpufleet.contracts.catalog import embedded_catalog
from gpufleet.contracts.catalog import read_catalog as read_catalog_file

TERM_MONTHS = {"reserved-1yr": 12, "reserved-3yr": 36}
HOURS_PER_MONTH = 730.0  # AWS's billing convention (8,760 h / 12)


@dataclass(frozen=True)
class Pool:
    """One thing the optimizer can buy a count of."""

    instance_type: str
    gpu: str
    capacity_type: CapacityType
    gpus_per_instance: int  # replicas per instance: GPUs, or MIG slices where partitioned
    usd_per_hour: float  # effective, per instance, per hour of use over the horizon
    max_instances: int | None
    partition: str | None = None  # the mig-parted configuration every GPU of the instance runs (planner.mig)

    @property
    def name(self) -> str:
        return f"{self.instance_type}/{self.capacity_type}" + (f"/{self.partition}" if self.partition else "")

    @property
    def is_spot(self) -> bool:
        return self.capacity_type == "spot"


def read_catalog(path: Path | str | None = None) -> Catalog:
    """The catalog at ``path``, or the embedded us-east-1 default (shared with every stage: gpufleet/data)."""
    if path is None:
        return embedded_catalog()
    return read_catalog_file(path)


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
