"""The stack: settings + plan → network, cluster, GPU pools, storage, Triton services, observability."""
from __future__ import annotations

from pathlib import Path

import pulumi

from infra.cluster import Cluster
from infra.gpu_pools import GpuNodePools
from infra.network import Network
from infra.observability import Observability
from infra.settings import ROOT, InfraInputError, StackSettings
from infra.storage import StorageTiers
from infra.triton import TritonService


def load_plan(settings: StackSettings, project_dir: Path = ROOT):
    """The plan the stack is sized by (``planPath``, relative to the Pulumi project); :class:`InfraInputError` with
    one line if it cannot be used."""
    from planner.errors import PlannerInputError
    from planner.plan import read_plan

    path = Path(settings.plan_path)
    path = path if path.is_absolute() else Path(project_dir) / path
    try:
        plan = read_plan(path)
    except PlannerInputError as exc:
        raise InfraInputError(f"gpufleet:planPath: {exc}") from None
    if plan.request.region != settings.region:
        raise InfraInputError(f"gpufleet:planPath: {path.name} was planned for {plan.request.region} (its prices and "
                              f"instance types), the stack is in {settings.region}")
    models = {d.model for d in plan.deployments}
    if models != {settings.model_name}:
        raise InfraInputError(f"gpufleet:planPath: {path.name} plans model(s) {sorted(models)}, the stack serves "
                              f"{settings.model_name!r}")
    return plan


def build(settings: StackSettings, plan, catalog=None) -> dict:
    """Declare every resource; return the stack outputs."""
    from planner.catalog import read_catalog

    catalog = catalog or read_catalog(None)
    name = settings.name
    network = Network(name, settings)
    cluster = Cluster(name, settings, network)
    pools = GpuNodePools(name, settings, cluster, network, plan, catalog)
    storage = StorageTiers(name, settings, cluster)
    TritonService(f"{name}-{settings.model_name}", settings, cluster, storage, plan)
    Observability(name, settings, cluster)
    outputs = {"cluster_name": cluster.eks.name, "models_bucket": storage.models.bucket,
               "gpu_node_groups": sorted(f"{g}/{c}" for g, c in pools.groups)}
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
