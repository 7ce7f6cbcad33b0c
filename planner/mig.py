"""MIG slices as capacity (``planner recommend --mig``): a slice of a MIG-capable GPU serves as a replica of its own,
with a latency profile derived from the whole GPU's and pools that hold (slices per GPU x GPUs) replicas per
instance. The geometry (SMs and memory slices per profile, slices per GPU) is in ``data/mig.json`` with its sources.

No slice was measured, and the derived profiles say so. The derivation: a kernel bounded by compute or by memory
bandwidth on the whole GPU (the roofline) runs on a slice holding a fraction ``f_sm`` of its SMs and ``f_mem`` of its
memory slices (bandwidth and L2 go with the memory slices) in at most ``1 / min(f_sm, f_mem)`` of the time; fixed
launch costs do not grow. Every quantile of the whole GPU's profile is scaled by that factor: an upper bound on the
slice's device time, so capacity on a slice is never overstated. It is pessimistic for small batches that leave
most of the whole GPU's SMs idle, which is where slices pay: measure a slice (``serving profile`` on a MIG device)
and pass the profile with ``--profile`` to plan with the truth.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from gpufleet.contracts.catalog import MIG_SEPARATOR
from gpufleet.contracts.profile import BatchLatency, LatencyProfile, Origin
from planner.catalog import Pool

MIG_DATA = "mig.json"


@dataclass(frozen=True)
class Slice:
    """One MIG profile of one GPU type, every GPU of an instance partitioned into it (mig-parted's ``all-<name>``)."""

    gpu: str  # the whole GPU's type in the catalog
    name: str  # e.g. 1g.5gb
    sm_fraction: float
    memory_fraction: float
    per_gpu: int

    @property
    def gpu_type(self) -> str:
        """The slice as the planner's GPU type: a profile and pools of its own."""
        return f"{self.gpu}{MIG_SEPARATOR}{self.name}"

    @property
    def partition(self) -> str:
        """The mig-parted configuration that partitions every GPU of a node this way."""
        return f"all-{self.name}"

    @property
    def slowdown(self) -> float:
        return 1.0 / min(self.sm_fraction, self.memory_fraction)


@lru_cache(maxsize=1)
def _data() -> dict:
    with resources.as_file(resources.files("planner.data").joinpath(MIG_DATA)) as path:
        return json.loads(path.read_text())


def slices() -> tuple[Slice, ...]:
    """Every MIG profile that can beat its whole GPU on cost: a slice with fewer than one per GPU (the 7g profile)
    costs the whole GPU and runs slower, so it never can and is left out."""
    out = []
    for gpu, g in _data()["gpus"].items():
        for p in g["profiles"]:
            if p["per_gpu"] > 1:
                out.append(Slice(gpu, p["name"], p["compute_slices"] * g["sms_per_compute_slice"] / g["sms"],
                                 p["memory_slices"] / g["memory_slices"], p["per_gpu"]))
    return tuple(out)


def slice_of(gpu_type: str) -> Slice | None:
    return next((s for s in slices() if s.gpu_type == gpu_type), None)


def slice_profiles(profiles: dict[tuple[str, str], LatencyProfile]) -> dict[tuple[str, str], LatencyProfile]:
    """A derived profile on every slice of every GPU some model was profiled on; a profile already given for a slice
    (measured on one, through ``--profile``) is kept."""
    data = _data()
    out = {}
    for (model, gpu), whole in profiles.items():
        for s in slices():
            if s.gpu != gpu or (model, s.gpu_type) in profiles:
                continue
            k = s.slowdown
            out[(model, s.gpu_type)] = whole.model_copy(update={
                "gpu": s.gpu_type,
                "batches": [BatchLatency(batch_size=b.batch_size, mean_ms=b.mean_ms * k, p50_ms=b.p50_ms * k,
                                         p90_ms=None if b.p90_ms is None else b.p90_ms * k, p99_ms=b.p99_ms * k,
                                         throughput_per_s=None if b.throughput_per_s is None else
                                         b.throughput_per_s / k) for b in whole.batches],
                # Instances sharing a slice gain no more than instances sharing a small GPU: none assumed.
                "concurrency_speedup": None, "corun_speedup": None,
                "origin": Origin(kind="derived", date=data["as_of"], sources=sorted(data["sources"]) + [
                    f"{whole.origin.kind} {gpu} profile ({whole.origin.date})"], derivation=(
                    f"MIG {s.name} slice of the {gpu}: every quantile of the {gpu} profile x {k:.3f} = 1 / min(SM "
                    f"fraction {s.sm_fraction:.4f}, memory fraction {s.memory_fraction:.4f}), the roofline upper "
                    "bound on a slice's device time; not measured on a slice"))})
    return out


def slice_pools(pools: list[Pool] | tuple[Pool, ...]) -> list[Pool]:
    """For every pool of a MIG-capable GPU, the same instances with each GPU partitioned into one slice profile:
    same price, (slices per GPU x GPUs) replicas per instance."""
    out = []
    for p in pools:
        for s in slices():
            if s.gpu == p.gpu and p.partition is None:
                out.append(Pool(p.instance_type, s.gpu_type, p.capacity_type, p.gpus_per_instance * s.per_gpu,
                                p.usd_per_hour, p.max_instances, s.partition))
    return out
