"""The instance catalog: GPU instance types with their facts and prices, each price naming its source and date.

This module is the catalog file's schema (``Catalog``, published as ``docs/schemas/catalog.v1.schema.json``) and its
only reader (:func:`read_catalog`). ``planner catalog refresh`` writes one from the AWS APIs. The embedded one
(``gpufleet/data``, :func:`embedded_catalog`) is the planner's default, and its GPU types are the names a latency
profile may stand for (:func:`check_gpu_type`): one list, read by every stage from here.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field

from gpufleet.contracts.io import read_model, write_atomic
from gpufleet.contracts.model import Strict
from gpufleet.errors import ContractError, InputError

EMBEDDED_CATALOG = "catalog-us-east-1.json"  # in gpufleet/data
# A MIG slice as a GPU type: <whole GPU type><MIG_SEPARATOR><MIG profile>, e.g. A100-MIG-1g.5gb (planner --mig).
MIG_SEPARATOR = "-MIG-"

CapacityType = Literal["on-demand", "spot", "reserved-1yr", "reserved-3yr"]
CAPACITY_TYPES: tuple[CapacityType, ...] = ("on-demand", "spot", "reserved-1yr", "reserved-3yr")


class Price(Strict):
    usd_per_hour: float = Field(gt=0)
    source: str


class SpotPrice(Strict):
    usd_per_hour_by_az: dict[str, float] = Field(default_factory=dict)
    usd_per_hour_range: tuple[float, float] | None = None
    interruption_band: Literal["<5%", "5-10%", "10-15%", "15-20%", ">20%"] | None = None
    source: str

    @property
    def planning_price(self) -> float:
        """The highest known price: a node group diversified over AZs may land in the dearest one."""
        known = list(self.usd_per_hour_by_az.values()) + list(self.usd_per_hour_range or ())
        if not known:
            raise ContractError(f"spot entry from {self.source} has no price")
        return max(known)


class InstanceType(Strict):
    instance_type: str
    family: str
    vcpu: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    gpu: str
    gpu_count: int = Field(ge=1)
    gpu_memory_gib: float = Field(gt=0)
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    on_demand: Price
    spot: SpotPrice | None = None
    reserved: dict[Literal["1yr", "3yr"], Price] = Field(default_factory=dict)
    max_instances: int | None = Field(default=None, ge=0)
    note: str | None = None


class Catalog(Strict):
    schema_version: Literal[1]
    region: str
    currency: Literal["USD"]
    as_of: str
    notes: list[str] = Field(default_factory=list)
    sources: dict[str, dict[str, str]]
    instances: list[InstanceType] = Field(min_length=1)

    def gpus(self) -> set[str]:
        return {i.gpu for i in self.instances}


def read_catalog(path: Path | str) -> Catalog:
    """Read and validate a catalog file; one-line :class:`ContractError` naming the field on any defect."""
    return read_model(Catalog, path, "catalog")


def embedded_catalog() -> Catalog:
    """The catalog gpufleet ships (us-east-1): the planner's default."""
    with resources.as_file(resources.files("gpufleet.data").joinpath(EMBEDDED_CATALOG)) as path:
        return read_catalog(path)


def check_gpu_type(gpu: str, catalog: Path | str | None = None, option: str = "--gpu") -> str:
    """``gpu`` names a GPU type of ``catalog`` (default: the embedded one), or a MIG slice of one
    (``A100-MIG-1g.5gb``): the names the planner matches profiles and pools by. :class:`InputError` with one line,
    the known types and the way to name others, for anything else."""
    known = (read_catalog(catalog) if catalog is not None else embedded_catalog()).gpus()
    whole, mig, profile = gpu.partition(MIG_SEPARATOR)
    if whole in known and (not mig or profile):
        return gpu
    where = f"catalog {catalog}" if catalog is not None else "embedded catalog"
    raise InputError(f"{option} {gpu!r}: not a GPU type of the {where} ({', '.join(sorted(known))}; a MIG slice as "
                     f"<type>{MIG_SEPARATOR}<profile>); for another type, pass a catalog that has it with --catalog "
                     "(planner catalog refresh --family ...)")


def write_catalog(catalog: Catalog, path: Path | str) -> None:
    """Write atomically: recommend never reads a half-written catalog."""
    write_atomic(path, catalog.model_dump_json(indent=2, exclude_none=False) + "\n")
