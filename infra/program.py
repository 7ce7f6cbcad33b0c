"""The stack: settings + plan → network, cluster, GPU pools, storage, Triton services, observability."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pulumi

from gpufleet.contracts.autoscaling import HPA_SYNC_S, HPA_TOLERANCE
from gpufleet.contracts.plan import Plan, read_plan
from gpufleet.errors import ContractError
from infra.alerts import PlanAlerts
from infra.cluster import Cluster
from infra.edge import Edge, hosted_zone
from infra.gpu_pools import SAVINGS_PLAN_PAYMENT, GpuNodePools
from infra.network import Network
from infra.observability import Observability
from infra.settings import ROOT, InfraInputError, StackSettings
from infra.storage import StorageTiers
from infra.versions import require_standard_support
from infra.triton import MIX_NAME, TritonService


def load_plan(settings: StackSettings, project_dir: Path = ROOT) -> Plan:
    """The plan the stack is sized by (``planPath``, relative to the Pulumi project); :class:`InfraInputError` with
    one line if it cannot be used."""
    path = Path(settings.plan_path)
    path = path if path.is_absolute() else Path(project_dir) / path
    try:
        plan = read_plan(path)
    except ContractError as exc:
        raise InfraInputError(f"gpufleet:planPath: {exc}") from None
    if plan.autoscaling.tolerance != HPA_TOLERANCE or plan.autoscaling.hpa_sync_s != HPA_SYNC_S:
        raise InfraInputError(f"gpufleet:planPath: {path.name} assumes HPA tolerance {plan.autoscaling.tolerance:g} "
                              f"and sync {plan.autoscaling.hpa_sync_s:g} s; EKS runs kube-controller-manager's "
                              f"defaults ({HPA_TOLERANCE:g}, {HPA_SYNC_S:g} s), which a stack cannot change")
    if plan.request.region != settings.region:
        raise InfraInputError(f"gpufleet:planPath: {path.name} was planned for {plan.request.region} (its prices and "
                              f"instance types), the stack is in {settings.region}")
    models = {d.model for d in plan.deployments}
    if len(models) != 1 and plan.mix is None:
        raise InfraInputError(f"gpufleet:planPath: {path.name} plans models {sorted(models)}; a stack serves one, "
                              "or a mix (planner recommend --mix)")
    if plan.mix is not None and settings.canary_image:
        raise InfraInputError(f"gpufleet:planPath: {path.name} is a mix of {len(models)} models; a canary "
                              "(gpufleet:canaryImage) is for one model's stack")
    # Priced on the catalog's date, the stack runs a version EKS supports at its standard rate on that date.
    require_standard_support(settings, dt.date.fromisoformat(plan.request.catalog_as_of))
    if settings.model_name is not None and models != {settings.model_name} and (
            plan.mix is None or settings.model_name != MIX_NAME):
        raise InfraInputError(f"gpufleet:planPath: {path.name} plans model(s) {sorted(models)}, the stack serves "
                              f"{settings.model_name!r}")
    return plan


def build(settings: StackSettings, plan: Plan) -> dict:
    """Declare every resource from the settings and the plan alone; return the stack outputs."""
    if settings.model_name is None:
        settings = settings.model_copy(update={"model_name": MIX_NAME if plan.mix is not None
                                               else plan.deployments[0].model})
    name = settings.name
    # Before any resource: a domain whose zone cannot be used stops the program here, with nothing declared.
    zone = hosted_zone(settings)
    network = Network(name, settings)
    cluster = Cluster(name, settings, network)
    pools = GpuNodePools(name, settings, cluster, network, plan)
    storage = StorageTiers(name, settings, cluster)
    observability = Observability(name, settings, cluster, plan.autoscaling)
    edge = Edge(name, settings, cluster, network, zone)
    triton = TritonService(f"{name}-{settings.model_name}", settings, cluster, storage, plan, pools, observability,
                           edge)
    PlanAlerts(f"{name}-alerts", plan, settings.namespace, triton.app, cluster, observability)
    outputs = {"cluster_name": cluster.eks.name, "models_bucket": storage.models.bucket, "endpoint": triton.endpoint,
               "gpu_node_groups": sorted(f"{g}/{c}" + (f"/{p}" if p else "") for g, c, p in pools.groups),
               "commitments": [{"savings_plan": "EC2Instance", "instance_family": c.instance_family, "term": c.term,
                                "payment": SAVINGS_PLAN_PAYMENT, "region": c.region, "usd_per_hour": c.usd_per_hour}
                               for c in pools.commitments]}
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
