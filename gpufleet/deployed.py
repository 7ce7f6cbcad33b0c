"""How a plan runs in a cluster, as far as a reader of its telemetry needs to know: the Kubernetes names of its
Deployments and the labels and quantiles of the series Prometheus keeps for them.

``infra`` deploys under these names (``infra.triton``) and writes its alert rules over these series
(``infra.alerts``); ``planner check``, ``planner fit --prometheus`` and ``planner demand`` read the same series back.
One place for both sides, so a renamed Deployment cannot leave the planner querying series that no longer exist.
"""
from __future__ import annotations

import hashlib

# The namespace a stack's Triton Deployments run in unless its Pulumi config names another (infra.settings).
DEFAULT_NAMESPACE = "inference"
# A mix stack (planner recommend --mix) is named this where one model's stack takes the model's name.
MIX_NAME = "mix"
K8S_NAME_MAX = 63
# The P99 of Triton's per-model latency summaries (infra.triton.METRICS_ARGS turns them on with this quantile).
P99_QUANTILE = "0.99"


def app_name(model: str) -> str:
    """The ``app`` label of a stack's Triton pods, and the prefix of its Deployments' names."""
    return f"triton-{model}"


def unit_name(app: str, unit) -> str:
    """The Kubernetes name of one serving unit: ``<app>-<gpu>`` for one model's stack (unchanged since the first
    release: a Deployment's selector cannot change in place); in a mix, its models and GPU, shortened with a digest
    where a DNS label would be too long."""
    gpu = unit[0].gpu.lower()
    if unit[0].shared is None and len({d.model for d in unit}) == 1 and not app.endswith(f"-{MIX_NAME}"):
        return f"{app}-{gpu}"
    name = f"{app}-{'-'.join(d.model for d in unit)}-{gpu}".lower().replace(".", "-").replace("_", "-")
    if len(name) > K8S_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:K8S_NAME_MAX - len(gpu) - 10].rstrip('-')}-{digest}-{gpu}"
    return name


def stack_app(plan) -> str:
    """The ``app`` a plan's stack runs under: the mix's name for a mix plan, else its one model's (infra.program)."""
    return app_name(MIX_NAME if plan.mix is not None else plan.deployments[0].model)
